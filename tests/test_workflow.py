"""Real Snakemake runs of the workflow on a tiny config, and its clear failures on bad input."""

import re

import pyarrow.parquet as pq
import pytest
from conftest import make_workdir, run_snakemake, tiny_config

from lensfinder.catalog.select import SelectionConfig, select_sweep

pytestmark = pytest.mark.workflow
SWEEPS = ["sweep-145p000-150p005", "sweep-150p000-155p005"]


def test_dry_run_fans_out_per_sweep(tiny_run):
    _, dry, _ = tiny_run
    out = dry.stdout
    assert "mock_survey" in out
    for sweep in SWEEPS:
        assert f"output: results/mock/objects/{sweep}.parquet" in out
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(("select ", "mock_survey "))}
    assert counts == {"mock_survey": "1", "select": "2"}


def test_run_generates_mock_and_selects_every_sweep(tiny_run):
    work, _, _ = tiny_run
    results = work / "results/mock/objects"
    for sweep in SWEEPS:
        table = pq.read_table(results / f"{sweep}.parquet")
        assert table.num_rows > 0
        assert {"RELEASE", "BRICKID", "OBJID", "REGION", "ZEXP_BIN", "MAG_Z"} <= set(table.column_names)
        # identical to calling the package directly on the mock's sweep
        direct = work / f"direct-{sweep}.parquet"
        select_sweep(work / f"resources/mock_survey/dr10/south/sweep/10.1/{sweep}.fits", direct,
                     work / "direct.csv", SelectionConfig(), progress=False)
        assert table.equals(pq.read_table(direct))
        assert (work / f"results/mock/logs/select/{sweep}.log").read_text().strip().endswith("s")
    lines = (results / "selection_counts.csv").read_text().splitlines()
    total = dict(zip(lines[0].split(","), lines[-1].split(",")))
    assert int(total["selected"]) == sum(pq.read_table(results / f"{s}.parquet").num_rows for s in SWEEPS)
    # a second run has nothing to do
    again = run_snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout


def test_real_tree_mode_reads_an_existing_tree_without_generating_it(tiny_mock, tmp_path):
    root, _, _ = tiny_mock
    cfg = tiny_config(source="tree", root=str(root))
    work = make_workdir(tmp_path, cfg)
    dry = run_snakemake(work, "-n")
    assert "mock_survey" not in dry.stdout
    run_snakemake(work, "results/mock/trainset/labels.parquet")  # the stages that read the tree
    for sweep in SWEEPS:
        assert pq.read_table(work / f"results/mock/objects/{sweep}.parquet").num_rows > 0
    assert (work / "results/mock/trainset/labels.parquet").exists()
    # a list of sweeps, or a box, picks the sweeps to process
    cfg["survey"]["sweeps"] = ["sweep-150p000-155p005"]
    dry = run_snakemake(make_workdir(tmp_path / "list", cfg), "-n")
    assert "sweep-150p000-155p005.parquet" in dry.stdout and "sweep-145p000-150p005" not in dry.stdout
    cfg["survey"]["sweeps"] = {"ra_min": 146, "ra_max": 149, "dec_min": 0, "dec_max": 3}
    dry = run_snakemake(make_workdir(tmp_path / "box", cfg), "-n")
    assert "sweep-145p000-150p005" in dry.stdout and "sweep-150p000-155p005" not in dry.stdout


def test_missing_survey_directory_is_one_clear_message(tmp_path):
    work = make_workdir(tmp_path, tiny_config(source="tree", root="/nonexistent/legacysurvey"))
    proc = run_snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    assert "survey directory /nonexistent/legacysurvey does not exist: set survey.root" in proc.stdout


def test_config_failing_the_schema_names_the_key(tmp_path):
    cfg = tiny_config()
    cfg["selection"]["zmag_max"] = "twenty"
    proc = run_snakemake(make_workdir(tmp_path, cfg), "-n", check=False)
    assert proc.returncode != 0
    assert "Error validating config file" in proc.stdout and "['selection']['zmag_max']" in proc.stdout
    cfg = tiny_config()
    cfg["survey"]["releese"] = "dr10"
    proc = run_snakemake(make_workdir(tmp_path / "typo", cfg), "-n", check=False)
    assert proc.returncode != 0 and "'releese' was unexpected" in proc.stdout


