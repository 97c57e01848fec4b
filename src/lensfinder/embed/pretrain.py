"""Self-supervised pretraining of an encoder with MoCo v2 on the cutout shards (paper S22).

Launched by ``python -m lensfinder.embed.launch`` (rule ``pretrain``): one process on a CPU
or one GPU, ``torchrun`` with one rank per GPU otherwise (``lensfinder.nets.launch``).

* **Sample**: S22 trained on 3.5M of 42M images drawn *uniformly in z magnitude*, so that the
  numerous faint galaxies do not dominate. Here ``sample_size`` objects are drawn from the
  shards (optionally of some ``regions`` only: S22 used the south), by water-filling
  ``mag_bin_width`` bins of MAG_Z: every bin gives the same number of objects, and a bin
  with fewer gives all it has (S22's figure 15: flat where the survey is rich, the survey's
  own shape at the bright end). ``sample.parquet`` lists them, ``sample.png`` shows the two
  distributions.
* **Views**: two independent draws of S22's augmentations (``augment``) per image per step,
  each object's Galactic transmission taken from its sweep row (MW_TRANSMISSION_G/R/Z).
* **MoCo v2** (``moco``) with SGD (momentum 0.9, weight decay), a cosine learning rate per
  step, bf16 autocast and channels_last on GPUs.
* **Data parallel**: each step takes one global batch of a permutation fixed by (seed,
  epoch); each rank augments and encodes its slice (its own random stream), the queue takes
  every rank's keys. Gradients are averaged by DDP.
* **Checkpoints**, written atomically: ``encoder.pt`` (the query encoder, its spec and input
  transform, the augmentation and MoCo settings, the sample's fingerprint, the history),
  ``metrics.csv`` and ``curves.png``; ``resume.pt`` after every epoch (removed at the end).
* **Pre-emption** as the ``train`` rule: SIGTERM or SIGUSR1 saves ``resume.pt`` at the next
  step and exits with status 75; the same command resumes and ends with the same weights
  as an uninterrupted run (same device; every random stream is seeded per step).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardCollection
from lensfinder.embed.augment import AugmentConfig, S22Augment
from lensfinder.embed.encoders import EncoderSpec
from lensfinder.embed.moco import MoCo, MoCoConfig, top1_accuracy
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.nets.checkpoint import restore
from lensfinder.nets.registry import count_parameters
from lensfinder.nets.runtime import RankedJob, job_parser, run_job, stream_seed
from lensfinder.plots import pyplot, save_figure
from lensfinder.settings import Settings, check_keys
from lensfinder.tables import read_keyed

log = logging.getLogger("lensfinder.embed.pretrain")


TRANSMISSION = ("MW_TRANSMISSION_G", "MW_TRANSMISSION_R", "MW_TRANSMISSION_Z")
CHECKPOINT_FORMAT = "lensfinder-encoder-1"
# Presets: S22's ResNet-50 for GPUs, and a small encoder that pretrains in about a minute on
# two CPU cores (the mock's default run). Any key can be overridden in the config.
PRESETS = {
    "resnet50": {
        "encoder": {"arch": "resnet", "params": {"depth": 50}},  # 2048-d, as S22
        "augment": {"crop": 96, "jitter": 7},  # S22: 96-px views of 152-px cutouts
        "moco": {"dim": 128, "queue": 65536, "momentum": 0.996, "temperature": 0.2, "bn_splits": 2},
        "epochs": 100, "batch_size": 256, "lr": 0.03,
    },
    "cpu_small": {
        "encoder": {"arch": "resnet", "params": {"block": "basic", "layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128],
                                                 "stem_width": 16}},
        "augment": {"crop": 48, "jitter": 7},  # 48 + 2 x 7 px, rotated, stays inside a 101-px cutout
        "moco": {"dim": 64, "queue": 1024, "momentum": 0.99, "temperature": 0.2, "bn_splits": 2},
        "epochs": 5, "batch_size": 128, "lr": 0.03,  # ~35 s of one core on the mock's 2,000 drawn images
    },
}


@dataclass
class PretrainConfig(Settings):
    section: ClassVar[str] = "embed.pretrain"

    preset: str = "cpu_small"
    encoder: dict = field(default_factory=dict)  # EncoderSpec fields (arch, params, input)
    augment: dict = field(default_factory=dict)  # AugmentConfig fields
    moco: dict = field(default_factory=dict)  # MoCoConfig fields
    epochs: int = 5
    batch_size: int = 128  # global, split over the ranks
    lr: float = 0.03  # SGD, cosine to 0 over the run
    momentum: float = 0.9
    weight_decay: float = 1e-4
    sample_size: int | None = None  # objects drawn uniformly in MAG_Z (None: every object)
    mag_bin_width: float = 0.25
    regions: list | None = None  # REGION labels to draw from (None: all; S22: [DECaLS])
    seed: int = 0
    bf16: bool = True  # autocast on GPUs
    channels_last: bool = True  # on GPUs
    num_threads: int | None = None
    deterministic: bool = True

    @classmethod
    def resolve(cls, d) -> "PretrainConfig":
        """The preset's settings, overridden key by key by ``d`` (encoder/augment/moco merged)."""
        d = cls.check_keys(d)
        name = d.get("preset", cls.preset)
        if name not in PRESETS:
            raise LensfinderError(f"pretraining preset {name!r} is unknown; choose one of {sorted(PRESETS)}")
        merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[name].items()}
        for key, value in d.items():
            if key in ("encoder", "augment", "moco") and isinstance(value, dict):
                base = dict(merged.get(key, {}))
                for sub, v in value.items():
                    base[sub] = {**base.get(sub, {}), **v} if sub in ("params", "input") and isinstance(v, dict) else v
                merged[key] = base
            else:
                merged[key] = value
        merged["preset"] = name
        cfg = cls(**merged)
        cfg.augment_config()
        cfg.moco_config()
        return cfg

    @classmethod
    def from_dict(cls, d=None) -> "PretrainConfig":
        return cls.resolve(d)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig.from_dict(self.augment)

    def moco_config(self) -> MoCoConfig:
        return MoCoConfig.from_dict(self.moco)

    def encoder_spec(self) -> EncoderSpec:
        """The encoder, its input transform cropping the centre at the views' size."""
        enc = check_keys(self.encoder, ("arch", "params", "input"), "config section embed.pretrain.encoder")
        return EncoderSpec(arch=enc["arch"], params=dict(enc.get("params", {})),
                           input={**enc.get("input", {}), "crop": self.augment_config().crop})


