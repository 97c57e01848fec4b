"""The networks: the L18 CMU DeepLens ResNet, its shielded variant, EfficientNetV2 (timm).

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

import functools
import logging
from contextlib import contextmanager
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


# ----------------------------------------------------------------------------- data parallel
# N data-parallel ranks of batch B/N must train exactly like one process of batch B. Two
# things would break that: batch statistics computed per rank (DistBatchNorm2d spans them),
# and random masks drawn per rank (BatchDropout and BatchDropPath draw them for the global
# batch). ``ModelSpec.build`` converts every model's layers to these (``for_data_parallel``).


def _ranks() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _batch_norm_over_ranks(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Training-mode batch norm of ``x`` with statistics over the whole global batch.

    torch's SyncBatchNorm needs GPUs; this all-reduces per-channel sums with autograd (so
    gradients flow through the global statistics), on gloo (CPU) as on NCCL. Counts and
    sums are float32 whatever ``x`` is (bf16 under autocast holds integers exactly only up
    to 256); they are taken about the running mean (the same on every rank) so that
    E[x^2] - E[x]^2 does not cancel when |mean| >> std. Returns ``x.dtype``, as BatchNorm2d.
    """
    # the differentiable all-reduce (torch.distributed.nn.functional's is deprecated)
    from torch.distributed._functional_collectives import all_reduce

    c = x.shape[1]
    shift = (bn.running_mean.detach().clone() if bn.running_mean is not None  # a copy: updated below
             else torch.zeros(c, device=x.device)).float().view(1, c, 1, 1)
    xs = x.float() - shift
    count = torch.full((1,), x.numel() / c, dtype=torch.float32, device=x.device)
    local = torch.cat([xs.sum(dim=(0, 2, 3)), (xs * xs).sum(dim=(0, 2, 3)), count])
    stats = all_reduce(local, "sum", dist.group.WORLD)
    n = stats[-1]
    mean_s = stats[:c] / n  # mean - shift
    var = (stats[c : 2 * c] / n - mean_s * mean_s).clamp(min=0)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked += 1
            f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - f).add_(f * (mean_s + shift.view(c)))
            bn.running_var.mul_(1 - f).add_(f * var * n / (n - 1))
    y = (xs - mean_s.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + bn.eps)
    if bn.affine:
        y = y * bn.weight.view(1, c, 1, 1) + bn.bias.view(1, c, 1, 1)
    return y.to(x.dtype)


class DistBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics span all data-parallel ranks (on CPU too), so
    that N ranks of batch B/N train exactly like one process of batch B."""

    spans_ranks = True

    def forward(self, x):
        if self.training and _ranks() > 1:
            return _batch_norm_over_ranks(self, x)
        return super().forward(x)


@functools.cache
def _dist_batchnorm_act2d():
    """timm's BatchNormAct2d (batch norm, dropout, activation in one module: EfficientNet)
    with DistBatchNorm2d's statistics. Built on first use: importing timm takes seconds."""
    from timm.layers import BatchNormAct2d

    class DistBatchNormAct2d(BatchNormAct2d):
        spans_ranks = True

        def forward(self, x):
            if self.training and _ranks() > 1:
                return self.act(self.drop(_batch_norm_over_ranks(self, x)))
            return super().forward(x)

    return DistBatchNormAct2d


# Random masks: while the trainer runs a training step it sets where this rank's images
# lie in the global batch and the generator of that step; every dropout layer then draws
# the mask of the whole global batch and keeps its rows. Each image gets its own mask,
# independent of the others, and the masks do not depend on how the batch is split.
_STEP_MASKS = None  # (generator, rows of this rank, global batch size) during a step


@contextmanager
def global_batch_masks(generator: torch.Generator, rows: slice, batch_size: int):
    """Within this block, BatchDropout / BatchDropPath masks come from ``generator``, drawn
    for ``batch_size`` images of which this process holds ``rows``."""
    global _STEP_MASKS
    previous, _STEP_MASKS = _STEP_MASKS, (generator, rows, batch_size)
    try:
        yield
    finally:
        _STEP_MASKS = previous


def _keep_mask(shape, keep: float, device) -> torch.Tensor:
    """1.0 where kept (probability ``keep``), 0.0 where dropped, for a batch of ``shape``."""
    if _STEP_MASKS is None:  # outside the trainer's steps: torch's generator, per process
        return torch.empty(shape, device=device).bernoulli_(keep)
    generator, rows, batch_size = _STEP_MASKS
    if rows.stop - rows.start != shape[0]:
        raise LensfinderError(f"a dropout layer saw {shape[0]} images where this rank holds "
                              f"{rows.stop - rows.start} of the global batch")
    full = torch.rand((batch_size, *shape[1:]), generator=generator) < keep
    return full[rows].to(device=device, dtype=torch.float32)