def test_truncated_sweep_stops_its_job_with_the_file_named(tiny_mock, tmp_path):
    root, _, files = tiny_mock
    tree = tmp_path / "tree"
    sweep_dir = tree / "dr10/south/sweep/10.1"
    sweep_dir.mkdir(parents=True)
    data = open(files["sweeps"][0], "rb").read()
    (sweep_dir / "sweep-145p000-150p005.fits").write_bytes(data[: len(data) // 2])
    work = make_workdir(tmp_path, tiny_config(source="tree", root=str(tree)))
    proc = run_snakemake(work, "results/mock/objects/sweep-145p000-150p005.parquet", check=False)
    assert proc.returncode != 0
    assert "lensfinder error in rule select: sweep file" in proc.stdout
    assert "sweep-145p000-150p005.fits is truncated" in proc.stdout and "re-download it" in proc.stdout
    assert not (work / "results/mock/objects/sweep-145p000-150p005.parquet").exists()


def test_too_few_validation_lenses_for_the_meta_learner_stop_the_trainset_rule(tiny_mock, tmp_path):
    """A validation split of a tenth leaves the tiny tree's strata (a lens or three each) a lens
    at most: with ensemble.fit_on: validation the run stops at the training set, naming both
    settings, before any network trains."""
    root, _, _ = tiny_mock
    cfg = tiny_config(source="tree", root=str(root))
    cfg["ensemble"]["fit_on"] = "validation"
    cfg["trainset"]["validation_fraction"] = 0.1
    work = make_workdir(tmp_path, cfg)
    proc = run_snakemake(work, "results/mock/ensemble/meta.npz", check=False)
    assert proc.returncode != 0
    assert "lensfinder error in rule trainset: ensemble.fit_on: validation needs at least 2 lenses" in proc.stdout
    assert "trainset.validation_fraction" in proc.stdout and "ensemble.fit_on: training" in proc.stdout
    assert not (work / "results/mock/trainset/labels.parquet").exists() and not (work / "results/mock/models").exists()


def test_run_writes_cutout_shards_for_every_sweep_and_counts_add_up(tiny_run):
    import json

    from lensfinder.cutouts.shards import ShardSet

    work, dry, _ = tiny_run
    assert "cutouts" in dry.stdout
    for sweep in SWEEPS:
        manifest = work / f"results/mock/cutouts/{sweep}/manifest.json"
        counts = json.loads(manifest.read_text())["counts"]
        selected = pq.read_table(work / f"results/mock/objects/{sweep}.parquet").num_rows
        failed = pq.read_table(work / f"results/mock/cutouts/{sweep}/failures.parquet").num_rows
        shards = ShardSet(manifest)
        assert counts == {"selected": selected, "written": len(shards), "failed": failed}
        assert selected == len(shards) + failed > 0
        assert (work / f"results/mock/logs/cutouts/{sweep}.log").exists()


def test_workflow_passes_snakemake_lint(tmp_path):
    proc = run_snakemake(make_workdir(tmp_path, tiny_config()), "--lint")
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout


def test_run_builds_the_training_set(tiny_run):
    import json

    work, dry, _ = tiny_run
    assert "trainset" in dry.stdout
    out = work / "results/mock/trainset"
    summary = json.loads((out / "summary.json").read_text())
    labels = pq.read_table(out / "labels.parquet").to_pandas()
    assert summary["lenses"] == int((labels.LABEL == 1).sum()) > 0
    assert summary["nonlenses"] == int((labels.LABEL == 0).sum()) > 0
    assert "hidden_lenses" in summary and set(labels.SPLIT) == {"train", "val"}
    for name in ("cutouts.npy", "exclusions.parquet", "summary.png", "review.csv"):
        assert (out / name).exists()


def test_run_trains_every_configured_model(tiny_run):
    import pandas as pd

    from lensfinder.nets.checkpoint import load_checkpoint

    work, dry, _ = tiny_run
    for model in ("resnet", "shielded"):
        out = work / f"results/mock/models/{model}"
        metrics = pd.read_csv(out / "metrics.csv")
        assert len(metrics) == 2 and metrics.val_auc.notna().all()
        _, ck = load_checkpoint(out / "best.pt")
        assert ck["best_auc"] == metrics.val_auc.max()
        for name in ("last.pt", "curves.png", "roc_pr.png"):
            assert (out / name).exists()
        assert "trainable parameters" in (work / f"results/mock/logs/train/{model}.log").read_text()


def test_run_scores_every_sweep_and_ranks_recommendations(tiny_run):
    import json

    import pandas as pd

    from lensfinder.cutouts.shards import ShardSet

    work, dry, _ = tiny_run
    res = work / "results/mock"
    for model in ("resnet", "shielded"):
        for sweep in SWEEPS:
            scores = pd.read_parquet(res / f"scores/{model}/{sweep}.parquet")
            index = ShardSet(res / f"cutouts/{sweep}/manifest.json").index
            assert scores[["RELEASE", "BRICKID", "OBJID"]].equals(index[["RELEASE", "BRICKID", "OBJID"]].astype("int64"))
    evaluation = pd.read_csv(res / "ensemble/evaluation.csv")
    assert evaluation.scorer.tolist() == ["resnet", "shielded", "mean", "meta-learner"]
    meta = json.loads((res / "ensemble/meta.json").read_text())
    assert set(meta["checkpoints"]) == {"resnet", "shielded"} and len(meta["checkpoints"]["resnet"]["sha256"]) == 64
    summary = json.loads((res / "recommendations/summary.json").read_text())
    recs = pd.read_csv(res / "recommendations/recommendations.csv")
    assert summary["recommendations"] == len(recs) > 0
    assert summary["selected"] == summary["known_systems_removed"] + summary["merged_duplicates"] + len(recs)
    assert (res / "recommendations/mosaic.png").exists()


def test_per_sweep_shortlists_leave_the_recommendations_unchanged(tiny_run, tmp_path, monkeypatch):
    """Ranking the run's per-sweep shortlists gives what ranking every object at once gives:
    the run's own recommendations; and, on the run's scores, a top 10 from shortlists of
    each sweep's 10 best (most objects dropped)."""
    import json

    import pandas as pd

    from lensfinder.ranking.rank import rank
    from lensfinder.ranking.scores import RankConfig
    from lensfinder.ranking.shortlist import shortlist_batch

    work, _, _ = tiny_run
    res = work / "results/mock"
    monkeypatch.chdir(work)  # the config's catalogue paths are the workflow's
    cfg = tiny_config()
    manifests = [res / f"cutouts/{s}/manifest.json" for s in SWEEPS]

    def ranked(keep: RankConfig, select: RankConfig, out):
        paths = []
        for sweep in SWEEPS:
            path = tmp_path / out / f"{sweep}.parquet"
            shortlist_batch([sweep], {m: [res / f"scores/{m}/{sweep}.parquet"] for m in ("resnet", "shielded")},
                            [res / f"objects/{sweep}.parquet"], res / "ensemble/meta.npz", keep, path)
            paths.append(path)
        summary = rank(paths, manifests, cfg["lens_catalogs"], select, tmp_path / out)
        return summary, pd.read_parquet(tmp_path / out / "recommendations.parquet")

    everything = RankConfig.from_dict({**cfg["rank"], "keep_top_per_sweep": 10**9})
    whole, recs = ranked(everything, everything, "whole")
    assert whole["shortlists"]["dropped"] == 0
    run = json.loads((res / "recommendations/summary.json").read_text())
    assert {k: v for k, v in run.items() if k != "shortlists"} == {k: v for k, v in whole.items() if k != "shortlists"}
    assert pd.read_parquet(res / "recommendations/recommendations.parquet").equals(recs)

    top10 = RankConfig.from_dict({**cfg["rank"], "value": 10, "keep_top_per_sweep": 10, "keep_above_score": 1.0})
    short, recs_short = ranked(top10, top10, "short")
    whole10, recs_whole = ranked(everything, top10, "whole10")
    assert short["shortlists"]["kept"] == 20 and short["shortlists"]["dropped"] == run["scored_objects"] - 20
    assert {k: v for k, v in short.items() if k != "shortlists"} == {k: v for k, v in whole10.items() if k != "shortlists"}
    assert recs_short.equals(recs_whole) and len(recs_short) > 0


def test_batched_inference_scores_and_ranks_as_one_job_per_sweep(tiny_run, tmp_path):
    """infer.sweeps_per_job: 2 on the finished tiny run: one infer job per model and one
    shortlist job for both sweeps (no training, no scoring of the training set), with the
    per-sweep run's scores and the same recommendations."""
    import shutil

    import pandas as pd
    import yaml

    src, _, _ = tiny_run
    work = tmp_path / "wf"
    shutil.copytree(src, work, symlinks=True)
    cfg = yaml.safe_load((work / "config/config.yaml").read_text())
    cfg["infer"]["sweeps_per_job"] = 2
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    dry = run_snakemake(work, "-n").stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", dry.split("Job stats:")[1].split("\n\n")[0],
                                                                flags=re.M)}
    assert counts["infer"] == 2 and counts["shortlist"] == 1
    assert not {"train", "trainset", "trainset_scores", "ensemble", "select", "cutouts"} & set(counts)
    run_snakemake(work)
    res, ref = work / "results/mock", src / "results/mock"
    for model in ("resnet", "shielded"):
        batch = pd.read_parquet(res / f"scores/{model}/batch-0000.parquet")
        for sweep in SWEEPS:
            alone = pd.read_parquet(ref / f"scores/{model}/{sweep}.parquet")
            assert batch[batch.SWEEP == sweep].reset_index(drop=True).equals(alone)
    a = pd.read_parquet(res / "recommendations/recommendations.parquet")
    assert a.equals(pd.read_parquet(ref / "recommendations/recommendations.parquet"))
    accounting = pd.read_csv(res / "accounting.csv").set_index("sweep")
    assert accounting.equals(pd.read_csv(ref / "accounting.csv").set_index("sweep"))


