"""Training: 2 gloo ranks equal 1 process (resnet_mini, efficientnet_mini), reproducible
checkpoints, learning the planted ring, pre-emption and resume, checkpoint reload."""

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

from lensfinder.nets.checkpoint import load_checkpoint
from lensfinder.nets.launch import PREEMPTED_EXIT
from lensfinder.nets.registry import ModelSpec
from lensfinder.nets.runtime import DEFAULT_THREADS, threads_per_rank
from lensfinder.nets.train import initial_model, roc_auc

MODEL = json.dumps({"preset": "resnet_mini", "input": {"crop": None}})
# On 64-px cutouts (the preset's crop), dropout 0.1 before the head and drop-path 0.1 in the blocks.
EFFICIENTNET = json.dumps({"preset": "efficientnet_mini", "params": {"drop_path_rate": 0.1}})


def train_cmd(trainset, out, nproc=1, model=MODEL, **train):
    cfg = {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 3, "num_threads": 1, **train}
    args = ["--trainset", str(trainset), "--model", model, "--train", json.dumps(cfg), "--out", str(out)]
    if nproc == 1:
        return [sys.executable, "-m", "lensfinder.nets.train", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "lensfinder.nets.train", *args]


def launch_cmd(trainset, out, model, threads=1, **train):
    """The train rule's command: the launcher, the job's thread count, no num_threads (one
    thread: two OpenMP threads on two cores that other jobs share are ~9x slower). Small
    batches: enough steps for the batch-norm running statistics (used at validation) to
    follow the weights; with 4 steps an epoch EfficientNet's validation AUC swings 0.2-1."""
    cfg = {"epochs": 5, "batch_size": 8, "lr": 0.0005, "seed": 5, **train}
    return [sys.executable, "-m", "lensfinder.nets.launch", "--nproc", "1", "--trainset", str(trainset),
            "--model", model, "--train", json.dumps(cfg), "--out", str(out), "--threads", str(threads)]


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def initial_weights(model_json, seed):
    return initial_model(ModelSpec.from_config(json.loads(model_json)), seed).state_dict()


def assert_same_training(one, two, init, rtol, atol, buffer_rtol):
    """Every tensor of two runs agrees, and they differ by far less than training moved them."""
    assert one.keys() == two.keys() == init.keys()
    diff = moved = 0.0
    for k in one:
        if not one[k].is_floating_point():
            assert torch.equal(one[k], two[k]), k  # num_batches_tracked
            continue
        tol = dict(rtol=rtol, atol=atol) if "running_" not in k else dict(rtol=buffer_rtol, atol=atol)
        assert torch.allclose(one[k], two[k], **tol), (k, float((one[k] - two[k]).abs().max()))
        if "running_" not in k:
            diff += float(((one[k] - two[k]) ** 2).sum())
            moved += float(((one[k] - init[k]) ** 2).sum())
    assert moved > 1e-4, "training did not move the weights"
    assert diff**0.5 < 1e-3 * moved**0.5


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    return make_trainset(tmp_path_factory.mktemp("trainset"))


@pytest.fixture(scope="module")
def trainset64(tmp_path_factory):
    """64-px cutouts: at 32 px EfficientNet's last stage is 1 x 1 and its batch norms so
    sensitive that float rounding doubles every step (1 vs 2 threads diverge as much)."""
    return make_trainset(tmp_path_factory.mktemp("trainset64"), size=64)


def test_two_gloo_ranks_train_like_one_with_the_same_global_batch(trainset, tmp_path):
    """Same weights within float tolerance. SGD: Adam turns the rounding noise in gradients
    that are zero in exact arithmetic (conv biases followed by batch norm) into lr-sized steps."""
    run(train_cmd(trainset, tmp_path / "one", optimizer="sgd", lr=0.05))
    run(train_cmd(trainset, tmp_path / "two", nproc=2, optimizer="sgd", lr=0.05))
    assert_same_training(weights(tmp_path / "one/last.pt"), weights(tmp_path / "two/last.pt"),
                         initial_weights(MODEL, 3), rtol=1e-3, atol=1e-4, buffer_rtol=1e-3)


