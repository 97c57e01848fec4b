"""Ranked recommendations: merge every sweep's shortlist, select, drop known systems,
merge duplicates, rank, and write tables, a summary and mosaics for visual inspection.

The ensemble scores are computed per sweep next to inference (``lensfinder.shortlist``),
and each sweep keeps only what the ranking could need, so memory here follows the
shortlists, not the survey; the ranking checks that nothing dropped could pass its cut.

Selection (``RankConfig.select``): ``threshold`` (ensemble probability >= value),
``top_fraction`` (paper IV: the top 0.01 percentile, value 1e-4) or ``top_n``.
Recommendations within ``known_radius_arcsec`` of a system in any lens catalogue are
removed and listed with the catalogue; recommendations closer than ``merge_radius_arcsec``
to each other are one system (friends of friends): the highest score is kept and the
others listed. Objects with a NaN score are reported with their keys, not ranked.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from .catalogs import CatalogSpec, union_catalogs
from .crossmatch import friends_of_friends, nearest
from .ensemble import apply_meta, load_meta
from .errors import LensfinderError, atomic_path
from .survey import desi_names
from .shards import KEY, ShardSet, manifests_by_sweep, read_keyed

log = logging.getLogger(__name__)


@dataclass
class RankConfig:
    select: str = "top_fraction"  # threshold | top_fraction | top_n
    value: float = 1e-4  # paper IV: the top 0.01 percentile
    known_radius_arcsec: float = 3.0
    merge_radius_arcsec: float = 5.0
    mosaic_top: int = 48
    keep_top_per_sweep: int = 1000  # per-sweep shortlist: its best objects ...
    keep_above_score: float = 0.5  # ... and every object with an ensemble probability at least this

    @classmethod
    def from_dict(cls, d):
        return cls(**(d or {}))


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


def rank(shortlist_paths, manifests, catalog_specs, cfg: RankConfig, out_dir) -> dict:
    """Rank the shortlists (``lensfinder.shortlist``: ``<batch>.parquet`` with its
    ``<batch>.json`` beside; ``manifests``: every sweep's shard set) and write the
    recommendations, their summary and mosaic."""
    from .shortlist import check_cut_covers_shortlists, read_shortlists

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, infos = read_shortlists(shortlist_paths)
    manifest_of = manifests_by_sweep([i["sweep"] for i in infos], manifests)
    n_scored = sum(i["scored"] for i in infos)
    n_finite = n_scored - sum(i["nan_scores"] for i in infos)
    finite = np.isfinite(table["LOGIT_ENSEMBLE"].to_numpy(dtype=np.float64))
    nan = table[~finite]
    with atomic_path(out_dir / "nan_scores.csv") as tmp:
        nan[[*KEY, "RA", "DEC", "SWEEP"]].to_csv(tmp, index=False)
    if len(nan):
        log.warning("%d object(s) have NaN scores and are not ranked (listed in nan_scores.csv)", len(nan))
    scored = table[finite]
    chosen = select(scored, cfg, n_finite)
    if cfg.select == "threshold":
        bar = float(logit(cfg.value))
    elif len(chosen) < min(wanted(cfg, n_finite), n_finite):  # the shortlists ran out: anything dropped counts
        bar = -np.inf
    else:
        bar = float(chosen["LOGIT_ENSEMBLE"].min()) if len(chosen) else -np.inf
    check_cut_covers_shortlists(bar, infos)

    # drop known systems
    systems, _ = union_catalogs([CatalogSpec.from_dict(c) for c in catalog_specs])
    idx, sep = nearest(chosen["RA"].to_numpy(), chosen["DEC"].to_numpy(), systems["ra"].to_numpy(),
                       systems["dec"].to_numpy(), cfg.known_radius_arcsec)
    known = chosen[idx >= 0].assign(KNOWN_NAME=systems["name"].to_numpy()[idx[idx >= 0]],
                                    KNOWN_CATALOGS=systems["catalogs"].to_numpy()[idx[idx >= 0]],
                                    SEPARATION_ARCSEC=sep[idx >= 0])
    recs = chosen[idx < 0].reset_index(drop=True)  # still best first

    # merge duplicates of one system
    groups = friends_of_friends(recs["RA"].to_numpy(), recs["DEC"].to_numpy(), cfg.merge_radius_arcsec)
    recs["GROUP"] = groups
    keep = ~pd.Series(groups).duplicated().to_numpy()  # sorted by score: the first of a group is the best
    merged = {g: ";".join(f"{r}/{b}/{o}" for r, b, o in zip(grp.RELEASE, grp.BRICKID, grp.OBJID))
              for g, grp in recs[~keep].groupby("GROUP")}
    merged_rows = recs[~keep]
    recs = recs[keep].copy()
    recs["MERGED"] = [merged.get(g, "") for g in recs["GROUP"]]
    recs["RANK"] = np.arange(1, len(recs) + 1)
    recs["NAME"] = desi_names(recs["RA"], recs["DEC"])
    score_cols = sorted(c for c in recs.columns if c.startswith("SCORE_") and c not in ("SCORE_MEAN", "SCORE_ENSEMBLE"))
    cols = ["RANK", "NAME", *KEY, "RA", "DEC", "TYPE", "REGION", "MAG_G", "MAG_R", "MAG_Z", *score_cols,
            "SCORE_MEAN", "SCORE_ENSEMBLE", "LOGIT_ENSEMBLE", "MERGED", "SWEEP"]
    recs = recs[cols]
    _write_tables(out_dir, recs)
    with atomic_path(out_dir / "known_matches.csv") as tmp:
        known[[*KEY, "RA", "DEC", "SCORE_ENSEMBLE", "LOGIT_ENSEMBLE", "KNOWN_NAME", "KNOWN_CATALOGS", "SEPARATION_ARCSEC"]].to_csv(tmp, index=False)

    summary = {
        "scored_objects": int(n_scored), "nan_scores": int(len(nan)), "selection": {"mode": cfg.select, "value": cfg.value},
        "selected": int(len(chosen)),
        # the cut as a score: every object whose ensemble logit is at least this was selected
        "cut_logit_ensemble": float(chosen["LOGIT_ENSEMBLE"].min()) if len(chosen) else None,
        "known_systems_removed": int(len(known)),
        "merged_duplicates": int((~keep).sum()), "recommendations": int(len(recs)),
        "per_type": recs["TYPE"].value_counts().to_dict(), "per_region": recs["REGION"].value_counts().to_dict(),
        # what the shortlists kept (the settings they were made with, a list where sweeps differ)
        "shortlists": {**{k: _one_or_all(i[k] for i in infos) for k in ("keep_top_per_sweep", "keep_above_score")},
                       "kept": int(sum(i["kept"] for i in infos)), "dropped": int(sum(i["dropped"] for i in infos))},
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    counts = pd.DataFrame(infos, columns=["sweep", "scored", "nan_scores", "kept"]).set_index("sweep")
    per_sweep = pd.DataFrame({
        "scored": counts["scored"], "nan_scores": counts["nan_scores"], "shortlisted": counts["kept"],
        "above_cut": chosen.groupby("SWEEP").size(), "known_removed": known.groupby("SWEEP").size(),
        "merged": merged_rows.groupby("SWEEP").size(), "recommended": recs.groupby("SWEEP").size(),
    }).fillna(0).astype(int).rename_axis("sweep").reset_index()
    with atomic_path(out_dir / "counts_per_sweep.csv") as tmp:
        per_sweep.to_csv(tmp, index=False)
    _mosaic(out_dir / "mosaic.png", recs.head(cfg.mosaic_top), manifest_of)
    return summary


def _one_or_all(values):
    values = sorted(set(values))
    return values[0] if len(values) == 1 else values


def _write_tables(out_dir, recs, stem="recommendations"):
    import fitsio
    import pyarrow as pa
    import pyarrow.parquet as pq

    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(recs, preserve_index=False), tmp)
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        recs.to_csv(tmp, index=False)
    arr = np.zeros(len(recs), dtype=[(c, _fits_dtype(recs[c])) for c in recs.columns])
    for c in recs.columns:
        arr[c] = recs[c].to_numpy().astype(arr.dtype[c]) if arr.dtype[c].kind != "S" else recs[c].astype(str).str.encode("ascii")
    with atomic_path(out_dir / f"{stem}.fits") as tmp:
        fitsio.write(str(tmp), arr, extname=stem.upper(), clobber=True)


def _fits_dtype(col: pd.Series):
    if col.dtype.kind in "iu":
        return "i8"
    if col.dtype.kind == "f":
        return "f8"
    width = max(1, int(col.astype(str).str.len().max() or 1)) if len(col) else 1
    return f"S{width}"


def _mosaic(path, top, manifest_of: dict):
    """The top recommendations' cutouts, read from their own sweeps' shard sets only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .display import save_mosaic

    with atomic_path(path) as tmp:
        if top.empty:
            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no recommendation", ha="center", va="center")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
            return
        sets = {sweep: ShardSet(manifest_of[sweep]) for sweep in top["SWEEP"].unique()}
        images = np.stack([np.asarray(sets[r.SWEEP].get((r.RELEASE, r.BRICKID, r.OBJID))) for r in top.itertuples()])
        labels = [f"#{r.RANK} {r.NAME}\np={r.SCORE_ENSEMBLE:.3f}" for r in top.itertuples()]
        save_mosaic(images, tmp, labels)
