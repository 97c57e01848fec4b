"""``python -m lensfinder.embed.launch [--nproc N|auto] ...``: MoCo pretraining in one process,
or under torchrun with one rank per visible GPU, as ``lensfinder-train`` launches training."""

from __future__ import annotations

from lensfinder.nets.launch import main as _launch


def main(argv=None):
    return _launch(argv, module="lensfinder.embed.pretrain")


if __name__ == "__main__":
    main()
