"""Injection: simulated strong lenses painted onto real survey cutouts.

A *deflector* is a real selected object with a cutout (default: DEV, SER or REX, z < 19.5,
dereddened g - r >= 1.0: red, bright early-type-like galaxies). Its cutout receives the
light of a Sersic source lensed by a singular isothermal ellipsoid (SIE) plus external
shear, centred on the object's true position (the cutout's centre pixel plus
``CENTER_DX``, ``CENTER_DY``). The parameters are drawn from configurable priors
(``InjectionConfig.priors``), or on a grid of Einstein radius and source magnitude for the
selection function.

Units and conventions:

* fluxes in nanomaggies (AB, m = 22.5 - 2.5 log10 f); angles in arcsec; bands g, r, z;
* the source magnitude is the g-band AB magnitude of the *unlensed* source before Galactic
  extinction; r and z follow from its g - r and r - z colours, and the fluxes painted in
  are multiplied by the deflector's ``MW_TRANSMISSION_{G,R,Z}`` (observed fluxes, as the
  coadds hold);
* cutout orientation as the coadds: array row 0 is the South edge, +x is toward
  decreasing RA (East is left, North up when shown with origin='lower'). Lens-model
  offsets are (East, North) in arcsec, so pixel (x, y) lies at East = -(x - x0) * 0.262",
  North = (y - y0) * 0.262" from the deflector at (x0, y0);
* ellipticities follow lenstronomy: e = (1 - q) / (1 + q), (e1, e2) = e (cos 2 phi,
  sin 2 phi), phi measured from East toward North (PHI columns, degrees); the same for the
  shear (gamma1, gamma2).

Rendering (``lensed_unit_image``): the lensed surface brightness of a source of unit
intrinsic flux is ray-traced through the lens with lenstronomy (the physics of the mock's
lenses, ``lensfinder.sky.lensed_shape``) at ``oversample`` x ``oversample`` points per
pixel, averaged to pixels, over the part of the cutout the light can reach. The source is
normalised by its analytic total flux (``LightModel.total_flux``), not on a finite grid,
so any Sersic index is exact; the pixel sum is the total magnification. Each band is then
scaled to the source's flux and blurred with a Gaussian PSF of the object's own
``PSFSIZE_{G,R,Z}`` (FWHM, arcsec), as in ``lensfinder.sky``.

Noise (``add_arc``): the cutout already holds the sky's noise; the arc adds its own photon
noise. The per-pixel sky noise comes from the depth: ``PSFDEPTH`` is the inverse variance
of a point source's flux, and for a Gaussian PSF of width sigma_psf = FWHM / 2.3548 the
optimal point-source flux has variance sigma_pix^2 * NEA with the noise-equivalent area
NEA = 4 pi (sigma_psf / 0.262")^2 pixels, so

    sigma_pix = 1 / sqrt(PSFDEPTH * NEA)                       [nanomaggy per pixel].

Treating that noise as the sky's photon noise, a sky of mu_sky mag/arcsec^2 (nominal DECam
22.04, 20.91, 18.46 in g, r, z; ``sky_mag_per_arcsec2``) holding S = 10^(-0.4 (mu_sky -
22.5)) * 0.262^2 nanomaggies per pixel sets the counts per nanomaggy, k = S / sigma_pix^2,
and an arc pixel of flux a has photon variance a / k = a * sigma_pix^2 / S (drawn as a
Gaussian: every pixel holds many photons). The arc's signal-to-noise per band is the
matched-filter value sqrt(sum_pixels a^2 / (sigma_pix^2 + a / k)) and ``ARC_SNR`` combines
the bands in quadrature; the deflector's light counts neither as signal nor as noise.

Pixels the arc does not reach keep their stored values bit for bit (nothing is added to
them), so a zero-flux source leaves the cutout unchanged.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from .errors import LensfinderError, atomic_path
from .deflectors import PIXSCALE, find_deflectors
from .shards import BANDS, KEY, ShardWriter
from .sky import FWHM_TO_SIGMA

log = logging.getLogger(__name__)

INJECTION_RELEASE = 0  # the RELEASE of an injection's key: no survey release is 0
# nominal DECam zenith dark-sky brightness [AB mag / arcsec^2] (legacyzpts / obsbot)
DECAM_SKY_MAG = {"g": 22.04, "r": 20.91, "z": 18.46}
PRIOR_NAMES = ("theta_e", "source_mag", "source_r_e", "source_n", "source_g_r", "source_r_z", "source_q", "lens_q",
               "shear")
STREAM_SELECTION, STREAM_TRAINING = 1, 2  # random streams of the two injection sets


# ----------------------------------------------------------------------------- configuration
@dataclass
class Prior:
    """A one-dimensional prior: ``uniform`` (lo, hi), ``normal`` (mean, sigma, optionally
    truncated to [lo, hi]), ``loguniform`` (lo, hi > 0) or ``fixed`` (value)."""

    dist: str = "fixed"
    lo: float | None = None
    hi: float | None = None
    mean: float | None = None
    sigma: float | None = None
    value: float | None = None

    @classmethod
    def from_dict(cls, d, name: str) -> "Prior":
        if isinstance(d, (int, float)):
            return cls("fixed", value=float(d))
        try:
            prior = cls(**d)
        except TypeError as err:
            raise LensfinderError(f"injection.priors.{name}: {err}; give dist and its parameters") from None
        need = {"uniform": ("lo", "hi"), "loguniform": ("lo", "hi"), "normal": ("mean", "sigma"), "fixed": ("value",)}
        if prior.dist not in need:
            raise LensfinderError(f"injection.priors.{name}.dist {prior.dist!r} must be one of {sorted(need)}")
        missing = [k for k in need[prior.dist] if getattr(prior, k) is None]
        if missing:
            raise LensfinderError(f"injection.priors.{name} ({prior.dist}) needs {missing}")
        if prior.dist in ("uniform", "loguniform") and not prior.lo <= prior.hi:
            raise LensfinderError(f"injection.priors.{name}: lo {prior.lo} > hi {prior.hi}")
        if prior.dist == "loguniform" and prior.lo <= 0:
            raise LensfinderError(f"injection.priors.{name}: a loguniform prior needs lo > 0")
        return prior

    def draw(self, rng) -> float:
        if self.dist == "fixed":
            return float(self.value)
        if self.dist == "uniform":
            return float(rng.uniform(self.lo, self.hi))
        if self.dist == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.lo), np.log(self.hi))))
        lo = -np.inf if self.lo is None else self.lo
        hi = np.inf if self.hi is None else self.hi
        for _ in range(1000):  # truncated normal by rejection (the bounds are wide in practice)
            v = rng.normal(self.mean, self.sigma)
            if lo <= v <= hi:
                return float(v)
        raise LensfinderError(f"normal prior {self} rarely falls inside [{lo}, {hi}]: widen the bounds")


DEFAULT_PRIORS = {  # the mock's own lens population (lensfinder.mock.MockSky._add_lens)
    "theta_e": {"dist": "uniform", "lo": 1.0, "hi": 3.0},  # arcsec
    "source_mag": {"dist": "uniform", "lo": 21.0, "hi": 23.0},  # g AB, unlensed, before extinction
    "source_r_e": {"dist": "uniform", "lo": 0.15, "hi": 0.5},  # arcsec, half-light radius
    "source_n": {"dist": "fixed", "value": 1.0},  # Sersic index
    "source_g_r": {"dist": "normal", "mean": 0.25, "sigma": 0.1},
    "source_r_z": {"dist": "normal", "mean": 0.2, "sigma": 0.1},
    "source_q": {"dist": "uniform", "lo": 0.43, "hi": 1.0},  # axis ratio
    "lens_q": {"dist": "uniform", "lo": 0.54, "hi": 1.0},  # SIE axis ratio
    "shear": {"dist": "uniform", "lo": 0.0, "hi": 0.08},  # external shear strength
}


@dataclass
class DeflectorCuts:
    """Which selected objects may carry an injection."""

    types: list = field(default_factory=lambda: ["DEV", "SER", "REX"])
    zmag_max: float = 19.5  # observed z AB
    g_r_min: float | None = 1.0  # dereddened g - r (MAG_G_DERED - MAG_R_DERED); None: no cut
    max_missing: float = 0.0  # largest fraction of missing cutout pixels in any band
    # None: no catalogued or truth lens inside the deflector's cutout (its square, as the training
    # set's nonlens filter); a number: none within this radius [arcsec]
    exclude_radius_arcsec: float | None = None


@dataclass
class Grid:
    """The selection function's injections: ``n_per_bin`` in every (theta_E, magnitude) cell."""

    theta_e_bins: list = field(default_factory=lambda: [1.0, 1.5, 2.0, 2.5, 3.0])  # arcsec
    source_mag_bins: list = field(default_factory=lambda: [20.0, 20.5, 21.0, 21.5, 22.0, 22.5, 23.0, 23.5, 24.0])
    n_per_bin: int = 25
    snr_bins: list = field(default_factory=lambda: [0, 5, 10, 20, 40, 80, 160])  # ARC_SNR; the last bin is open


