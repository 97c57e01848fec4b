"""Memory of the gathering stages at DR10's scale: shortlists, final rank, training set.

    python benchmarks/scale.py                     # 1,436 sweeps x 3,000 objects (4.3M)
    python benchmarks/scale.py --per-sweep 30292   # the full 43.5M (slow; ~20 GB of disk)

Builds synthetic inputs for ``--sweeps`` sweeps in a temporary directory (``--dir`` to keep
them): each sweep's objects table (the select rule's 37 columns), two models' score tables,
a shard set (sparse 8 x 8 px cutouts: the gathering reads keys and a few images, not
pixels), a lens catalogue of one system per 30,000 objects and a fitted meta-learner. Then
runs each stage in its own process and reads that process's peak resident memory
(``wait4``):

* ``shortlist``: every sweep's shortlist, 50 sweeps per job as DR10's config runs them
  (one job's memory: the batch's scores and one sweep's table at a time);
* ``rank``: the final ranking of the shortlists (paper IV's top 0.01 %, its mosaic);
* ``trainset``: the training set, ratio 100 nonlenses per lens in every stratum;
* ``whole-table``: what rank did before the shortlists, combining every object's scores
  in one table, on the first ``--baseline-sweeps`` sweeps only (it grows ~2.7 kB/object);
* ``baseline``: a process that imports the same modules and does nothing (Python, numpy,
  pandas, torch-free), subtracted for the per-object figures.

Prints peak memory per stage, per million objects above the baseline, and for the rank
and the training set the extrapolation to 43.5M objects (rank holds the shortlists, at
most keep_top_per_sweep x sweeps rows, so once each sweep has more objects than that its
memory no longer grows with the survey).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DR10_OBJECTS, DR10_SWEEPS = 43.5e6, 1436
KEY = ["RELEASE", "BRICKID", "OBJID"]
MODELS = ("resnet", "efficientnet")
TYPES, ZEXP = np.array(["SER", "DEV", "REX", "EXP"]), np.array(["3", "4", "5", "6", "8", "11+"])


def sweep_name(i: int) -> str:
    ra, dec = (i % 72) * 5, -90 + (i // 72) * 5
    edge = lambda r, d: f"{r:03d}{'m' if d < 0 else 'p'}{abs(d):03d}"  # noqa: E731
    return f"sweep-{edge(ra, dec)}-{edge(ra + 5, dec + 5)}"


def make_inputs(root: Path, sweeps: int, per_sweep: int, size: int, seed: int = 0):
    """Objects, scores and shard sets per sweep, a lens catalogue and a meta-learner."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lensfinder.ranking.ensemble import fit_meta_learner, save_meta

    rng = np.random.default_rng(seed)
    lenses = []
    for i in range(sweeps):
        name = sweep_name(i)
        n = per_sweep
        ra0, dec0 = (i % 72) * 5.0, -90.0 + (i // 72) * 5.0
        f32 = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)  # noqa: E731
        obj = pd.DataFrame({
            "RELEASE": np.full(n, 10000, np.int16), "BRICKID": (i * 200 + np.arange(n) // 400).astype(np.int32),
            "BRICKNAME": "0000m000", "OBJID": (np.arange(n) % 400).astype(np.int32), "TYPE": rng.choice(TYPES, n),
            "RA": ra0 + rng.uniform(0, 5, n), "DEC": dec0 + rng.uniform(0, 5, n), "EBV": f32(0, 0.1),
            **{f"FLUX_{b}": f32(1, 100) for b in "GRZ"}, **{f"MW_TRANSMISSION_{b}": f32(0.8, 1) for b in "GRZ"},
            **{f"NOBS_{b}": rng.integers(1, 9, n).astype(np.int16) for b in "GRZ"},
            "SHAPE_R": f32(0, 3), "SHAPE_E1": f32(-0.3, 0.3), "SHAPE_E2": f32(-0.3, 0.3), "SERSIC": f32(0.5, 6),
            **{f"PSFSIZE_{b}": f32(1, 1.5) for b in "GRZ"}, **{f"PSFDEPTH_{b}": f32(100, 3000) for b in "GRZ"},
            "MASKBITS": np.zeros(n, np.int32),
            **{f"MAG_{b}{s}": f32(17, 23) for b in "GRZ" for s in ("", "_DERED")},
            "REGION": "DECaLS", "ZEXP_BIN": rng.choice(ZEXP, n), "SWEEP": name,
        })
        obj.to_parquet(root / f"objects/{name}.parquet", index=False)
        is_lens = rng.random(n) < 1 / 30_000
        lenses.append(obj.loc[is_lens, ["RA", "DEC"]].assign(name=[f"L{i}-{j}" for j in range(is_lens.sum())]))
        for m in MODELS:
            logit = np.where(is_lens, rng.normal(4, 2, n), rng.normal(-6, 2, n)).astype(np.float32)
            pd.DataFrame({**{k: obj[k].astype(np.int64) for k in KEY}, "RA": obj.RA, "DEC": obj.DEC, "logit": logit,
                          "prob": 1 / (1 + np.exp(-logit.astype(np.float64)))}).to_parquet(
                root / f"scores/{m}/{name}.parquet", index=False)
        shard_dir = root / f"cutouts/{name}"
        shard_dir.mkdir(parents=True)
        np.lib.format.open_memmap(shard_dir / "shard-000.npy", mode="w+", dtype=np.float16, shape=(n, 3, size, size))
        index = obj[[*KEY, "BRICKNAME", "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_Z"]].assign(
            CENTER_DX=0.0, CENTER_DY=0.0, FLAGS=0, FRAC_MISSING_G=0.0, FRAC_MISSING_R=0.0, FRAC_MISSING_Z=0.0)
        for k in KEY:
            index[k] = index[k].astype(np.int64)
        pq.write_table(pa.Table.from_pandas(index, preserve_index=False), shard_dir / "shard-000.index.parquet")
        (shard_dir / "manifest.json").write_text(json.dumps({
            "format": "lensfinder-shards-1", "shape": [3, size, size], "dtype": "float16", "bands": ["g", "r", "z"],
            "units": "nanomaggy", "release": "dr10", "counts": {"selected": n, "written": n, "failed": 0},
            "shards": [{"array": "shard-000.npy", "index": "shard-000.index.parquet", "rows": n, "sha256": "0" * 64}]}))
    pd.concat(lenses).assign(grade="A").rename(columns={"RA": "ra", "DEC": "dec"}).to_csv(root / "lenses.csv", index=False)
    y = rng.random(4000) < 0.1
    x = np.stack([np.where(y, rng.normal(4, 2, 4000), rng.normal(-6, 2, 4000)) for _ in MODELS], 1)
    save_meta(fit_meta_learner(x, y.astype(int), hidden=300), list(MODELS), root / "meta.npz")


def run_stage(root: Path, names: list[str], stage: str, baseline_sweeps: int):
    """Run in the child: one stage on the inputs under ``root``; prints a JSON line."""
    from lensfinder.ranking.rank import rank
    from lensfinder.ranking.scores import RankConfig, combine_scores, select
    from lensfinder.ranking.shortlist import shortlist_batch
    from lensfinder.trainset.build import TrainsetConfig, build_trainset

    objects = [root / f"objects/{s}.parquet" for s in names]
    manifests = [root / f"cutouts/{s}/manifest.json" for s in names]
    cfg = RankConfig(select="top_fraction", value=1e-4)
    info = {}
    if stage == "shortlist":  # batches of 50 sweeps, as DR10's config runs them
        kept = 0
        for b in range(0, len(names), 50):
            batch = names[b : b + 50]
            infos = shortlist_batch(batch, {m: [root / f"scores/{m}/{s}.parquet" for s in batch] for m in MODELS},
                                    objects[b : b + 50], root / "meta.npz", cfg, root / f"shortlists/batch-{b // 50:04d}.parquet")
            kept += sum(i["kept"] for i in infos)
        info["kept"] = kept
    elif stage == "rank":
        summary = rank(sorted((root / "shortlists").glob("batch-*.parquet")), manifests,
                       [{"path": str(root / "lenses.csv"), "label": "synthetic"}], cfg, root / "recommendations")
        info = {"selected": summary["selected"], "held": summary["shortlists"]["kept"]}
    elif stage == "trainset":
        summary = build_trainset(objects, manifests, [{"path": str(root / "lenses.csv"), "label": "synthetic"}],
                                 TrainsetConfig(ratio=100), root / "trainset", progress=False)
        info = {"lenses": summary["lenses"], "nonlenses": summary["nonlenses"]}
    elif stage == "whole-table":
        sub = names[:baseline_sweeps]
        table = combine_scores({m: [root / f"scores/{m}/{s}.parquet" for s in sub] for m in MODELS},
                               objects[:baseline_sweeps], root / "meta.npz")
        info = {"objects": len(table), "selected": len(select(table.dropna(subset=["LOGIT_ENSEMBLE"]), cfg))}
    print(json.dumps(info))


def _inputs_current(root: Path) -> bool:
    """Inputs kept in ``--dir`` are reused unless missing or written by an older lensfinder
    (its meta-learner no longer loads); then they are built again."""
    from lensfinder.errors import LensfinderError
    from lensfinder.ranking.ensemble import load_meta, meta_logit

    if not (root / "meta.npz").exists():
        return False
    try:
        meta_logit(load_meta(root / "meta.npz")["model"], np.zeros((1, len(MODELS))))
    except LensfinderError:
        print(f"{root}: inputs from an older lensfinder, building them again")
        return False
    return True


def measure(root: Path, stage: str, args) -> dict:
    """Peak RSS (bytes) and wall time of one stage in a fresh process."""
    cmd = [sys.executable, __file__, "--child", stage, "--dir", str(root), "--sweeps", str(args.sweeps),
           "--per-sweep", str(args.per_sweep), "--baseline-sweeps", str(args.baseline_sweeps), "--size", str(args.size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"stage {stage} failed ({proc.returncode})")
    lines = out.strip().splitlines()
    info = json.loads(lines[-1]) if lines else {}
    return {"peak": usage.ru_maxrss * 1024, "wall": time.perf_counter() - t0, **info}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweeps", type=int, default=DR10_SWEEPS)
    p.add_argument("--per-sweep", type=int, default=3000, help="objects per sweep (DR10: 30,292)")
    p.add_argument("--baseline-sweeps", type=int, default=150, help="sweeps for the whole-table comparison")
    p.add_argument("--size", type=int, default=8, help="cutout size of the synthetic shards (px)")
    p.add_argument("--dir", type=Path, help="keep the inputs here (default: a temporary directory)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    names = [sweep_name(i) for i in range(args.sweeps)]
    if args.child == "inputs":
        make_inputs(args.dir, args.sweeps, args.per_sweep, args.size)
        print("{}")
        return
    if args.child:
        if args.child != "baseline":
            run_stage(args.dir, names, args.child, args.baseline_sweeps)
        else:
            import lensfinder.ranking.rank  # noqa: F401 - the stages' imports, for the baseline's memory
            import lensfinder.ranking.shortlist  # noqa: F401
            import lensfinder.trainset.build  # noqa: F401
            print("{}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        for d in ("objects", *(f"scores/{m}" for m in MODELS), "cutouts", "shortlists"):
            (root / d).mkdir(parents=True, exist_ok=True)
        n = args.sweeps * args.per_sweep
        t0 = time.perf_counter()
        if not _inputs_current(root):
            # in its own process too: a child forked from a large parent starts at the parent's RSS
            measure(root, "inputs", args)
        print(f"{args.sweeps:,} sweeps x {args.per_sweep:,} objects = {n:,} objects "
              f"(inputs in {time.perf_counter() - t0:.0f} s)\n")
        res = {s: measure(root, s, args) for s in ("baseline", "shortlist", "rank", "trainset", "whole-table")}
        base = res["baseline"]["peak"]
        n_whole = res["whole-table"]["objects"]
        gb = 1e9
        rows = [("baseline (imports only)", "-", res["baseline"], None),
                ("shortlist, 50 sweeps per job", f"{args.per_sweep:,} per sweep", res["shortlist"], None),
                ("rank (shortlists)", f"{res['rank']['held']:,} held of {n:,}", res["rank"], n),
                ("trainset", f"{n:,}", res["trainset"], n),
                (f"whole-table ranking (before), {args.baseline_sweeps} sweeps", f"{n_whole:,}", res["whole-table"],
                 n_whole)]
        print("| stage | objects | peak memory | per million objects (above baseline) | wall |")
        print("|---|---|---|---|---|")
        for name, objs, r, count in rows:
            per_m = f"{(r['peak'] - base) / gb / (count / 1e6):.3f} GB" if count else "-"
            print(f"| {name} | {objs} | {r['peak'] / gb:.2f} GB | {per_m} | {r['wall']:.0f} s |")
        whole_per_obj = (res["whole-table"]["peak"] - base) / n_whole
        rank_full = res["rank"]["peak"] if res["rank"]["held"] >= args.sweeps * 1000 * 0.99 else None
        ts_full = base + (res["trainset"]["peak"] - base) / n * DR10_OBJECTS
        print(f"\nAt DR10's {DR10_OBJECTS / 1e6:.1f}M objects:")
        print(f"- rank (shortlists): {'%.2f GB (it holds %s rows at any survey size beyond %d per sweep)' % (rank_full / gb, format(res['rank']['held'], ','), 1000) if rank_full else 'run with --per-sweep >= 1000'}"
              "; target < 4 GB")
        print(f"- rank as before (whole table): {(base + whole_per_obj * DR10_OBJECTS) / gb:.0f} GB "
              f"({whole_per_obj / 1e3:.2f} kB per object)")
        how = "measured" if n >= 0.99 * DR10_OBJECTS else f"extrapolated linearly from {n / 1e6:.1f}M"
        print(f"- trainset: {ts_full / gb:.2f} GB ({how}); target < 8 GB")
        if rank_full:
            print(f"- ratio, rank before / after at 43.5M: {(base + whole_per_obj * DR10_OBJECTS) / rank_full:.0f}x")


if __name__ == "__main__":
    main()
