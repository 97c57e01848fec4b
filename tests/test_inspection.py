"""Grades fed back: the inspection outputs, the next training set built from them, the rule."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import fitsio
import pandas as pd
import pytest
import yaml
from conftest import make_workdir, run_snakemake, tiny_config
from portal_support import make_run, write_recommendations

from lensfinder.catalog.crossmatch import within
from lensfinder.catalog.lenses import CatalogSpec, read_catalog
from lensfinder.cutouts.shards import ShardSet
from lensfinder.portal.database import GradesDB
from lensfinder.portal.inspection import InspectionConfig, feed_back
from lensfinder.trainset.build import TrainsetConfig, build_trainset
from lensfinder.trainset.filters import read_key_list

KEY = ["RELEASE", "BRICKID", "OBJID"]
BATCH = "tiny/recommendations"


def keys_of(frame):
    return list(map(tuple, frame[KEY].astype(int).to_numpy().tolist()))


@pytest.fixture(scope="module")
def graded_run(tiny_mock, tmp_path_factory):
    """A small real run whose recommendations lead with hidden (uncatalogued) lenses and
    nonlenses of a first training set; graded by two inspectors in the portal's database."""
    root, _, files = tiny_mock
    base = tmp_path_factory.mktemp("inspection")
    run_dir = base / "results" / "tiny"
    manifests = make_run(root, files, run_dir)
    objects = sorted(run_dir.glob("objects/*.parquet"))
    # Lenses nobody has catalogued yet: the mock's hidden lenses with a cutout, and two
    # catalogued A/B lenses whose entries are taken out of the first run's catalogue.
    with_cutout = set().union(*(keys_of(ShardSet(m).index) for m in manifests))
    truth = pd.read_csv(root / "truth/lenses.csv")
    truth["key"] = list(zip(truth.release, truth.brickid, truth.objid))
    truth = truth[truth.key.isin(with_cutout)]
    planted = truth[truth.catalogued & truth.grade.isin(["A", "B"])].head(2)
    hidden = list(truth[~truth.catalogued].key)[:1] + list(planted.key)
    assert len(hidden) >= 2, "the tiny mock needs uncatalogued lenses with cutouts"
    known = pd.read_csv(root / "catalogues/known_lenses.csv")
    far = ~within(known.ra.to_numpy(), known.dec.to_numpy(), planted.ra.to_numpy(), planted.dec.to_numpy(), 3.0)
    assert (~far).sum() == len(planted)
    known[far].to_csv(base / "known.csv", index=False)
    catalogs = [{"path": str(base / "known.csv"), "label": "mock"}]
    cfg = TrainsetConfig(ratio=1000, grades=["A", "B"], seed=3)
    build_trainset(objects, manifests, catalogs, cfg, base / "trainset1", progress=False)
    labels1 = pd.read_parquet(base / "trainset1/labels.parquet")
    negatives = keys_of(labels1[labels1.LABEL == 0].head(3))
    recs = write_recommendations(run_dir, n=20, first=hidden + negatives)
    db = base / "grades.sqlite"
    grades = GradesDB(db)
    plan = {hidden[0]: (4, 4), hidden[1]: (4, 2)}  # A, B (mean 3.0)
    if len(hidden) > 2:
        plan[hidden[2]] = (3, 1)  # C: not a new lens, but a rejection (mean 2 >= 1)
    plan.update({k: (0, 0) for k in negatives[:2]})  # not lenses: hard negatives
    plan[negatives[2]] = (1, 0)  # mean 0.5: a hard negative at the boundary
    for key, (a, b) in plan.items():
        grades.set_grade(BATCH, key, "ann", a, "arc" if a == 4 else "")
        grades.set_grade(BATCH, key, "bob", b)
    grades.set_grade(BATCH, keys_of(recs.iloc[[10]])[0], "ann", 4)  # one grader only: not settled
    grades.close()
    return dict(root=root, base=base, run_dir=run_dir, objects=objects, manifests=manifests, catalogs=catalogs,
                cfg=cfg, labels1=labels1, hidden=hidden, negatives=negatives, plan=plan, db=db, recs=recs)


