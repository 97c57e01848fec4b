"""``lensfinder-train``: run ``lensfinder.nets.train`` in one process, or under torchrun with one
process per visible GPU (``--nproc auto``), on one node or several. Arguments after the
launcher's own go to ``lensfinder.nets.train`` (or to ``module``: ``lensfinder.embed.launch``
runs the pretraining).

Several nodes: one launcher per node (``srun --ntasks-per-node=1``, see the train rule),
each starting torchrun with a c10d rendezvous at the first node. Under SLURM the launcher
reads the node count, the first node and the job ID from ``SLURM_*``; elsewhere give
``--nnodes N --rdzv-endpoint HOST:PORT`` to every launcher (and the same ``--rdzv-id``).

Pre-emption: SLURM sends SIGTERM (or SIGUSR1 with ``--signal``) to the job before it
stops it. With several ranks the launcher stays the parent of torchrun and hands either
signal on; torchrun forwards it to every rank (``--signals-to-handle``); the ranks agree
on it at the next step, rank 0 writes ``<out>/resume.pt`` once, and the launcher exits
75 (``PREEMPTED_EXIT``) so that a requeued job resumes. One process handles the signals
itself (``lensfinder.nets.runtime.Preemption``) and exits 75 the same way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: stopped on request, resume.pt written; lensfinder.nets.train uses the same
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# torchrun's own handlers: its default set plus SIGUSR1, each forwarded to the ranks
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
SHUTDOWN_TIMEOUT_S = 300  # ranks finish their step and rank 0 saves before torchrun kills them
RDZV_PORT = 29500


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _take(argv: list[str], flag: str, default=None):
    """Remove ``flag VALUE`` from argv; the value, or ``default``."""
    if flag in argv[:-1]:
        i = argv.index(flag)
        value = argv[i + 1]
        del argv[i : i + 2]
        return value
    return default


def _out_dir(argv: list[str]) -> Path | None:
    if "--out" in argv[:-1]:
        return Path(argv[argv.index("--out") + 1])
    return None


def slurm_nodes() -> tuple[int, str | None, str | None]:
    """(nodes, first node's host name, job ID) of the srun step this runs in; (1, None,
    None) outside SLURM, on one node, or in a batch script (no step: not one launcher per node)."""
    n = int(os.environ.get("SLURM_STEP_NUM_NODES") or 1)
    if n <= 1:
        return 1, None, None
    nodelist = os.environ["SLURM_STEP_NODELIST"]
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                           check=True).stdout.split()
    return n, hosts[0], os.environ.get("SLURM_JOB_ID")


def torchrun_command(module: str, argv: list[str], nproc: int, nnodes: int = 1, endpoint: str | None = None,
                     rdzv_id: str | None = None) -> list[str]:
    """torchrun of this interpreter (the one lensfinder is installed in): standalone on one
    node, a c10d rendezvous at ``endpoint`` across several."""
    if nnodes == 1:
        where = ["--standalone"]
    else:
        if not endpoint:
            raise SystemExit("lensfinder.nets.launch: --nnodes > 1 needs --rdzv-endpoint HOST:PORT (the first node)")
        where = [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                 f"--rdzv-id={rdzv_id or 'lensfinder'}"]
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={nproc}",
            f"--signals-to-handle={TORCHRUN_SIGNALS}", f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",
            "-m", module, *argv]


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


def main(argv=None, module="lensfinder.nets.train"):
    argv = list(sys.argv[1:] if argv is None else argv)
    nproc = _take(argv, "--nproc", "auto")
    s_nodes, s_head, s_job = slurm_nodes()
    nnodes = int(_take(argv, "--nnodes", s_nodes))
    endpoint = _take(argv, "--rdzv-endpoint", f"{s_head}:{RDZV_PORT}" if s_head else None)
    rdzv_id = _take(argv, "--rdzv-id", s_job)
    n = max(visible_gpus(), 1) if nproc == "auto" else int(nproc)
    if n == 1 and nnodes == 1:
        import importlib

        return importlib.import_module(module).main(argv)
    cmd = torchrun_command(module, argv, n, nnodes, endpoint, rdzv_id)
    print("launching:", " ".join(cmd), flush=True)
    sys.exit(run_ranks(cmd, _out_dir(argv)))


if __name__ == "__main__":
    main()
