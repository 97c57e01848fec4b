"""The registry of networks: the L18 CMU DeepLens ResNet, its shielded variant, EfficientNetV2
(timm), by preset or architecture name.

Every model is a ``LensNet``: the input transform (nanomaggies -> network input, fixed per
model and saved in its checkpoint) followed by a backbone that returns one logit per
image. Input: (B, 3, H, W) float nanomaggies, bands g, r, z (any orientation; training
augments with the 8 flips/rotations of the square).

A registry maps config names to constructors; variants (widths, shields, crop) are
config, not code. Every built model's batch norms span the data-parallel ranks and its
dropout masks are drawn per global batch (``for_data_parallel``), so N ranks train like
one process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from lensfinder.errors import LensfinderError
from lensfinder.nets.deeplens import DeepLensResNet
from lensfinder.nets.efficientnet import efficientnet
from lensfinder.nets.layers import InputTransform, for_data_parallel
from lensfinder.settings import check_keys


class LensNet(nn.Module):
    """Input transform + backbone: nanomaggies in, one logit per image out."""

    def __init__(self, backbone: nn.Module, transform: InputTransform):
        super().__init__()
        self.transform = transform.module()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone(self.transform(x)).reshape(-1)


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
        cfg = check_keys(cfg, ("preset", "arch", "params", "input"), "model config")
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
        if base.get("arch") not in ARCHITECTURES:
            raise LensfinderError(f"model architecture {base.get('arch')!r} is unknown; choose one of {sorted(ARCHITECTURES)}")
        return cls(**base)

    def build(self) -> LensNet:
        """The model, its layers ready for exact data-parallel training (``for_data_parallel``)."""
        return for_data_parallel(LensNet(ARCHITECTURES[self.arch](dict(self.params)), InputTransform(**self.input)))

    def to_dict(self):
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