@dataclass
class InjectionConfig:
    seed: int = 5
    oversample: int = 4  # ray-traced points per pixel side
    noise: bool = True  # add the arc's own photon noise
    sky_mag_per_arcsec2: dict = field(default_factory=lambda: dict(DECAM_SKY_MAG))
    source_offset_max: float = 0.6  # |source offset| <= this x theta_E, uniform in area
    priors: dict = field(default_factory=dict)
    deflectors: DeflectorCuts = field(default_factory=DeflectorCuts)
    grid: Grid = field(default_factory=Grid)
    crosscheck_mag_range: list | None = field(default_factory=lambda: [21.0, 23.0])
    shard_rows: int = 20000
    mosaic: int = 36  # injections shown in injections.png

    def __post_init__(self):
        priors = {**DEFAULT_PRIORS, **(self.priors or {})}
        unknown = set(priors) - set(PRIOR_NAMES)
        if unknown:
            raise LensfinderError(f"injection.priors has unknown key(s) {sorted(unknown)}; known: {list(PRIOR_NAMES)}")
        self.priors = {k: v if isinstance(v, Prior) else Prior.from_dict(v, k) for k, v in priors.items()}
        if isinstance(self.deflectors, dict):
            self.deflectors = DeflectorCuts(**self.deflectors)
        if isinstance(self.grid, dict):
            self.grid = Grid(**self.grid)
        missing = [b for b in BANDS if b not in self.sky_mag_per_arcsec2]
        if missing:
            raise LensfinderError(f"injection.sky_mag_per_arcsec2 lacks band(s) {missing}")
        for name in ("theta_e_bins", "source_mag_bins", "snr_bins"):
            edges = list(getattr(self.grid, name))
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
                raise LensfinderError(f"injection.grid.{name} {edges} must be at least two increasing edges")
        if self.oversample < 1:
            raise LensfinderError("injection.oversample must be at least 1")

    @classmethod
    def from_dict(cls, d) -> "InjectionConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise LensfinderError(f"config key(s) injection.{sorted(unknown)} are not injection settings")
        return cls(**d)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["priors"] = {k: {f: v for f, v in asdict(p).items() if v is not None} for k, p in self.priors.items()}
        return d


