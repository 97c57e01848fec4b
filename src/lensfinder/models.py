"""The networks: the L18 CMU DeepLens ResNet, its shielded variant, EfficientNetV2 (timm).

Every model is a ``LensNet``: the input transform (nanomaggies -> network input, fixed per
model and saved in its checkpoint) followed by a backbone that returns one logit per
image. Input: (B, 3, H, W) float nanomaggies, bands g, r, z (any orientation; training
augments with the 8 flips/rotations of the square).

A registry maps config names to constructors; variants (widths, shields, crop) are
config, not code.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from .errors import LensfinderError

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- input
@dataclass
class InputTransform:
    """Nanomaggies -> network input: optional centre crop, then asinh(x / scale_b) / 3.

    ``scale`` [nanomaggies] per band g, r, z sets where the stretch turns from linear
    (faint arcs near the sky noise) to logarithmic (bright galaxy cores).
    """

    scale: list = field(default_factory=lambda: [0.02, 0.03, 0.06])
    crop: int | None = None  # centre crop in pixels (None: full cutout)

    def module(self) -> nn.Module:
        return _InputModule(self.scale, self.crop)


class _InputModule(nn.Module):
    def __init__(self, scale, crop):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1))
        self.crop = crop

    def forward(self, x):
        if self.crop:
            h, w = x.shape[-2:]
            top, left = (h - self.crop) // 2, (w - self.crop) // 2
            x = x[..., top : top + self.crop, left : left + self.crop]
        return torch.asinh(x.float() / self.scale) / 3.0


class LensNet(nn.Module):
    """Input transform + backbone: nanomaggies in, one logit per image out."""

    def __init__(self, backbone: nn.Module, transform: InputTransform):
        super().__init__()
        self.transform = transform.module()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(self.transform(x)).reshape(-1)


# ----------------------------------------------------------------------------- BN
class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose batch statistics span all data-parallel ranks (on CPU too).

    torch's SyncBatchNorm needs GPUs; this all-reduces the per-channel sums with autograd,
    so that N ranks of batch B/N train exactly like one rank of batch B.
    """

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        n_local = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), n_local])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1))
            self.num_batches_tracked += 1
        y = (x - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def bn(channels):
    """BatchNorm as in Lasagne: eps 1e-4, momentum 0.1."""
    return DistBatchNorm2d(channels, eps=1e-4, momentum=0.1)


# ----------------------------------------------------------------------------- L18
class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck block of CMU DeepLens (Lanusse et al. 2018)."""

    def __init__(self, in_ch, width, out_ch, stride=1, preactivated=False):
        super().__init__()
        self.pre = None if preactivated else nn.Sequential(bn(in_ch), nn.ELU())
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), bn(width), nn.ELU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), bn(width), nn.ELU(),
            nn.Conv2d(width, out_ch, 1, bias=True),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=True) if (stride > 1 or in_ch != out_ch) else None

    def forward(self, x):
        x_pre = x if self.pre is None else self.pre(x)
        short = x if self.shortcut is None else self.shortcut(x_pre)
        return self.residual(x_pre) + short


class DeepLensResNet(nn.Module):
    """L18: 7x7 stem, stages of pre-activation bottlenecks, global average pool, dense.

    ``stages``: [(bottleneck width, output channels), ...]; each stage has ``blocks``
    blocks, the first with stride 2 except in stage 0. ``shields``: optional 1x1
    convolutions after each stage (paper II), output widths per stage (None = no shield).
    """

    def __init__(self, in_ch=3, stem=32, stages=((16, 32), (32, 64), (64, 128), (128, 256), (256, 512)), blocks=3,
                 shields=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 7, padding=3, bias=False), bn(stem), nn.ELU())
        layers = []
        ch = stem
        shields = list(shields) if shields else [None] * len(stages)
        if len(shields) != len(stages):
            raise LensfinderError(f"shields {shields} must give one width (or null) per stage ({len(stages)})")
        for i, ((width, out), shield) in enumerate(zip(stages, shields)):
            for b in range(blocks):
                first = b == 0
                layers.append(PreActBottleneck(ch, width, out, stride=2 if (first and i > 0) else 1,
                                               preactivated=(first and i == 0)))
                ch = out
            if shield:
                layers.append(nn.Conv2d(ch, shield, 1, bias=True))
                ch = shield
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_normal_(self.stem[0].weight)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- timm
def efficientnet(variant="tf_efficientnetv2_s", pretrained=None, drop_rate=0.2):
    """EfficientNetV2 from timm with 3 input channels and one logit.

    ``pretrained``: None (from scratch), "hub" (timm's weights; needs network access) or
    the path of a local weights file (a timm state dict; the classifier is re-initialised).
    When the weights cannot be had, training goes on from scratch and the log says so.
    """
    import timm

    if pretrained == "hub":
        try:
            return timm.create_model(variant, pretrained=True, in_chans=3, num_classes=1, drop_rate=drop_rate)
        except Exception as err:  # noqa: BLE001 - offline machines: say so, go on from scratch
            log.warning("pre-trained %s weights could not be downloaded (%s): training from scratch", variant, err)
    model = timm.create_model(variant, pretrained=False, in_chans=3, num_classes=1, drop_rate=drop_rate)
    if pretrained and pretrained != "hub":
        from pathlib import Path

        path = Path(pretrained)
        if not path.exists():
            raise LensfinderError(f"pre-trained weights file {path} does not exist: fix the model's 'pretrained' setting")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        head = model.get_classifier()
        head_keys = {f"classifier.{k}" for k in head.state_dict()} if head is not None else set()
        state = {k: v for k, v in state.items() if k not in head_keys and not k.startswith("classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        loaded = len(state) - len(unexpected)
        if loaded == 0:
            raise LensfinderError(f"pre-trained weights file {path} holds no weight of {variant}")
        log.info("loaded %d pre-trained tensors from %s (%d left at init: %s)", loaded, path, len(missing),
                 ", ".join(sorted(missing)[:4]))
    return model


# ----------------------------------------------------------------------------- registry
ARCHITECTURES = {
    "deeplens_resnet": lambda p: DeepLensResNet(**p),
    "efficientnet": lambda p: efficientnet(**p),
}

# Named configurations: the papers' networks, and small variants for the mock on a CPU.
PRESETS = {
    "l18": {"arch": "deeplens_resnet", "params": {}},
    # Paper IV's shielded ResNet has 194,433 trainable parameters; its layout is unpublished.
    # L18 with bottlenecks capped at 32 and a 32-channel shield after the last stage (paper
    # II's best final shield) has 194,369 (0.03% off). Shields after any stage: `shields`.
    "l18_shielded": {"arch": "deeplens_resnet",
                     "params": {"stages": [[16, 32], [32, 64], [32, 64], [32, 64], [32, 64]],
                                "shields": [None, None, None, None, 32]}},
    "efficientnetv2_s": {"arch": "efficientnet", "params": {"variant": "tf_efficientnetv2_s"}},
    "resnet_mini": {"arch": "deeplens_resnet",
                    "params": {"stem": 16, "stages": [[8, 16], [16, 32], [32, 64]], "blocks": 2},
                    "input": {"crop": 64}},
    "efficientnet_mini": {"arch": "efficientnet", "params": {"variant": "tf_efficientnetv2_b0", "drop_rate": 0.1},
                          "input": {"crop": 64}},
}


@dataclass
class ModelSpec:
    """What a checkpoint needs to rebuild a model: architecture, its parameters, input transform."""

    arch: str
    params: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelSpec":
        """From a config entry: ``preset`` (a PRESETS name) and/or explicit arch/params/input."""
        cfg = dict(cfg)
        base = {}
        if "preset" in cfg:
            name = cfg.pop("preset")
            if name not in PRESETS:
                raise LensfinderError(f"model preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
            base = {k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS[name].items()}
        for key in ("params", "input"):
            merged = dict(base.get(key, {}))
            merged.update(cfg.pop(key, {}) or {})
            base[key] = merged
        if "arch" in cfg:
            base["arch"] = cfg.pop("arch")
        if cfg:
            raise LensfinderError(f"model config keys {sorted(cfg)} are unknown (use preset, arch, params, input)")
        if base.get("arch") not in ARCHITECTURES:
            raise LensfinderError(f"model architecture {base.get('arch')!r} is unknown; choose one of {sorted(ARCHITECTURES)}")
        return cls(**base)

    def build(self) -> LensNet:
        return LensNet(ARCHITECTURES[self.arch](dict(self.params)), InputTransform(**self.input))

    def to_dict(self):
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
