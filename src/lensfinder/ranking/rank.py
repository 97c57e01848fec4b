"""Ranked recommendations: merge every sweep's shortlist, select, drop known systems,
merge duplicates, rank, and write tables, a summary and mosaics for visual inspection.

The ensemble scores are computed per sweep next to inference (``lensfinder.ranking.shortlist``),
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
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logit

from lensfinder.catalog.crossmatch import friends_of_friends, nearest
from lensfinder.catalog.lenses import CatalogSpec, union_catalogs
from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet, manifests_by_sweep
from lensfinder.display import save_mosaic
from lensfinder.files import atomic_path
from lensfinder.plots import save_note
from lensfinder.ranking.scores import RankConfig, select, wanted
from lensfinder.ranking.shortlist import check_cut_covers_shortlists, read_shortlists
from lensfinder.survey.positions import desi_names
from lensfinder.tables import write_tables

log = logging.getLogger(__name__)


def rank(shortlist_paths, manifests, catalog_specs, cfg: RankConfig, out_dir) -> dict:
    """Rank the shortlists (``lensfinder.ranking.shortlist``: ``<batch>.parquet`` with its
    ``<batch>.json`` beside; ``manifests``: every sweep's shard set) and write the
    recommendations, their summary and mosaic."""
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
    write_tables(out_dir, recs, "recommendations")
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


def _mosaic(path, top, manifest_of: dict):
    """The top recommendations' cutouts, read from their own sweeps' shard sets only."""
    if top.empty:
        save_note(path, "no recommendation")
        return
    sets = {sweep: ShardSet(manifest_of[sweep]) for sweep in top["SWEEP"].unique()}
    images = np.stack([np.asarray(sets[r.SWEEP].get((r.RELEASE, r.BRICKID, r.OBJID))) for r in top.itertuples()])
    labels = [f"#{r.RANK} {r.NAME}\np={r.SCORE_ENSEMBLE:.3f}" for r in top.itertuples()]
    save_mosaic(images, path, labels)
