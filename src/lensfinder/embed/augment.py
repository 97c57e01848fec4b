"""S22's augmentations for contrastive pretraining, in S22's order, on batches in torch.

Stein et al. (2022, section 3.1 and appendix B) apply, in this order:

1. ``reddening``: de-redden with the object's own Galactic transmission (``MW_TRANSMISSION``
   of the sweep), then redden with a new E(B-V) drawn from a lognormal fit to the survey
   (shape 0.67306, loc 0.001146, scale 0.03338; scipy's parametrisation) and the
   extinction coefficients R = 3.214, 2.165, 1.211 (g, r, z; the Legacy Surveys', north and
   south alike): transmission = 10^(-R E(B-V) / 2.5);
2. ``flip_rotate``: flip across each axis with probability 1/2, then rotate by an angle
   drawn from U(0, 2 pi) about the centre pixel;
3. ``size_scale``: rescale by a factor drawn from U(0.9, 1.1) (bilinear);
4. ``psf_blur``: extra Gaussian blur per band: a "true" and a "final" PSF sigma [pixels]
   are drawn from the per-band lognormal fits, and the image is blurred by
   sqrt(final^2 - true^2) where positive (reflecting edges, as S22's skimage filter);
5. ``jitter_crop``: shift the centre by (i, j), each drawn from the integers in [-7, 7],
   and cut out the central ``crop`` x ``crop`` pixels (96 in S22);
6. ``noise``: extra Gaussian noise per band: "true" and "final" pixel noise levels
   [nanomaggies] from the per-band lognormal fits, noise of sigma sqrt(final^2 - true^2)
   where positive.

Steps 2 and 3 are one bilinear resampling (a flip, a rotation and an isotropic scale about
the same centre compose into one affine map; one interpolation blurs less than two).
Pixels that the rotation brings in from outside the cutout are 0 (sky), as S22's skimage
rotation fills them; choose ``crop`` + 2 ``jitter`` <= size * scale_min / sqrt(2) to keep
them out of every view (48 + 14 fits a 101-px cutout).

Images: (B, 3, H, W) nanomaggies, bands g, r, z, row 0 = South, East left; the output keeps
the batch, band order, orientation convention and dtype, with H = W = ``crop``. Every random
draw comes from the generator passed in, so one seed gives one set of views.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from lensfinder.constants import BANDS, EXTINCTION_R
from lensfinder.errors import LensfinderError
from lensfinder.settings import Settings

S22_ORDER = ("reddening", "flip_rotate", "size_scale", "psf_blur", "jitter_crop", "noise")


@dataclass
class AugmentConfig(Settings):
    """S22's augmentation settings; checkpoints carry them (``asdict``)."""

    section: ClassVar[str] = "embed.pretrain.augment"
    steps: list = field(default_factory=lambda: list(S22_ORDER))  # any of them, in S22's order
    crop: int = 96  # output size [pixels]
    jitter: int = 7  # the centre moves by up to this many pixels along each axis
    scale_range: list = field(default_factory=lambda: [0.9, 1.1])
    # lognormal fits of S22 table 2 (scipy: shape, loc, scale), per band g, r, z
    ebv_lognormal: list = field(default_factory=lambda: [0.67306, 0.001146, 0.03338])
    psf_shape: list = field(default_factory=lambda: [0.2109966, 0.3008485, 0.3471172])
    psf_loc: list = field(default_factory=lambda: [1.0807153, 1.2394326, 1.1928363])  # pixels
    psf_scale: list = field(default_factory=lambda: [1.3153171, 0.9164757, 0.8233702])
    noise_shape: list = field(default_factory=lambda: [0.2264926, 0.2431146, 0.1334844])
    noise_loc: list = field(default_factory=lambda: [-0.0006735, -0.0023663, -0.0143416])  # nanomaggies
    noise_scale: list = field(default_factory=lambda: [0.0037602, 0.0067417, 0.0260779])
    extinction_r: list = field(default_factory=lambda: [EXTINCTION_R[b.upper()] for b in BANDS])

    @classmethod
    def from_dict(cls, d):
        cfg = cls(**cls.check_keys(d))
        unknown_steps = [s for s in cfg.steps if s not in S22_ORDER]
        if unknown_steps:
            raise LensfinderError(f"augmentation steps {unknown_steps} are unknown; choose from {list(S22_ORDER)}")
        if list(cfg.steps) != [s for s in S22_ORDER if s in cfg.steps]:
            raise LensfinderError(f"augmentation steps {list(cfg.steps)} must keep S22's order {list(S22_ORDER)}")
        if cfg.crop < 1 or cfg.jitter < 0:
            raise LensfinderError(f"augmentation crop {cfg.crop} must be >= 1 and jitter {cfg.jitter} >= 0")
        lo, hi = cfg.scale_range
        if not 0 < lo <= hi:
            raise LensfinderError(f"augmentation scale_range {cfg.scale_range} must be 0 < min <= max")
        return cfg

    def to_dict(self):
        return asdict(self)


def _lognormal(shape, loc, scale, n, gen, device):
    """Draws of scipy's lognorm(shape, loc, scale): loc + scale * exp(shape * N(0, 1)); (n, len(shape))."""
    s, l, a = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(1, -1) for v in (shape, loc, scale))
    return l + a * torch.exp(s * torch.randn((n, s.shape[1]), generator=gen, device=device))


def _differential(shape, loc, scale, n, gen, device):
    """sqrt(final^2 - true^2) where positive, else 0: the extra sigma that takes an image from
    a drawn "true" level to a drawn "final" one (S22 appendix B)."""
    true = _lognormal(shape, loc, scale, n, gen, device)
    final = _lognormal(shape, loc, scale, n, gen, device)
    return torch.sqrt(torch.clamp(final**2 - true**2, min=0.0))