def test_outputs_and_the_next_training_set(graded_run, tmp_path):
    g = graded_run
    out = tmp_path / "inspection"
    summary = feed_back(g["run_dir"] / "recommendations/recommendations.parquet", g["db"], out, InspectionConfig(), BATCH)
    assert summary["grades"] == 2 * len(g["plan"]) + 1 and summary["settled"] == len(g["plan"])

    graded = pd.read_parquet(out / "graded.parquet")
    assert len(graded) == 20 and keys_of(graded) == keys_of(g["recs"])
    by_key = dict(zip(keys_of(graded), graded.itertuples()))
    for key, (a, b) in g["plan"].items():
        row = by_key[key]
        assert (row.N_GRADERS, row.MEAN_GRADE, row.GRADE_DIFFERENCE, row.SETTLED) == (2, (a + b) / 2, abs(a - b), True)
    assert by_key[g["hidden"][0]].CONSENSUS == "A" and by_key[g["hidden"][1]].CONSENSUS == "B"
    assert by_key[keys_of(g["recs"].iloc[[10]])[0]].SETTLED == False  # noqa: E712 - numpy bool
    fits = fitsio.read(str(out / "graded.fits"), ext="GRADED")
    assert len(fits) == 20 and list(fits["CONSENSUS"].astype(str)[:2]) == ["A", "B"]
    assert pd.read_csv(out / "graded.csv").shape == graded.shape

    # new lenses: A and B, in the lens-catalogue format the lens_catalogs reader takes
    new, problems = read_catalog(CatalogSpec(path=str(out / "new_lenses.csv"), label="inspection"), strict=True)
    assert problems == [] and list(new.grade) == ["A", "B"]
    assert keys_of(pd.read_csv(out / "new_lenses.csv")) == g["hidden"][:2]
    assert set(new.reference) == {f"lensfinder visual inspection, batch {BATCH}"}
    # hard negatives and rejections: key lists that trainset.exclude / trainset.rejections read
    assert read_key_list(out / "hard_negatives.csv") == set(g["negatives"])
    assert read_key_list(out / "rejections.csv") == set(g["hidden"])

    # the next training set: new lenses are positives, hard negatives leave the nonlens sample
    catalogs2 = g["catalogs"] + [{"path": str(out / "new_lenses.csv"), "label": "inspection"}]
    cfg2 = TrainsetConfig(**{**g["cfg"].__dict__, "exclude": [str(out / "hard_negatives.csv")]})
    build_trainset(g["objects"], g["manifests"], catalogs2, cfg2, tmp_path / "trainset2", progress=False)
    labels2 = pd.read_parquet(tmp_path / "trainset2/labels.parquet")
    pos1, pos2 = set(keys_of(g["labels1"][g["labels1"].LABEL == 1])), set(keys_of(labels2[labels2.LABEL == 1]))
    assert not set(g["hidden"][:2]) & pos1 and pos2 == pos1 | set(g["hidden"][:2])
    from_inspection = labels2[(labels2.LABEL == 1) & labels2.SOURCE_CATALOG.str.contains("inspection")]
    assert set(keys_of(from_inspection)) == set(g["hidden"][:2])
    neg1, neg2 = set(keys_of(g["labels1"][g["labels1"].LABEL == 0])), set(keys_of(labels2[labels2.LABEL == 0]))
    assert set(g["negatives"]) <= neg1 and not set(g["negatives"]) & neg2
    excl = pd.read_parquet(tmp_path / "trainset2/exclusions.parquet")
    assert set(keys_of(excl[excl.reason == "excluded_by_list"])) == set(g["negatives"])


