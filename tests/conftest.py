"""Shared fixtures: a tiny mock survey (written once per session) and a workflow runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lensfinder.mock import MockConfig, write_mock_survey

REPO = Path(__file__).resolve().parents[1]

# Two bricks on either side of RA 150 (a sweep boundary): two sweep files, ~15 s to write.
TINY_MOCK = dict(n_bricks_ra=2, n_bricks_dec=1, galaxies=250, stars=60, lenses=8, lookalikes=3, seed=7,
                 mean_exposures=4.0)


@pytest.fixture(scope="session")
def tiny_mock(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_mock")
    cfg = MockConfig(**TINY_MOCK)
    files = write_mock_survey(root, cfg, progress=False)
    return root, cfg, files


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


def tiny_config(**survey) -> dict:
    """The default config with the tiny mock and two quick models; with a tree root, its
    catalogue and truth."""
    cfg = default_config()
    cfg["mock"].update(TINY_MOCK)
    cfg["models"] = {"resnet": {"model": {"preset": "resnet_mini"}, "train": TINY_TRAIN},
                     "shielded": {"model": {"preset": "resnet_mini", "params": {"shields": [None, 16, 16]}},
                                  "train": TINY_TRAIN}}
    cfg["survey"].update(survey)
    if survey.get("source") == "tree":
        root = survey["root"]
        cfg["lens_catalogs"] = [{"path": f"{root}/catalogues/known_lenses.csv"}]
        cfg["trainset"]["truth"] = f"{root}/truth/lenses.csv"
    return cfg
