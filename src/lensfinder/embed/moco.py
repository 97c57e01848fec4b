"""MoCo v2 (He et al. 2020; Chen et al. 2020), as S22 pretrains its encoder.

* query network: encoder + MLP projection head (representation -> ``hidden`` -> ReLU ->
  ``dim``), trained by SGD;
* key network: a copy updated as an exponential moving average of the query network
  (``momentum``, 0.996 in S22's runs), never by gradients;
* a queue of the last ``queue`` keys (all ranks' keys, gathered) serves as negatives;
* InfoNCE: cross-entropy of the positive (the key of the other view of the same image)
  against the queue, on cosine similarities divided by ``temperature`` (0.2).

Shuffle BN. Batch statistics would let the network match a query to its key by the batch
they share, so every batch norm normalises ``bn_splits`` groups of each rank's batch
separately (``SplitBatchNorm``, as in MoCo's single-GPU demo), and the key network sees the
batch in a random order: a key is never normalised with the same images as its query.
This is MoCo's per-GPU shuffle done inside one process; with several ranks every rank does
it on its own slice. Each network runs once per step (DDP's one forward per backward).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lensfinder.errors import LensfinderError
from lensfinder.settings import Settings


@dataclass
class MoCoConfig(Settings):
    section: ClassVar[str] = "embed.pretrain.moco"

    dim: int = 128  # projection output
    hidden: int | None = None  # projection hidden units (None: the representation's size)
    queue: int = 65536  # negatives kept (S22: 262,144 for 3.5M images)
    momentum: float = 0.996  # key network EMA
    temperature: float = 0.2
    bn_splits: int = 2  # shuffle-BN groups per rank (1: no shuffle)


    def to_dict(self):
        return asdict(self)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float):
    """InfoNCE loss and logits. ``q``, ``k``: (B, D) unit vectors (row i of each is the same
    image); ``queue``: (K, D) unit vectors (negatives). The positive is column 0."""
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.t()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy(logits.float(), labels), logits


class SplitBatchNorm(nn.BatchNorm2d):
    """Training-mode batch norm over ``num_splits`` groups of the batch (images i with
    i % num_splits = j form group j), each with its own statistics; the running statistics
    are their mean. Evaluation mode is torch's BatchNorm2d; the state is the same."""

    num_splits = 1

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.num_splits
        if not self.training or s == 1:
            return super().forward(x)
        if n % s:
            raise LensfinderError(f"a batch of {n} images cannot be split into {s} batch-norm groups: make the "
                                  "per-rank batch a multiple of moco.bn_splits")
        mean, var = self.running_mean.repeat(s), self.running_var.repeat(s)
        y = F.batch_norm(x.reshape(n // s, c * s, h, w), mean, var, self.weight.repeat(s), self.bias.repeat(s),
                         True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked += 1
        return y.reshape(n, c, h, w)


def split_batch_norm(module: nn.Module, splits: int) -> nn.Module:
    """Every BatchNorm2d of ``module`` normalises ``splits`` groups of the batch apart."""
    for m in module.modules():
        if type(m) in (nn.BatchNorm2d, SplitBatchNorm):
            m.__class__ = SplitBatchNorm
            m.num_splits = int(splits)
    return module


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def gather_all(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` from every rank, rank order (no gradient)."""
    if _world() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class MoCo(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: MoCoConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        rep = encoder.dim
        hidden = cfg.hidden or rep
        head = nn.Sequential(nn.Linear(rep, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, cfg.dim))
        self.query = split_batch_norm(nn.Sequential(encoder, head), cfg.bn_splits)
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad = False
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue, cfg.dim, generator=gen), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def encoder(self) -> nn.Module:
        """The query encoder: the representation network that pretraining delivers."""
        return self.query[0]

    @torch.no_grad()
    def momentum_update(self):
        m = self.cfg.momentum
        for pq, pk in zip(self.query.parameters(), self.key.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)

    def forward(self, views_q, views_k, gen: torch.Generator | None = None, query_net=None):
        """(loss, logits, keys) for two batches of views of the same images (row i of each).

        ``gen`` draws the order in which the key network sees the batch (None: unshuffled);
        ``query_net`` is the query network as the trainer calls it (its DDP wrapper), by
        default ``self.query``.
        """
        q = F.normalize((query_net or self.query)(views_q).float(), dim=1)
        with torch.no_grad():
            if gen is None:
                k = self.key(views_k)
            else:
                order = torch.randperm(len(views_k), generator=gen, device=gen.device).to(views_k.device)
                k = self.key(views_k[order])[torch.argsort(order)]
            k = F.normalize(k.float(), dim=1)
        loss, logits = info_nce(q, k, self.queue.clone().detach(), self.cfg.temperature)
        return loss, logits, k

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor):
        """Replace the oldest entries of the queue by every rank's keys."""
        keys = gather_all(keys)
        n, size = len(keys), len(self.queue)
        if n > size:
            keys, n = keys[-size:], size
        ptr = int(self.queue_ptr)
        idx = (ptr + torch.arange(n, device=self.queue.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % size


def top1_accuracy(logits: torch.Tensor) -> float:
    """Fraction of queries whose positive scores above every negative (a progress gauge)."""
    return float((logits.argmax(dim=1) == 0).float().mean())