def test_a_review_batch_writes_the_rejections(graded_run, tmp_path):
    g = graded_run
    index = ShardSet(g["manifests"][0]).index.head(4)
    review = index[[*KEY, "RA", "DEC", "TYPE"]].assign(STRATUM="SER|DECaLS|4", score=[0.9, 0.8, 0.7, 0.6], status="kept")
    review.to_csv(tmp_path / "review.csv", index=False)
    db = tmp_path / "grades.sqlite"
    grades = GradesDB(db)
    for key, (a, b) in zip(keys_of(review), [(3, 2), (1, 1), (0, 1), (0, 0)]):
        grades.set_grade("tiny/review", key, "ann", a)
        grades.set_grade("tiny/review", key, "bob", b)
    grades.close()
    summary = feed_back(tmp_path / "review.csv", db, tmp_path / "out", InspectionConfig(), "tiny/review")
    assert summary["kind"] == "review"
    assert read_key_list(tmp_path / "out/rejections.csv") == set(keys_of(review)[:2])  # mean >= 1
    assert read_key_list(tmp_path / "out/hard_negatives.csv") == set(keys_of(review)[2:])  # mean <= 0.5, score >= 0.5


def test_the_export_csv_gives_the_same_outputs(graded_run, tmp_path):
    """The rule also reads the portal's export.csv instead of the database."""
    from lensfinder.portal.app import Portal
    from lensfinder.portal.candidates import load_candidates
    from lensfinder.portal.images import ImageSource

    g = graded_run
    recs_path = g["run_dir"] / "recommendations/recommendations.parquet"
    frame, kind = load_candidates(recs_path)
    portal = Portal(frame, kind, BATCH, GradesDB(g["db"]), ImageSource(g["run_dir"]))
    header, rows = portal.export_rows()
    pd.DataFrame(rows, columns=header).to_csv(tmp_path / "export.csv", index=False)
    feed_back(recs_path, tmp_path / "export.csv", tmp_path / "a", InspectionConfig(), BATCH)
    feed_back(recs_path, g["db"], tmp_path / "b", InspectionConfig(), BATCH)
    for name in ("graded.csv", "new_lenses.csv", "hard_negatives.csv", "rejections.csv"):
        a, b = pd.read_csv(tmp_path / "a" / name), pd.read_csv(tmp_path / "b" / name)
        pd.testing.assert_frame_equal(a.drop(columns=["COMMENTS"], errors="ignore"), b.drop(columns=["COMMENTS"], errors="ignore"))


