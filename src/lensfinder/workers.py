"""Worker processes whose death fails the job, never hangs it.

``multiprocessing.Pool.imap`` waits forever for the result of a worker that died (killed for
memory, a crash inside CFITSIO): the pool starts a new worker, but the task is lost. A
``concurrent.futures`` process pool notices the death and breaks; ``ordered_results`` turns
that into an error naming the items in flight (one of them killed the worker), so the job
fails and says what to look at.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from lensfinder.errors import LensfinderError

_FN = None  # the function of the running ordered_results: forked workers inherit it (no pickling)


def _call(item):
    return _FN(item)


def ordered_results(fn, items, names, workers: int, what: str, initializer=None, initargs=(), window: int = 0):
    """``fn(item)`` for every item, yielded in order, computed by ``workers`` forked
    processes (``initializer(*initargs)`` in each). At most ``window`` items (default four
    per worker) are in flight, so results never pile up in memory. ``names[i]`` and ``what``
    (e.g. "cutouts of sweep-150p000-155p005") name the items in flight when a worker died."""
    global _FN
    window = window or 4 * workers
    ctx = multiprocessing.get_context("fork")
    _FN = fn
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs) as pool:
        pending = []
        todo = iter(zip(items, names))
        for item, name in todo:
            pending.append((pool.submit(_call, item), name))
            if len(pending) >= window:
                break
        while pending:
            future, name = pending.pop(0)
            try:
                result = future.result()
            except BrokenProcessPool:
                in_flight = ", ".join([name, *(n for _, n in pending)])
                raise LensfinderError(
                    f"{what}: a worker process died (killed for memory, or a crash in a library) with these in "
                    f"flight: {in_flight}; look at their input files, or give the job more memory, then re-run "
                    "it") from None
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((pool.submit(_call, nxt[0]), nxt[1]))
            yield result
