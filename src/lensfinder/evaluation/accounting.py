"""One table that follows every object from sweep row to recommendation, per sweep and in
total, and checks that every line adds up (nothing is lost silently).

Columns, in the order an object meets them:

* ``sweep_rows``; ``cut_<name>`` removed by each selection cut; ``selected``;
* ``cutouts_written``, ``cutouts_failed`` and ``failed_<reason>`` per reject reason;
* ``scored`` (rows of every model's score table: all models must agree), ``nan_scores``;
* ``shortlisted`` (kept by the sweep's shortlist for the ranking);
* ``above_cut`` (selected by the recommendation cut), ``known_removed``, ``merged``,
  ``recommended``.

Identities checked on every line: sweep_rows - cuts = selected; selected = written +
failed = written + the failures by reason; written = scored (each model); above_cut =
known_removed + merged + recommended <= shortlisted <= scored - nan_scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path


def cutout_counts(run_dir, sweeps) -> pd.DataFrame:
    """Per sweep: written, failed, and failed by reason (from each shard set's files)."""
    rows = []
    for sweep in sweeps:
        d = Path(run_dir) / "cutouts" / sweep
        counts = json.loads((d / "manifest.json").read_text())["counts"]
        reasons = pd.read_parquet(d / "failures.parquet", columns=["reason"])["reason"].value_counts()
        rows.append({"sweep": sweep, "cutouts_written": counts["written"], "cutouts_failed": counts["failed"],
                     **{f"failed_{r}": int(n) for r, n in reasons.items()}})
    return pd.DataFrame(rows).set_index("sweep")


def score_counts(score_paths: dict, sweeps) -> pd.Series:
    """Per sweep: rows scored, the same for every model, else an error naming the sweep.
    ``score_paths``: model -> its score tables (inference's, with a SWEEP column). One file
    at a time, SWEEP read as a dictionary (DR10: 43.5M rows per model, never as strings)."""
    frame = pd.DataFrame({m: pd.concat([pd.Series(dtype="int64"), *(_sweep_counts(p) for p in paths)])
                          .groupby(level=0).sum().reindex(list(sweeps), fill_value=0)
                          for m, paths in score_paths.items()})
    disagree = frame[frame.nunique(axis=1) > 1]
    if len(disagree):
        raise LensfinderError(f"the models scored different numbers of objects in sweep(s) {list(disagree.index)[:3]}: "
                              "re-run their infer jobs")
    return frame.iloc[:, 0].rename("scored")


def _sweep_counts(path) -> pd.Series:
    """Rows per SWEEP value of one score table."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["SWEEP"], read_dictionary=["SWEEP"]).column("SWEEP")
    counts = pc.value_counts(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    if not len(counts):
        return pd.Series(dtype="int64")
    values = counts.field("values")
    values = values.dictionary.take(values.indices) if hasattr(values, "dictionary") else values
    return pd.Series(counts.field("counts").to_numpy(), index=values.to_pylist())


def build_accounting(run_dir, sweeps, score_paths: dict, out_path) -> pd.DataFrame:
    """Write ``accounting.csv`` (one row per sweep, then ``total``) from a run's files and
    check that it adds up."""
    run_dir = Path(run_dir)
    sel = pd.read_csv(run_dir / "objects/selection_counts.csv")
    sel = sel[sel["sweep"] != "total"].set_index("sweep")
    cuts = [c for c in sel.columns if c not in ("input", "selected")]
    table = sel.rename(columns={"input": "sweep_rows", **{c: f"cut_{c}" for c in cuts}})
    table = table.join(cutout_counts(run_dir, sweeps), how="outer")
    table = table.join(score_counts(score_paths, sweeps), how="outer")
    ranked = pd.read_csv(run_dir / "recommendations/counts_per_sweep.csv").set_index("sweep")
    # a sweep absent from a stage's counts is an error, never zeros (which satisfy every identity)
    for name, frame in (("objects/selection_counts.csv", sel), ("recommendations/counts_per_sweep.csv", ranked)):
        missing = [s for s in sweeps if s not in frame.index]
        if missing:
            raise LensfinderError(f"accounting: {run_dir / name} has no row for sweep(s) {missing[:3]}: its stage did "
                                  "not count them; re-run it (snakemake --forcerun on the file)")
    table = table.join(ranked.drop(columns=["scored"]), how="outer")
    reason_cols = sorted(c for c in table.columns if c.startswith("failed_"))
    order = ["sweep_rows", *(f"cut_{c}" for c in cuts), "selected", "cutouts_written", "cutouts_failed", *reason_cols,
             "scored", "nan_scores", "shortlisted", "above_cut", "known_removed", "merged", "recommended"]
    table = table.reindex(index=list(sweeps), columns=order).fillna(0).astype(int)
    table.loc["total"] = table.sum()
    check_accounting(table, cuts, reason_cols)
    with atomic_path(out_path) as tmp:
        table.rename_axis("sweep").reset_index().to_csv(tmp, index=False)
    return table


def check_accounting(table: pd.DataFrame, cuts, reason_cols):
    """Raise naming the sweep and the identity when a line does not add up."""
    identities = {
        "sweep_rows - cuts == selected": table["sweep_rows"] - table[[f"cut_{c}" for c in cuts]].sum(axis=1)
        - table["selected"],
        "selected == cutouts_written + cutouts_failed": table["selected"] - table["cutouts_written"]
        - table["cutouts_failed"],
        "cutouts_failed == sum of failed_<reason>": table["cutouts_failed"] - table[reason_cols].sum(axis=1),
        "cutouts_written == scored": table["cutouts_written"] - table["scored"],
        "above_cut == known_removed + merged + recommended": table["above_cut"] - table["known_removed"]
        - table["merged"] - table["recommended"],
    }
    for name, diff in identities.items():
        bad = diff[diff != 0]
        if len(bad):
            raise LensfinderError(f"accounting does not add up ({name}) for sweep(s) {list(bad.index)[:3]}: "
                                  "an object was lost between stages; re-run the stages of those sweeps")
    over = table[table["above_cut"] > table["shortlisted"]]
    if len(over):
        raise LensfinderError(f"accounting: more objects above the cut than shortlisted in {list(over.index)[:3]}")
    over = table[table["shortlisted"] > table["scored"] - table["nan_scores"]]
    if len(over):
        raise LensfinderError(f"accounting: more objects shortlisted than finite scores in {list(over.index)[:3]}")
