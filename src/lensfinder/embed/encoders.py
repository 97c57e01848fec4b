"""Encoders: a (B, 3, H, W) nanomaggy cutout batch (bands g, r, z) -> (B, D) representations.

Every encoder is ``lensfinder.nets.layers.InputTransform`` (centre crop, then asinh(x / scale_b) / 3)
followed by a backbone whose pooled features are the representation, as in S22 (the
2048-d output of a ResNet-50's global pooling). The crop is the pretraining crop: during
pretraining the augmentations already cut views of that size (so the crop does nothing),
and at embedding time the same module takes the centre of a full cutout.

Architectures:

* ``resnet``: timm's ResNet, random initialisation, classifier removed. ``depth: 50`` (the
  GPU preset) is the standard ResNet-50 of S22 (bottleneck blocks [3, 4, 6, 3], 2048-d);
  otherwise ``block`` (basic | bottleneck), ``layers``, ``channels`` and ``stem_width`` give
  any member of the family: the CPU preset is a quarter-width ResNet-10 (basic blocks
  [1, 1, 1, 1], channels 16-128: 128-d, 0.3M parameters);
* ``deeplens``: the L18 DeepLens ResNet of ``lensfinder.nets`` without its head (its
  representation is the last stage's channels; full resolution until the second stage,
  so several times the cost of ``resnet`` per image).

MoCo normalises each rank's batch on its own (its shuffle BN), so batch norms are torch's
``BatchNorm2d`` (``moco.SplitBatchNorm`` while pretraining), not the rank-spanning
``DistBatchNorm2d`` the supervised models use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from lensfinder.errors import LensfinderError
from lensfinder.nets.deeplens import DeepLensResNet
from lensfinder.nets.layers import DistBatchNorm2d, InputTransform
from lensfinder.settings import check_keys


class Encoder(nn.Module):
    """Input transform + backbone: nanomaggies in, one representation vector per image out."""

    def __init__(self, backbone: nn.Module, dim: int, transform: InputTransform):
        super().__init__()
        self.transform = transform.module()
        self.backbone = backbone
        self.dim = dim

    def forward(self, x):
        return self.backbone(self.transform(x)).flatten(1)


def _resnet(depth: int | None = None, block: str = "basic", layers=(1, 1, 1, 1), channels=(16, 32, 64, 128),
            stem_width: int = 16):
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet

    if depth is not None:  # the standard members
        standard = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
        if depth not in standard:
            raise LensfinderError(f"encoder resnet depth {depth} is not one of {sorted(standard)}")
        (block, layers), channels, stem_width = standard[depth], (64, 128, 256, 512), 64
    blocks = {"basic": BasicBlock, "bottleneck": Bottleneck}
    if block not in blocks:
        raise LensfinderError(f"encoder resnet block {block!r} must be basic or bottleneck")
    net = ResNet(blocks[block], list(layers), num_classes=0, channels=tuple(channels), stem_width=stem_width)
    return net, net.num_features


def _deeplens(stem: int = 16, stages=((16, 32), (32, 64), (64, 128)), blocks: int = 1):
    net = DeepLensResNet(stem=stem, stages=[tuple(s) for s in stages], blocks=blocks)
    dim = net.head.in_features
    net.head = nn.Identity()  # its forward pools, then applies the head: the pooled features
    return net, dim


ARCHITECTURES = {"resnet": _resnet, "deeplens": _deeplens}


def local_batch_norm(module: nn.Module) -> nn.Module:
    """Every rank-spanning batch norm becomes torch's per-process BatchNorm2d (same state)."""
    for m in module.modules():
        if type(m) is DistBatchNorm2d:
            m.__class__ = nn.BatchNorm2d
    return module


@dataclass
class EncoderSpec:
    """What a checkpoint needs to rebuild an encoder: architecture, parameters, input transform."""

    arch: str
    params: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise LensfinderError(f"encoder architecture {self.arch!r} is unknown; choose one of {sorted(ARCHITECTURES)}")
        check_keys(self.input, ("scale", "crop"), "the encoder's input settings")

    def build(self) -> Encoder:
        backbone, dim = ARCHITECTURES[self.arch](**dict(self.params))
        return Encoder(local_batch_norm(backbone), dim, InputTransform(**self.input))

    def to_dict(self):
        return asdict(self)