# ----------------------------------------------------------------------------- parameters
@dataclass
class LensParams:
    """One injection's lens and source. Angles: arcsec; PHI: degrees from East toward North."""

    theta_e: float
    lens_q: float = 1.0
    lens_phi: float = 0.0
    shear: float = 0.0
    shear_phi: float = 0.0
    source_x: float = 0.0  # source offset East of the deflector [arcsec]
    source_y: float = 0.0  # source offset North of the deflector [arcsec]
    source_r_e: float = 0.3
    source_n: float = 1.0
    source_q: float = 1.0
    source_phi: float = 0.0
    source_mag: float = 22.0  # g AB, unlensed, before Galactic extinction
    source_g_r: float = 0.25
    source_r_z: float = 0.2

    @staticmethod
    def _e12(q, phi_deg):
        e = (1.0 - q) / (1.0 + q)
        phi = math.radians(phi_deg)
        return e * math.cos(2 * phi), e * math.sin(2 * phi)

    def lenstronomy_kwargs(self):
        """(lens kwargs for ["SIE", "SHEAR"], source kwargs for ["SERSIC_ELLIPSE"]) in the
        (East, North) frame centred on the deflector; the source's amp is 1 (any scale)."""
        le1, le2 = self._e12(self.lens_q, self.lens_phi)
        se1, se2 = self._e12(self.source_q, self.source_phi)
        g1 = self.shear * math.cos(2 * math.radians(self.shear_phi))
        g2 = self.shear * math.sin(2 * math.radians(self.shear_phi))
        kw_lens = [{"theta_E": self.theta_e, "e1": le1, "e2": le2, "center_x": 0.0, "center_y": 0.0},
                   {"gamma1": g1, "gamma2": g2, "ra_0": 0.0, "dec_0": 0.0}]
        kw_source = [{"amp": 1.0, "R_sersic": self.source_r_e, "n_sersic": self.source_n, "e1": se1, "e2": se2,
                      "center_x": self.source_x, "center_y": self.source_y}]
        return kw_lens, kw_source

    def source_mags(self) -> np.ndarray:
        """Unlensed source magnitudes (g, r, z), AB, before Galactic extinction."""
        g = self.source_mag
        return np.array([g, g - self.source_g_r, g - self.source_g_r - self.source_r_z])

    def source_fluxes(self, transmission) -> np.ndarray:
        """Unlensed source fluxes (g, r, z) in nanomaggies as observed through the
        deflector's Galactic extinction (``transmission``: MW_TRANSMISSION_{G,R,Z})."""
        return 10 ** (-0.4 * (self.source_mags() - 22.5)) * np.asarray(transmission, dtype=np.float64)

    def image_reach(self) -> float:
        """An image-plane radius [arcsec] around the deflector outside which the lensed
        source has no light to speak of (< 0.1% of the source's flux)."""
        from scipy.special import gammaincinv

        b = _sersic_b(self.source_n)
        r999 = (gammaincinv(2 * self.source_n, 0.999) / b) ** self.source_n * self.source_r_e / math.sqrt(self.source_q)
        offset = math.hypot(self.source_x, self.source_y)
        return self.theta_e / math.sqrt(self.lens_q) * (1 + 3 * self.shear) + offset + r999 + 0.5

    def columns(self) -> dict:
        """The parameters as index columns (upper case), with the lenstronomy ellipticities."""
        kw_lens, kw_source = self.lenstronomy_kwargs()
        mags = self.source_mags()
        return {"THETA_E": self.theta_e, "LENS_Q": self.lens_q, "LENS_PHI": self.lens_phi,
                "LENS_E1": kw_lens[0]["e1"], "LENS_E2": kw_lens[0]["e2"], "SHEAR": self.shear,
                "SHEAR_PHI": self.shear_phi, "GAMMA1": kw_lens[1]["gamma1"], "GAMMA2": kw_lens[1]["gamma2"],
                "SOURCE_X": self.source_x, "SOURCE_Y": self.source_y,
                "SOURCE_OFFSET": math.hypot(self.source_x, self.source_y), "SOURCE_R_E": self.source_r_e,
                "SOURCE_N": self.source_n, "SOURCE_Q": self.source_q, "SOURCE_PHI": self.source_phi,
                "SOURCE_E1": kw_source[0]["e1"], "SOURCE_E2": kw_source[0]["e2"],
                "SOURCE_MAG_G": mags[0], "SOURCE_MAG_R": mags[1], "SOURCE_MAG_Z": mags[2]}


