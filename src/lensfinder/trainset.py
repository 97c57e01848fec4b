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
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .catalogs import CatalogSpec, grade_ok, union_catalogs
from .crossmatch import friends_of_friends_square, pairs_in_square, pairs_within, tangent_offsets_arcsec
from .errors import LensfinderError, atomic_path
from .object_pool import ObjectPool
from .shards import KEY

log = logging.getLogger(__name__)
PIXSCALE = 0.262


@dataclass
class TrainsetConfig:
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
    injections: int = 0  # injected positives added to the training split (lensfinder.inject); 0: off
    injection: dict | None = None  # the config's injection section (priors, deflector cuts) when injections > 0

    @classmethod
    def from_dict(cls, d):
        return cls(**(d or {}))


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


def grouped_split(cells, groups, fraction: float, rng) -> np.ndarray:
    """Validation flags (True = validation) that keep every group in one split.

    ``cells`` (e.g. stratum|label) and ``groups`` label each row. Each cell's target is
    round(fraction * its rows). Groups of several rows are placed first (largest first,
    seeded order among equals): each goes where the cells it touches can still end
    closest to their targets, and where both are equally good, to validation with
    probability ``fraction`` (so grouped rows are not biased toward one split). Single
    rows then fill each cell to its target, drawn at random: with singles to spare the
    counts are exact, as without groups.
    """
    cells, groups = np.asarray(cells), np.asarray(groups)
    val = np.zeros(len(cells), dtype=bool)
    if len(cells) == 0:
        return val
    _, cell = np.unique(cells, return_inverse=True)
    size = np.bincount(cell)
    target = np.array([int(round(fraction * n)) for n in size])
    taken, left = np.zeros_like(size), size.copy()

    def deviation(t, lft, tgt):  # the least |final - target| a cell can still reach
        return np.maximum(0, t - tgt) + np.maximum(0, tgt - t - lft)

    _, group, group_size = np.unique(groups, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(group, kind="stable"), np.cumsum(group_size)[:-1])
    several = np.flatnonzero(group_size > 1)
    several = several[rng.permutation(len(several))]
    several = several[np.argsort(-group_size[several], kind="stable")]
    for g in several:
        c, k = np.unique(cell[members[g]], return_counts=True)
        left[c] -= k
        cost_val = deviation(taken[c] + k, left[c], target[c]).sum()
        cost_train = deviation(taken[c], left[c], target[c]).sum()
        if cost_val < cost_train or (cost_val == cost_train and rng.random() < fraction):
            val[members[g]] = True
            taken[c] += k
    singles = np.flatnonzero(group_size[group] == 1)
    for c in range(len(size)):
        rows = np.sort(singles[cell[singles] == c])
        need = int(np.clip(target[c] - taken[c], 0, len(rows)))
        val[rng.permutation(rows)[:need]] = True
    return val


def _split_group_summary(table, groups) -> dict:
    """How many rows the split had to keep together (groups of several rows)."""
    sizes = pd.Series(groups).value_counts()
    shared = np.isin(groups, sizes[sizes > 1].index.to_numpy())
    return {"groups_of_several_rows": int((sizes > 1).sum()), "rows_in_them": int(shared.sum()),
            "lenses_in_them": int((shared & (table["LABEL"].to_numpy() == 1)).sum())}


