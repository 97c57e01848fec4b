"""Mock-survey writing throughput: the default mock's bricks (full 3600 x 3600 coadds, the
default densities) written by one process and by several.

    python benchmarks/mock.py [--bricks-ra 2] [--bricks-dec 2] [--workers N]

Prints seconds and bricks per second for 1 worker and for --workers (default: every core),
and their ratio (the parallel speed-up; the ideal is the number of workers). The files
written are the same either way (tests/test_mock_survey.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bricks-ra", type=int, default=2)
    ap.add_argument("--bricks-dec", type=int, default=2)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: every core)")
    args = ap.parse_args()
    cfg = MockConfig(n_bricks_ra=args.bricks_ra, n_bricks_dec=args.bricks_dec, seed=42)
    n = args.bricks_ra * args.bricks_dec
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, args.workers):
            t0 = time.perf_counter()
            write_mock_survey(Path(tmp) / f"w{workers}", cfg, progress=False, workers=workers)
            seconds[workers] = time.perf_counter() - t0
    print(f"| workers | seconds ({n} bricks) | bricks/s |")
    print("|---|---|---|")
    for workers, s in seconds.items():
        print(f"| {workers} | {s:.1f} | {n / s:.3f} |")
    print(f"parallel speed-up with {args.workers} workers: {seconds[1] / seconds[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