def _sersic_b(n):
    """b_n of a Sersic profile (as lensfinder.sky; lenstronomy's own differs by < 0.1%)."""
    from .sky import sersic_b

    return float(sersic_b(n))


def draw_params(rng, cfg: InjectionConfig, theta_e: float | None = None, source_mag: float | None = None) -> LensParams:
    """One injection's parameters from the priors; ``theta_e``/``source_mag`` override theirs."""
    p = cfg.priors
    theta = p["theta_e"].draw(rng) if theta_e is None else float(theta_e)
    mag = p["source_mag"].draw(rng) if source_mag is None else float(source_mag)
    beta = cfg.source_offset_max * theta * math.sqrt(rng.random())  # uniform in area
    angle = rng.uniform(0, 2 * np.pi)
    return LensParams(
        theta_e=theta, lens_q=p["lens_q"].draw(rng), lens_phi=float(rng.uniform(0, 180)),
        shear=p["shear"].draw(rng), shear_phi=float(rng.uniform(0, 180)),
        source_x=beta * math.cos(angle), source_y=beta * math.sin(angle),
        source_r_e=p["source_r_e"].draw(rng), source_n=p["source_n"].draw(rng), source_q=p["source_q"].draw(rng),
        source_phi=float(rng.uniform(0, 180)), source_mag=mag,
        source_g_r=p["source_g_r"].draw(rng), source_r_z=p["source_r_z"].draw(rng),
    )


# ----------------------------------------------------------------------------- rendering
@lru_cache(maxsize=1)
def _models():
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    return LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])