def water_fill(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """How many objects each bin gives so that ``size`` are drawn as evenly over the bins as
    their contents allow (bins with fewer give all they have; the rest share the remainder,
    the odd ones to bins chosen at random)."""
    counts = np.asarray(counts, dtype=np.int64)
    take = np.zeros_like(counts)
    remaining, open_bins = int(min(size, counts.sum())), np.ones(len(counts), bool)
    while remaining > 0 and open_bins.any():
        share = remaining // int(open_bins.sum())
        small = open_bins & (counts - take <= share)
        if small.any():  # these bins run out: give everything, share the rest again
            remaining -= int((counts - take)[small].sum())
            take[small] = counts[small]
            open_bins &= ~small
            continue
        take[open_bins] += share
        remaining -= share * int(open_bins.sum())
        extra = rng.choice(np.flatnonzero(open_bins), size=remaining, replace=False)
        take[extra] += 1
        remaining = 0
    return take


def draw_sample(manifests, objects_paths, size: int | None, bin_width: float, regions, seed: int):
    """(sample, population): shard set and row, key, MAG_Z, REGION and the three Galactic
    transmissions of ``size`` objects drawn uniformly in MAG_Z (all objects when None), and of
    every object they were drawn from."""
    shards = ShardCollection(manifests)
    frames = []
    for s, shard_set in enumerate(shards.sets):
        index = shard_set.index
        if len(index) == 0:  # a sweep with nothing selected, or whose cutouts all failed
            continue
        missing = [c for c in (*KEY, "MAG_Z", "REGION") if c not in index.columns]
        if missing:
            raise LensfinderError(f"shard index of {shard_set.manifest_path} lacks {missing}: re-run its cutouts job")
        frames.append(index[[*KEY, "MAG_Z", "REGION"]].assign(SET=s, ROW=np.arange(len(index))))
    objects = pd.concat([read_keyed(p, list(TRANSMISSION)) for p in objects_paths], ignore_index=True)
    table = pd.concat(frames, ignore_index=True).merge(objects, on=list(KEY), how="left", validate="one_to_one")
    lacking = table[list(TRANSMISSION)].isna().any(axis=1)
    if lacking.any():
        raise LensfinderError(f"{int(lacking.sum())} cutout(s), e.g. {table.loc[lacking, list(KEY)].head(2).values.tolist()}, "
                              "have no row in the objects tables given: pass every sweep's objects file")
    if regions:
        table = table[table["REGION"].isin(list(regions))]
    table = table[np.isfinite(table["MAG_Z"].to_numpy(np.float64))].reset_index(drop=True)
    if table.empty:
        raise LensfinderError(f"no cutout with a finite MAG_Z{f' in regions {list(regions)}' if regions else ''} to pretrain on")
    rng = np.random.default_rng(seed)
    bins = np.floor(table["MAG_Z"].to_numpy(np.float64) / bin_width).astype(np.int64)
    labels, inverse = np.unique(bins, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(labels))
    take = water_fill(counts, len(table) if size is None else size, rng)
    chosen = np.concatenate([rng.choice(np.flatnonzero(inverse == b), size=int(t), replace=False)
                             for b, t in enumerate(take) if t > 0])
    sample = table.iloc[np.sort(chosen)].reset_index(drop=True)
    sample["MAG_BIN"] = bins[np.sort(chosen)] * bin_width
    return sample, table


def sample_fingerprint(sample: pd.DataFrame) -> str:
    keys = sample[list(KEY)].to_numpy(np.int64)
    return hashlib.sha256(np.ascontiguousarray(keys).tobytes()).hexdigest()


def plot_sample(sample, population, bin_width, path):
    """S22's figure 15: z magnitudes of the pretraining sample beside all objects."""
    plt = pyplot()

    mags = population["MAG_Z"].to_numpy(np.float64)
    edges = np.arange(np.floor(mags.min() / bin_width) * bin_width, mags.max() + 2 * bin_width, bin_width)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(mags, bins=edges, histtype="step", color="0.4", label=f"all objects ({len(population):,})")
    ax.hist(sample["MAG_Z"], bins=edges, histtype="stepfilled", alpha=0.5, label=f"pretraining sample ({len(sample):,})")
    ax.set_xlabel("z magnitude (AB)")
    ax.set_ylabel("objects per bin")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("images drawn uniformly in z magnitude (S22)", fontsize=9)
    save_figure(fig, path)


class Pretrainer(RankedJob):
    def __init__(self, manifests, objects_paths, cfg: PretrainConfig, out_dir, threads: int | None = None):
        super().__init__(out_dir, cfg.seed, cfg.deterministic, cfg.num_threads, threads)
        self.cfg = cfg
        self.augment_cfg, self.moco_cfg, self.spec = cfg.augment_config(), cfg.moco_config(), cfg.encoder_spec()
        self.sample, self.population = draw_sample(manifests, objects_paths, cfg.sample_size, cfg.mag_bin_width,
                                                   cfg.regions, cfg.seed)
        self.fingerprint = sample_fingerprint(self.sample)
        self.shards = ShardCollection(manifests)
        self.cutout_shape = list(self.shards.shape)
        self.augment = S22Augment(self.augment_cfg)
        torch.manual_seed(cfg.seed)
        self.moco = MoCo(self.spec.build(), self.moco_cfg, seed=cfg.seed).to(self.device)
        if self.cuda and cfg.channels_last:
            self.moco = self.moco.to(memory_format=torch.channels_last)
        self.query_net = self.data_parallel(self.moco.query)
        self.opt = torch.optim.SGD(self.moco.query.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        # every rank's slice splits into the batch-norm groups; a global batch larger than the
        # sample is (nearly) the whole sample, once per epoch
        unit = self.world * self.moco_cfg.bn_splits
        if cfg.batch_size % unit:
            raise LensfinderError(f"pretraining batch_size {cfg.batch_size} is not a multiple of {self.world} rank(s) "
                                  f"x {self.moco_cfg.bn_splits} batch-norm groups (moco.bn_splits)")
        self.batch = min(cfg.batch_size, len(self.sample) // unit * unit)
        if self.batch < unit:
            raise LensfinderError(f"the pretraining sample has {len(self.sample)} object(s), fewer than {self.world} "
                                  f"rank(s) x {self.moco_cfg.bn_splits} batch-norm groups")
        self.steps_per_epoch = max(1, len(self.sample) // self.batch)
        total = cfg.epochs * self.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        self.epoch, self.step = 0, 0
        self.history, self.epoch_stats = [], []
        self.watch_preemption()

    # -- data
    def load(self, rows: np.ndarray):
        """fp32 images (on the device) and transmissions of sample rows ``rows``."""
        sel = self.sample.iloc[rows]
        images = np.stack([self.shards.sets[s][r] for s, r in zip(sel["SET"], sel["ROW"])])
        x = torch.from_numpy(images).to(self.device, non_blocking=True).float()
        t = torch.tensor(sel[list(TRANSMISSION)].to_numpy(np.float32), device=self.device)
        return x, t

    def epoch_order(self, epoch):
        return torch.randperm(len(self.sample), generator=torch.Generator().manual_seed(stream_seed(self.cfg.seed, epoch, 0)))

    def train_step(self, epoch, step, order):
        per = self.batch // self.world
        rows = order[step * self.batch + self.rank * per : step * self.batch + (self.rank + 1) * per].numpy()
        x, t = self.load(rows)
        gen = torch.Generator(device=self.device).manual_seed(stream_seed(self.cfg.seed, epoch, step, 1, self.rank))
        v1, v2 = self.augment(x, t, gen), self.augment(x, t, gen)
        if self.cuda and self.cfg.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        self.moco.train()
        self.moco.momentum_update()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.bf16):
            loss, logits, keys = self.moco(v1, v2, gen=gen, query_net=self.query_net)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.moco.enqueue(keys)
        return float(loss.detach()), top1_accuracy(logits.detach())

    # -- checkpoints
    def _resume_state(self) -> dict:
        return {"format": "lensfinder-pretrain-resume-1", "config": asdict(self.cfg), "fingerprint": self.fingerprint,
                "world": self.world, "moco": {k: v.detach().cpu().clone() for k, v in self.moco.state_dict().items()},
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "epoch": self.epoch, "step": self.step, "history": self.history, "epoch_stats": list(self.epoch_stats)}

    def resume(self) -> bool:
        ck = self.read_resume()
        if ck is None:
            return False
        if ck.get("config") != asdict(self.cfg) or ck.get("fingerprint") != self.fingerprint or ck.get("world") != self.world:
            log.warning("%s belongs to other settings, another sample or another number of ranks: starting afresh",
                        self.out / "resume.pt")
            return False
        self.moco.load_state_dict(ck["moco"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.epoch, self.step, self.history = ck["epoch"], ck["step"], ck["history"]
        self.epoch_stats = list(ck["epoch_stats"])
        log.info("resumed from %s at epoch %d step %d", self.out / "resume.pt", self.epoch, self.step)
        return True

    def encoder_checkpoint(self) -> dict:
        """What the embed rule needs: the query encoder and every setting that made it."""
        return {"format": CHECKPOINT_FORMAT,
                "encoder_spec": self.spec.to_dict(), "dim": self.moco.encoder.dim,
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.moco.encoder.state_dict().items()},
                "input": self.spec.input, "augment": self.augment_cfg.to_dict(), "moco": self.moco_cfg.to_dict(),
                "pretrain": asdict(self.cfg), "n_parameters": count_parameters(self.moco.encoder),
                "cutout_shape": self.cutout_shape, "bands": ["g", "r", "z"], "units": "nanomaggy",
                "sample": {"objects": len(self.sample), "population": len(self.population), "sha256": self.fingerprint},
                "history": self.history, "epochs": self.epoch, "ranks": self.world, "threads_per_rank": self.threads,
                "torch_version": str(torch.__version__)}

    # -- loop
    def run(self):
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            with atomic_path(self.out / "sample.parquet") as tmp:
                self.sample.drop(columns=["SET", "ROW"]).to_parquet(tmp, index=False)
            plot_sample(self.sample, self.population, cfg.mag_bin_width, self.out / "sample.png")
        self.resume()
        log.info("MoCo v2 pretraining: encoder %s (%d parameters, %d-d), %d of %d objects drawn uniformly in MAG_Z, "
                 "%d-px views, global batch %d, queue %d; %d rank(s) on %s, %d thread(s) per rank",
                 self.spec.arch, count_parameters(self.moco.encoder), self.moco.encoder.dim, len(self.sample),
                 len(self.population), self.augment_cfg.crop, self.batch, self.moco_cfg.queue, self.world, self.device,
                 self.threads)
        while self.epoch < cfg.epochs:
            order = self.epoch_order(self.epoch)
            if self.step == 0:
                self.epoch_stats = []
            t0, first = time.time(), self.step
            for step in range(self.step, self.steps_per_epoch):
                self.epoch_stats.append(self.train_step(self.epoch, step, order))
                self.step = step + 1
                self.stop_if_preempted(self._resume_state, self.epoch, self.step)
            seconds = time.time() - t0
            losses, accs = zip(*self.epoch_stats) if self.epoch_stats else ((float("nan"),), (float("nan"),))
            row = {"epoch": self.epoch, "loss": float(np.mean(losses)), "top1": float(np.mean(accs)),
                   "lr": self.opt.param_groups[0]["lr"], "seconds": seconds,
                   "images_per_s": (self.steps_per_epoch - first) * self.batch / max(seconds, 1e-9)}
            self.history.append(row)
            self.epoch, self.step = self.epoch + 1, 0
            self.save("resume.pt", self._resume_state())
            self.write_history(self.history)
            log.info("epoch %d: InfoNCE %.4f, positive ranked first %.3f, %.0f img/s", row["epoch"], row["loss"],
                     row["top1"], row["images_per_s"])
        self.save("encoder.pt", self.encoder_checkpoint())
        self.write_history(self.history)
        if self.rank == 0:
            plot_pretraining(pd.DataFrame(self.history), self.out / "curves.png")
        self.finished()
        self.close()


def plot_pretraining(history: pd.DataFrame, path):
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(history["epoch"], history["loss"], "o-")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("InfoNCE loss")
    axes[1].plot(history["epoch"], history["top1"], "o-", color="C1")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("positive ranked first (fraction)")
    axes[1].set_ylim(0, 1)
    fig.suptitle("MoCo v2 pretraining", fontsize=10)
    save_figure(fig, path)


def load_encoder(path, device="cpu"):
    """(encoder in eval mode, checkpoint dict) from an ``encoder.pt``."""
    return restore(path, CHECKPOINT_FORMAT, lambda ck: EncoderSpec(**ck["encoder_spec"]).build(), device,
                   what="encoder checkpoint", rule="pretrain")


def main(argv=None):
    ap = job_parser("MoCo v2 pretraining of an encoder on cutout shards (run under torchrun for several GPUs; "
                    "lensfinder.embed.launch does that).", "output directory (encoder.pt, metrics, plots, sample)")
    ap.add_argument("--manifests", nargs="+", required=True, help="every sweep's cutouts manifest.json")
    ap.add_argument("--objects", nargs="+", required=True, help="every sweep's objects Parquet (transmissions)")
    ap.add_argument("--settings", default="{}", help="pretraining settings as JSON (PretrainConfig fields)")
    args = ap.parse_args(argv)
    run_job("pretraining", lambda: Pretrainer(args.manifests, args.objects, PretrainConfig.resolve(json.loads(args.settings)),
                                              args.out, threads=args.threads).run())


if __name__ == "__main__":
    main()
