"""Data-parallel training of one model on the training set, keeping the best-AUC epoch.

Launched by ``lensfinder-train`` (one process on a CPU or one GPU; ``torchrun`` over all
GPUs of a node otherwise), or directly as ``torchrun -m lensfinder.nets.train ...``:

* every rank holds the (small) training set in memory, on its GPU when there is one;
* each step takes one global batch from a permutation fixed by (seed, epoch), with the
  augmentations drawn for the whole global batch, and each rank trains on its slice; batch
  norm statistics span all ranks, so N ranks train like one rank with the same global batch;
* bf16 autocast and channels_last on GPUs, optional torch.compile;
* validation AUC after every epoch; ``best.pt`` (highest AUC, as paper IV selects) and
  ``last.pt`` (the final state) are written atomically, and ``resume.pt`` after every epoch
  (removed when the run completes);
* SIGTERM or SIGUSR1 (SLURM pre-emption) saves ``resume.pt`` at the next step and exits
  with status 75; running the same command again resumes and ends with the same weights as
  an uninterrupted run of the same seed on the same device. (``resume.pt`` is no declared
  output, so Snakemake does not delete it before the re-run.)

Data parallel. Every model's batch norms span the ranks and its dropout / drop-path masks
are drawn for the whole global batch, each rank keeping its rows (``models.for_data_parallel``),
so N ranks equal one process with the same global batch up to float rounding, dropout
included (tested with 2 gloo ranks for resnet_mini and efficientnet_mini). Anything else
random in a forward uses torch's generator, seeded per step and rank: independent streams.

Reproducibility. The same command on the same kind of machine writes bit-identical
checkpoints (tested on CPU): python's, numpy's and torch's generators are seeded,
``torch.use_deterministic_algorithms(True)`` (``train.deterministic``) and the intra-op
thread count is fixed (``num_threads`` per rank; else ``--threads`` for the whole job,
the train rule's ``threads``, split over the ranks; else 1), since CPU reductions split
their work, and so their rounding, by thread. What this cannot pin:

* GPUs: cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (set here unless already set) and
  cuDNN is told to pick deterministic kernels, but some CUDA ops have no deterministic
  kernel (atomic-add backwards, e.g. adaptive average pooling, index_put with
  accumulation): on a GPU the run warns about them instead of stopping, and results can
  differ in the last bits between runs. Different GPU models, driver or library versions
  pick different kernels.
* CPUs of another kind: oneDNN (convolutions) and the vectorised kernels choose code by
  instruction set (AVX2, AVX-512, AMX), so bit-identity across CPU models needs the same
  instruction set (``ONEDNN_MAX_CPU_ISA=AVX2`` pins oneDNN's choice) and the same torch.
* A different number of ranks changes summation order: equal up to rounding, not bits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F

from lensfinder.errors import LensfinderError
from lensfinder.files import sha256
from lensfinder.nets.checkpoint import NETWORK_FORMAT
from lensfinder.nets.layers import global_batch_masks
from lensfinder.nets.registry import ModelSpec, count_parameters
from lensfinder.nets.runtime import RankedJob, job_parser, run_job, stream_seed
from lensfinder.settings import Settings

log = logging.getLogger("lensfinder.nets.train")


@dataclass
class TrainConfig(Settings):
    section: ClassVar[str] = "train"

    epochs: int = 30
    batch_size: int = 128  # global batch, split over the ranks
    lr: float = 5e-4
    optimizer: str = "adam"  # adam (the papers) | sgd (momentum 0.9)
    lr_milestones: list = field(default_factory=lambda: [80])  # epochs where lr *= lr_gamma
    lr_gamma: float = 0.5
    weight_decay: float = 0.0
    imbalance: str = "none"  # none (plain BCE, as the papers) | weighted | oversample
    flips: bool = True  # the 8 flips and 90-degree rotations
    noise: float = 0.0  # extra Gaussian noise, up to this many nanomaggies (S22-style)
    blur: float = 0.0  # extra Gaussian blur, sigma up to this many pixels
    bf16: bool = True  # autocast on GPUs
    channels_last: bool = True  # on GPUs
    compile: bool = False
    seed: int = 0
    eval_batch_size: int = 512
    num_threads: int | None = None  # intra-op threads per rank (None: --threads / ranks, else 1)
    deterministic: bool = True  # torch.use_deterministic_algorithms (warn-only on GPUs)


def trainset_fingerprint(trainset_dir) -> str:
    d = Path(trainset_dir)
    return hashlib.sha256((sha256(d / "labels.parquet") + sha256(d / "cutouts.npy")).encode()).hexdigest()


def load_trainset(trainset_dir):
    d = Path(trainset_dir)
    for name in ("labels.parquet", "cutouts.npy"):
        if not (d / name).exists():
            raise LensfinderError(f"training set file {d / name} does not exist: run the trainset rule first")
    labels = pd.read_parquet(d / "labels.parquet")
    images = np.load(d / "cutouts.npy", mmap_mode="r")
    if len(images) != len(labels):
        raise LensfinderError(f"{d / 'cutouts.npy'} has {len(images)} rows but {d / 'labels.parquet'} {len(labels)}")
    return labels, images


def initial_model(spec: ModelSpec, seed: int):
    """The model with the initial weights a training of this seed starts from."""
    torch.manual_seed(seed)
    return spec.build()


def augment(x, gen, cfg: TrainConfig):
    """Flips/rotations (the dihedral group of the square), extra noise and blur.

    Random choices come from ``gen`` for the whole global batch, so they do not depend
    on how the batch is split over ranks.
    """
    n = x.shape[0]
    if cfg.flips:
        ops = torch.randint(0, 8, (n,), generator=gen)
        out = torch.empty_like(x)
        for op in range(8):
            sel = (ops == op).nonzero().flatten().to(x.device)
            if len(sel):
                y = torch.rot90(x[sel], op % 4, dims=(-2, -1))
                out[sel] = torch.flip(y, dims=(-1,)) if op >= 4 else y
        x = out
    if cfg.noise > 0:
        amp = torch.rand(n, 1, 1, 1, generator=gen) * cfg.noise
        x = x + (torch.randn(x.shape, generator=gen) * amp).to(x.device, x.dtype)
    if cfg.blur > 0:
        import torchvision.transforms.functional as TF

        sigmas = torch.rand(n, generator=gen) * cfg.blur
        x = torch.stack([TF.gaussian_blur(img[None], [7, 7], [float(s)] * 2)[0] if s > 0.05 else img
                         for img, s in zip(x, sigmas)])
    return x


def check_splits(labels: pd.DataFrame, trainset_dir) -> None:
    """Both splits must hold lenses and nonlenses: without them the validation AUC, and so
    the best epoch, are undefined. The error names the split and the strata to look at."""
    problems = []
    for split in ("train", "val"):
        part = labels[labels["SPLIT"] == split]
        n_pos = int((part["LABEL"] == 1).sum())
        if n_pos == 0 or n_pos == len(part):
            missing = "lenses" if n_pos == 0 else "nonlenses"
            problems.append(f"the {split} split has no {missing} ({n_pos} lenses, {len(part) - n_pos} nonlenses)")
    if not problems:
        return
    by = ""
    if "STRATUM" in labels:
        cells = labels.groupby(["STRATUM", "SPLIT", "LABEL"]).size()
        by = "; lenses/nonlenses by stratum: " + ", ".join(
            f"{stratum} (" + ", ".join(f"{split} {cells.get((stratum, split, 1), 0)}/{cells.get((stratum, split, 0), 0)}"
                                       for split in ("train", "val")) + ")"
            for stratum in sorted(labels["STRATUM"].unique()))
    raise LensfinderError(
        f"training set {Path(trainset_dir) / 'labels.parquet'}: {'; '.join(problems)}{by}. Give it more known "
        "lenses (lens_catalogs, their grades) or change trainset.validation_fraction, then re-run the trainset rule")


def roc_auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < np.sum(labels) < len(labels) else float("nan")


class Trainer(RankedJob):
    def __init__(self, trainset_dir, spec: ModelSpec, cfg: TrainConfig, out_dir, threads: int | None = None):
        """``threads``: intra-op CPU threads for the whole job (split over the ranks), used
        when ``cfg.num_threads`` is unset."""
        super().__init__(out_dir, cfg.seed, cfg.deterministic, cfg.num_threads, threads)
        self.spec, self.cfg = spec, cfg
        if cfg.batch_size % self.world:
            raise LensfinderError(f"batch_size {cfg.batch_size} is not divisible by the {self.world} ranks")
        labels, images = load_trainset(trainset_dir)
        self.fingerprint = trainset_fingerprint(trainset_dir)
        check_splits(labels, trainset_dir)
        train = labels[labels["SPLIT"] == "train"]
        val = labels[labels["SPLIT"] == "val"]
        self.train_keys = train[["RELEASE", "BRICKID", "OBJID"]].to_numpy()
        # fp16 stays fp16 in memory (GPU-resident when there is a GPU); fp32 per batch.
        self.x_train = torch.from_numpy(np.asarray(images[train["ROW"].to_numpy()])).to(self.device)
        self.y_train = torch.tensor(train["LABEL"].to_numpy(), dtype=torch.float32, device=self.device)
        self.x_val = torch.from_numpy(np.asarray(images[val["ROW"].to_numpy()])).to(self.device)
        self.y_val = val["LABEL"].to_numpy()
        self.val_keys = val[["RELEASE", "BRICKID", "OBJID"]].to_numpy()
        self.cutout_shape = list(images.shape[1:])
        self.model = initial_model(spec, cfg.seed).to(self.device)
        if self.cuda and cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.n_params = count_parameters(self.model)
        self.net = self.data_parallel(self.model)
        if cfg.compile:
            self.net = torch.compile(self.net)
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=list(cfg.lr_milestones), gamma=cfg.lr_gamma)
        n_pos = float(self.y_train.sum())
        self.pos_weight = (len(self.y_train) - n_pos) / n_pos if cfg.imbalance == "weighted" else None
        self.history, self.best_auc, self.best_epoch = [], -1.0, -1
        self.epoch, self.step = 0, 0
        self.epoch_losses = []  # the current epoch's step losses (kept across a resume)
        self.best_ck = None  # the best epoch's checkpoint
        self.watch_preemption()

    # -- state
    def _checkpoint(self, full: bool, val_scores=None) -> dict:
        ck = {
            "format": NETWORK_FORMAT,
            "model_spec": self.spec.to_dict(),
            "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "epoch": self.epoch, "step": self.step,
            "n_parameters": self.n_params,
            "train_config": asdict(self.cfg),
            "threads_per_rank": self.threads, "ranks": self.world, "torch_version": str(torch.__version__),
            "trainset_fingerprint": self.fingerprint,
            "cutout_shape": self.cutout_shape, "bands": ["g", "r", "z"], "units": "nanomaggy",
            "history": self.history, "best_auc": self.best_auc, "best_epoch": self.best_epoch,
            "epoch_losses": list(self.epoch_losses),
        }
        if full:
            ck["optimizer"] = self.opt.state_dict()
            ck["scheduler"] = self.sched.state_dict()
            ck["best_checkpoint"] = self.best_ck  # so a resumed run can restore best.pt
        if val_scores is not None:
            # tensors, not NumPy arrays: checkpoints load with weights_only=True (no pickled objects)
            ck["val_keys"] = torch.from_numpy(np.ascontiguousarray(self.val_keys, dtype=np.int64))
            ck["val_scores"] = torch.from_numpy(np.asarray(val_scores, dtype=np.float64))
        return ck

    def resume(self) -> bool:
        ck = self.read_resume()
        if ck is None:
            return False
        if (ck["trainset_fingerprint"] != self.fingerprint or ck["model_spec"] != self.spec.to_dict()
                or ck["train_config"] != asdict(self.cfg)):
            log.warning("%s belongs to another training set, model or configuration: starting afresh",
                        self.out / "resume.pt")
            return False
        self.model.load_state_dict(ck["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.epoch, self.step = ck["epoch"], ck["step"]
        self.history, self.best_auc, self.best_epoch = ck["history"], ck["best_auc"], ck["best_epoch"]
        self.epoch_losses = list(ck.get("epoch_losses", []))
        self.best_ck = ck.get("best_checkpoint")
        if self.best_ck is not None and not (self.out / "best.pt").exists():
            self.save("best.pt", self.best_ck)  # Snakemake removes outputs before a re-run
        log.info("resumed from %s at epoch %d step %d", self.out / "resume.pt", self.epoch, self.step)
        return True

    # -- loop
    def steps_per_epoch(self, n):
        return max(1, n // self.cfg.batch_size)

    def epoch_indices(self, epoch):
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        n = len(self.y_train)
        if self.cfg.imbalance == "oversample":
            y = self.y_train.cpu()
            w = torch.where(y > 0, 0.5 / y.sum(), 0.5 / (len(y) - y.sum()))
            return torch.multinomial(w, n, replacement=True, generator=gen)
        return torch.randperm(n, generator=gen)

    def train_step(self, epoch, step, order):
        cfg, b = self.cfg, self.cfg.batch_size
        if len(order) < b:  # tiny training sets: repeat the permutation
            order = order.repeat(int(np.ceil(b / len(order))))
        idx = order[step * b : (step + 1) * b]
        step_seed = cfg.seed * 1_000_003 + epoch * 10_007 + step
        gen = torch.Generator().manual_seed(step_seed)
        # Every stream is seeded per step, so a resumed run draws what the first would have.
        # Dropout masks: drawn for the global batch, each rank keeping its rows (equal to one
        # process); anything else random in the forward: torch's generator, one stream per rank.
        masks = torch.Generator().manual_seed(stream_seed(cfg.seed, epoch, step, 1))
        torch.manual_seed(stream_seed(cfg.seed, epoch, step, 2, self.rank))
        x = augment(self.x_train[idx.to(self.device)].float(), gen, cfg)
        y = self.y_train[idx.to(self.device)]
        per = b // self.world
        rows = slice(self.rank * per, (self.rank + 1) * per)
        x, y = x[rows], y[rows]
        if self.cuda and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.net.train()
        with (torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and cfg.bf16),
              global_batch_masks(masks, rows, b)):
            logits = self.net(x)
        pw = torch.tensor(self.pos_weight, device=self.device) if self.pos_weight else None
        loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw)
        self._stop_if_not_finite(loss, x, logits, y, pw, idx[rows], epoch, step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def _stop_if_not_finite(self, loss, x, logits, y, pw, rows, epoch, step):
        """A NaN or inf loss would poison every weight from here on: stop, naming the step and
        the objects to blame: those with non-finite pixels (batch norm spreads one NaN image
        to the whole batch), else those whose own loss is not finite, else the batch. Every
        rank learns of it (one all-reduce), so none is left waiting for the others' gradients."""
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.world > 1:
            dist.all_reduce(bad)
        if not bad.item():
            return
        keys = self.train_keys[rows.cpu().numpy()]
        with torch.no_grad():
            per = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pw, reduction="none")
        for mask, what in ((~torch.isfinite(x).flatten(1).all(1), "the objects with NaN or inf pixels"),
                           (~torch.isfinite(per), "the objects with a non-finite loss"),
                           (torch.ones(len(keys), dtype=torch.bool), "the batch")):
            mask = mask.cpu().numpy()
            if mask.any():
                named = keys[mask]
                break
        listed = ", ".join(f"({r}, {b}, {o})" for r, b, o in named[:10].tolist())
        raise LensfinderError(
            f"non-finite training loss ({float(loss):.4g}) at epoch {epoch} step {step} on rank {self.rank}; "
            f"(RELEASE, BRICKID, OBJID) of {what} ({len(named)}): {listed}. Check their cutouts in the training "
            "set, or lower train.lr if the loss diverged")

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        out = []
        for i in range(0, len(x), self.cfg.eval_batch_size):
            xb = x[i : i + self.cfg.eval_batch_size].float()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.cfg.bf16):
                out.append(self.model(xb).float().cpu())
        return torch.cat(out).numpy().astype(np.float64)

    def run(self):
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume()
        n_steps = self.steps_per_epoch(len(self.y_train))
        log.info("model %s: %d trainable parameters; %d train / %d val images; %d rank(s) on %s, "
                 "%d intra-op thread(s) per rank, deterministic algorithms %s", self.spec.arch, self.n_params,
                 len(self.y_train), len(self.y_val), self.world, self.device, self.threads,
                 "on" if cfg.deterministic else "off")
        from tqdm import tqdm

        while self.epoch < cfg.epochs:
            order = self.epoch_indices(self.epoch)
            t0 = time.time()
            if self.step == 0:
                self.epoch_losses = []
            losses, first_step = self.epoch_losses, self.step
            bar = tqdm(range(self.step, n_steps), desc=f"epoch {self.epoch}", disable=self.rank != 0, mininterval=10)
            for step in bar:
                losses.append(self.train_step(self.epoch, step, order))
                self.step = step + 1
                self.stop_if_preempted(lambda: self._checkpoint(full=True), self.epoch, self.step)
            seconds = time.time() - t0
            logits = self.predict(self.x_val)
            val_loss = float(F.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(self.y_val, dtype=torch.float64)))
            auc = roc_auc(self.y_val, logits)
            row = {"epoch": self.epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "val_loss": val_loss, "val_auc": auc, "lr": self.opt.param_groups[0]["lr"],
                   "seconds": seconds, "images_per_s": (n_steps - first_step) * cfg.batch_size / max(seconds, 1e-9)}
            self.history.append(row)
            self.sched.step()
            self.epoch, self.step = self.epoch + 1, 0
            if auc > self.best_auc:
                self.best_auc, self.best_epoch = auc, row["epoch"]
                self.best_ck = self._checkpoint(full=False, val_scores=1 / (1 + np.exp(-logits)))
                self.save("best.pt", self.best_ck)
            self.save("resume.pt", self._checkpoint(full=True))
            self.write_history(self.history)
            log.info("epoch %d: train loss %.4f, val loss %.4f, val AUC %.4f (best %.4f at %d), %.0f img/s",
                     row["epoch"], row["train_loss"], val_loss, auc, self.best_auc, self.best_epoch, row["images_per_s"])
        self.save("last.pt", self._checkpoint(full=True))
        self.write_history(self.history)
        if self.rank == 0:
            self._plots()
        self.finished()
        self.close()

    def _plots(self):
        from lensfinder.plots import plot_roc_pr, plot_training_curves

        hist = pd.DataFrame(self.history)
        plot_training_curves(hist, self.out / "curves.png", title=f"{self.out.name}: best AUC {self.best_auc:.4f} "
                             f"at epoch {self.best_epoch}")
        best = torch.load(self.out / "best.pt", map_location="cpu", weights_only=True)
        plot_roc_pr(self.y_val, best["val_scores"].numpy(), self.out / "roc_pr.png", label=self.out.name)


def main(argv=None):
    ap = job_parser("Train one lensfinder model (run under torchrun for several GPUs).",
                    "output directory (checkpoints, metrics, plots)")
    ap.add_argument("--trainset", required=True, help="directory with labels.parquet and cutouts.npy")
    ap.add_argument("--model", required=True, help="model config as JSON: {preset | arch, params, input}")
    ap.add_argument("--train", default="{}", help="training settings as JSON (TrainConfig fields)")
    args = ap.parse_args(argv)
    run_job("training", lambda: Trainer(args.trainset, ModelSpec.from_config(json.loads(args.model)),
                                        TrainConfig.from_dict(json.loads(args.train)), args.out,
                                        threads=args.threads).run())


if __name__ == "__main__":
    main()