def lensed_unit_image(params: LensParams, size: int, x0: float, y0: float, pixscale: float = PIXSCALE,
                      oversample: int = 4):
    """The lensed source of unit intrinsic flux on a size x size cutout grid.

    (x0, y0): the deflector's pixel position (0-based, row 0 = South). Returns (image,
    magnification): float64 flux per pixel (row = y) summing to the total magnification of
    the light that falls in the cutout, and that sum.
    """
    lens, light = _models()
    kw_lens, kw_source = params.lenstronomy_kwargs()
    total = float(light.total_flux(kw_source)[0])
    reach = params.image_reach() / pixscale + 1.0
    x_lo, x_hi = max(0, math.floor(x0 - reach)), min(size - 1, math.ceil(x0 + reach))
    y_lo, y_hi = max(0, math.floor(y0 - reach)), min(size - 1, math.ceil(y0 + reach))
    image = np.zeros((size, size))
    if x_hi < x_lo or y_hi < y_lo:
        return image, 0.0
    nx, ny, ov = x_hi - x_lo + 1, y_hi - y_lo + 1, oversample
    sub = (np.arange(ov) + 0.5) / ov - 0.5  # sub-pixel centres within a pixel
    xs = (np.arange(x_lo, x_hi + 1)[:, None] + sub).ravel()
    ys = (np.arange(y_lo, y_hi + 1)[:, None] + sub).ravel()
    east, north = np.meshgrid(-(xs - x0) * pixscale, (ys - y0) * pixscale)  # +x is West: East = -x
    bx, by = lens.ray_shooting(east.ravel(), north.ravel(), kw_lens)
    sb = light.surface_brightness(bx, by, kw_source).reshape(ny * ov, nx * ov) / total  # per arcsec^2
    stamp = sb.reshape(ny, ov, nx, ov).mean(axis=(1, 3)) * pixscale**2
    image[y_lo : y_hi + 1, x_lo : x_hi + 1] = stamp
    return image, float(stamp.sum())


def sky_sigma_per_pixel(psf_depth, psf_fwhm, pixscale: float = PIXSCALE):
    """Per-pixel sky noise [nanomaggy] from the 5-sigma point-source depth as an inverse
    variance (PSFDEPTH, 1/nanomaggy^2) and the PSF FWHM [arcsec]: 1 / sqrt(PSFDEPTH * NEA),
    NEA = 4 pi (FWHM / 2.3548 / pixscale)^2 pixels (Gaussian PSF)."""
    nea = 4 * np.pi * (np.asarray(psf_fwhm, dtype=np.float64) * FWHM_TO_SIGMA / pixscale) ** 2
    return 1.0 / np.sqrt(np.asarray(psf_depth, dtype=np.float64) * nea)


def counts_per_nanomaggy(sky_mag_per_arcsec2, sky_sigma, pixscale: float = PIXSCALE):
    """Photon counts per nanomaggy, k = S / sigma_pix^2, with S the sky per pixel [nmgy]
    of a sky of ``sky_mag_per_arcsec2``: the scale at which the pixel noise is the sky's
    photon noise."""
    sky = 10 ** (-0.4 * (np.asarray(sky_mag_per_arcsec2, dtype=np.float64) - 22.5)) * pixscale**2
    return sky / np.asarray(sky_sigma, dtype=np.float64) ** 2


def add_arc(cutout, unit_image, fluxes, psf_fwhm, psf_depth, sky_mag, rng=None, noise=True,
            pixscale: float = PIXSCALE):
    """Paint the arc onto a (3, H, W) nanomaggy cutout; returns (float32 image, info).

    ``unit_image``: (H, W) flux per pixel of a unit-flux source before the PSF (e.g.
    ``lensed_unit_image``); ``fluxes``, ``psf_fwhm`` [arcsec], ``psf_depth`` (PSFDEPTH) and
    ``sky_mag`` [mag/arcsec^2] per band g, r, z. Each band: scaled to its flux, blurred with
    its Gaussian PSF, photon noise added (``noise``; ``rng`` a numpy Generator), and added
    only where the arc has light. Info: ARC_FLUX_b (noise-free flux added in the cutout),
    ARC_SNR_b, ARC_SNR (quadrature over bands) and SKY_SIGMA_b (nanomaggy per pixel).
    """
    out = np.array(cutout, dtype=np.float32, copy=True)
    info, snr2 = {}, 0.0
    for b, band in enumerate(BANDS):
        sigma_pix = sky_sigma_per_pixel(psf_depth[b], psf_fwhm[b], pixscale)
        if not (np.isfinite(sigma_pix) and sigma_pix > 0):
            raise LensfinderError(f"band {band}: PSFDEPTH {psf_depth[b]} and PSFSIZE {psf_fwhm[b]} give no sky noise: "
                                  "a deflector needs positive PSFSIZE and PSFDEPTH in every band")
        arc = gaussian_filter(unit_image * float(fluxes[b]), psf_fwhm[b] * FWHM_TO_SIGMA / pixscale, mode="constant")
        var_arc = np.maximum(arc, 0.0) / counts_per_nanomaggy(sky_mag[b], sigma_pix, pixscale)
        snr = float(np.sqrt(np.sum(arc**2 / (sigma_pix**2 + var_arc))))
        lit = arc != 0.0  # pixels the arc reaches; all others keep their bits
        added = arc[lit]
        if noise and lit.any():
            added = added + rng.standard_normal(added.shape) * np.sqrt(var_arc[lit])
        plane = out[b]
        plane[lit] = (plane[lit].astype(np.float64) + added).astype(np.float32)
        info[f"ARC_FLUX_{band.upper()}"] = float(arc.sum())
        info[f"ARC_SNR_{band.upper()}"] = snr
        info[f"SKY_SIGMA_{band.upper()}"] = float(sigma_pix)
        snr2 += snr**2
    info["ARC_SNR"] = float(np.sqrt(snr2))
    return out, info


