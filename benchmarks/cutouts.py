"""Cutout throughput on full-size (3600 x 3600) mock bricks, beside the floors of reading
the pixels, its parallel speed-up, and shard read throughput from memory-mapped fp16 shards.

    python benchmarks/cutouts.py [--objects 2000] [--size 101] [--workers N]

Prints cutouts per second and the ratios:
  tile floor: decompressing each 100 x 100 RICE tile the cutouts touch once (3 bands),
    the least any extraction must do;
  section-read floor: fitsio section reads of every cutout (a tile shared by neighbouring
    cutouts is decompressed again for each);
  extraction with 1 worker (one core) and with --workers (default: every core): the
    parallel speed-up and the throughput per core;
  shard read (cutouts/s, batches of 1024) from the page cache.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import fitsio
import numpy as np
import pandas as pd

from lensfinder.cutouts.extract import CutoutExtractor, extract_sweep, touched_tiles
from lensfinder.cutouts.shards import ShardSet
from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey
from lensfinder.mock.zoo import SKY_FRACTIONS
from lensfinder.survey.bricks import BrickGrid
from lensfinder.survey.tree import SurveyTree


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--size", type=int, default=101)
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes (default: every core)")
    ap.add_argument("--workdir", default=None, help="keep the mock here (default: a temporary directory)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lensfinder-bench-"))
    root = work / "mock"
    cfg = MockConfig(n_bricks_ra=2, n_bricks_dec=1, galaxies=300, stars=50, lenses=2, contaminants={k: 0.0 for k in SKY_FRACTIONS}, seed=11)
    if not (root / "mock.json").exists():
        print("writing a 2-brick full-size mock ...", flush=True)
        write_mock_survey(root, cfg, progress=False)
    tree = SurveyTree(root)
    grid = BrickGrid.build()
    bricks = [b for b in grid.bricks_in_box(149.75, 150.25, 1.9, 2.1)]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(args.objects):
        b = bricks[i % len(bricks)]
        ra, dec = rng.uniform(b["RA1"], b["RA2"]), rng.uniform(b["DEC1"], b["DEC2"])
        rows.append({"RELEASE": 10000, "BRICKID": int(b["BRICKID"]), "OBJID": i, "BRICKNAME": b["BRICKNAME"].decode(),
                     "RA": ra, "DEC": dec, "TYPE": "SER", "REGION": "DECaLS", "ZEXP_BIN": "3", "MAG_Z": 19.0})
    objects = pd.DataFrame(rows)
    objects.to_parquet(work / "objects.parquet")

    # floor: the same 3-band sections, read with fitsio, brick by brick (files opened once)
    ex = CutoutExtractor(tree, args.size)
    half = args.size // 2
    sections = []
    for r in objects.sort_values(["BRICKNAME", "OBJID"]).itertuples():
        home = ex.brick(r.BRICKNAME)
        x, y = home.wcs.all_world2pix(r.RA, r.DEC, 0)
        sections.append((r.BRICKNAME, int(round(float(x))) - half, int(round(float(y))) - half))
    files = {name: [fitsio.FITS(str(tree.coadd_path(name, b))) for b in "grz"] for name, _, _ in sections}
    t0 = time.perf_counter()
    for name, x0, y0 in sections:
        for f in files[name]:
            f[1][max(y0, 0) : y0 + args.size, max(x0, 0) : x0 + args.size]
    floor = len(sections) / (time.perf_counter() - t0)

    # tile floor: every touched tile of every band decompressed exactly once
    tiles = set()
    for name, x0, y0 in sections:
        h, w = files[name][0][1].get_dims()
        tiles |= {(name, *t) for t in touched_tiles(max(y0, 0), min(y0 + args.size, h), max(x0, 0),
                                                     min(x0 + args.size, w), (100, 100))}
    t0 = time.perf_counter()
    for name, ty, tx in sorted(tiles):
        for f in files[name]:
            f[1][ty * 100 : (ty + 1) * 100, tx * 100 : (tx + 1) * 100]
    tile_floor = len(sections) / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    extract_sweep(work / "objects.parquet", work / "shards", tree, size=args.size, progress=False)
    rate = len(objects) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    extract_sweep(work / "objects.parquet", work / "shards_par", tree, size=args.size, progress=False,
                  workers=args.workers)
    rate_par = len(objects) / (time.perf_counter() - t0)

    shards = ShardSet(work / "shards" / "manifest.json")
    for _ in shards.batches(1024):  # warm the page cache (and import torch)
        pass
    t0 = time.perf_counter()
    # the raw read; what the shards' checksum costs on top is benchmarks/host_pipeline.py's
    n = sum(len(images) for _ in range(10) for images, _ in shards.batches(1024, verify=False))
    read = n / (time.perf_counter() - t0)

    per_cutout = 3 * len(tiles) / len(sections)
    print(f"cutout size {args.size} px, {len(objects)} objects on {len(bricks)} full-size bricks; "
          f"{len(tiles)} tiles touched ({per_cutout:.1f} tile reads per cutout, 3 bands)")
    print(f"tile floor (each touched tile once):    {tile_floor:8.0f} cutouts/s (1 core)")
    print(f"section-read floor (3 bands, fitsio):  {floor:8.0f} cutouts/s (1 core)")
    print(f"lensfinder extraction, 1 worker:       {rate:8.0f} cutouts/s")
    print(f"lensfinder extraction, {args.workers} workers:      {rate_par:8.0f} cutouts/s "
          f"({rate_par / args.workers:.0f} per core)")
    print(f"ratio extraction (1 worker) / tile floor:     {rate / tile_floor:8.2f}")
    print(f"ratio extraction (1 worker) / section floor:  {rate / floor:8.2f}")
    print(f"parallel speed-up, {args.workers} workers / 1:          {rate_par / rate:8.2f}")
    print(f"shard read (memory-mapped, torch):     {read:8.0f} cutouts/s")
    print(f"ratio shard read / extraction:         {read / rate:8.1f}")


if __name__ == "__main__":
    main()