@pytest.mark.workflow
def test_the_inspection_rule_feeds_a_second_snakemake_run(graded_run, tmp_path):
    """The loop through Snakemake: training set -> `inspection` (on request only) -> a new
    run listing the new lenses in lens_catalogs and the hard negatives in
    trainset.hard_negatives: its new lenses are positives, and the hard negatives leave the
    random nonlens sample and join the training split as hard negatives."""
    g = graded_run
    cfg = tiny_config(source="tree", root=str(g["root"]))
    cfg["run"] = "tiny"
    cfg["lens_catalogs"] = g["catalogs"]  # the planted lenses' entries taken out, as the graded run's
    cfg["trainset"].update(ratio=1000, seed=3, grades=["A", "B"])
    cands = tmp_path / "recommendations.parquet"  # outside results/: no rule makes it
    shutil.copy(g["run_dir"] / "recommendations/recommendations.parquet", cands)
    work = make_workdir(tmp_path, cfg)
    labels_target = "results/tiny/trainset/labels.parquet"
    run_snakemake(work, labels_target)
    first = pd.read_parquet(work / labels_target)

    dry = run_snakemake(work, "-n")
    assert "rule inspection" not in dry.stdout and "inspection" not in dry.stdout.split("Job stats")[-1]
    missing = run_snakemake(work, "inspection", check=False)
    assert missing.returncode != 0 and "needs the grades database" in missing.stdout
    grades = tmp_path / "grades.sqlite"  # this test's own copy (WAL included), since it grades more
    with sqlite3.connect(g["db"]) as src, sqlite3.connect(grades) as dst:
        src.backup(dst)
    config = f"inspection={{db: {grades}, candidates: {cands}}}"
    run = run_snakemake(work, "inspection", "--config", config)
    out = work / "results/tiny/inspection"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["batch"] == BATCH and summary["new_lenses"] == 2, run.stdout[-2000:]
    assert read_key_list(out / "hard_negatives.csv") == set(g["negatives"])
    assert len(fitsio.read(str(out / "graded.fits"), ext="GRADED")) == len(g["recs"])
    # grading more re-runs it, although with SQLite's WAL the file's time need not change
    assert "Nothing to be done" in run_snakemake(work, "-n", "inspection", "--config", config).stdout
    before = grades.stat().st_mtime_ns
    db = GradesDB(grades)
    key = tuple(int(v) for v in g["recs"].iloc[0][["RELEASE", "BRICKID", "OBJID"]])
    db.set_grade(BATCH, key, "late grader", 4)
    db.close()
    os.utime(grades, ns=(before, before))  # as a WAL commit before a checkpoint leaves it
    dry = run_snakemake(work, "-n", "inspection", "--config", config).stdout
    assert "rule inspection:" in dry and "Nothing to be done" not in dry, dry[-2000:]
    run_snakemake(work, "inspection", "--config", config)
    assert "late grader" in (out / "graded.csv").read_text()

    # the next search, a new run as the README shows: its config lists the inspection's outputs
    cfg["run"] = "round2"
    cfg["lens_catalogs"] = g["catalogs"] + [{"path": "results/tiny/inspection/new_lenses.csv", "label": "inspection"}]
    cfg["trainset"]["hard_negatives"] = ["results/tiny/inspection/hard_negatives.csv"]
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(work, "results/round2/trainset/labels.parquet")
    second = pd.read_parquet(work / "results/round2/trainset/labels.parquet")
    new = set(g["hidden"][:2])
    pos1, pos2 = set(keys_of(first[first.LABEL == 1])), set(keys_of(second[second.LABEL == 1]))
    assert not new & pos1 and pos2 == pos1 | new
    negatives = set(g["negatives"])
    assert negatives <= set(keys_of(first[(first.LABEL == 0) & (first.SOURCE == "random")]))
    assert not negatives & set(keys_of(second[second.SOURCE == "random"]))
    hard = second[second.SOURCE == "hard_negative"]
    excl = pd.read_parquet(work / "results/round2/trainset/exclusions.parquet")
    left_out = excl[excl.reason.isin(["overlaps_validation", "near_known_system", "no_cutout"])]
    assert set(keys_of(hard)) | (set(keys_of(left_out)) & negatives) == negatives  # each added, or left out with a reason
    assert len(hard) >= 1 and (hard.LABEL == 0).all() and (hard.SPLIT == "train").all()
    counts = json.loads((work / "results/round2/trainset/summary.json").read_text())["hard_negatives"]
    assert counts == {"listed": 3, "as": "nonlenses", "selected_nonlens_candidates": 3, "added_as_nonlenses": len(hard)}


def test_written_csv_tables_keep_formulas_as_text_and_read_back_unchanged(tmp_path):
    """A comment like =HYPERLINK(...) must reach a spreadsheet as text, and an export the
    portal wrote must give the same comment back to the inspection rule."""
    import csv

    from lensfinder.portal.inspection import grades_from_export
    from lensfinder.tables import spreadsheet_safe, write_tables

    comments = ['=HYPERLINK("http://x","y")', "+1 arc", "-", "@SUM(A1)", "\tx", "plain; ok", "", "it's fine", "'=x",
                "'quoted'"]
    table = pd.DataFrame({"RELEASE": 10000, "BRICKID": 1, "OBJID": range(len(comments)), "COMMENTS": comments})
    write_tables(tmp_path, table, "graded")
    cells = [row["COMMENTS"] for row in csv.DictReader(open(tmp_path / "graded.csv", newline=""))]
    assert cells == ["'" + c if c[:1] in ("=", "+", "-", "@", "\t", "'") else c for c in comments]
    assert pd.read_parquet(tmp_path / "graded.parquet").COMMENTS.tolist() == comments  # only the CSV changes
    export = tmp_path / "export.csv"
    pd.DataFrame({"RELEASE": 10000, "BRICKID": 1, "OBJID": range(len(comments)), "grade_ann": 3,
                  "comment_ann": [spreadsheet_safe(c) for c in comments]}).to_csv(export, index=False)
    assert [g["comment"] for g in grades_from_export(export)] == comments
