"""Cluster operation: the SLURM profile on a real one-node SLURM, stage re-runs after
catalogue updates, and the DAG report opened in a real headless browser."""

import json
import os
import re
import shutil
import subprocess

import fitsio
import pandas as pd
import pytest
from conftest import REPO, make_workdir, run_snakemake, tiny_config, unavailable

pytestmark = pytest.mark.workflow


def _job_counts(output: str) -> dict:
    """The 'Job stats' table of a Snakemake dry-run: rule -> count (without 'all' and 'total')."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("all", "total"):
            counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster on this machine (tests/slurm/start_cluster.sh)."""
    if os.geteuid() != 0:
        unavailable("starting slurmctld/slurmd/munged needs root on this machine")
    script = REPO / "tests/slurm/start_cluster.sh"
    proc = subprocess.run([str(script), "install"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        unavailable(f"SLURM could not be started here: {proc.stderr.strip()[-500:]}")
    return True


def test_slurm_profile_runs_the_tiny_workflow_like_a_local_run(slurm_cluster, tiny_run, tmp_path):
    local, _, _ = tiny_run
    work = make_workdir(tmp_path, tiny_config())
    # the same mock tree, with its times: SLURM runs every stage that reads it
    shutil.copytree(local / "resources", work / "resources", copy_function=shutil.copy2)
    profile = work / "profiles/slurm/config.yaml"
    # only what a site changes: accounts and partitions (this cluster has 'debug' and 'gpu')
    text = profile.read_text()
    text = text.replace('"m0000_g"', '"lensfinder-gpu"').replace('"m0000"', '"lensfinder-cpu"')
    text = text.replace('&cpu_partition "regular"', '&cpu_partition "debug"')
    profile.write_text(text)
    # this test cluster keeps no accounting database: job status comes from squeue (MinJobAge=3600)
    proc = run_snakemake(work, "--profile", "profiles/slurm", "--slurm-status-command", "squeue", timeout=1800)
    out = proc.stdout
    job_ids = [int(j) for j in re.findall(r"submitted with SLURM jobid (\d+)", out)]
    assert len(job_ids) >= 10, out[-3000:]
    for log in (work / "logs/slurm").rglob("*.log"):
        assert re.fullmatch(r"\d+\.log", log.name)
    assert len(list((work / "logs/slurm").rglob("*.log"))) == len(job_ids)
    # select and cutouts of both sweeps went as one grouped job
    assert len(list((work / "logs/slurm").glob("group_sweep_prep*/*.log"))) == 1
    # each training job asked for a whole 4-GPU node on the GPU partition and account
    train_ids = [int(p.stem) for p in (work / "logs/slurm/rule_train").rglob("*.log")]
    assert len(train_ids) == 2
    for jid in train_ids:
        info = subprocess.run(["scontrol", "show", "job", str(jid)], capture_output=True, text=True).stdout
        assert "TresPerJob=gres:gpu:4" in info and "Partition=gpu" in info and "Account=lensfinder-gpu" in info
        assert "Features=gpu" in info and "mem=200000M" in info
    # the same results as the local run
    res, ref = work / "results/mock", local / "results/mock"
    for sweep in ("sweep-145p000-150p005", "sweep-150p000-155p005"):
        assert pd.read_parquet(res / f"objects/{sweep}.parquet").equals(pd.read_parquet(ref / f"objects/{sweep}.parquet"))
        a = json.loads((res / f"cutouts/{sweep}/manifest.json").read_text())
        b = json.loads((ref / f"cutouts/{sweep}/manifest.json").read_text())
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert pd.read_parquet(res / "trainset/labels.parquet").equals(pd.read_parquet(ref / "trainset/labels.parquet"))
    for model in ("resnet", "shielded"):
        m1, m2 = pd.read_csv(res / f"models/{model}/metrics.csv"), pd.read_csv(ref / f"models/{model}/metrics.csv")
        assert m1[["epoch", "val_auc"]].equals(m2[["epoch", "val_auc"]])
    r1 = pd.read_csv(res / "recommendations/recommendations.csv")
    r2 = pd.read_csv(ref / "recommendations/recommendations.csv")
    assert r1[["RELEASE", "BRICKID", "OBJID"]].equals(r2[["RELEASE", "BRICKID", "OBJID"]])


@pytest.fixture()
def finished(tiny_run, tmp_path):
    """A copy of the finished tiny run (timestamps and Snakemake metadata kept)."""
    src, _, _ = tiny_run
    dst = tmp_path / "wf"
    shutil.copytree(src, dst, symlinks=True)
    assert "Nothing to be done" in run_snakemake(dst, "-n").stdout
    return dst


def test_replacing_one_sweep_reruns_only_its_jobs_and_the_ranking(finished):
    sweep = finished / "resources/mock_survey/dr10/south/sweep/10.1/sweep-150p000-155p005.fits"
    with fitsio.FITS(str(sweep), "rw") as f:  # an updated catalogue: one object brighter
        rows = f[1].read(rows=[0])
        rows["FLUX_Z"] *= 1.5
        f[1].write(rows, firstrow=0)
    out = run_snakemake(finished, "-n").stdout
    counts = _job_counts(out)
    # the sweep's own jobs, once each; the gathering stages again; never the training or the encoder
    assert {k: counts.get(k) for k in ("select", "cutouts", "infer", "shortlist", "embed")} == \
        {"select": 1, "cutouts": 1, "infer": 2, "shortlist": 1, "embed": 1}
    assert {"selection_counts", "rank", "accounting", "evaluate"} <= set(counts)
    assert not {"mock_survey", "trainset", "train", "trainset_scores", "ensemble", "pretrain"} & set(counts)
    assert "sweep-145p000-150p005" not in out.split("Job stats:")[0]


def test_replacing_a_lens_catalogue_reruns_the_training_set_and_after_not_the_cutouts(finished):
    catalogue = finished / "resources/mock_survey/catalogues/known_lenses.csv"
    lines = catalogue.read_text().splitlines()
    catalogue.write_text("\n".join(lines[:-1]) + "\n")  # a system withdrawn
    counts = _job_counts(run_snakemake(finished, "-n").stdout)
    # the training set and everything after it; not the selection, the cutouts or the encoder
    assert {k: counts.get(k) for k in ("trainset", "train", "trainset_scores", "ensemble", "infer", "shortlist",
                                       "rank")} == \
        {"trainset": 1, "train": 2, "trainset_scores": 2, "ensemble": 1, "infer": 4, "shortlist": 2, "rank": 1}
    assert not {"select", "cutouts", "mock_survey", "pretrain", "embed", "similarity_index"} & set(counts)
    # --until: the training set alone
    assert _job_counts(run_snakemake(finished, "-n", "--until", "trainset").stdout) == {"trainset": 1}


def test_forcerun_one_stage_with_until(finished):
    counts = _job_counts(run_snakemake(finished, "-n", "--forcerun", "cutouts", "--until", "cutouts").stdout)
    assert counts == {"cutouts": 2}


def test_report_holds_the_figures_in_a_real_browser(finished, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        unavailable("Debian's chromium is not installed (apt-get install chromium)")
    run_snakemake(finished, "--report", "report.html")
    report = finished / "report.html"
    assert report.stat().st_size > 100_000
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
         "--virtual-time-budget=10000", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=180).stdout
    # rendered by the report's scripts: the result categories in the menu, the run statistics entry
    for text in ("1. Selection", "2. Training set", "3. Training", "4. Ensemble", "5. Recommendations",
                 "8. Self-supervised (S22)", "Statistics"):
        assert f">{text}<" in dom, text
    html = report.read_text(errors="replace")
    for name in ("selection_counts.csv", "summary.png", "curves.png", "roc_pr.png", "comparison.png",
                 "evaluation.csv", "recommendations.csv", "summary.json", "mosaic.png", "enrichment.png",
                 "neighbours.png", "probe_vs_networks.csv"):
        assert name in html, name
    # the rule graph renders with graphviz
    dot = run_snakemake(finished, "--rulegraph").stdout
    svg = subprocess.run(["dot", "-Tsvg"], input=dot[dot.index("digraph"):], capture_output=True, text=True, check=True).stdout
    for rule in ("select", "cutouts", "trainset", "train", "infer", "ensemble", "rank"):
        assert f">{rule}<" in svg, rule