def deflector_centre(row, size: int):
    """Pixel position (x, y) of the deflector in its cutout: the centre pixel plus the
    recorded offset of the true centre (CENTER_DX, CENTER_DY; 0 when absent)."""
    c = size // 2
    dx = float(row.get("CENTER_DX", 0.0) or 0.0)
    dy = float(row.get("CENTER_DY", 0.0) or 0.0)
    return c + dx, c + dy


def inject(cutout, row, params: LensParams, cfg: InjectionConfig, rng, pixscale: float = PIXSCALE):
    """One injection onto one deflector's cutout (3, S, S) in nanomaggies.

    ``row``: the deflector's objects/index row (CENTER_DX, CENTER_DY, MW_TRANSMISSION_*,
    PSFSIZE_*, PSFDEPTH_*). Returns (float32 image, info with MAGNIFICATION, the source's
    observed fluxes SOURCE_FLUX_b, arc fluxes and S/N).
    """
    size = cutout.shape[-1]
    x0, y0 = deflector_centre(row, size)
    unit, mu = lensed_unit_image(params, size, x0, y0, pixscale, cfg.oversample)
    trans = [float(row[f"MW_TRANSMISSION_{b.upper()}"]) for b in BANDS]
    fluxes = params.source_fluxes(trans)
    image, info = add_arc(cutout, unit, fluxes, [float(row[f"PSFSIZE_{b.upper()}"]) for b in BANDS],
                          [float(row[f"PSFDEPTH_{b.upper()}"]) for b in BANDS],
                          [cfg.sky_mag_per_arcsec2[b] for b in BANDS], rng, cfg.noise, pixscale)
    return image, {"MAGNIFICATION": mu, **{f"SOURCE_FLUX_{b.upper()}": float(f) for b, f in zip(BANDS, fluxes)},
                   **info}


# ----------------------------------------------------------------------------- deflectors
# ----------------------------------------------------------------------------- injection sets
def grid_plan(cfg: InjectionConfig, rng):
    """(theta_E, source magnitude, theta bin, magnitude bin) of every selection-function
    injection: ``n_per_bin`` per cell, each uniform within its cell."""
    g = cfg.grid
    rows = []
    for i, (t_lo, t_hi) in enumerate(zip(g.theta_e_bins[:-1], g.theta_e_bins[1:])):
        for j, (m_lo, m_hi) in enumerate(zip(g.source_mag_bins[:-1], g.source_mag_bins[1:])):
            for _ in range(g.n_per_bin):
                rows.append((float(rng.uniform(t_lo, t_hi)), float(rng.uniform(m_lo, m_hi)), i, j))
    return rows


