"""The accounting table: every object from sweep row to recommendation, adding up."""

import shutil

import fitsio
import pandas as pd
import pytest

from lensfinder.errors import LensfinderError
from lensfinder.evaluation.accounting import build_accounting, check_accounting

pytestmark = pytest.mark.workflow
SWEEPS = ["sweep-145p000-150p005", "sweep-150p000-155p005"]


def test_every_line_adds_up_and_matches_the_files(tiny_run):
    work, _, _ = tiny_run
    res = work / "results/mock"
    table = pd.read_csv(res / "accounting.csv").set_index("sweep")
    assert list(table.index) == [*SWEEPS, "total"]
    for sweep in SWEEPS:
        row = table.loc[sweep]
        sweep_file = work / f"resources/mock_survey/dr10/south/sweep/10.1/{sweep}.fits"
        assert row.sweep_rows == fitsio.FITS(str(sweep_file))[1].get_nrows()
        assert row.selected == len(pd.read_parquet(res / f"objects/{sweep}.parquet"))
        assert row.scored == len(pd.read_parquet(res / f"scores/resnet/{sweep}.parquet"))
        recs = pd.read_parquet(res / "recommendations/recommendations.parquet")
        assert row.recommended == int((recs.SWEEP == sweep).sum())
        cuts = [c for c in table.columns if c.startswith("cut_")]
        assert row.sweep_rows - row[cuts].sum() == row.selected == row.cutouts_written + row.cutouts_failed
        assert row.above_cut == row.known_removed + row.merged + row.recommended
        shortlist = pd.read_parquet(res / f"ensemble/shortlists/{sweep}.parquet")  # one sweep per batch
        assert row.shortlisted == shortlist["LOGIT_ENSEMBLE"].notna().sum() >= row.above_cut
    assert (table.loc["total"] == table.loc[SWEEPS].sum()).all()


def test_a_line_that_does_not_add_up_names_the_sweep():
    table = pd.DataFrame({"sweep_rows": [10], "cut_type": [3], "selected": [7], "cutouts_written": [6],
                          "cutouts_failed": [0], "scored": [6], "nan_scores": [0], "shortlisted": [2], "above_cut": [1],
                          "known_removed": [0], "merged": [0], "recommended": [1]}, index=["sweep-000p000-005p005"])
    with pytest.raises(LensfinderError, match=r"selected == cutouts_written \+ cutouts_failed.*sweep-000p000-005p005"):
        check_accounting(table, ["type"], [])
    table["cutouts_written"], table["scored"] = 7, 7
    check_accounting(table, ["type"], [])
    table["shortlisted"] = 0  # fewer kept for the ranking than it selected
    with pytest.raises(LensfinderError, match="more objects above the cut than shortlisted in \\['sweep-000p000-005p005'\\]"):
        check_accounting(table, ["type"], [])


def test_a_sweep_missing_from_a_stage_count_is_an_error_not_zeros(tiny_run, tmp_path):
    """A sweep left out of the ranking's counts would be filled with zeros, which satisfy
    every identity (above_cut = 0 = 0 + 0 + 0): it is an error naming the file and sweep."""
    work, _, _ = tiny_run
    run = tmp_path / "run"
    for part in ("objects", "cutouts", "recommendations"):
        shutil.copytree(work / "results/mock" / part, run / part)
    scores = {m: [work / f"results/mock/scores/{m}/{s}.parquet" for s in SWEEPS] for m in ("resnet", "shielded")}
    table = build_accounting(run, SWEEPS, scores, tmp_path / "a.csv")
    assert table.loc[SWEEPS[1], "scored"] > 0
    counts = pd.read_csv(run / "recommendations/counts_per_sweep.csv")
    counts[counts.sweep != SWEEPS[1]].to_csv(run / "recommendations/counts_per_sweep.csv", index=False)
    with pytest.raises(LensfinderError, match=rf"counts_per_sweep.csv has no row for sweep\(s\) \['{SWEEPS[1]}'\]"):
        build_accounting(run, SWEEPS, scores, tmp_path / "b.csv")
    assert not (tmp_path / "b.csv").exists()
