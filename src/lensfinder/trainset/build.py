"""The labelled training sample: positives from lens catalogues, stratified nonlenses,
contamination filtering with every exclusion recorded, and a stratified split.

Recipe (papers III and IV):

1. Positives: every catalogued system (optionally of the allowed grades) matched to its
   nearest selected object within ``match_radius_arcsec``.
2. Nonlenses: in each stratum (TYPE x REGION x ZEXP_BIN) draw ``ratio`` nonlenses per lens
   at random from the selected objects (seeded).
3. Contamination filtering of each drawn nonlens, in this order:
   a. ``near_known_system``: its cutout contains a catalogued system (any grade,
      low-grade candidates included) or a positive. By default the test is the cutout's
      square footprint: the tangent-plane offsets at the nonlens (+x toward decreasing RA,
      +y North, as the cutout on the brick's TAN grid) satisfy |dx| and |dy| <= the
      half-width, (size // 2) * 0.262" (13.1" at 101 px). With ``filter_radius_arcsec``
      set, the test is a circle of that radius instead;
   b. with a previous model: scored; those >= ``review_threshold`` go to the review table
      (with a mosaic); ``rejected_by_inspection`` if listed in the rejections file;
      ``auto_threshold`` if >= the optional automatic threshold; ``score_not_finite``
      (reviewed and excluded) if the previous model's score is NaN or inf;
   c. ``excluded_by_list``: listed in a user exclusion file; ``hard_negative``: listed in
      ``hard_negatives`` (objects the graders called not a lens at a high score).
   Removed nonlenses are replaced by further draws from the same stratum until the ratio
   is met or the stratum runs out, which is reported (``shortfall``), never silent.
4. Split by system: rows whose cutouts contain one another (friends of friends: one
   inside the other's square, transitively) form a group, and whole groups go to one
   split; ``validation_fraction`` of each (stratum, label) cell to validation, as close
   as whole groups allow (seeded). Catalogue entries merged by the de-duplication are one
   system and so one positive; filter a keeps every nonlens's cutout clear of every
   positive, so no image content is shared between the splits.

5. Hard negatives (``hard_negatives_as: nonlenses``, the default): the listed objects,
   never drawn at random, join the training split as nonlenses (SOURCE=hard_negative),
   unless they lack a cutout, contain a known system or a positive, or share a cutout
   with a validation row (``overlaps_validation``), so validation stays a random draw.

Every object that is considered and not used is in ``exclusions.parquet`` with a reason.
The filters are ``lensfinder.trainset.filters``, the split ``lensfinder.trainset.split``, the
files written ``lensfinder.trainset.outputs``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.catalog.crossmatch import friends_of_friends_square
from lensfinder.catalog.lenses import CatalogSpec, grade_ok, union_catalogs
from lensfinder.constants import KEY
from lensfinder.cutouts.extract import screen_cutout
from lensfinder.errors import LensfinderError
from lensfinder.settings import Settings
from lensfinder.survey.service import CutoutService
from lensfinder.trainset.filters import Exclusions, NonlensFilter, add_hard_negatives, cutout_half_width_arcsec
from lensfinder.trainset.injections import add_training_injections
from lensfinder.trainset.outputs import cutout_writer, summarise, write_outputs
from lensfinder.trainset.pool import ObjectPool
from lensfinder.trainset.split import grouped_split, split_group_summary

log = logging.getLogger(__name__)


@dataclass
class TrainsetConfig(Settings):
    section: ClassVar[str] = "trainset"

    match_radius_arcsec: float = 1.5
    dedup_radius_arcsec: float = 2.0
    grades: list | None = None  # positives' grades, e.g. [A, B]; None: all
    ratio: float = 100.0  # nonlens : lens in every stratum (paper IV 100; paper III 33)
    seed: int = 1
    filter_radius_arcsec: float | None = None  # None: the cutout's square; a number: a circle of this radius
    previous_model: str | None = None
    review_threshold: float = 0.4  # paper III 0.1, paper IV 0.4
    rejections: str | None = None  # CSV with RELEASE, BRICKID, OBJID judged lenses by eye
    auto_threshold: float | None = None
    exclude: list = field(default_factory=list)  # CSVs with RELEASE, BRICKID, OBJID
    hard_negatives: list = field(default_factory=list)  # CSVs (the inspection's hard_negatives.csv): never drawn
    hard_negatives_as: str = "nonlenses"  # nonlenses: added to the training split | exclude: only left out
    validation_fraction: float = 0.3
    strict: bool = False
    truth: str | None = None  # mock truth table: counts hidden lenses among nonlenses
    service_url: str | None = None  # fetch positives lacking a local cutout
    service_layer: str = "ls-dr10"
    review_mosaic_max: int = 60
    injections: int = 0  # injected positives added to the training split (lensfinder.injection); 0: off
    injection: dict | None = None  # the config's injection section (priors, deflector cuts) when injections > 0


def build_trainset(object_paths, manifests, catalog_specs, cfg: TrainsetConfig, out_dir, progress=True) -> dict:
    """Build the training set in ``out_dir`` by the recipe above; returns the summary dict."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    # compact arrays of every object, sweep by sweep; full rows only for the objects drawn
    objects = ObjectPool(object_paths, manifests, progress=progress)
    size = objects.shape[-1] if objects.shape else 101
    half_width = cutout_half_width_arcsec(size)
    systems, problems = union_catalogs([CatalogSpec.from_dict(s) for s in catalog_specs], cfg.dedup_radius_arcsec, cfg.strict)
    exclusions = Exclusions()

    usable, matched, positives, fetched = _positives(objects, systems, cfg, size, out_dir, exclusions)  # 1.
    nonlens = NonlensFilter(objects, systems, positives, cfg, half_width, exclusions)
    nonlenses, strata_rows = _draw_nonlenses(objects, positives, nonlens, cfg, rng)  # 2-3.
    table = pd.concat([positives.assign(LABEL=1), nonlenses.assign(LABEL=0)], ignore_index=True)
    if "SCORE_PREVIOUS" not in table:
        table["SCORE_PREVIOUS"] = np.nan

    # 4. split by system, stratified by (stratum, label)
    groups = friends_of_friends_square(table["RA"].to_numpy(), table["DEC"].to_numpy(), half_width)
    cells = table["STRATUM"].astype(str) + "|" + table["LABEL"].astype(str)
    table["SPLIT"] = np.where(grouped_split(cells.to_numpy(), groups, cfg.validation_fraction, rng), "val", "train")
    split_groups = split_group_summary(table, groups)
    # 4b. SOURCE of every row; injected positives (trainset.injections) join the training split only
    table = add_training_injections(table, fetched, object_paths, objects, cfg, catalog_specs, out_dir)
    table, hard_counts = _hard_negatives(table, objects, positives, nonlens, cfg, half_width, exclusions)  # 5.
    table = table.sort_values(["SPLIT", "LABEL", "STRATUM", *KEY], ascending=[True, False, True, True, True, True])
    table = table.reset_index(drop=True)
    table["ROW"] = np.arange(len(table))

    hidden = nonlens.hidden
    hidden_in_final = int(table["KEY"].isin(hidden).sum()) if hidden else None
    summary = summarise(table, strata_rows, exclusions, problems, systems, usable, matched, nonlens.counts, hidden,
                        hidden_in_final, cfg, half_width, split_groups)
    summary["hard_negatives"] = hard_counts
    write_outputs(out_dir, table, cutout_writer(table["KEY"].tolist(), fetched, objects), exclusions, summary,
                  nonlens.review, objects, cfg)
    return summary


