"""Layers every network shares: the input transform, and the batch norms and dropouts that make
N data-parallel ranks train exactly like one process.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from lensfinder.errors import LensfinderError


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
                                  "ranks: lensfinder.nets.layers.for_data_parallel does not convert it")
    return model


def bn(channels):
    """BatchNorm as in Lasagne: eps 1e-4, momentum 0.1."""
    return DistBatchNorm2d(channels, eps=1e-4, momentum=0.1)