def build_trainset(object_paths, manifests, catalog_specs, cfg: TrainsetConfig, out_dir, progress=True) -> dict:
    """Build the training set in ``out_dir``; returns the summary dict."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(cfg.seed)
    # compact arrays of every object, sweep by sweep; full rows only for the objects drawn
    objects = ObjectPool(object_paths, manifests, progress=progress)
    size = objects.shape[-1] if objects.shape else 101
    half_width = cutout_half_width_arcsec(size)
    systems, problems = union_catalogs([CatalogSpec.from_dict(s) for s in catalog_specs], cfg.dedup_radius_arcsec, cfg.strict)
    exclusions = []

    def exclude(row, reason, detail=""):
        exclusions.append({**{k: int(row[k]) for k in KEY}, "RA": float(row["RA"]), "DEC": float(row["DEC"]),
                           "reason": reason, "detail": detail})

    # 1. positives
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
            fetched[row["KEY"]] = _fetch_from_service(cfg, row, size, out_dir)
            keep.append(True)
        else:
            exclude(row, "positive_without_cutout", "its cutout failed; set trainset.service_url to fetch it")
            keep.append(False)
    positives = positives[np.array(keep, dtype=bool)]
    if positives.empty:
        raise LensfinderError(
            "no catalogued lens matches a selected object with a cutout: check lens_catalogs, "
            "trainset.match_radius_arcsec and trainset.grades (an empty training set is never written)"
        )

    # 2-3. nonlenses, stratum by stratum, filtered as drawn
    scorer = None
    if cfg.previous_model:
        from .scoring import load_scorer

        scorer = load_scorer(cfg.previous_model)
    rejected = read_key_list(cfg.rejections) if cfg.rejections else set()
    excluded = set().union(*(read_key_list(p) for p in cfg.exclude)) if cfg.exclude else set()
    hard = set().union(*(read_key_list(p) for p in cfg.hard_negatives)) if cfg.hard_negatives else set()
    if cfg.hard_negatives_as not in ("nonlenses", "exclude"):
        raise LensfinderError(f"trainset.hard_negatives_as is {cfg.hard_negatives_as!r}: use nonlenses or exclude")
    hidden = _hidden_lens_keys(cfg.truth)
    positive_index = positives["POOL_INDEX"].to_numpy()  # never drawn as nonlenses
    known_ra = np.concatenate([systems["ra"].to_numpy(), positives["RA"].to_numpy()])
    known_dec = np.concatenate([systems["dec"].to_numpy(), positives["DEC"].to_numpy()])
    known_names = [f"catalogued system {n!r}" if n else "an unnamed catalogued system" for n in systems["name"]]
    known_names += [f"positive {k}" for k in positives["KEY"]]

    def nonlens_rows(idx):
        """Drawn nonlenses' full rows, with what filter a says of each (NEAR_DETAIL)."""
        rows = objects.rows(idx)
        return rows.assign(NEAR_DETAIL=near_known(rows["RA"].to_numpy(), rows["DEC"].to_numpy(), known_ra, known_dec,
                                                  known_names, half_width, cfg.filter_radius_arcsec))

    strata_rows, nonlenses, review = [], [], []
    counts_b = {"hidden_before_b": 0, "hidden_after_b": 0}
    for stratum, n_pos in positives["STRATUM"].value_counts().sort_index().items():
        target = int(round(cfg.ratio * n_pos))
        cand = objects.in_stratum(stratum, exclude=positive_index)  # sorted by key, then shuffled (seeded)
        cand = cand[rng.permutation(len(cand))]
        accepted = []
        pos = 0
        while len(accepted) < target and pos < len(cand):
            chunk = nonlens_rows(cand[pos : pos + (target - len(accepted))])
            pos += len(chunk)
            accepted += _filter_chunk(chunk, cfg, scorer, objects, rejected, excluded, hard, hidden, exclude, review,
                                      counts_b)
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
    nonlens_frame = pd.DataFrame(nonlenses) if nonlenses else nonlens_rows([])
    nonlens_frame = nonlens_frame.assign(SYSTEM_NAME="", SOURCE_CATALOG="random")
    table = pd.concat([positives.assign(LABEL=1), nonlens_frame.assign(LABEL=0)], ignore_index=True)
    if "SCORE_PREVIOUS" not in table:
        table["SCORE_PREVIOUS"] = np.nan

    # 4. split by system, stratified by (stratum, label)
    groups = friends_of_friends_square(table["RA"].to_numpy(), table["DEC"].to_numpy(), half_width)
    cells = table["STRATUM"].astype(str) + "|" + table["LABEL"].astype(str)
    table["SPLIT"] = np.where(grouped_split(cells.to_numpy(), groups, cfg.validation_fraction, rng), "val", "train")
    split_groups = _split_group_summary(table, groups)
    # 4b. SOURCE of every row; injected positives (trainset.injections) join the training split only
    from .inject import add_training_injections

    table = add_training_injections(table, fetched, object_paths, objects, cfg, catalog_specs, out_dir)
    hard_index = np.setdiff1d(objects.find(hard), positive_index)
    hard_counts = {"listed": len(hard), "as": cfg.hard_negatives_as, "selected_nonlens_candidates": int(len(hard_index))}
    if hard and cfg.hard_negatives_as == "nonlenses":
        table = _add_hard_negatives(table, nonlens_rows(hard_index), hard, half_width, exclude)
    hard_counts["added_as_nonlenses"] = int((table["SOURCE"] == "hard_negative").sum())
    table = table.sort_values(["SPLIT", "LABEL", "STRATUM", *KEY], ascending=[True, False, True, True, True, True])
    table = table.reset_index(drop=True)
    table["ROW"] = np.arange(len(table))

    images = _cutout_writer(table["KEY"].tolist(), fetched, objects)
    hidden_in_final = int(table["KEY"].isin(hidden).sum()) if hidden else None
    summary = _summary(table, strata_rows, exclusions, problems, systems, usable, matched, counts_b, hidden,
                       hidden_in_final, cfg, half_width, split_groups)
    summary["hard_negatives"] = hard_counts
    _write_outputs(out_dir, table, images, exclusions, summary, review, objects, cfg)
    return summary


