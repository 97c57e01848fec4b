"""Crash safety: a job killed with SIGKILL at any moment, then a re-run, ends with the very
bytes of an uninterrupted run; killed jobs' temporaries are cleaned away."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import make_workdir, run_snakemake, tiny_config

from lensfinder.cutouts.shards import ShardSet, ShardWriter
from lensfinder.files import atomic_path, remove_stale_temporaries

pytestmark = pytest.mark.workflow
FINAL_TABLES = ["recommendations/recommendations.csv", "accounting.csv", "evaluation/metrics.csv",
                "ensemble/evaluation.csv", "scores/resnet/sweep-150p000-155p005.parquet"]


def _job_process(work: Path, marker: str, snake: subprocess.Popen, timeout=600):
    """The first process running in ``work`` whose command line contains ``marker``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if snake.poll() is not None:  # Snakemake ended before the job showed: say why
            raise AssertionError(f"Snakemake exited ({snake.returncode}) before a job matching {marker!r} ran:\n"
                                 f"{snake.stdout.read()[-3000:]}")
        for p in psutil.process_iter(["cmdline", "cwd"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                # the job itself: not Snakemake (its scripts live under .snakemake/) nor a shell
                is_job = marker in cmd and "-m snakemake" not in cmd and not cmd.startswith(("/usr/bin/bash", "bash"))
                if is_job and p.info["cwd"] == str(work):
                    return p
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.05)
    raise AssertionError(f"no job matching {marker!r} started in {work}")


def _run_and_kill(work: Path, marker: str, rng: random.Random):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    snake = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--rerun-incomplete"], cwd=work,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    job = _job_process(work, marker, snake)
    time.sleep(rng.uniform(0.0, 1.5))  # a random moment of the job's life
    try:
        job.send_signal(signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass  # it finished first: the re-run must then simply go on
    out, _ = snake.communicate(timeout=900)
    return snake.returncode, out


def test_kill_9_of_cutouts_infer_and_train_then_rerun_gives_identical_tables(tiny_run, tmp_path):
    reference, _, _ = tiny_run
    work = make_workdir(tmp_path, tiny_config())
    # the same mock tree, with its times, so that only the stages below run
    shutil.copytree(reference / "resources", work / "resources", copy_function=shutil.copy2)
    rng = random.Random(11)
    killed = 0
    for marker in (".cutouts.py", "lensfinder.nets.launch", ".infer.py"):
        code, out = _run_and_kill(work, marker, rng)
        killed += code != 0
    assert killed >= 2, "the kills should have stopped the runs"
    run_snakemake(work, "--rerun-incomplete")
    for name in FINAL_TABLES:
        a, b = reference / "results/mock" / name, work / "results/mock" / name
        assert a.read_bytes() == b.read_bytes(), f"{name} differs after kill -9 and re-run"
    assert not list((work / "results").rglob(".tmp-*")), "a killed job's temporary survived the re-run"


def test_stale_temporaries_of_a_killed_job_are_removed(tmp_path):
    out = tmp_path / "objects" / "sweep-150p000-155p005.parquet"
    out.parent.mkdir()
    stale = out.parent / f".tmp-99999-{out.name}"
    stale.write_bytes(b"half a file")
    other = out.parent / ".tmp-99999-sweep-145p000-150p005.parquet"  # another job's: left alone
    other.write_bytes(b"being written")
    assert remove_stale_temporaries([out]) == [stale]
    assert not stale.exists() and other.exists()
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole" and not list(out.parent.glob(f".tmp-*-{out.name}"))


def test_a_shard_writer_clears_what_a_killed_run_left_in_its_directory(tmp_path):
    d = tmp_path / "cutouts" / "sweep-150p000-155p005"
    first = ShardWriter(d, 5, "dr10", max_rows=1)
    for i in range(3):  # three shards written, then the job is killed before the manifest
        first.add(np.full((3, 5, 5), i, np.float32), {"RELEASE": 1, "BRICKID": 1, "OBJID": i, "RA": 1.0, "DEC": 1.0})
    (d / ".tmp-4242-shard-003.npy").write_bytes(b"partial")
    second = ShardWriter(d, 5, "dr10", max_rows=1)
    second.add(np.ones((3, 5, 5), np.float32), {"RELEASE": 1, "BRICKID": 1, "OBJID": 7, "RA": 1.0, "DEC": 1.0})
    second.close(1)
    assert sorted(p.name for p in d.iterdir()) == ["failures.parquet", "manifest.json", "shard-000.index.parquet",
                                                   "shard-000.npy"]
    assert len(ShardSet(d / "manifest.json")) == 1


def test_atomic_path_syncs_the_file_before_its_rename_and_the_directory_after(tmp_path, monkeypatch):
    """A node crash shortly after a rename must not leave a complete-looking name over
    partial bytes: the file's data are fsynced before the rename, the directory after."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", st.st_ino, st.st_size))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", os.stat(a).st_ino, None))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "d" / "table.csv"
    with atomic_path(out) as tmp:
        tmp.write_text("a,b\n1,2\n")
    file_ino, dir_ino = out.stat().st_ino, out.parent.stat().st_ino
    assert events == [("fsync", file_ino, 8), ("replace", file_ino, None), ("fsync", dir_ino, events[2][2])]
    assert out.read_text() == "a,b\n1,2\n"