def test_two_nodes_of_one_process_each_train_like_one_process(trainset, tmp_path):
    """Multi-node: two launchers, as srun starts one per node, meet at a c10d rendezvous on
    127.0.0.1 (gloo) and give the weights of one process."""
    import socket

    run(train_cmd(trainset, tmp_path / "one", optimizer="sgd", lr=0.05))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"epochs": 2, "batch_size": 16, "lr": 0.05, "seed": 3, "num_threads": 1, "optimizer": "sgd"}
    node = [sys.executable, "-m", "lensfinder.nets.launch", "--nproc", "1", "--nnodes", "2", "--rdzv-endpoint",
            f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", "--trainset", str(trainset), "--model", MODEL,
            "--train", json.dumps(cfg), "--out", str(tmp_path / "two")]
    nodes = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert all("--nnodes=2" in o and "--rdzv-backend=c10d" in o for o in outs)
    assert "2 rank(s)" in "".join(outs)  # one world of two ranks, not two worlds of one
    assert_same_training(weights(tmp_path / "one/last.pt"), weights(tmp_path / "two/last.pt"),
                         initial_weights(MODEL, 3), rtol=1e-3, atol=1e-4, buffer_rtol=1e-3)


def test_two_gloo_ranks_train_efficientnet_like_one_dropout_included(trainset64, tmp_path):
    """timm's batch norms (BatchNormAct2d) span the ranks and the dropout / drop-path masks
    are the global batch's: 2 ranks == 1 process with dropout active. Per-rank batch norm
    or per-rank masks differ by more than training moves the weights (checked by hand)."""
    cfg = dict(optimizer="sgd", lr=0.001)
    run(train_cmd(trainset64, tmp_path / "one", model=EFFICIENTNET, **cfg))
    run(train_cmd(trainset64, tmp_path / "two", nproc=2, model=EFFICIENTNET, **cfg))
    one, two = torch.load(tmp_path / "one/last.pt", weights_only=True), torch.load(tmp_path / "two/last.pt",
                                                                                     weights_only=True)
    assert one["ranks"] == 1 and two["ranks"] == 2
    assert_same_training(one["state_dict"], two["state_dict"], initial_weights(EFFICIENTNET, 3),
                         rtol=1e-4, atol=1e-5, buffer_rtol=1e-3)


@pytest.fixture(scope="module")
def ring_runs(trainset64, tmp_path_factory):
    """Each model trained once, as the train rule runs it, on the planted-ring training set."""
    out = tmp_path_factory.mktemp("ring")
    runs = {}
    for name, model in (("resnet_mini", json.dumps({"preset": "resnet_mini"})), ("efficientnet_mini", EFFICIENTNET)):
        run(launch_cmd(trainset64, out / name, model))
        runs[name] = (model, out / name)
    return runs


@pytest.mark.parametrize("name", ["resnet_mini", "efficientnet_mini"])
def test_each_model_learns_the_planted_ring(ring_runs, trainset64, name):
    _, out = ring_runs[name]
    ck = torch.load(out / "best.pt", weights_only=True)
    labels = pd.read_parquet(trainset64 / "labels.parquet")
    y = labels[labels.SPLIT == "val"].LABEL.to_numpy()
    assert 5 <= y.sum() < len(y) - 5
    auc = roc_auc(y, ck["val_scores"])
    assert auc > 0.9 and ck["best_auc"] > 0.9, (auc, ck["best_auc"])  # chance: 0.5


