"""Per-sweep shortlists: each sweep's ensemble scores, computed next to inference, cut
down to the rows the final ranking could need, so that ``rank`` never holds the survey.

A sweep keeps every object whose ensemble probability is at least
``RankConfig.keep_above_score``, its ``keep_top_per_sweep`` best objects besides, and every
object with a NaN score (``rank`` reports those). For the rest it records how many were
dropped and the best dropped ensemble logit, so that ``rank`` can prove its cut lies above
everything dropped, and stops with what to change when it does not.

Files per sweep: ``<sweep>.parquet`` (the kept rows, with the columns of
``rank.combine_scores``) and ``<sweep>.json`` (the counts and the settings used).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LensfinderError, atomic_path
from .rank import RankConfig, combine_scores, ranking_order
from .shards import KEY


def shortlist_sweep(sweep: str, score_paths: dict, objects_path, meta_path, cfg: RankConfig, out_parquet) -> dict:
    """Score one sweep with the meta-learner and keep what the ranking could need.

    ``score_paths``: base model name -> that model's score table for this sweep. Writes
    ``out_parquet`` and the counts beside it (same stem, ``.json``); returns the counts.
    """
    table = combine_scores({m: [p] for m, p in score_paths.items()}, [objects_path], meta_path)
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
    out_parquet = Path(out_parquet)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_parquet) as tmp:
        shortlist.to_parquet(tmp, index=False)
    with atomic_path(out_parquet.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def read_shortlists(paths) -> tuple[pd.DataFrame, list[dict]]:
    """Every sweep's kept rows (one table; a key in two sweeps is an error) and counts."""
    frames, infos = [], []
    for p in map(Path, paths):
        info_path = p.with_suffix(".json")
        if not info_path.exists():
            raise LensfinderError(f"{info_path} is missing beside {p}: re-run rule shortlist for that sweep")
        infos.append(json.loads(info_path.read_text()))
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
