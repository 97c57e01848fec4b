"""Errors and atomic file writing shared by every stage."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class LensfinderError(Exception):
    """A problem with the input or configuration that the user must fix.

    The message always names the file, row or key at fault and says what to do; the
    workflow prints it as it is, without a traceback.
    """


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary name keeps the file's suffixes (``.fits.gz`` makes CFITSIO gzip), and
    partial outputs never look complete: a crash leaves at most a hidden
    ``.tmp-<pid>-<name>``, removed here when possible, never a truncated ``<name>``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