def test_run_evaluates_on_never_seen_objects_and_prints_the_results_table(tiny_run):
    import json

    import pandas as pd

    from lensfinder.results import _pct, results_table

    work, dry, _ = tiny_run
    res = work / "results/mock"
    metrics = json.loads((res / "evaluation/metrics.json").read_text())
    assert set(metrics) == {"_sample", "_comparisons", "resnet", "shielded", "mean", "meta-learner"}
    assert set(metrics["_comparisons"]) == {"meta-learner - resnet", "meta-learner - shielded", "meta-learner - mean"}
    sample = metrics["_sample"]
    scored = sum(len(pd.read_parquet(res / f"scores/resnet/{s}.parquet")) for s in SWEEPS)
    labels = pd.read_parquet(res / "trainset/labels.parquet")
    # never-seen = scored objects minus every object of the training set (both splits)
    assert sample["never_seen_objects"] == scored - len(labels) and sample["scored_objects"] == scored
    truth = pd.read_csv(work / "resources/mock_survey/truth/lenses.csv")
    truth_keys = set(zip(truth.release, truth.brickid, truth.objid))
    label_keys = set(zip(labels.RELEASE, labels.BRICKID, labels.OBJID))
    scored_keys = set().union(*(set(zip(*pd.read_parquet(res / f"scores/resnet/{s}.parquet")[
        ["RELEASE", "BRICKID", "OBJID"]].T.values)) for s in SWEEPS))
    assert sample["never_seen_lenses"] == len((truth_keys & scored_keys) - label_keys) > 0
    for scorer in ("resnet", "shielded", "mean", "meta-learner"):
        m = metrics[scorer]
        assert m["n_lenses"] == sample["never_seen_lenses"]
        assert set(m["top_fractions"]) == {"0.0001", "0.001", "0.01"}
        assert 0 <= m["cut"]["purity_sky_ci"][0] <= m["cut"]["purity_sky_ci"][1] <= 1
    table = pd.read_csv(res / "evaluation/metrics.csv")
    assert set(table.scorer) == {"resnet", "shielded", "mean", "meta-learner"}
    assert (res / "evaluation/pr_sky.png").stat().st_size > 10_000
    # the README's table comes from these files: its figures are theirs
    text = results_table(res)
    assert f"{sample['never_seen_objects']:,}, of which {sample['never_seen_lenses']} lenses" in text
    assert f"`meta-learner` {metrics['meta-learner']['auc']:.3f}" in text
    sf = json.loads((res / "selection_function/summary.json").read_text())
    assert f"{_pct(sf['completeness'], [sf['ci_lo'], sf['ci_hi']])} of {sf['n_injected']:,} injections" in text
    one_d = pd.read_csv(res / "selection_function/completeness_1d.csv")
    first = one_d[one_d.variable == "theta_e"].iloc[0]
    assert f'{first.lo:g}-{first.hi:g}": {100 * first.completeness:.0f} [' in text
