"""Inference throughput per model: ``lensfinder.ranking.infer.infer_sweep`` over memory-mapped fp16
shards (read, fp32 conversion on the device, input transform, forward, Parquet) beside the
bare model forward on fp32 batches already in memory, measured in one run.

    python benchmarks/infer_throughput.py [--models resnet_mini l18_shielded ...] [--n 1024] [--batch 256]

On a GPU both use bf16 autocast and channels_last, as the pipeline does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lensfinder.cutouts.shards import ShardWriter
from lensfinder.nets.registry import ModelSpec, count_parameters
from lensfinder.ranking.infer import infer_sweep


def make_shards(path: Path, n: int, size: int = 101):
    rng = np.random.default_rng(0)
    writer = ShardWriter(path, size, "dr10", max_rows=max(n // 2, 1))
    for i in range(n):
        writer.add(rng.normal(0, 0.05, (3, size, size)).astype(np.float32),
                   {"RELEASE": 10000, "BRICKID": 1, "OBJID": i, "RA": 150.0, "DEC": 2.0})
    writer.close(n)
    return path / "manifest.json"


def make_checkpoint(path: Path, name: str):
    spec = ModelSpec.from_config({"preset": name})
    model = spec.build()
    torch.save({"format": "lensfinder-checkpoint-1", "model_spec": spec.to_dict(), "state_dict": model.state_dict(),
                "cutout_shape": [3, 101, 101], "bands": ["g", "r", "z"], "units": "nanomaggy"}, path)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet_mini", "efficientnet_mini", "l18_shielded", "l18",
                                                     "efficientnetv2_s"])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lensfinder-infer-bench-"))
    manifest = make_shards(work / "shards", args.n)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, {args.n} cutouts of 101 x 101 px, batch {args.batch}")
    print(f"{'model':<18}{'params':>11}{'bare img/s':>12}{'pipeline img/s':>16}{'ratio':>7}")
    results = []
    for name in args.models:
        ck = work / f"{name}.pt"
        model = make_checkpoint(ck, name).to(device).eval()
        x = torch.randn(args.batch, 3, 101, 101, device=device) * 0.05
        if cuda:
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        @torch.no_grad()
        def bare():
            for _ in range(0, args.n, args.batch):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    model(x)
            if cuda:
                torch.cuda.synchronize()

        bare()  # warm-up
        t0 = time.perf_counter()
        bare()
        raw = args.n / (time.perf_counter() - t0)
        infer_sweep(manifest, ck, work / "warm.parquet", batch_size=args.batch, progress=False)  # warm-up
        t0 = time.perf_counter()
        infer_sweep(manifest, ck, work / f"{name}.parquet", batch_size=args.batch, progress=False)
        pipe = args.n / (time.perf_counter() - t0)
        print(f"{name:<18}{count_parameters(model):>11,}{raw:>12.1f}{pipe:>16.1f}{pipe / raw:>7.2f}")
        results.append({"model": name, "bare": raw, "pipeline": pipe})
    print(json.dumps({"device": str(device), "n": args.n, "batch": args.batch, "results": results}))


if __name__ == "__main__":
    main()