def _uniform(lo, hi, shape, gen, device):
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


class S22Augment:
    """Callable: ``views = augment(images, transmission, generator)``.

    ``images``: (B, 3, H, W) float nanomaggies on any device; ``transmission``: (B, 3) the
    objects' MW_TRANSMISSION_G/R/Z (1 where unknown); ``generator``: a torch.Generator on
    the images' device.
    """

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self.steps = tuple(cfg.steps)

    def __call__(self, images: torch.Tensor, transmission: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg, dtype = self.cfg, images.dtype
        n, c, h, w = images.shape
        if c != 3 or h != w:
            raise LensfinderError(f"augmentations need square g, r, z cutouts (B, 3, H, H), got {tuple(images.shape)}")
        if "jitter_crop" in self.steps and h < cfg.crop + 2 * cfg.jitter:
            raise LensfinderError(f"cutouts of {h} px are too small for {cfg.crop}-px views jittered by "
                                  f"+-{cfg.jitter} px: make cutouts.size >= {cfg.crop + 2 * cfg.jitter} or the crop smaller")
        x = images.float()
        if "reddening" in self.steps:
            x = self.redden(x, transmission, gen)
        if "flip_rotate" in self.steps or "size_scale" in self.steps:
            x = self.resample(x, gen)
        if "psf_blur" in self.steps:
            x = self.blur(x, gen)
        x = self.jitter_crop(x, gen) if "jitter_crop" in self.steps else centre_crop(x, cfg.crop)
        if "noise" in self.steps:
            x = self.noise(x, gen)
        return x.to(dtype)

    # -- the steps
    def redden(self, x, transmission, gen):
        cfg = self.cfg
        t_old = torch.as_tensor(transmission, dtype=torch.float32, device=x.device).reshape(-1, 3)
        if (t_old <= 0).any():
            raise LensfinderError("a Galactic transmission <= 0 cannot be divided out: check MW_TRANSMISSION_G/R/Z")
        ebv = _lognormal([cfg.ebv_lognormal[0]], [cfg.ebv_lognormal[1]], [cfg.ebv_lognormal[2]], len(x), gen, x.device)
        r = torch.as_tensor(cfg.extinction_r, dtype=torch.float32, device=x.device).reshape(1, 3)
        t_new = torch.pow(10.0, -0.4 * r * ebv)  # (B, 3)
        return x * (t_new / t_old)[:, :, None, None]

    def resample(self, x, gen):
        """Flips, rotation about the centre and rescale, as one bilinear resampling.

        The forward map is scale * rotate(theta) * flip; grid_sample wants the inverse
        (output -> input coordinates): flip * rotate(-theta) / scale. With align_corners
        False, normalised coordinate 0 is the image centre ((H - 1) / 2 in pixels: the
        centre pixel of an odd cutout).
        """
        cfg, n, dev = self.cfg, len(x), x.device
        flips = torch.ones(n, 2, device=dev)
        theta = torch.zeros(n, device=dev)
        if "flip_rotate" in self.steps:
            flips = torch.where(torch.rand((n, 2), generator=gen, device=dev) < 0.5, -1.0, 1.0)
            theta = _uniform(0.0, 2 * math.pi, (n,), gen, dev)
        scale = torch.ones(n, device=dev)
        if "size_scale" in self.steps:
            scale = _uniform(cfg.scale_range[0], cfg.scale_range[1], (n,), gen, dev)
        cos, sin = torch.cos(theta), torch.sin(theta)
        inv_rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # rotate(-theta)
        affine = flips[:, :, None] * inv_rot / scale[:, None, None]  # diag(flips) @ rotate(-theta) / scale
        grid = F.affine_grid(torch.cat([affine, torch.zeros(n, 2, 1, device=dev)], dim=2), list(x.shape),
                             align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def blur(self, x, gen):
        cfg = self.cfg
        n, c, h, w = x.shape
        sigma = _differential(cfg.psf_shape, cfg.psf_loc, cfg.psf_scale, n, gen, x.device).reshape(-1)  # (B*3,)
        return gaussian_blur(x, sigma)

    def jitter_crop(self, x, gen):
        cfg = self.cfg
        n, _, h, _ = x.shape
        shifts = torch.randint(-cfg.jitter, cfg.jitter + 1, (n, 2), generator=gen, device=x.device).tolist()
        top = (h - cfg.crop) // 2  # the same centre as InputTransform's crop
        return torch.stack([x[i, :, top + dy : top + dy + cfg.crop, top + dx : top + dx + cfg.crop]
                            for i, (dy, dx) in enumerate(shifts)])

    def noise(self, x, gen):
        cfg = self.cfg
        sigma = _differential(cfg.noise_shape, cfg.noise_loc, cfg.noise_scale, len(x), gen, x.device)
        return x + torch.randn(x.shape, generator=gen, device=x.device) * sigma[:, :, None, None]


def centre_crop(x, crop: int):
    h = x.shape[-1]
    top = (h - crop) // 2
    return x[..., top : top + crop, top : top + crop]


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each (image, band) plane of ``x`` (B, C, H, W) by its own Gaussian ``sigma``
    [pixels] (B * C values; 0 leaves a plane as it is); separable, reflecting edges."""
    n, c, h, w = x.shape
    smax = float(sigma.max()) if sigma.numel() else 0.0
    if smax <= 0:
        return x
    radius = min(int(math.ceil(4 * smax)), h - 1, w - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    s = sigma.float().reshape(-1, 1)
    kernel = torch.where(s > 0, torch.exp(-0.5 * (t / s.clamp(min=1e-6)) ** 2), (t == 0).float())
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B*C, K)
    planes = x.reshape(1, n * c, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return planes.reshape(n, c, h, w)
