"""``lensfinder-train``: run ``lensfinder.train`` in one process, or under torchrun with one
process per visible GPU (``--nproc auto``). Arguments after the launcher's own go to
``lensfinder.train`` (or to ``module``: ``lensfinder.embed.launch`` runs the pretraining)."""

from __future__ import annotations

import os
import sys


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
           "-m", module, *argv]
    print("launching:", " ".join(cmd), flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