def _assign(n: int, pool: int, rng) -> np.ndarray:
    """Deflector indices for n injections from a pool: each used as evenly as possible
    (whole random permutations of the pool), in random order."""
    if n == 0 or pool == 0:
        return np.zeros(0, dtype=np.int64)
    cycles = -(-n // pool)
    order = np.concatenate([rng.permutation(pool) for _ in range(cycles)])[:n]
    return order[rng.permutation(n)]


def _index_row(injection_id, deflector, params: LensParams, info, extra=None) -> dict:
    row = {"RELEASE": INJECTION_RELEASE, "BRICKID": 0, "OBJID": int(injection_id), "INJECTION_ID": int(injection_id),
           "DEFLECTOR_RELEASE": int(deflector["RELEASE"]), "DEFLECTOR_BRICKID": int(deflector["BRICKID"]),
           "DEFLECTOR_OBJID": int(deflector["OBJID"])}
    for c in ("RA", "DEC", "MAG_G", "MAG_R", "MAG_Z", "CENTER_DX", "CENTER_DY",
              *(f"PSFSIZE_{b}" for b in "GRZ"), *(f"PSFDEPTH_{b}" for b in "GRZ")):
        row[c] = float(deflector[c])
    for c in ("TYPE", "REGION", "ZEXP_BIN", "SWEEP"):
        row[c] = str(deflector[c]).strip()
    return {**row, **(extra or {}), **params.columns(), **info}


def write_injection_set(object_paths, manifests, labels_path, catalog_specs, cfg: InjectionConfig, out_dir,
                        truth_path=None, progress=True) -> dict:
    """The selection function's injections as a shard set in ``out_dir``.

    Deflectors pass ``cfg.deflectors`` and are disjoint from the training set (both splits:
    every key in ``labels_path``; no deflector's cutout holds a training lens). The grid
    (``cfg.grid``) sets theta_E and the source magnitude; the other parameters come from
    the priors. Index rows carry the injection's key (RELEASE 0, BRICKID 0, OBJID =
    INJECTION_ID: a deflector may carry several injections), the deflector's key
    (DEFLECTOR_*), the parameters, MAGNIFICATION, source and arc fluxes and arc S/N.
    Writes ``manifest.json`` (with the counts), ``summary.json`` and ``injections.png``.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    labels = pd.read_parquet(labels_path)
    lenses = labels[labels["LABEL"] == 1]
    found = find_deflectors(object_paths, manifests, cfg.deflectors, catalog_specs, truth_path,
                            zip(*(labels[k].astype(np.int64) for k in KEY)),
                            (lenses["RA"].to_numpy(), lenses["DEC"].to_numpy()), progress=progress)
    deflectors, counts, pixscale = found.table, found.counts, found.pixscale
    rng = np.random.default_rng([cfg.seed, STREAM_SELECTION])
    plan = grid_plan(cfg, rng)
    warning = None
    if deflectors.empty:  # a small area: an empty set, said loudly, rather than a failed run
        warning = (f"no object passes the deflector cuts (injection.deflectors) outside the training set: {counts}; "
                   "the selection function is empty: loosen the cuts (types, zmag_max, g_r_min, max_missing)")
        log.warning(warning)
        plan = []
    which = _assign(len(plan), len(deflectors), rng)
    cutouts = found.cutouts(which)
    writer = ShardWriter(out_dir, found.shape[-1], found.release, cfg.shard_rows, source="injection")
    for inj_id, ((theta, mag, ti, mj), d) in enumerate(tqdm(list(zip(plan, which)), desc="inject", unit="lens",
                                                            disable=not progress, mininterval=10)):
        deflector = deflectors.iloc[int(d)]
        stream = np.random.default_rng([cfg.seed, STREAM_SELECTION, inj_id])
        params = draw_params(stream, cfg, theta_e=theta, source_mag=mag)
        image, info = inject(cutouts[int(d)].astype(np.float32), deflector, params, cfg, stream, pixscale)
        writer.add(image, _index_row(inj_id, deflector, params, info, {"THETA_E_BIN": ti, "MAG_BIN": mj}))
    reuse = np.bincount(which, minlength=len(deflectors))
    summary = {"injections": len(plan), "deflector_cuts": counts, "deflectors_used": int((reuse > 0).sum()),
               "injections_per_deflector": {"min": int(reuse.min()) if len(reuse) else 0,
                                            "max": int(reuse.max()) if len(reuse) else 0},
               "pixscale_arcsec": pixscale, "warning": warning, "config": cfg.as_dict()}
    writer.close(len(plan), extra={"injection": {"seed": cfg.seed, "stream": STREAM_SELECTION,
                                                 "key": "RELEASE 0, BRICKID 0, OBJID = INJECTION_ID",
                                                 "deflectors_used": summary["deflectors_used"]}})
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    _example_mosaic(out_dir, cfg)
    log.info("%d injections on %d deflectors (%s)", len(plan), summary["deflectors_used"], counts)
    return summary


def _example_mosaic(out_dir: Path, cfg: InjectionConfig):
    """injections.png: a spread of injections over the grid, smallest theta_E first."""
    from .display import save_mosaic
    from .shards import ShardSet

    shards = ShardSet(out_dir / "manifest.json")
    index = shards.index
    n = min(cfg.mosaic, len(index))
    images = labels = None
    if n:
        spread = np.linspace(0, len(index) - 1, n).round().astype(int)
        rows = index.iloc[spread].sort_values(["THETA_E", "SOURCE_MAG_G"])
        images = np.stack([np.asarray(shards[i], dtype=np.float32) for i in rows.index])
        labels = [f"#{r.INJECTION_ID} tE={r.THETA_E:.2f}\" g={r.SOURCE_MAG_G:.1f}\nmu={r.MAGNIFICATION:.1f} "
                  f"S/N={r.ARC_SNR:.0f}" for r in rows.itertuples()]
    with atomic_path(out_dir / "injections.png") as tmp:
        if images is None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no injection (no deflector passed the cuts)", ha="center", va="center")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
        else:
            save_mosaic(images, tmp, labels)


def training_injections(table: pd.DataFrame, object_paths, manifests, n: int,
                        injection: dict | InjectionConfig | None, catalog_specs=(), truth_path=None, seed_offset=0):
    """Injected positives for the training split (``trainset.injections``).

    ``table``: the training set's rows so far (both splits). Deflectors pass the deflector
    cuts, are none of ``table``'s objects, and no validation row lies inside their cutout.
    Each deflector carries one injection drawn from the priors (own random stream), so the
    rows keep the deflector's key, unique in the labels, and the evaluation's never-seen
    objects leave these deflectors out. Returns (rows: a frame with the table's columns
    plus SOURCE='injection', INJECTION_ID and the parameters; {key: fp16 image}).
    Fewer deflectors than ``n`` is a warning, never a silent shortfall.
    """
    cfg = injection if isinstance(injection, InjectionConfig) else InjectionConfig.from_dict(injection)
    val = table[table["SPLIT"] == "val"]
    found = find_deflectors(object_paths, manifests, cfg.deflectors, catalog_specs, truth_path,
                            zip(*(table[k].astype(np.int64) for k in KEY)), (val["RA"].to_numpy(), val["DEC"].to_numpy()),
                            "cutout_holds_validation_object")
    deflectors, counts, pixscale = found.table, found.counts, found.pixscale
    rng = np.random.default_rng([cfg.seed, STREAM_TRAINING, seed_offset])
    take = rng.permutation(len(deflectors))[:n]
    if len(take) < n:
        log.warning("trainset.injections: %d asked for, %d deflectors available (%s)", n, len(take), counts)
    rows, images = [], {}
    cutouts = found.cutouts(take)
    for inj_id, d in enumerate(take):
        deflector = deflectors.iloc[int(d)]
        stream = np.random.default_rng([cfg.seed, STREAM_TRAINING, seed_offset, inj_id])
        params = draw_params(stream, cfg)
        key = tuple(int(deflector[k]) for k in KEY)
        image, info = inject(cutouts[int(d)].astype(np.float32), deflector, params, cfg, stream, pixscale)
        images[key] = image.astype(np.float16)
        rows.append({**{c: deflector[c] for c in deflector.index}, **{k: key[i] for i, k in enumerate(KEY)},
                     "KEY": key, "INJECTION_ID": inj_id, "SOURCE": "injection", **params.columns(), **info})
    frame = pd.DataFrame(rows)
    frame.attrs["deflector_cuts"] = counts
    return frame, images


def add_training_injections(table: pd.DataFrame, images: dict, object_paths, objects, cfg,
                            catalog_specs=(), out_dir=None) -> pd.DataFrame:
    """``build_trainset``'s hook: label every row's SOURCE (catalogue, random) and, with
    ``cfg.injections`` > 0 (a TrainsetConfig), append that many injected positives
    (SOURCE=injection, SPLIT=train, LABEL=1, INJECTION_ID >= 0) whose images go into
    ``images`` (key -> cutout); their parameters go to ``out_dir/injections.parquet``.
    ``objects``: the run's ``ObjectPool`` (its shard sets; deflectors are found sweep by sweep)."""
    table = table.copy()
    table["SOURCE"] = np.where(table["LABEL"].to_numpy() == 1, "catalogue", "random")
    table["INJECTION_ID"] = -1
    n = int(getattr(cfg, "injections", 0) or 0)
    if n <= 0:
        return table
    from .object_pool import stratum_of

    rows, injected = training_injections(table, object_paths, objects.manifests, n, getattr(cfg, "injection", None),
                                         catalog_specs, getattr(cfg, "truth", None))
    if rows.empty:
        log.warning("trainset.injections: no deflector available, no injected positive added")
        return table
    images.update(injected)
    rows = rows.assign(STRATUM=stratum_of(rows), LABEL=1, SPLIT="train", SOURCE_CATALOG="injection",
                       SYSTEM_NAME=[f"injection {i}" for i in rows["INJECTION_ID"]], SCORE_PREVIOUS=np.nan)
    if out_dir is not None:
        with atomic_path(Path(out_dir) / "injections.parquet") as tmp:
            rows.drop(columns=["KEY"]).to_parquet(tmp, index=False)
    return pd.concat([table, rows[[c for c in table.columns if c in rows.columns]]], ignore_index=True)