def _review_row(row, score, status) -> dict:
    """One line of review.csv: the nonlens, the previous model's score and what became of it."""
    return {**{k: int(row[k]) for k in KEY}, "RA": row["RA"], "DEC": row["DEC"], "TYPE": row["TYPE"],
            "STRATUM": row["STRATUM"], "score": float(score), "status": status}


def _filter_chunk(chunk, cfg, scorer, objects, rejected, excluded, hard, hidden, exclude, review, counts_b):
    """Steps a, b, c on a chunk of drawn nonlenses; returns the accepted rows (dicts)."""
    accepted = []
    rows = []
    for _, row in chunk.iterrows():
        if row["KEY"] in hard:  # never a random draw: added as a hard negative (step 5) or left out
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
        from .scoring import score_array

        scores = score_array(scorer, objects.stack([r["KEY"] for r in rows]))
    for row, score in zip(rows, scores):
        is_hidden = row["KEY"] in hidden
        counts_b["hidden_before_b"] += is_hidden
        # a NaN score (a bad cutout, usually) cannot clear the nonlens: review it, never let it in
        if scorer is not None and not np.isfinite(score):
            status = "score_not_finite"
            review.append(_review_row(row, score, status))
            exclude(row, status, f"the previous model scored it {score}: inspect its cutout")
            continue
        if scorer is not None and score >= cfg.review_threshold:
            status = "kept"
            if row["KEY"] in rejected:
                status = "rejected_by_inspection"
            elif cfg.auto_threshold is not None and score >= cfg.auto_threshold:
                status = "auto_threshold"
            review.append(_review_row(row, score, status))
            if status != "kept":
                exclude(row, status, f"previous-model score {score:.4f}")
                continue
        counts_b["hidden_after_b"] += is_hidden
        if row["KEY"] in excluded:
            exclude(row, "excluded_by_list", "listed in trainset.exclude")
            continue
        accepted.append({**row.to_dict(), "SCORE_PREVIOUS": float(score)})
    return accepted


