"""Shared fixtures: a tiny mock survey (written once per session) and a workflow runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from lensfinder.mock.layout import MockConfig
from lensfinder.mock.write import write_mock_survey

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str):
    """A real component (SLURM, a browser) cannot start: with CI=true the test fails, so a
    green CI always means it ran; elsewhere it is skipped with the reason."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a component that cannot start fails its test)")
    pytest.skip(reason)  # only outside CI: IN_CI failed above

# Two bricks on either side of RA 150 (a sweep boundary): two sweep files, ~15 s to write.
TINY_MOCK = dict(n_bricks_ra=2, n_bricks_dec=1, galaxies=250, stars=60, lenses=16, seed=7,
                 mean_exposures=6.0, catalogued_fraction=1.0)


@pytest.fixture(scope="session")
def tiny_mock(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_mock")
    cfg = MockConfig(**TINY_MOCK)
    files = write_mock_survey(root, cfg, progress=False)
    return root, cfg, files


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole workflow run once on the tiny mock: (workdir, dry-run output, run output)."""
    work = make_workdir(tmp_path_factory.mktemp("tiny_run"), tiny_config(embed=True))
    dry = run_snakemake(work, "-n")
    run = run_snakemake(work)
    return work, dry, run


def make_workdir(tmp_path: Path, config: dict) -> Path:
    """A copy of the workflow in tmp_path (isolated .snakemake), with config/config.yaml replaced."""
    work = tmp_path / "wf"
    work.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config", "envs", "profiles"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name)
        else:
            shutil.copy(src, work / name)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def run_snakemake(workdir: Path, *args, check=True, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    # stderr merged into stdout: Snakemake writes its messages to either
    # as after `. .venv/bin/activate`: shell rules find this environment's python first
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-8000:]}")
    return proc


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


TINY_TRAIN = {"epochs": 2, "batch_size": 16, "lr": 0.002, "seed": 0}


def tiny_config(embed: bool = False, **survey) -> dict:
    """The default config with the tiny mock and two quick models; with a tree root, its
    catalogue and truth. The S22 stages (embed) run in tiny_run only: the other workflow tests
    check what they do not touch, and skip ~40 s of jobs each."""
    cfg = default_config()
    cfg["embed"]["enabled"] = embed
    cfg["mock"].update(TINY_MOCK)
    cfg["models"] = {"resnet": {"model": {"preset": "resnet_mini"}, "train": TINY_TRAIN},
                     "shielded": {"model": {"preset": "resnet_mini", "params": {"shields": [None, 16, 16]}},
                                  "train": TINY_TRAIN}}
    cfg["survey"].update(survey)
    # the sealed survey (rule sealed, on request): two bricks of the tiny mock's sky elsewhere
    cfg["sealed"].update(n_bricks_ra=2, n_bricks_dec=1, lenses=16)
    cfg["trainset"]["injections"] = 0  # the tiny mock has few deflectors; test_inject covers training injections
    # its validation split holds one lens or two, too few to fit the meta-learner on (the default):
    # test_ensemble_rank covers fit_on: validation
    cfg["ensemble"]["fit_on"] = "training"
    if survey.get("source") == "tree":
        root = survey["root"]
        cfg["lens_catalogs"] = [{"path": f"{root}/catalogues/known_lenses.csv"}]
        cfg["trainset"]["truth"] = f"{root}/truth/lenses.csv"
        cfg["evaluation"]["truth"] = f"{root}/truth/lenses.csv"
        cfg["evaluation"]["lookalikes"] = f"{root}/truth/lookalikes.csv"
    return cfg


def make_trainset(path, n=96, size=32, seed=0):
    """A small real training set on disk: lenses carry a faint blue ring, nonlenses do not."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    r = np.hypot(xx, yy)
    labels = (np.arange(n) % 4 == 0).astype(int)
    images = rng.normal(0, 0.01, (n, 3, size, size))
    core = np.exp(-(r**2) / 8.0)
    images += core * np.array([0.1, 0.2, 0.3])[:, None, None]
    ring = np.exp(-((r - 6.0) ** 2) / 2.0)
    images[labels == 1] += ring * np.array([0.08, 0.05, 0.02])[:, None, None]
    split = np.where(np.arange(n) % 10 < 7, "train", "val")
    frame = pd.DataFrame({"RELEASE": 10000, "BRICKID": 1, "OBJID": np.arange(n), "LABEL": labels, "SPLIT": split,
                          "ROW": np.arange(n)})
    path.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path / "labels.parquet")
    np.save(path / "cutouts.npy", images.astype(np.float16))
    return path


class WritesAFile:
    """Unpickling this creates the file ``path``: a stand-in for a checkpoint or model file
    that would run code, for the tests that such files are refused unrun."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))
