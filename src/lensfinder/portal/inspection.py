"""Grades fed back into the next search (rule ``inspection``).

From the candidates table and its grades (the portal's database, or its ``export.csv``):

* ``graded.{parquet,csv,fits}``: the candidates with N_GRADERS, MEAN_GRADE,
  GRADE_DIFFERENCE, CONSENSUS (A/B/C/D, paper IV), SETTLED (>= ``min_graders``), GRADERS
  and COMMENTS;
* ``new_lenses.csv``: settled candidates whose consensus is in ``new_lens_grades`` (A, B), in
  the lens-catalogue format (name, ra, dec, grade, reference) with provenance (key, mean,
  graders, batch): list it in the next run's ``lens_catalogs`` and they become positives;
* ``hard_negatives.csv``: settled candidates the graders called not a lens (mean grade <=
  ``hard_negative_max_mean``) although the network scored them >= ``hard_negative_min_score``;
  RELEASE, BRICKID, OBJID first: list it in the next run's ``trainset.exclude``;
* ``rejections.csv``: settled candidates judged possibly lenses (mean grade >=
  ``rejection_min_mean``; paper IV removed "grade D or better"): for a training set's
  ``review.csv`` batch this is step (b)'s ``trainset.rejections`` file;
* ``summary.json``: the counts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.portal.candidates import load_candidates, main_score_column
from lensfinder.portal.consensus import consensus
from lensfinder.portal.database import canonical_name, read_grades
from lensfinder.settings import Settings
from lensfinder.tables import spreadsheet_unsafe, write_tables

log = logging.getLogger(__name__)


@dataclass
class InspectionConfig(Settings):
    section: ClassVar[str] = "inspection"

    db: str | None = None  # the portal's SQLite file, or its export.csv
    candidates: str | None = None  # default (the rule): the run's recommendations.parquet
    batch: str | None = None  # default: <run>/<candidates stem>, as lensfinder-inspect serve names it
    min_graders: int = 2
    new_lens_grades: list = field(default_factory=lambda: ["A", "B"])
    hard_negative_max_mean: float = 0.5
    hard_negative_min_score: float = 0.5
    rejection_min_mean: float = 1.0


def grades_from_export(path) -> list[dict]:
    """Grades from the portal's export.csv (columns RELEASE, BRICKID, OBJID, grade_<inspector>...)."""
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = [k for k in KEY if k not in frame.columns]
    if missing:
        raise LensfinderError(f"grades export {path} lacks column(s) {missing}: give the portal's /api/export.csv")
    out = []
    for col in [c for c in frame.columns if c.startswith("grade_")]:
        name = canonical_name(col.removeprefix("grade_"))
        comments = frame.get(f"comment_{name}", pd.Series([""] * len(frame)))
        for row, g, comment in zip(frame[list(KEY)].itertuples(index=False), frame[col], comments):
            if g.strip() == "":
                continue
            if g.strip() not in {"0", "1", "2", "3", "4"}:
                raise LensfinderError(f"grades export {path}: grade {g!r} of {name} for {tuple(row)} is not 0-4")
            out.append({"key": tuple(int(v) for v in row), "inspector": name, "grade": int(g),
                        "comment": spreadsheet_unsafe(comment)})
    return out


def load_grades(db, batch: str) -> list[dict]:
    if str(db).lower().endswith(".csv"):
        if not Path(db).is_file():
            raise LensfinderError(f"grades export {db} does not exist: save the portal's /api/export.csv there")
        return grades_from_export(db)
    return read_grades(db, batch)