def _add_hard_negatives(table, rows, hard, half_width, exclude):
    """Step 5: the listed hard negatives (``rows``: those among the selected nonlens
    candidates) as training nonlenses (SOURCE=hard_negative)."""
    keep = np.ones(len(rows), dtype=bool)
    val = table[table["SPLIT"] == "val"]
    i, _ = pairs_in_square(rows["RA"].to_numpy(), rows["DEC"].to_numpy(), val["RA"].to_numpy(), val["DEC"].to_numpy(),
                           half_width)
    overlapping = set(i.tolist())
    for n, (_, row) in enumerate(rows.iterrows()):
        if not row["HAS_CUTOUT"]:
            exclude(row, "no_cutout", "a hard negative whose cutout failed (see the sweep's failures table)")
        elif isinstance(row["NEAR_DETAIL"], str):
            exclude(row, "near_known_system", row["NEAR_DETAIL"])
        elif n in overlapping:
            exclude(row, "overlaps_validation", "a hard negative sharing a cutout with a validation row")
        else:
            continue
        keep[n] = False
    if len(hard) > len(rows):  # counted in the summary (hard_negatives)
        log.warning("trainset.hard_negatives: %d listed object(s) are not selected nonlens candidates of this run "
                    "(other sweeps, or now positives)", len(hard) - len(rows))
    added = rows[keep].assign(LABEL=0, SPLIT="train", SOURCE="hard_negative", SOURCE_CATALOG="hard_negative",
                              SYSTEM_NAME="", SCORE_PREVIOUS=np.nan, INJECTION_ID=-1)
    return pd.concat([table, added[[c for c in table.columns if c in added.columns]]], ignore_index=True)


def _hidden_lens_keys(truth_path) -> set:
    if not truth_path:
        return set()
    truth = pd.read_csv(truth_path)
    hidden = truth[~truth["catalogued"].astype(bool)]
    return set(zip(hidden["release"].astype(int), hidden["brickid"].astype(int), hidden["objid"].astype(int)))


def _fetch_from_service(cfg, row, size, out_dir):
    from .service import CutoutService

    service = CutoutService(cfg.service_url, layer=cfg.service_layer, cache_dir=out_dir / "service_cache")
    return service.fetch(float(row["RA"]), float(row["DEC"]), size).astype(np.float16)


def _summary(table, strata_rows, exclusions, problems, systems, usable, matched, counts_b, hidden, hidden_final,
             cfg, half_width, split_groups):
    by_split = table.groupby(["STRATUM", "SPLIT", "LABEL"]).size().unstack(["SPLIT", "LABEL"], fill_value=0)
    per_stratum = []
    for row in strata_rows:
        s = row["stratum"]
        entry = dict(row)
        for split in ("train", "val"):
            for label, name in ((1, "lenses"), (0, "nonlenses")):
                entry[f"{split}_{name}"] = int(by_split.get((split, label), pd.Series(dtype=int)).get(s, 0))
        per_stratum.append(entry)
    reasons = pd.Series([e["reason"] for e in exclusions], dtype=str).value_counts().to_dict()
    summary = {
        "lenses": int((table["LABEL"] == 1).sum()),
        "nonlenses": int((table["LABEL"] == 0).sum()),
        "lenses_by_source": {k: int(v) for k, v in table.loc[table["LABEL"] == 1, "SOURCE"].value_counts().items()},
        "nonlenses_by_source": {k: int(v) for k, v in table.loc[table["LABEL"] == 0, "SOURCE"].value_counts().items()},
        "ratio_target": cfg.ratio,
        "split": {s: {"lenses": int(((table["SPLIT"] == s) & (table["LABEL"] == 1)).sum()),
                      "nonlenses": int(((table["SPLIT"] == s) & (table["LABEL"] == 0)).sum())} for s in ("train", "val")},
        "catalogued_systems": len(systems),
        "systems_of_allowed_grade": len(usable),
        "systems_matched_to_selected_objects": len(matched),
        "filter": ({"shape": "square", "half_width_arcsec": half_width} if cfg.filter_radius_arcsec is None
                   else {"shape": "circle", "radius_arcsec": cfg.filter_radius_arcsec}),
        "split_groups": split_groups,
        "exclusions_by_reason": {k: int(v) for k, v in reasons.items()},
        "catalogue_problems": problems,
        "strata": per_stratum,
        "strata_short": [r["stratum"] for r in strata_rows if r["shortfall"] > 0],
    }
    if hidden:
        summary["hidden_lenses"] = {"among_nonlenses_before_step_b": int(counts_b["hidden_before_b"]),
                                    "among_nonlenses_after_step_b": int(counts_b["hidden_after_b"]),
                                    "in_final_sample_as_nonlenses": hidden_final}
    return summary


