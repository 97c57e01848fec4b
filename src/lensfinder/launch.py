"""``lensfinder-train``: run ``lensfinder.train`` in one process, or under torchrun with one
process per visible GPU (``--nproc auto``). Arguments after the launcher's own go to
``lensfinder.train`` (or to ``module``: ``lensfinder.embed.launch`` runs the pretraining).

Pre-emption: SLURM sends SIGTERM (or SIGUSR1 with ``--signal``) to the job before it
stops it. With several ranks the launcher stays the parent of torchrun and hands either
signal on; torchrun forwards it to every rank (``--signals-to-handle``); the ranks agree
on it at the next step, rank 0 writes ``<out>/resume.pt`` once, and the launcher exits
75 (``PREEMPTED_EXIT``) so that a requeued job resumes. One process handles the signals
itself (``lensfinder.train.Preemption``) and exits 75 the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request, resume.pt written; lensfinder.train uses the same
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# torchrun's own handlers: its default set plus SIGUSR1, each forwarded to the ranks
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
SHUTDOWN_TIMEOUT_S = 300  # ranks finish their step and rank 0 saves before torchrun kills them


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _out_dir(argv: list[str]) -> Path | None:
    if "--out" in argv[:-1]:
        return Path(argv[argv.index("--out") + 1])
    return None


def run_ranks(cmd: list[str], out: Path | None) -> int:
    """Run torchrun as a child, forwarding pre-emption signals; its exit code, or
    ``PREEMPTED_EXIT`` when a signal came and the ranks wrote a fresh ``resume.pt``."""
    child = subprocess.Popen(cmd)
    signalled_at: list[float] = []

    def forward(signum, frame):
        signalled_at.append(time.time())
        child.send_signal(signum)

    for sig in PREEMPTION_SIGNALS:
        signal.signal(sig, forward)
    code = child.wait()
    if signalled_at and out is not None:
        resume = out / "resume.pt"
        # mtime has 1-s resolution on some file systems: allow for it
        if resume.exists() and resume.stat().st_mtime >= signalled_at[0] - 1.0:
            print(f"pre-empted: {resume} written; run again to resume", file=sys.stderr, flush=True)
            return PREEMPTED_EXIT
    return code


def main(argv=None, module="lensfinder.train"):
    argv = list(sys.argv[1:] if argv is None else argv)
    nproc = "auto"
    if argv[:1] == ["--nproc"]:
        nproc, argv = argv[1], argv[2:]
    n = max(visible_gpus(), 1) if nproc == "auto" else int(nproc)
    if n == 1:
        import importlib

        return importlib.import_module(module).main(argv)
    # torchrun of this interpreter (the one lensfinder is installed in)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           f"--signals-to-handle={TORCHRUN_SIGNALS}", f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
           "-m", module, *argv]
    print("launching:", " ".join(cmd), flush=True)
    sys.exit(run_ranks(cmd, _out_dir(argv)))


if __name__ == "__main__":
    main()
