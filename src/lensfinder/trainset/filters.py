"""Contamination filtering of the drawn nonlenses (step 3 of ``lensfinder.trainset.build``) and the
hard negatives added as nonlenses (step 5), every exclusion recorded with its reason.

Filters, in this order: (a) ``near_known_system``: the nonlens's cutout contains a
catalogued system or a positive (the cutout's square, or a circle of
``filter_radius_arcsec``); (b) with a previous model, its score (review, rejections,
automatic threshold, non-finite scores); (c) user exclusion lists and hard negatives.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lensfinder.catalog.crossmatch import pairs_in_square, pairs_within, tangent_offsets_arcsec
from lensfinder.constants import KEY, PIXSCALE
from lensfinder.errors import LensfinderError

log = logging.getLogger(__name__)


class Exclusions(list):
    """Every object considered and not used, as rows of ``exclusions.parquet``."""

    def add(self, row, reason: str, detail: str = "") -> None:
        self.append({**{k: int(row[k]) for k in KEY}, "RA": float(row["RA"]), "DEC": float(row["DEC"]),
                     "reason": reason, "detail": detail})


def key_tuples(frame) -> list:
    return list(zip(*(frame[k].astype(np.int64).tolist() for k in KEY)))


def read_key_list(path) -> set:
    """Keys (RELEASE, BRICKID, OBJID) listed in a CSV (header required, any column case)."""
    path = Path(path)
    if not path.exists():
        raise LensfinderError(f"key list {path} does not exist: check trainset.rejections / trainset.exclude")
    frame = pd.read_csv(path)
    frame.columns = [c.upper() for c in frame.columns]
    missing = [k for k in KEY if k not in frame.columns]
    if missing:
        raise LensfinderError(f"key list {path} lacks column(s) {missing}: list objects by RELEASE, BRICKID, OBJID")
    return set(key_tuples(frame))


def cutout_half_width_arcsec(size: int) -> float:
    """Half-width [arcsec] of a size-px cutout: centre pixel to the outermost pixel centres."""
    return (size // 2) * PIXSCALE


def near_known(ra, dec, known_ra, known_dec, known_names, half_width_arcsec, radius_arcsec=None) -> np.ndarray:
    """Per object (ra, dec) [deg]: None, or a sentence naming the nearest known position
    inside its cutout: the square of ``half_width_arcsec`` in the cutout's frame, or with
    ``radius_arcsec`` a circle of that radius."""
    if radius_arcsec is None:
        i, j = pairs_in_square(ra, dec, known_ra, known_dec, half_width_arcsec)
        where = f"inside its cutout (square of half-width {half_width_arcsec:.2f}\")"
    else:
        i, j = pairs_within(ra, dec, known_ra, known_dec, radius_arcsec)
        where = f"within trainset.filter_radius_arcsec ({radius_arcsec:g}\")"
    detail = np.full(len(np.atleast_1d(ra)), None, dtype=object)
    if len(i) == 0:
        return detail
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    known_ra, known_dec = np.asarray(known_ra, dtype=np.float64), np.asarray(known_dec, dtype=np.float64)
    dx, dy = tangent_offsets_arcsec(ra[i], dec[i], known_ra[j], known_dec[j])
    order = np.lexsort((np.hypot(dx, dy), i))  # per object, nearest first
    first = order[np.unique(i[order], return_index=True)[1]]
    for k in first:
        detail[i[k]] = f"{known_names[j[k]]} at dx={dx[k]:+.2f}\", dy={dy[k]:+.2f}\" {where}"
    return detail


def hidden_lens_keys(truth_path) -> set:
    if not truth_path:
        return set()
    truth = pd.read_csv(truth_path)
    hidden = truth[~truth["catalogued"].astype(bool)]
    return set(zip(hidden["release"].astype(int), hidden["brickid"].astype(int), hidden["objid"].astype(int)))


def _review_row(row, score, status) -> dict:
    """One line of review.csv: the nonlens, the previous model's score and what became of it."""
    return {**{k: int(row[k]) for k in KEY}, "RA": row["RA"], "DEC": row["DEC"], "TYPE": row["TYPE"],
            "STRATUM": row["STRATUM"], "score": float(score), "status": status}


