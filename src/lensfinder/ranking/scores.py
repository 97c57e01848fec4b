"""Ensemble scores of objects: each base model's logit, their mean and the meta-learner's, one row
per object, and the ranking order and cut they are ranked by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
from scipy.special import expit

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.ranking.ensemble import apply_meta, load_meta
from lensfinder.settings import Settings
from lensfinder.tables import read_keyed


@dataclass
class RankConfig(Settings):
    section: ClassVar[str] = "rank"

    select: str = "top_fraction"  # threshold | top_fraction | top_n
    value: float = 1e-4  # paper IV: the top 0.01 percentile
    known_radius_arcsec: float = 3.0
    merge_radius_arcsec: float = 5.0
    mosaic_top: int = 48
    keep_top_per_sweep: int = 1000  # per-sweep shortlist: its best objects ...
    keep_above_score: float = 0.5  # ... and every object with an ensemble probability at least this


OBJECT_COLUMNS = ["RA", "DEC", "TYPE", "REGION", "MAG_G", "MAG_R", "MAG_Z", "SWEEP"]


def combine_scores(score_paths: dict, objects_paths, meta_path) -> pd.DataFrame:
    """``combine`` on files: ``score_paths`` model -> its score tables, the objects tables."""
    scores = {m: pd.concat([read_keyed(p, ["logit"]) for p in paths], ignore_index=True)
              for m, paths in score_paths.items()}
    objects = pd.concat([read_keyed(p, OBJECT_COLUMNS) for p in objects_paths], ignore_index=True)
    return combine(scores, objects, load_meta(meta_path), meta_path)


def combine(scores: dict, objects: pd.DataFrame, meta: dict, meta_path="the meta-learner") -> pd.DataFrame:
    """One row per scored object: object columns, each model's logit and probability, the
    mean and the ensemble. ``scores``: model -> a frame of keys and ``logit``. ``LOGIT_*``
    are float32-exact ranking scores; ``SCORE_*`` their probabilities (sigmoid), which
    saturate at 1.0 and are for reading, not ranking."""
    objects = _unique(objects, "the objects tables")
    table = None
    for model, frame in scores.items():
        frame = _unique(frame, f"the score tables of model {model}")
        col = frame["logit"].astype(np.float64).rename(f"LOGIT_{model.upper()}")
        table = col.to_frame() if table is None else table.join(col, how="outer")
    logit_cols = [c for c in table.columns if c.startswith("LOGIT_")]
    table = table.join(objects[OBJECT_COLUMNS], how="left")
    table["LOGIT_MEAN"] = table[logit_cols].mean(axis=1, skipna=False)
    features = table[logit_cols].rename(columns=lambda c: c.removeprefix("LOGIT_").lower())
    missing = [m for m in meta["inputs"] if m not in features.columns]
    if missing:
        raise LensfinderError(f"the meta-learner {meta_path} needs scores of model(s) {missing}, which are not given")
    finite = np.isfinite(features[meta["inputs"]].to_numpy()).all(axis=1)
    table["LOGIT_ENSEMBLE"] = np.nan
    if finite.any():  # an empty sweep (nothing selected, every cutout failed) has nothing to score
        table.loc[finite, "LOGIT_ENSEMBLE"] = apply_meta(meta, features[finite])
    for c in [*logit_cols, "LOGIT_MEAN", "LOGIT_ENSEMBLE"]:
        table["SCORE_" + c.removeprefix("LOGIT_")] = expit(table[c])
    return table.reset_index()


def _unique(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` indexed by key; a key in two sweeps' files is an error (joins would multiply it)."""
    frame = frame.set_index(list(KEY))
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()].unique()[:3].tolist()
        raise LensfinderError(f"{what} hold the same key in two sweeps, e.g. {dup}: check survey.sweeps for a "
                              "sweep listed twice or overlapping regions")
    return frame


def ranking_order(table: pd.DataFrame) -> pd.DataFrame:
    """Best first: by ensemble logit, ties by key (the same order whatever the row order)."""
    return table.sort_values(["LOGIT_ENSEMBLE", *KEY], ascending=[False, True, True, True], kind="stable")


def select(table: pd.DataFrame, cfg: RankConfig, n_scored: int | None = None) -> pd.DataFrame:
    """The objects above the recommendation cut, best first (ranked by the ensemble logit).
    ``n_scored``: the finite scores that ``top_fraction`` is a fraction of (default: the table's rows)."""
    ranked = ranking_order(table)
    if cfg.select == "threshold":
        return ranked[ranked["SCORE_ENSEMBLE"] >= cfg.value]
    return ranked.head(wanted(cfg, len(table) if n_scored is None else n_scored))


def wanted(cfg: RankConfig, n_scored: int) -> int:
    """How many objects a top_n or top_fraction cut selects out of ``n_scored``."""
    if cfg.select == "top_fraction":
        return max(1, int(np.ceil(cfg.value * n_scored)))
    if cfg.select == "top_n":
        return int(cfg.value)
    raise LensfinderError(f"rank.select {cfg.select!r} must be threshold, top_fraction or top_n")