class BatchDropout(nn.Module):
    """Element-wise dropout (rate ``p``, survivors scaled by 1 / (1 - p)); masks per global batch."""

    def __init__(self, p: float):
        super().__init__()
        if not 0 <= p < 1:
            raise LensfinderError(f"dropout rate {p} must be in [0, 1)")
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * (_keep_mask(x.shape, 1 - self.p, x.device) / (1 - self.p)).to(x.dtype)

    def extra_repr(self):
        return f"p={self.p}"


class BatchDropPath(nn.Module):
    """Stochastic depth (timm's DropPath): a whole residual branch dropped per image."""

    def __init__(self, p: float, scale_by_keep: bool = True):
        super().__init__()
        if not 0 <= p < 1:
            raise LensfinderError(f"drop-path rate {p} must be in [0, 1)")
        self.p, self.scale_by_keep = p, scale_by_keep

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = _keep_mask((x.shape[0],) + (1,) * (x.ndim - 1), 1 - self.p, x.device)
        if self.scale_by_keep:
            keep = keep / (1 - self.p)
        return x * keep.to(x.dtype)

    def extra_repr(self):
        return f"p={self.p}"


def for_data_parallel(model: nn.Module) -> nn.Module:
    """Convert, in place, every batch norm to one spanning the ranks and every dropout to
    one drawing per global batch; parameters, buffers and state-dict keys are unchanged.

    Batch norms change class only (the subclasses add a forward, no state), which keeps
    timm's fused activation. A normalisation or dropout layer of another kind is an error,
    so no model silently trains differently on N ranks.
    """
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = DistBatchNorm2d
        elif type(module).__name__ == "BatchNormAct2d" and type(module).__module__.startswith("timm."):
            module.__class__ = _dist_batchnorm_act2d()
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, BatchDropout(child.p))
            elif type(child).__name__ == "DropPath" and type(child).__module__.startswith("timm."):
                setattr(module, name, BatchDropPath(child.drop_prob, child.scale_by_keep))
    for name, module in model.named_modules():
        if getattr(type(module), "spans_ranks", False):
            continue
        if (isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))
                or type(module).__name__ in ("DropPath", "DropBlock2d")):
            raise LensfinderError(f"layer {name} ({type(module).__name__}) would differ between data-parallel "
                                  "ranks: lensfinder.models.for_data_parallel does not convert it")
    return model


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
def efficientnet(variant="tf_efficientnetv2_s", pretrained=None, drop_rate=0.2, drop_path_rate=0.0):
    """EfficientNetV2 from timm with 3 input channels and one logit.

    ``pretrained``: None (from scratch), "hub" (timm's weights; needs network access) or
    the path of a local weights file (a timm state dict; the classifier is re-initialised).
    When the weights cannot be had, training goes on from scratch and the log says so.
    ``drop_rate``: dropout before the classifier; ``drop_path_rate``: stochastic depth.
    """
    import timm

    kwargs = dict(in_chans=3, num_classes=1, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    model = None
    if pretrained == "hub":
        try:
            model = timm.create_model(variant, pretrained=True, **kwargs)
        except Exception as err:  # noqa: BLE001 - offline machines: say so, go on from scratch
            log.warning("pre-trained %s weights could not be downloaded (%s): training from scratch", variant, err)
    if model is None:
        model = timm.create_model(variant, pretrained=False, **kwargs)
    if pretrained and pretrained != "hub":
        _load_local_weights(model, pretrained, variant)
    _init_one_logit_head(model.get_classifier())
    return _head_dropout_as_module(model)


def _init_one_logit_head(head: nn.Linear):
    """Glorot-uniform weights and zero bias, as paper IV's Keras Dense head. timm draws
    U(-1/sqrt(n_out), +1/sqrt(n_out)): with one output that is U(-1, 1), logits of ~+-20 at
    the start, saturated and chaotic training (the rounding of one step grows ~2x per step)."""
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)


def _load_local_weights(model, path, variant):
    from pathlib import Path

    path = Path(path)
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


def _head_dropout_as_module(model):
    """timm's EfficientNet drops out before its classifier with F.dropout (torch's generator,
    per process); do the same with a BatchDropout right after the pooling, so the masks are
    drawn per global batch. The pooling holds no state: state-dict keys are unchanged."""
    p, model.drop_rate = model.drop_rate, 0.0
    if p > 0:
        model.global_pool = nn.Sequential(model.global_pool, BatchDropout(p))
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
        """The model, its layers ready for exact data-parallel training (``for_data_parallel``)."""
        return for_data_parallel(LensNet(ARCHITECTURES[self.arch](dict(self.params)), InputTransform(**self.input)))

    def to_dict(self):
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