def _positives(objects, systems, cfg: TrainsetConfig, size: int, out_dir, exclusions: Exclusions):
    """Step 1: (the systems of an allowed grade, those matched to a selected object, the
    positives' rows, {key: cutout} fetched from the cutout service for positives without one)."""
    usable = systems[grade_ok(systems["grade"], cfg.grades)].reset_index(drop=True)
    idx, sep = objects.nearest_objects(usable["ra"].to_numpy(), usable["dec"].to_numpy(), cfg.match_radius_arcsec)
    usable["object"], usable["sep_arcsec"] = idx, sep
    matched = usable[usable["object"] >= 0].sort_values("sep_arcsec").drop_duplicates("object")
    positives = objects.rows(matched["object"].to_numpy())
    positives["SYSTEM_NAME"] = matched["name"].to_numpy()
    positives["SOURCE_CATALOG"] = matched["catalogs"].to_numpy()
    fetched = {}
    keep = []
    for _, row in positives.iterrows():
        if row["HAS_CUTOUT"]:
            keep.append(True)
        elif cfg.service_url:
            cube, detail = _fetch_from_service(cfg, row, size, out_dir)
            if cube is None:
                exclusions.add(row, "service_cutout_mostly_empty", detail)
            else:
                fetched[row["KEY"]] = cube
            keep.append(cube is not None)
        else:
            exclusions.add(row, "positive_without_cutout", "its cutout failed; set trainset.service_url to fetch it")
            keep.append(False)
    positives = positives[np.array(keep, dtype=bool)]
    if positives.empty:
        raise LensfinderError(
            "no catalogued lens matches a selected object with a cutout: check lens_catalogs, "
            "trainset.match_radius_arcsec and trainset.grades (an empty training set is never written)"
        )
    return usable, matched, positives, fetched


