"""Training: 2-process gloo DDP equals 1 process, pre-emption and resume, checkpoint reload."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_trainset
from lensfinder.train import PREEMPTED_EXIT, load_checkpoint

MODEL = json.dumps({"preset": "resnet_mini", "input": {"crop": None}})


def train_cmd(trainset, out, nproc=1, **train):
    cfg = {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 3, "num_threads": 1, **train}
    args = ["--trainset", str(trainset), "--model", MODEL, "--train", json.dumps(cfg), "--out", str(out)]
    if nproc == 1:
        return [sys.executable, "-m", "lensfinder.train", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lensfinder.train", *args]


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    return make_trainset(tmp_path_factory.mktemp("trainset"))


def test_two_gloo_ranks_train_like_one_with_the_same_global_batch(trainset, tmp_path):
    """Same weights within float tolerance. SGD: Adam turns the rounding noise in gradients
    that are zero in exact arithmetic (conv biases followed by batch norm) into lr-sized steps."""
    run(train_cmd(trainset, tmp_path / "one", optimizer="sgd", lr=0.05))
    run(train_cmd(trainset, tmp_path / "two", nproc=2, optimizer="sgd", lr=0.05))
    a, b = weights(tmp_path / "one/last.pt"), weights(tmp_path / "two/last.pt")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-4), k
    # and they moved away from the initial weights
    assert any(not torch.allclose(a[k], b[k] * 0) for k in a if a[k].is_floating_point())


def test_preempted_run_resumes_to_the_same_final_weights(trainset, tmp_path):
    cfg = dict(epochs=8)
    run(train_cmd(trainset, tmp_path / "straight", **cfg))
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(train_cmd(trainset, out, **cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "resume.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # as SLURM does before pre-emption
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
    state = torch.load(out / "resume.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] < 8 and not (out / "last.pt").exists()
    assert "run again to resume" in err
    (out / "best.pt").unlink(missing_ok=True)  # Snakemake deletes a job's outputs before re-running it
    resumed = run(train_cmd(trainset, out, **cfg))
    assert "resumed from" in resumed.stderr
    for name in ("last.pt", "best.pt"):
        a, b = weights(tmp_path / "straight" / name), weights(out / name)
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    assert not (out / "resume.pt").exists()  # finished: a later run trains afresh
    again = run(train_cmd(trainset, out, **cfg))
    assert "resumed from" not in again.stderr
    cols = ["epoch", "train_loss", "val_loss", "val_auc", "lr"]
    assert pd.read_csv(out / "metrics.csv")[cols].equals(pd.read_csv(tmp_path / "straight/metrics.csv")[cols])


def test_best_checkpoint_reloads_and_reproduces_its_validation_scores(trainset, tmp_path):
    run(train_cmd(trainset, tmp_path / "m", epochs=4))
    model, ck = load_checkpoint(tmp_path / "m/best.pt")
    labels = pd.read_parquet(trainset / "labels.parquet")
    val = labels[labels.SPLIT == "val"]
    images = torch.from_numpy(np.load(trainset / "cutouts.npy")[val.ROW.to_numpy()]).float()
    with torch.no_grad():
        scores = torch.sigmoid(model(images)).double().numpy()
    assert np.allclose(scores, ck["val_scores"], atol=1e-6)
    assert np.array_equal(ck["val_keys"][:, 2], val.OBJID.to_numpy())
    metrics = pd.read_csv(tmp_path / "m/metrics.csv")
    assert ck["best_auc"] == pytest.approx(metrics.val_auc.max()) and ck["epoch"] == metrics.val_auc.idxmax() + 1
    assert ck["model_spec"]["arch"] == "deeplens_resnet" and ck["units"] == "nanomaggy"
    assert len(ck["trainset_fingerprint"]) == 64
    for name in ("curves.png", "roc_pr.png", "last.pt"):
        assert (tmp_path / "m" / name).exists()
