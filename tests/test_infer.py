"""Inference over shards: rows, test-time augmentation, and clear errors on mismatches."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import WritesAFile, make_trainset

from lensfinder.cutouts.shards import ShardSet, ShardWriter
from lensfinder.errors import LensfinderError
from lensfinder.nets.checkpoint import load_checkpoint
from lensfinder.nets.scoring import d4
from lensfinder.ranking.infer import infer_sweep, infer_sweeps, score_trainset

KEY = ["RELEASE", "BRICKID", "OBJID"]


@pytest.fixture(scope="module")
def model_and_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("infer")
    ts = make_trainset(d / "ts", n=64, size=32)
    cfg = {"epochs": 1, "batch_size": 16, "seed": 1, "num_threads": 1}
    subprocess.run([sys.executable, "-m", "lensfinder.nets.train", "--trainset", str(ts), "--model",
                    json.dumps({"preset": "resnet_mini", "input": {"crop": None}}), "--train", json.dumps(cfg),
                    "--out", str(d / "model")], check=True, capture_output=True)
    images = np.load(ts / "cutouts.npy")
    writer = ShardWriter(d / "shards", 32, "dr10", max_rows=25)
    for i, img in enumerate(images):
        writer.add(img.astype(np.float32), {"RELEASE": 10000, "BRICKID": 3, "OBJID": i, "RA": 150.0 + i * 1e-3, "DEC": 2.0})
    writer.close(len(images))
    return d, ts


def test_inference_rows_equal_shard_rows_and_match_the_model(model_and_shards, tmp_path):
    d, ts = model_and_shards
    out = tmp_path / "scores.parquet"
    info = infer_sweep(d / "shards/manifest.json", d / "model/best.pt", out, batch_size=10, progress=False)
    scores = pd.read_parquet(out)
    shards = ShardSet(d / "shards/manifest.json")
    assert info == {"rows": len(shards), "nan": 0}
    assert scores[KEY].equals(shards.index[KEY].astype("int64"))
    model, _ = load_checkpoint(d / "model/best.pt")
    with torch.no_grad():
        direct = torch.sigmoid(model(torch.from_numpy(np.load(ts / "cutouts.npy")).float())).numpy()
    assert np.allclose(scores.prob, direct, atol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-scores.logit)), scores.prob, atol=1e-6)
    # the contamination filter's previous-model scorer reads the same checkpoint
    from lensfinder.nets.scoring import load_scorer, score_array

    previous = score_array(load_scorer(d / "model/best.pt"), np.load(ts / "cutouts.npy"), batch_size=9)
    assert np.allclose(previous, direct, atol=1e-5)
    # the training-set scores for the meta-learner use the same model and transform
    ts_scores = score_trainset(ts, d / "model/best.pt", tmp_path / "ts_scores.parquet", batch_size=7)
    assert np.allclose(ts_scores.prob, direct, atol=1e-5)


def test_one_job_scores_a_batch_of_sweeps_as_each_alone(model_and_shards, tmp_path):
    """infer.sweeps_per_job: one model load, one table with every sweep's rows in order,
    each row's SWEEP, and the logits of scoring each sweep on its own."""
    d, _ = model_and_shards
    ShardWriter(tmp_path / "empty", 32, "dr10").close(0)
    manifests = [d / "shards/manifest.json", tmp_path / "empty/manifest.json", d / "shards/manifest.json"]
    sweeps = ["sweep-150p000-155p005", "sweep-155p000-160p005", "sweep-160p000-165p005"]
    info = infer_sweeps(manifests, sweeps, d / "model/best.pt", tmp_path / "batch.parquet", batch_size=16,
                        progress=False)
    batch = pd.read_parquet(tmp_path / "batch.parquet")
    infer_sweep(manifests[0], d / "model/best.pt", tmp_path / "alone.parquet", batch_size=16, progress=False)
    alone = pd.read_parquet(tmp_path / "alone.parquet")
    assert info == {"rows": 2 * len(alone), "nan": 0}
    assert batch.SWEEP.value_counts().to_dict() == {sweeps[0]: len(alone), sweeps[2]: len(alone)}
    for sweep in (sweeps[0], sweeps[2]):
        part = batch[batch.SWEEP == sweep].reset_index(drop=True)
        assert part[[*KEY, "logit"]].equals(alone[[*KEY, "logit"]])
    with pytest.raises(LensfinderError, match="3 shard sets for 2 sweeps"):
        infer_sweeps(manifests, sweeps[:2], d / "model/best.pt", tmp_path / "x.parquet", progress=False)


def test_test_time_augmentation_averages_the_eight_symmetries(model_and_shards, tmp_path):
    d, _ = model_and_shards
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    views = d4(x)
    assert len(views) == 8 and len({v.numpy().tobytes() for v in views}) == 8
    infer_sweep(d / "shards/manifest.json", d / "model/best.pt", tmp_path / "tta.parquet", tta=True, progress=False)
    infer_sweep(d / "shards/manifest.json", d / "model/best.pt", tmp_path / "plain.parquet", progress=False)
    tta, plain = pd.read_parquet(tmp_path / "tta.parquet"), pd.read_parquet(tmp_path / "plain.parquet")
    # the stored logit is the mean of the model's logits over the 8 views of each cutout
    model, _ = load_checkpoint(d / "model/best.pt")
    images = torch.from_numpy(np.stack([ShardSet(d / "shards/manifest.json").get(tuple(k))
                                        for k in tta[KEY].to_numpy()])).float()
    with torch.no_grad():
        expected = torch.stack([model(v) for v in d4(images)]).mean(0).numpy()
    assert np.allclose(tta.logit, expected, atol=1e-5)
    assert not np.allclose(tta.logit, plain.logit, atol=1e-3)  # the model is not symmetric yet