def _draw_nonlenses(objects, positives, nonlens: NonlensFilter, cfg: TrainsetConfig, rng):
    """Steps 2-3: per stratum, ``ratio`` nonlenses per lens drawn at random and filtered as
    drawn, removed ones replaced by further draws; (their rows, a count row per stratum)."""
    positive_index = positives["POOL_INDEX"].to_numpy()  # never drawn as nonlenses
    strata_rows, nonlenses = [], []
    for stratum, n_pos in positives["STRATUM"].value_counts().sort_index().items():
        target = int(round(cfg.ratio * n_pos))
        cand = objects.in_stratum(stratum, exclude=positive_index)  # sorted by key, then shuffled (seeded)
        cand = cand[rng.permutation(len(cand))]
        accepted = []
        pos = 0
        while len(accepted) < target and pos < len(cand):
            chunk = nonlens.rows(cand[pos : pos + (target - len(accepted))])
            pos += len(chunk)
            accepted += nonlens.accept(chunk)
        short = target - len(accepted)
        if short > 0:
            msg = (f"stratum {stratum}: {len(accepted)} nonlenses for {n_pos} lens(es), {short} short of "
                   f"ratio {cfg.ratio:g} ({len(cand)} candidates)")
            if len(cand) == 0 and cfg.strict:
                raise LensfinderError(msg + "; trainset.strict is on")
            log.warning(msg)
        strata_rows.append({"stratum": stratum, "lenses": int(n_pos), "target_nonlenses": target,
                            "nonlenses": len(accepted), "shortfall": max(short, 0), "candidates": len(cand)})
        nonlenses += accepted
    frame = pd.DataFrame(nonlenses) if nonlenses else nonlens.rows([])
    return frame.assign(SYSTEM_NAME="", SOURCE_CATALOG="random"), strata_rows


def _hard_negatives(table, objects, positives, nonlens: NonlensFilter, cfg: TrainsetConfig, half_width, exclusions):
    """Step 5: the listed hard negatives join the training split as nonlenses (unless
    ``hard_negatives_as: exclude``); (the table, their counts)."""
    hard = nonlens.hard
    hard_index = np.setdiff1d(objects.find(hard), positives["POOL_INDEX"].to_numpy())
    counts = {"listed": len(hard), "as": cfg.hard_negatives_as, "selected_nonlens_candidates": int(len(hard_index))}
    if hard and cfg.hard_negatives_as == "nonlenses":
        table = add_hard_negatives(table, nonlens.rows(hard_index), hard, half_width, exclusions)
    counts["added_as_nonlenses"] = int((table["SOURCE"] == "hard_negative").sum())
    return table, counts


def _fetch_from_service(cfg, row, size, out_dir):
    """A positive's cutout from the viewer's service, through the checks a brick cutout gets
    (``screen_cutout``): (fp16 cube, "") or (None, why it was rejected)."""
    service = CutoutService(cfg.service_url, layer=cfg.service_layer, cache_dir=out_dir / "service_cache")
    ra, dec = float(row["RA"]), float(row["DEC"])
    cube, _, _, detail = screen_cutout(service.fetch(ra, dec, size))
    if cube is None:
        return None, f"{service.url(ra, dec, size)}: {detail}"
    return cube.astype(np.float16), ""