def _cutout_writer(keys, fetched, objects):
    """A function writing the training set's cutouts in row order to an .npy path: local
    ones straight from their shard sets into a memory map, so they are never all in memory."""

    def write(path):
        shape = objects.shape or next(iter(fetched.values())).shape
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(len(keys), *shape))
        local = [n for n, k in enumerate(keys) if k not in fetched]
        objects.fill([keys[n] for n in local], out, local)
        for n, k in enumerate(keys):
            if k in fetched:
                out[n] = fetched[k]
        out.flush()
        del out

    return write


def _write_outputs(out_dir, table, images, exclusions, summary, review, objects, cfg):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    cols = [*KEY, "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN", "MAG_Z", "SWEEP", "STRATUM", "LABEL", "SPLIT",
            "SOURCE_CATALOG", "SYSTEM_NAME", "SCORE_PREVIOUS", "SOURCE", "INJECTION_ID", "ROW"]
    with atomic_path(out_dir / "cutouts.npy") as tmp:
        images(tmp)
    with atomic_path(out_dir / "labels.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(table[cols], preserve_index=False), tmp)
    excl_schema = pa.schema([(k, pa.int64()) for k in KEY] + [("RA", pa.float64()), ("DEC", pa.float64()),
                                                               ("reason", pa.string()), ("detail", pa.string())])
    with atomic_path(out_dir / "exclusions.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(exclusions, schema=excl_schema), tmp)
    review_frame = pd.DataFrame(review, columns=[*KEY, "RA", "DEC", "TYPE", "STRATUM", "score", "status"])
    review_frame = review_frame.sort_values("score", ascending=False)
    with atomic_path(out_dir / "review.csv") as tmp:
        review_frame.to_csv(tmp, index=False)
    _plot_review(out_dir / "review.png", review_frame, objects, cfg)
    with atomic_path(out_dir / "summary.csv") as tmp:
        pd.DataFrame(summary["strata"]).to_csv(tmp, index=False)
    _plot_summary(out_dir / "summary.png", summary)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))


def _plot_review(path, review_frame, objects, cfg):
    """Mosaic of the nonlenses the previous model scored above the review threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .display import save_mosaic

    top = review_frame.head(cfg.review_mosaic_max)
    with atomic_path(path) as tmp:
        if top.empty:
            fig, ax = plt.subplots(figsize=(4, 1))
            ax.axis("off")
            ax.text(0.5, 0.5, "no nonlens above the review threshold" if cfg.previous_model else
                    "no previous model configured", ha="center", va="center")
            fig.savefig(tmp, dpi=100)
            plt.close(fig)
        else:
            keys = key_tuples(top)
            labels = [f"{b}/{o} p={s:.2f}" for (_, b, o), s in zip(keys, top["score"])]
            save_mosaic(objects.stack(keys), tmp, labels)


def _plot_summary(path, summary):
    """Bar chart of lenses and nonlenses per stratum and split (for the report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strata = summary["strata"]
    names = [s["stratum"] for s in strata]
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(names) + 2), 6), sharex=True)
    for ax, label in zip(axes, ("lenses", "nonlenses")):
        tr = [s[f"train_{label}"] for s in strata]
        va = [s[f"val_{label}"] for s in strata]
        ax.bar(x, tr, label="train")
        ax.bar(x, va, bottom=tr, label="validation")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[1].set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    axes[0].set_title(f"training set: {summary['lenses']} lenses, {summary['nonlenses']} nonlenses "
                      f"(target ratio {summary['ratio_target']:g} per stratum)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
