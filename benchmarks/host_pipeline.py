"""The host side of inference without a GPU: how fast the pipeline can feed a network.

The inference pipeline (``lensfinder.nets.scoring.score_batches`` over
``ShardSet.batches``: memory-mapped fp16 shards read batch by batch, checksummed, made a
tensor, converted to float32, run through the model, logits back as NumPy) is run with the
network replaced by a no-op, beside a plain memory copy of the same bytes, in one run; so
the input pipeline's ceiling is known without a GPU. The figures it prints, as ratios:

* host side / target: what a GPU job's host does per batch (read from the memory map,
  CRC-32, a tensor; the float32 conversion and the network run on the GPU) against 1.5 x
  the fastest bare forward measured on the H200 (EfficientNetV2-S compiled, 65,100 img/s,
  issue 23), about 98,000 cutouts/s per job;
* host side / memory copy: what the reader's own steps cost over moving the bytes;
* checked / unchecked: the cost of the shards' CRC-32 check as they are read;
* the whole pipeline on the CPU with a no-op network (the float32 conversion on the CPU
  too), for CPU runs.

    python benchmarks/host_pipeline.py [--n 16384] [--batch 1024] [--repeats 3]

The last line is the figures as JSON. Shards are synthetic (Gaussian noise, 101 px, fp16),
written once to a temporary directory and read from the page cache (warmed first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lensfinder.cutouts.shards import ShardSet, ShardWriter
from lensfinder.nets.scoring import score_batches

H200_FASTEST_BARE = 65_100  # img/s, efficientnetv2_s under torch.compile on an H200 (issue 23)
TARGET = 1.5 * H200_FASTEST_BARE


class NoOpNetwork(torch.nn.Module):
    """Stands in for the network: one logit per image, from a read of its first pixel, through
    a final linear layer where a LensNet has it (``backbone.head``), so that the pipeline's
    float32 head applies as it does to a real one."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Module()
        self.backbone.head = torch.nn.Linear(1, 1)

    def forward(self, x):
        return self.backbone.head(x[:, :1, 0, 0]).reshape(-1)


def write_shards(path: Path, n: int, size: int, rows_per_shard: int) -> Path:
    rng = np.random.default_rng(0)
    writer = ShardWriter(path, size, "dr10", max_rows=rows_per_shard)
    block = rng.normal(0, 0.05, (64, 3, size, size)).astype(np.float32)
    for i in range(n):
        writer.add(block[i % 64], {"RELEASE": 10000, "BRICKID": 1, "OBJID": i, "RA": 150.0, "DEC": 2.0})
    writer.close(n)
    return path / "manifest.json"


def best_rate(run, n, repeats) -> float:
    """Cutouts per second of the fastest of ``repeats`` runs (the machine's noise is one-sided)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16384, help="cutouts (default %(default)s)")
    ap.add_argument("--batch", type=int, default=1024, help="batch size (default %(default)s)")
    ap.add_argument("--size", type=int, default=101, help="cutout size in pixels (default %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each, the fastest kept (default %(default)s)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = write_shards(Path(tmp) / "shards", args.n, args.size, rows_per_shard=4096)
        shards = ShardSet(manifest)
        buffers = [np.empty_like(a) for a in shards.arrays]

        def memcpy():
            for src, dst in zip(shards.arrays, buffers):
                np.copyto(dst, src)

        def read(verify):
            for _ in shards.batches(args.batch, verify=verify):
                pass

        def pipeline(verify):
            model = NoOpNetwork().eval()
            images = (b for b, _ in shards.batches(args.batch, verify=verify))
            for _ in score_batches(model, images, cpu):
                pass

        memcpy()  # warm the page cache and the buffers
        rates = {
            "memcpy": best_rate(memcpy, args.n, args.repeats),
            "host_side_unchecked": best_rate(lambda: read(False), args.n, args.repeats),
            "host_side": best_rate(lambda: read(True), args.n, args.repeats),
            "cpu_pipeline_noop_unchecked": best_rate(lambda: pipeline(False), args.n, args.repeats),
            "cpu_pipeline_noop": best_rate(lambda: pipeline(True), args.n, args.repeats),
        }
    ratios = {
        "host_side_to_target": rates["host_side"] / TARGET,
        "host_side_to_memcpy": rates["host_side"] / rates["memcpy"],
        "checked_to_unchecked_host_side": rates["host_side"] / rates["host_side_unchecked"],
        "checked_to_unchecked_cpu_pipeline": rates["cpu_pipeline_noop"] / rates["cpu_pipeline_noop_unchecked"],
    }
    figures = {"cutouts": args.n, "batch": args.batch, "size": args.size, "threads": torch.get_num_threads(),
               "target_cutouts_per_s": round(TARGET), "cutouts_per_s": {k: round(v) for k, v in rates.items()},
               "ratios": {k: round(v, 3) for k, v in ratios.items()}}
    width = max(len(k) for k in [*rates, *ratios])
    for k, v in rates.items():
        print(f"{k:<{width}}  {v:10.0f} cutouts/s")
    for k, v in ratios.items():
        print(f"{k:<{width}}  {v:10.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
