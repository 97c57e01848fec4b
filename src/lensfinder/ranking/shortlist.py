"""Per-sweep shortlists: each sweep's ensemble scores, computed next to inference (one job
per inference batch), cut down to the rows the final ranking could need, so that ``rank``
never holds the survey.

A sweep keeps every object whose ensemble probability is at least
``RankConfig.keep_above_score``, its ``keep_top_per_sweep`` best objects besides, and every
object with a NaN score (``rank`` reports those). For the rest it records how many were
dropped and the best dropped ensemble logit, so that ``rank`` can prove its cut lies above
everything dropped, and stops with what to change when it does not.

Files per batch: ``<batch>.parquet`` (every sweep's kept rows, with the columns of
``rank.combine``) and ``<batch>.json`` (per sweep, the counts and the settings used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.ranking.ensemble import load_meta
from lensfinder.ranking.scores import OBJECT_COLUMNS, RankConfig, combine, ranking_order
from lensfinder.tables import read_keyed


def shortlist_batch(sweeps, score_paths: dict, objects_paths, meta_path, cfg: RankConfig, out_parquet) -> list[dict]:
    """Score a batch's sweeps with the meta-learner, one sweep at a time, and keep what the
    ranking could need of each.

    ``score_paths``: base model -> its score tables for the batch (inference's, with a SWEEP
    column; or one table per sweep, in ``sweeps`` order). ``objects_paths``: each sweep's
    objects table. Writes ``out_parquet`` and the counts beside it (same stem, ``.json``);
    returns the counts, one dict per sweep.
    """
    meta = load_meta(meta_path)
    scores = {m: _read_scores(paths, sweeps) for m, paths in score_paths.items()}
    kept, infos = [], []
    for sweep, objects_path in zip(sweeps, objects_paths, strict=True):
        objects = read_keyed(objects_path, OBJECT_COLUMNS)
        if len(objects) and set(objects["SWEEP"]) != {sweep}:
            raise LensfinderError(f"objects table {objects_path} holds sweep(s) {sorted(set(objects['SWEEP']))[:3]}, "
                                  f"not {sweep}: give each sweep's objects in the batch's order")
        table = combine({m: f[f["SWEEP"] == sweep] for m, f in scores.items()}, objects, meta, meta_path)
        rows, info = _shortlist(table, sweep, cfg)
        kept.append(rows)
        infos.append(info)
    out_parquet = Path(out_parquet)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_parquet) as tmp:
        pd.concat(kept, ignore_index=True).to_parquet(tmp, index=False)
    with atomic_path(out_parquet.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"sweeps": infos}, indent=1))
    return infos


def _read_scores(paths, sweeps) -> pd.DataFrame:
    """One model's score tables of a batch, with the SWEEP of every row."""
    import pyarrow.parquet as pq

    frames = []
    for i, p in enumerate(paths):
        if "SWEEP" in pq.read_schema(p).names:
            frames.append(read_keyed(p, ["logit", "SWEEP"]))
        elif len(paths) == len(sweeps):  # one table per sweep, in the batch's order
            frames.append(read_keyed(p, ["logit"]).assign(SWEEP=sweeps[i]))
        else:
            raise LensfinderError(f"score table {p} has no SWEEP column and is not one per sweep: re-run rule infer")
    return pd.concat(frames, ignore_index=True)


def _shortlist(table: pd.DataFrame, sweep: str, cfg: RankConfig) -> tuple[pd.DataFrame, dict]:
    """The rows of one sweep's combined table the ranking could need, and the counts."""
    logits = table["LOGIT_ENSEMBLE"].to_numpy()
    finite = np.isfinite(logits)
    ranked = ranking_order(table[finite])
    above = ranked["SCORE_ENSEMBLE"].to_numpy() >= cfg.keep_above_score
    keep = above | (np.arange(len(ranked)) < cfg.keep_top_per_sweep)
    kept, dropped = ranked[keep], ranked[~keep]
    shortlist = pd.concat([kept, table[~finite]], ignore_index=True)
    info = {
        "sweep": sweep, "scored": int(len(table)), "nan_scores": int((~finite).sum()), "kept": int(len(kept)),
        "dropped": int(len(dropped)),
        # rank's proof of completeness: its cut must lie above this (None: nothing was dropped)
        "dropped_max_logit": float(dropped["LOGIT_ENSEMBLE"].iloc[0]) if len(dropped) else None,
        "keep_top_per_sweep": int(cfg.keep_top_per_sweep), "keep_above_score": float(cfg.keep_above_score),
    }
    return shortlist, info


def read_shortlists(paths) -> tuple[pd.DataFrame, list[dict]]:
    """Every sweep's kept rows (one table; a key in two sweeps is an error) and counts (one
    dict per sweep, in the order of the batches and their sweeps)."""
    frames, infos = [], []
    for p in map(Path, paths):
        info_path = p.with_suffix(".json")
        if not info_path.exists():
            raise LensfinderError(f"{info_path} is missing beside {p}: re-run rule shortlist for that batch")
        infos += json.loads(info_path.read_text())["sweeps"]
        frames.append(pd.read_parquet(p))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "LOGIT_ENSEMBLE"])
    dup = table.duplicated(list(KEY), keep=False)
    if dup.any():
        keys = table.loc[dup, list(KEY)].drop_duplicates().head(3).to_numpy().tolist()
        raise LensfinderError(f"the sweeps' shortlists hold the same key in two sweeps, e.g. {keys}: check "
                              "survey.sweeps for a sweep listed twice or overlapping regions")
    return table, infos


def check_cut_covers_shortlists(bar_logit: float, infos: list[dict]):
    """Raise unless every object a sweep dropped lies strictly below ``bar_logit``, the
    logit every selected object reaches (the lowest selected logit, the threshold's logit in
    threshold mode, -inf when nothing was selected): then the shortlists rank as the whole
    table would."""
    bad = [i for i in infos if i["dropped_max_logit"] is not None and i["dropped_max_logit"] >= bar_logit]
    if bad:
        worst = max(bad, key=lambda i: i["dropped_max_logit"])
        raise LensfinderError(
            f"{len(bad)} sweep(s) dropped objects that could rank above the cut (logit {bar_logit:.4g}), e.g. "
            f"{worst['sweep']} (best dropped logit {worst['dropped_max_logit']:.4g}; it kept its top "
            f"{worst['keep_top_per_sweep']} and scores >= {worst['keep_above_score']}): raise "
            "rank.keep_top_per_sweep or lower rank.keep_above_score, and re-run the shortlist rule")