@pytest.mark.parametrize("name", ["resnet_mini", "efficientnet_mini"])
def test_the_same_command_in_a_fresh_process_gives_bit_identical_checkpoints(ring_runs, trainset64, tmp_path, name):
    model, first = ring_runs[name]
    run(launch_cmd(trainset64, tmp_path / "again", model))
    a = torch.load(first / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "again/best.pt", weights_only=True)
    assert a["threads_per_rank"] == b["threads_per_rank"] == 1  # --threads 1, one rank
    assert a["train_config"]["deterministic"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert np.array_equal(a["val_scores"], b["val_scores"])
    assert a["best_epoch"] == b["best_epoch"] and a["best_auc"] == b["best_auc"]
    cols = ["epoch", "train_loss", "val_loss", "val_auc", "lr"]
    assert pd.read_csv(first / "metrics.csv")[cols].equals(pd.read_csv(tmp_path / "again/metrics.csv")[cols])


def test_thread_count_is_fixed_never_torchs_machine_dependent_default():
    assert threads_per_rank(3, 8, 4) == 3  # num_threads (per rank) wins
    assert threads_per_rank(None, 8, 4) == 2  # the job's --threads, split over the ranks
    assert threads_per_rank(None, 1, 2) == 1
    assert threads_per_rank(None, None, 4) == DEFAULT_THREADS == 1


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
    state = torch.load(out / "resume.pt", map_location="cpu", weights_only=True)
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


def test_preemption_under_torchrun_reaches_every_rank_and_resumes_to_the_same_weights(trainset, tmp_path):
    """SIGTERM to the launcher of 2 gloo ranks: both ranks stop at the same step, rank 0
    writes resume.pt once, the launcher exits 75; the re-run ends with the weights of an
    uninterrupted 2-rank run."""
    cfg = dict(epochs=6, optimizer="sgd", lr=0.05)

    def launcher(out):
        return [sys.executable, "-m", "lensfinder.nets.launch", "--nproc", "2", "--trainset", str(trainset), "--model", MODEL,
                "--train", json.dumps({"batch_size": 16, "seed": 3, "num_threads": 1, **cfg}), "--out", str(out)]

    run(launcher(tmp_path / "straight"))
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(launcher(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "resume.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # to the launcher only, as SLURM signals the job's first process
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT, err[-3000:]
    assert err.count("pre-empted at epoch") == 1, err[-3000:]  # one rank-0 save, not one per rank
    state = torch.load(out / "resume.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] < cfg["epochs"] and not (out / "last.pt").exists()
    (out / "best.pt").unlink(missing_ok=True)  # Snakemake deletes a job's outputs before re-running it
    resumed = run(launcher(out))
    assert "resumed from" in resumed.stderr
    a, b = weights(tmp_path / "straight/last.pt"), weights(out / "last.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_split_without_lenses_is_an_error_naming_the_split_and_strata(tmp_path):
    path = make_trainset(tmp_path / "ts")
    labels = pd.read_parquet(path / "labels.parquet")
    labels["STRATUM"] = np.where(labels.OBJID % 2, "PSF|south|1", "SER|south|1")
    labels.loc[(labels.SPLIT == "val") & (labels.LABEL == 1), "SPLIT"] = "train"  # no lens left in val
    labels.to_parquet(path / "labels.parquet")
    proc = subprocess.run(train_cmd(path, tmp_path / "out"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    n_val = int((labels.SPLIT == "val").sum())
    assert f"the val split has no lenses (0 lenses, {n_val} nonlenses)" in proc.stderr
    ser = labels[labels.STRATUM == "SER|south|1"]
    tr_pos = int(((ser.SPLIT == "train") & (ser.LABEL == 1)).sum())
    tr_neg = int(((ser.SPLIT == "train") & (ser.LABEL == 0)).sum())
    val_neg = int(((ser.SPLIT == "val") & (ser.LABEL == 0)).sum())
    assert f"SER|south|1 (train {tr_pos}/{tr_neg}, val 0/{val_neg})" in proc.stderr
    assert str(path / "labels.parquet") in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out/best.pt").exists()


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_object(tmp_path):
    path = make_trainset(tmp_path / "ts")
    labels = pd.read_parquet(path / "labels.parquet")
    images = np.load(path / "cutouts.npy")
    bad = labels[labels.SPLIT == "train"].iloc[5]
    images[bad.ROW, 1, 10:14, 10:14] = np.nan  # a NaN block in r
    np.save(path / "cutouts.npy", images)
    proc = subprocess.run(train_cmd(path, tmp_path / "out"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    msg = proc.stderr
    assert "non-finite training loss" in msg and "at epoch 0 step " in msg
    assert f"the objects with NaN or inf pixels (1): ({bad.RELEASE}, {bad.BRICKID}, {bad.OBJID})" in msg
    assert not (tmp_path / "out/best.pt").exists()
