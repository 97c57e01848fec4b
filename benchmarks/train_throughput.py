"""Training throughput per model: the trainer's step (indexing, augmentation, fp32
conversion, forward, backward, Adam) beside a bare forward/backward/Adam on a tensor
already in memory, measured in one run.

    python benchmarks/train_throughput.py [--models resnet_mini l18_shielded ...] [--batch 32] [--steps 5]

On a GPU (bf16 autocast and channels_last as in training; --compile to add torch.compile)
it also prints images/s per GPU beside paper IV's ~1.2k images/s per A100.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lensfinder.nets.registry import ModelSpec, count_parameters
from lensfinder.nets.train import TrainConfig, Trainer

PAPER_IV_A100 = 1200.0  # images/s per A100, both models (Inchausti et al. 2025, section 3.2)


def synthetic_trainset(path: Path, n: int, size: int = 101):
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 7 == 0).astype(int)
    frame = pd.DataFrame({"RELEASE": 10000, "BRICKID": 1, "OBJID": np.arange(n), "LABEL": labels,
                          "SPLIT": np.where(np.arange(n) % 5 == 0, "val", "train"), "ROW": np.arange(n)})
    path.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path / "labels.parquet")
    np.save(path / "cutouts.npy", rng.normal(0, 0.05, (n, 3, size, size)).astype(np.float16))


def timed(fn, steps):
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet_mini", "efficientnet_mini", "l18_shielded", "l18",
                                                     "efficientnetv2_s"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lensfinder-train-bench-"))
    synthetic_trainset(work / "ts", n=max(4 * args.batch, 200))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, batch {args.batch}, 101 x 101 px")
    print(f"{'model':<18}{'params':>11}{'bare img/s':>12}{'trainer img/s':>15}{'ratio':>7}{'vs paper IV A100':>18}")
    results = []
    for name in args.models:
        cfg = TrainConfig(batch_size=args.batch, epochs=1, compile=args.compile, num_threads=torch.get_num_threads())
        trainer = Trainer(work / "ts", ModelSpec.from_config({"preset": name}), cfg, work / name)
        order = trainer.epoch_indices(0)
        pipeline = args.batch * args.steps / timed(lambda: trainer.train_step(0, 0, order), args.steps)
        model = ModelSpec.from_config({"preset": name}).build().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.randn(args.batch, 3, 101, 101, device=device) * 0.05
        y = torch.zeros(args.batch, device=device)
        if device == "cuda":
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        def bare():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        raw = args.batch * args.steps / timed(bare, args.steps)
        rel = f"{pipeline / PAPER_IV_A100:.2f} x" if device == "cuda" else "-"
        print(f"{name:<18}{count_parameters(model):>11,}{raw:>12.1f}{pipeline:>15.1f}{pipeline / raw:>7.2f}{rel:>18}")
        results.append({"model": name, "bare": raw, "trainer": pipeline})
    print(json.dumps({"device": device, "batch": args.batch, "results": results}))


if __name__ == "__main__":
    main()