def test_logits_come_from_a_float32_head_under_bf16_autocast(model_and_shards):
    """bf16 keeps 8 bits of mantissa: a bf16 logit would turn the top of a ranking into ties."""
    from lensfinder.nets.scoring import float32_head

    d, ts = model_and_shards
    x = torch.from_numpy(np.load(ts / "cutouts.npy")).float()
    model, _ = load_checkpoint(d / "model/best.pt")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        rounded = model(x)
        exact = float32_head(model)(x)
    assert rounded.dtype == torch.bfloat16 and exact.dtype == torch.float32
    # the float32 logits are not on bf16's grid, and they agree with the bf16 ones to bf16 precision
    assert (exact != exact.bfloat16().float()).any()
    assert torch.allclose(exact, rounded.float(), rtol=0.05, atol=0.05)


def test_a_zero_filled_shard_fails_inference_by_its_checksum_and_writes_nothing(model_and_shards, tmp_path):
    """A shard whose bytes were lost (zero-filled after a crash, say) keeps its shape and
    its name; inference must refuse it by its manifest's checksum instead of scoring zeros."""
    import shutil

    d, _ = model_and_shards
    copy = tmp_path / "shards"
    shutil.copytree(d / "shards", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    damaged = copy / manifest["shards"][1]["array"]
    header = np.load(damaged, mmap_mode="r").offset
    data = bytearray(damaged.read_bytes())
    data[header:] = bytes(len(data) - header)
    damaged.write_bytes(bytes(data))
    assert np.load(damaged).shape == np.load(d / "shards" / manifest["shards"][1]["array"]).shape
    out = tmp_path / "scores.parquet"
    with pytest.raises(LensfinderError, match=r"shard-001.npy does not match its checksum .*manifest.json.*re-run"):
        infer_sweep(copy / "manifest.json", d / "model/best.pt", out, batch_size=10, progress=False)
    assert not out.exists()
    # the untouched original scores as before
    assert infer_sweep(d / "shards/manifest.json", d / "model/best.pt", out, batch_size=10, progress=False)["rows"] == 64


def test_mismatched_or_missing_shards_name_both_files(model_and_shards, tmp_path):
    d, _ = model_and_shards
    writer = ShardWriter(tmp_path / "big", 41, "dr10")
    writer.add(np.zeros((3, 41, 41), np.float32), {"RELEASE": 1, "BRICKID": 1, "OBJID": 1, "RA": 1.0, "DEC": 1.0})
    writer.close(1)
    with pytest.raises(LensfinderError, match=r"checkpoint .*best.pt does not match shards .*big/manifest.json: cutout shape"):
        infer_sweep(tmp_path / "big/manifest.json", d / "model/best.pt", tmp_path / "x.parquet", progress=False)
    (tmp_path / "big/shard-000.npy").unlink()
    with pytest.raises(LensfinderError, match=r"shard-000.npy listed in .*manifest.json is missing.*best.pt"):
        infer_sweep(tmp_path / "big/manifest.json", d / "model/best.pt", tmp_path / "x.parquet", progress=False)
    assert not (tmp_path / "x.parquet").exists()


def test_an_empty_sweep_gives_a_valid_empty_score_table(model_and_shards, tmp_path):
    """A sweep that selected nothing (or whose cutouts all failed) has an empty shard set:
    inference writes an empty table with the full schema, not a KeyError."""
    d, _ = model_and_shards
    ShardWriter(tmp_path / "empty", 32, "dr10").close(0)
    info = infer_sweep(tmp_path / "empty/manifest.json", d / "model/best.pt", tmp_path / "e.parquet", progress=False)
    scores = pd.read_parquet(tmp_path / "e.parquet")
    assert info == {"rows": 0, "nan": 0} and len(scores) == 0
    assert list(scores.columns) == [*KEY, "RA", "DEC", "logit", "prob", "SWEEP"]
    assert scores.logit.dtype == np.float32 and scores.OBJID.dtype == np.int64


def test_duplicate_keys_in_a_shard_set_are_an_error_naming_it(model_and_shards, tmp_path):
    writer = ShardWriter(tmp_path / "dup", 32, "dr10")
    for i in (1, 2, 1):
        writer.add(np.zeros((3, 32, 32), np.float32), {"RELEASE": 10000, "BRICKID": 3, "OBJID": i, "RA": 1.0, "DEC": 1.0})
    writer.close(3)
    with pytest.raises(LensfinderError, match=r"dup/manifest.json holds 1 duplicate key.*\[10000, 3, 1\]"):
        ShardSet(tmp_path / "dup/manifest.json")


def test_a_checkpoint_holding_python_objects_is_refused_without_running_them(tmp_path):
    """Checkpoints load with weights_only=True: a file whose pickle would call a function
    (here: create a file) is refused, and the call never happens."""
    marker = tmp_path / "the-payload-ran"

    evil = {"format": "lensfinder-checkpoint-1", "model_spec": {}, "state_dict": {}, "x": WritesAFile(marker)}
    torch.save(evil, tmp_path / "evil.pt")
    with pytest.raises(LensfinderError, match=r"evil.pt holds Python objects.*could run code"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()