def graded_table(candidates: pd.DataFrame, grades: list[dict], min_graders: int) -> tuple[pd.DataFrame, int]:
    """The candidates with their consensus columns; also the number of grades of unknown objects."""
    by_key = {}
    for g in grades:
        by_key.setdefault(tuple(g["key"]), []).append(g)
    keys = list(zip(*(candidates[k].tolist() for k in KEY)))
    unknown = sum(len(v) for k, v in by_key.items() if k not in set(keys))
    rows = []
    for k in keys:
        gs = sorted(by_key.get(k, []), key=lambda g: g["inspector"])
        c = consensus([g["grade"] for g in gs], min_graders)
        rows.append({"N_GRADERS": c.n_graders, "MEAN_GRADE": c.mean,
                     "GRADE_DIFFERENCE": -1 if c.difference is None else c.difference, "CONSENSUS": c.grade,
                     "SETTLED": c.settled, "GRADERS": ";".join(f"{g['inspector']}={g['grade']}" for g in gs),
                     "COMMENTS": " | ".join(f"{g['inspector']}: {g['comment']}" for g in gs if g["comment"])})
    table = pd.concat([candidates.drop(columns=["ID"], errors="ignore").reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    return table, unknown


def feed_back(candidates_path, db, out_dir, cfg: InspectionConfig, batch: str) -> dict:
    """Write the inspection outputs (see the module doc) in ``out_dir``; returns the summary."""
    out_dir = Path(out_dir)
    candidates, kind = load_candidates(candidates_path)
    grades = load_grades(db, batch)
    table, unknown = graded_table(candidates, grades, cfg.min_graders)
    if unknown:
        log.warning("%d grade(s) in %s are of objects not in %s: ignored", unknown, db, candidates_path)
    score_col = main_score_column(table)
    score = table[score_col].astype(float) if score_col else pd.Series(np.nan, index=table.index)
    settled = table["SETTLED"].to_numpy(bool)
    mean = table["MEAN_GRADE"].to_numpy(float)

    write_tables(out_dir, table, "graded")
    new = table[settled & table["CONSENSUS"].isin([g.upper() for g in cfg.new_lens_grades]).to_numpy()]
    lenses = pd.DataFrame({
        "name": new["NAME"], "ra": new["RA"], "dec": new["DEC"], "grade": new["CONSENSUS"],
        "reference": f"lensfinder visual inspection, batch {batch}",
        **{k: new[k] for k in KEY}, "mean_grade": new["MEAN_GRADE"].round(4), "n_graders": new["N_GRADERS"],
        "difference": new["GRADE_DIFFERENCE"], "score": score[new.index].round(6), "graders": new["GRADERS"],
    })
    hard = table[settled & (mean <= cfg.hard_negative_max_mean) & (score.to_numpy(float) >= cfg.hard_negative_min_score)]
    negatives = pd.DataFrame({**{k: hard[k] for k in KEY}, "RA": hard["RA"], "DEC": hard["DEC"], "NAME": hard["NAME"],
                              "score": score[hard.index].round(6), "mean_grade": hard["MEAN_GRADE"].round(4),
                              "n_graders": hard["N_GRADERS"]})
    rej = table[settled & (mean >= cfg.rejection_min_mean)]
    rejections = pd.DataFrame({**{k: rej[k] for k in KEY}, "RA": rej["RA"], "DEC": rej["DEC"], "NAME": rej["NAME"],
                               "mean_grade": rej["MEAN_GRADE"].round(4), "consensus": rej["CONSENSUS"],
                               "n_graders": rej["N_GRADERS"]})
    for name, frame in (("new_lenses.csv", lenses), ("hard_negatives.csv", negatives), ("rejections.csv", rejections)):
        with atomic_path(out_dir / name) as tmp:
            frame.to_csv(tmp, index=False)
    summary = {
        "candidates": str(candidates_path), "kind": kind, "batch": batch, "grades": len(grades),
        "grades_of_unknown_objects": unknown, "inspectors": sorted({g["inspector"] for g in grades}),
        "graded_candidates": int((table["N_GRADERS"] > 0).sum()), "settled": int(settled.sum()),
        "consensus": {g: int(((table["CONSENSUS"] == g) & settled).sum()) for g in "ABCD"},
        "new_lenses": len(lenses), "hard_negatives": len(negatives), "rejections": len(rejections),
        "settings": cfg.__dict__,
    }
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, default=str))
    return summary
