"""The runtime both trainers share (``lensfinder.nets.train``, ``lensfinder.embed.pretrain``):
ranks and devices, seeds, deterministic kernels, threads, pre-emption, checkpoints written by
rank 0, and the command line a rank is started with.

A trainer subclasses ``RankedJob``: its constructor joins the process group (one rank per
GPU under torchrun, or one process), fixes the thread count and the seeds, and watches for
SIGTERM / SIGUSR1; the trainer's loop calls ``stop_if_preempted`` after each step, which
saves ``resume.pt`` (rank 0) and exits with ``PREEMPTED_EXIT`` (75) once every rank knows.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.nets.launch import PREEMPTED_EXIT

log = logging.getLogger(__name__)

DEFAULT_THREADS = 1  # intra-op threads per rank when neither num_threads nor --threads is given


def stream_seed(*keys: int) -> int:
    """A 63-bit seed for the random stream named by ``keys`` (seed, epoch, step, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]) >> 1


def seed_everything(seed: int):
    """Python's, numpy's and torch's (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_deterministic(enabled: bool, cuda: bool):
    """Deterministic kernels: strict on a CPU (an op without one stops the run), warn-only
    on a GPU, where some ops have none (see the module docstring)."""
    if cuda and enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.use_deterministic_algorithms(enabled, warn_only=cuda)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def threads_per_rank(cfg_threads: int | None, job_threads: int | None, world: int) -> int:
    """A fixed intra-op thread count, never torch's machine-dependent default."""
    if cfg_threads:
        return cfg_threads
    if job_threads:
        return max(1, job_threads // world)
    return DEFAULT_THREADS


class Preemption:
    """Remember SIGTERM / SIGUSR1 so the loop can checkpoint at the next step."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def any_rank(self, device) -> bool:
        flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
        if dist.is_initialized():
            dist.all_reduce(flag)
        return bool(flag.item() > 0)


class RankedJob:
    """One rank of a data-parallel job writing to ``out_dir``: ``world``, ``rank``, ``device``
    (``cuda:<LOCAL_RANK>`` on GPUs), ``threads`` (intra-op threads of this rank) and the seeds
    set. A subclass calls ``watch_preemption`` last in its constructor: a signal during the
    set-up (reading the data, building the model) still stops the job at once, as there is
    nothing to resume yet."""

    def __init__(self, out_dir, seed: int, deterministic: bool, num_threads: int | None, job_threads: int | None):
        self.out = Path(out_dir)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local}" if self.cuda else "cpu")
        make_deterministic(deterministic, self.cuda)  # before any CUDA work
        if self.cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.cuda else "gloo")
        self.threads = threads_per_rank(num_threads, job_threads, self.world)
        torch.set_num_threads(self.threads)
        seed_everything(seed)
        self.preempt = None

    def watch_preemption(self) -> None:
        """From now on SIGTERM / SIGUSR1 mean: save ``resume.pt`` at the next step and exit 75."""
        self.preempt = Preemption()

    def data_parallel(self, module):
        """``module`` under DistributedDataParallel when there are several ranks."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[self.device.index] if self.cuda else None)

    def save(self, name: str, obj) -> None:
        """``torch.save`` of ``obj`` to ``<out>/<name>`` by rank 0, atomically."""
        if self.rank == 0:
            with atomic_path(self.out / name) as tmp:
                torch.save(obj, tmp)

    def write_history(self, history: list) -> None:
        """``<out>/metrics.csv``: one row per epoch (rank 0)."""
        if self.rank == 0:
            import pandas as pd

            with atomic_path(self.out / "metrics.csv") as tmp:
                pd.DataFrame(history).to_csv(tmp, index=False)

    def read_resume(self) -> dict | None:
        """The state ``<out>/resume.pt`` holds, or None when there is none."""
        path = self.out / "resume.pt"
        if not path.exists():
            return None
        import pickle

        try:
            return torch.load(path, map_location=self.device, weights_only=True)
        except pickle.UnpicklingError as err:  # e.g. written before checkpoints held tensors only
            log.warning("%s cannot be read without pickle (%s): starting afresh", path, str(err).splitlines()[0])
            return None

    def stop_if_preempted(self, resume_state, epoch: int, step: int) -> None:
        """When any rank was signalled: save ``resume_state()`` as ``resume.pt`` and exit 75."""
        if not self.preempt.any_rank(self.device):
            return
        self.save("resume.pt", resume_state())
        if self.rank == 0:
            log.warning("pre-empted at epoch %d step %d: saved resume.pt; run again to resume", epoch, step)
        self.close()
        sys.exit(PREEMPTED_EXIT)

    def finished(self) -> None:
        """The run is complete: the next run of the same command starts afresh."""
        if self.rank == 0:
            (self.out / "resume.pt").unlink(missing_ok=True)

    def close(self):
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _positive_int(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def job_parser(description: str, out_help: str) -> argparse.ArgumentParser:
    """The command line of a ranked job: its own arguments are added to ``--out`` and ``--threads``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", required=True, help=out_help)
    ap.add_argument("--threads", type=_positive_int, default=None,
                    help=f"intra-op CPU threads for the whole job, split over the ranks (default {DEFAULT_THREADS} "
                         "per rank; the setting num_threads, per rank, wins)")
    return ap


def run_job(what: str, run) -> None:
    """Log at INFO on rank 0 (WARNING elsewhere) and run ``run()``; a LensfinderError ends the
    process with its message and status 1."""
    rank0 = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(level=logging.INFO if rank0 else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        run()
    except LensfinderError as err:
        print(f"lensfinder error in {what}: {err}", file=sys.stderr)
        sys.exit(1)
