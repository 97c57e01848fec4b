"""The sealed survey's settings, and its build: sweeps, truth, selection and cutouts.

It is the training mock's sky (``mock`` section: the same populations, contaminant zoo,
depth and seeing) drawn with its own seed on its own bricks, so it shares no object, brick
or deflector with the survey the networks learned from. Its sweeps and truth are written in
the survey's own format (a tree without coadds) and selected by the run's own selection;
its cutouts are rendered straight from the drawn sky (``lensfinder.mock.stamps``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lensfinder.catalog.select import SelectionConfig, select_sweep
from lensfinder.constants import PIXSCALE
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.mock.layout import MockConfig, mock_bricks, mock_trees, planned_sweeps
from lensfinder.mock.sky import MockSky
from lensfinder.mock.stamps import SkyIndex, render_stamp
from lensfinder.settings import Settings
from lensfinder.workers import ordered_results


@dataclass
class SealedConfig(Settings):
    """Where and how large the sealed survey is; counts are per brick (as the mock's)."""

    section: ClassVar[str] = "sealed"
    root: str = "resources/sealed_survey"  # its data; each run's scores and figures go to results/<run>/sealed/
    seed: int = 20270101  # its own sky: never the training mock's seed
    ra_center: float = 200.0  # deg; its own area, away from the training mock's bricks
    dec_center: float = -10.0
    n_bricks_ra: int = 22
    n_bricks_dec: int = 23  # 506 bricks: over 100,000 selected nonlenses at 205-220 a brick
    lenses: int = 4  # deflectors per brick: ~1,800, some 1,200 of them selected (recall to a few per cent)


def sealed_mock_config(mock: MockConfig, sealed: SealedConfig) -> MockConfig:
    """The training mock's config with the sealed survey's seed, area and lens count, in the
    south (DECaLS) region only, whatever regions the training mock writes: the sealed area
    lies south of Dec 32.375."""
    return replace(mock, seed=sealed.seed, ra_center=sealed.ra_center, dec_center=sealed.dec_center,
                   n_bricks_ra=sealed.n_bricks_ra, n_bricks_dec=sealed.n_bricks_dec, lenses=sealed.lenses,
                   regions=["south"])


def check_apart(training: MockConfig, sealed: MockConfig) -> None:
    """The sealed survey must not share a seed or a brick with the training mock."""
    if training.seed == sealed.seed:
        raise LensfinderError(f"sealed.seed {sealed.seed} is the training mock's seed: give the sealed survey its own")
    shared = np.intersect1d(mock_bricks(training)["BRICKID"], mock_bricks(sealed)["BRICKID"])
    if len(shared):
        raise LensfinderError(f"the sealed survey shares {len(shared)} brick(s) with the training mock (e.g. BRICKID "
                              f"{int(shared[0])}): move sealed.ra_center / sealed.dec_center away from mock's")


def build_sealed_survey(out_dir, sealed: MockConfig, selection: SelectionConfig, size: int = 101,
                        workers: int = 1, max_rows: int = 20000, progress: bool = True) -> dict:
    """Draw the sealed sky and write, under ``out_dir``: ``survey/`` (sweeps, bricks tables,
    truth/lenses.csv and truth/lookalikes.csv; no coadds), ``objects/<sweep>.parquet`` and
    ``.counts.csv`` (the run's selection), ``cutouts/<sweep>/`` (shards) and ``survey.json``
    (the config and the counts at every step). Returns that summary."""
    from lensfinder.mock.sky import MockSky
    from lensfinder.mock.write import _sweep_rows, _write_bricks, _write_catalogues, _write_sweeps
    from lensfinder.survey.sweeps import parse_sweep_name

    out_dir = Path(out_dir)
    root = out_dir / "survey"
    tree = mock_trees(root, sealed)[0]
    msky = MockSky(sealed)
    rows = _sweep_rows(msky, sealed)
    _write_bricks([tree], msky.bricks, sealed)
    _write_sweeps(tree, rows, sealed)
    _write_catalogues(root, msky, sealed)
    index = SkyIndex(msky)
    counts = {}
    for sweep in planned_sweeps(sealed):
        objects_path = out_dir / "objects" / f"{sweep}.parquet"
        objects_path.parent.mkdir(parents=True, exist_ok=True)
        select_sweep(tree.sweep_path(sweep), objects_path, out_dir / "objects" / f"{sweep}.counts.csv", selection,
                     tree_region=tree.region, progress=progress)
        objects = pq.read_table(objects_path).to_pandas()
        manifest = render_sweep_stamps(msky, index, objects, out_dir / "cutouts" / sweep, size, sealed.release,
                                       seed=sealed.seed, workers=workers, max_rows=max_rows, progress=progress)
        in_sweep = parse_sweep_name(sweep).contains(rows["RA"], rows["DEC"])
        counts[sweep] = {"sweep_rows": int(in_sweep.sum()), **manifest["counts"]}
    summary = {"mock": asdict(sealed), "sources": len(msky.sources), "lenses": len(msky.lenses),
               "lookalikes": len(msky.lookalikes), "bricks": len(msky.bricks), "sweeps": counts,
               "cutouts": "rendered from the drawn sky (lensfinder.mock.stamps); no coadds written"}
    with atomic_path(out_dir / "survey.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    return summary


_SKY = None  # (msky, index, size, seed, noise) while a sweep's stamps are rendered (forked workers read it)
STAMP_COLUMNS = ("RELEASE", "BRICKID", "OBJID", "BRICKNAME", "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_Z")


def _stamp(row: dict):
    msky, index, size, seed, noise = _SKY
    key = (int(row["RELEASE"]), int(row["BRICKID"]), int(row["OBJID"]))
    image, info = render_stamp(msky, index, row["RA"], row["DEC"], key[1], size, [seed, *key], noise)
    return image, {**row, "RELEASE": key[0], "BRICKID": key[1], "OBJID": key[2], **info}


def _stamps(rows: list) -> list:
    return [_stamp(row) for row in rows]


def render_sweep_stamps(msky: MockSky, index: SkyIndex, objects: pd.DataFrame, out_dir, size: int, release: str,
                        seed: int, workers: int = 1, max_rows: int = 20000, noise: bool = True,
                        progress: bool = True) -> dict:
    """One sweep's selected objects as a shard set in ``out_dir`` (the cutouts stage's
    format, ``source: mock-stamps``); each stamp's noise is seeded by ``seed`` and the
    object's key, so the shards do not depend on ``workers``."""
    from tqdm import tqdm

    from lensfinder.cutouts.shards import ShardWriter

    global _SKY
    writer = ShardWriter(out_dir, size, release, max_rows=max_rows, source="mock-stamps")
    rows = objects[list(STAMP_COLUMNS)].to_dict("records")
    _SKY = (msky, index, size, seed, noise)
    bar = dict(total=len(rows), desc=f"stamps {out_dir.name}", unit="obj", disable=not progress, mininterval=10)
    try:
        if workers > 1 and len(rows) > 1:
            chunks = [rows[i : i + 16] for i in range(0, len(rows), 16)]
            names = [f"objects {c[0]['BRICKID']}/{c[0]['OBJID']} to {c[-1]['BRICKID']}/{c[-1]['OBJID']}" for c in chunks]
            done = ordered_results(_stamps, chunks, names, workers, f"sealed stamps of {out_dir.name}")
            for image, row in tqdm((r for chunk in done for r in chunk), **bar):
                writer.add(image, row)
        else:
            for image, row in tqdm(map(_stamp, rows), **bar):
                writer.add(image, row)
    finally:
        _SKY = None
    return writer.close(len(rows), extra={"cutout": {"size": size, "recentre": False, "pixscale_arcsec": PIXSCALE}})