class NonlensFilter:
    """Filters (a)-(c) for nonlenses drawn from ``objects`` (an ``ObjectPool``): the positions
    to keep clear (catalogued ``systems`` and the ``positives``), the previous model, and the
    key lists of the config. Excluded objects go to ``exclusions``; the previous model's
    scores above the review threshold to ``review``; ``counts`` follows the hidden lenses of
    a truth list through filter (b)."""

    def __init__(self, objects, systems, positives, cfg, half_width: float, exclusions: Exclusions):
        self.objects, self.cfg, self.half_width, self.exclusions = objects, cfg, half_width, exclusions
        self.scorer = None
        if cfg.previous_model:
            from lensfinder.nets.scoring import load_scorer  # torch only when there is a previous model

            self.scorer = load_scorer(cfg.previous_model)
        self.rejected = read_key_list(cfg.rejections) if cfg.rejections else set()
        self.excluded = set().union(*(read_key_list(p) for p in cfg.exclude)) if cfg.exclude else set()
        self.hard = set().union(*(read_key_list(p) for p in cfg.hard_negatives)) if cfg.hard_negatives else set()
        if cfg.hard_negatives_as not in ("nonlenses", "exclude"):
            raise LensfinderError(f"trainset.hard_negatives_as is {cfg.hard_negatives_as!r}: use nonlenses or exclude")
        self.hidden = hidden_lens_keys(cfg.truth)
        self.known_ra = np.concatenate([systems["ra"].to_numpy(), positives["RA"].to_numpy()])
        self.known_dec = np.concatenate([systems["dec"].to_numpy(), positives["DEC"].to_numpy()])
        self.known_names = [f"catalogued system {n!r}" if n else "an unnamed catalogued system" for n in systems["name"]]
        self.known_names += [f"positive {k}" for k in positives["KEY"]]
        self.review = []
        self.counts = {"hidden_before_b": 0, "hidden_after_b": 0}

    def rows(self, idx) -> pd.DataFrame:
        """Drawn nonlenses' full rows, with what filter (a) says of each (NEAR_DETAIL)."""
        rows = self.objects.rows(idx)
        return rows.assign(NEAR_DETAIL=near_known(rows["RA"].to_numpy(), rows["DEC"].to_numpy(), self.known_ra,
                                                  self.known_dec, self.known_names, self.half_width,
                                                  self.cfg.filter_radius_arcsec))

    def accept(self, chunk) -> list:
        """Filters (a), (b), (c) on a chunk of drawn nonlenses; the accepted rows (dicts)."""
        cfg, scorer, exclude = self.cfg, self.scorer, self.exclusions.add
        accepted = []
        rows = []
        for _, row in chunk.iterrows():
            if row["KEY"] in self.hard:  # never a random draw: added as a hard negative (step 5) or left out
                if cfg.hard_negatives_as == "exclude":
                    exclude(row, "hard_negative", "listed in trainset.hard_negatives")
                continue
            if not row["HAS_CUTOUT"]:
                exclude(row, "no_cutout", "its cutout failed (see the sweep's failures table)")
            elif isinstance(row["NEAR_DETAIL"], str):
                exclude(row, "near_known_system", row["NEAR_DETAIL"])
            else:
                rows.append(row)
        scores = np.full(len(rows), np.nan)
        if rows and scorer is not None:
            from lensfinder.nets.scoring import score_array

            scores = score_array(scorer, self.objects.stack([r["KEY"] for r in rows]))
        for row, score in zip(rows, scores):
            is_hidden = row["KEY"] in self.hidden
            self.counts["hidden_before_b"] += is_hidden
            # a NaN score (a bad cutout, usually) cannot clear the nonlens: review it, never let it in
            if scorer is not None and not np.isfinite(score):
                status = "score_not_finite"
                self.review.append(_review_row(row, score, status))
                exclude(row, status, f"the previous model scored it {score}: inspect its cutout")
                continue
            if scorer is not None and score >= cfg.review_threshold:
                status = "kept"
                if row["KEY"] in self.rejected:
                    status = "rejected_by_inspection"
                elif cfg.auto_threshold is not None and score >= cfg.auto_threshold:
                    status = "auto_threshold"
                self.review.append(_review_row(row, score, status))
                if status != "kept":
                    exclude(row, status, f"previous-model score {score:.4f}")
                    continue
            self.counts["hidden_after_b"] += is_hidden
            if row["KEY"] in self.excluded:
                exclude(row, "excluded_by_list", "listed in trainset.exclude")
                continue
            accepted.append({**row.to_dict(), "SCORE_PREVIOUS": float(score)})
        return accepted


def add_hard_negatives(table, rows, hard, half_width, exclusions: Exclusions):
    """Step 5: the listed hard negatives (``rows``: those among the selected nonlens
    candidates) as training nonlenses (SOURCE=hard_negative)."""
    keep = np.ones(len(rows), dtype=bool)
    val = table[table["SPLIT"] == "val"]
    i, _ = pairs_in_square(rows["RA"].to_numpy(), rows["DEC"].to_numpy(), val["RA"].to_numpy(), val["DEC"].to_numpy(),
                           half_width)
    overlapping = set(i.tolist())
    for n, (_, row) in enumerate(rows.iterrows()):
        if not row["HAS_CUTOUT"]:
            exclusions.add(row, "no_cutout", "a hard negative whose cutout failed (see the sweep's failures table)")
        elif isinstance(row["NEAR_DETAIL"], str):
            exclusions.add(row, "near_known_system", row["NEAR_DETAIL"])
        elif n in overlapping:
            exclusions.add(row, "overlaps_validation", "a hard negative sharing a cutout with a validation row")
        else:
            continue
        keep[n] = False
    if len(hard) > len(rows):  # counted in the summary (hard_negatives)
        log.warning("trainset.hard_negatives: %d listed object(s) are not selected nonlens candidates of this run "
                    "(other sweeps, or now positives)", len(hard) - len(rows))
    added = rows[keep].assign(LABEL=0, SPLIT="train", SOURCE="hard_negative", SOURCE_CATALOG="hard_negative",
                              SYSTEM_NAME="", SCORE_PREVIOUS=np.nan, INJECTION_ID=-1)
    return pd.concat([table, added[[c for c in table.columns if c in added.columns]]], ignore_index=True)
