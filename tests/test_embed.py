"""Self-supervised search (S22): MoCo loss, augmentations, pretraining, representations,
Faiss indexes, the similarity search, the linear probe and the workflow rules."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import run_snakemake

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardWriter
from lensfinder.embed.augment import S22_ORDER, AugmentConfig, S22Augment, gaussian_blur
from lensfinder.embed.encoders import EncoderSpec
from lensfinder.embed.index import IndexConfig, SimilarityIndex, build_index, exact_search, recall_at_k
from lensfinder.embed.moco import MoCo, MoCoConfig, info_nce
from lensfinder.embed.pretrain import PretrainConfig, load_encoder, water_fill
from lensfinder.errors import LensfinderError
from lensfinder.nets.launch import PREEMPTED_EXIT

SMALL = {"arch": "deeplens", "params": {"stem": 8, "stages": [[8, 16], [16, 32]], "blocks": 1}, "input": {"crop": 32}}


# ----------------------------------------------------------------------------- helpers
def galaxies(n, size=64, seed=0):
    """(n, 3, size, size) float32 nanomaggies: elliptical Gaussian galaxies of random size,
    colour and position angle over sky noise; bands g, r, z with z brightest."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - size // 2
    out = rng.normal(0, 0.005, (n, 3, size, size))
    for i in range(n):
        r, q, pa = rng.uniform(1.5, 6), rng.uniform(0.4, 1), rng.uniform(0, np.pi)
        u = xx * np.cos(pa) + yy * np.sin(pa)
        v = -xx * np.sin(pa) + yy * np.cos(pa)
        profile = np.exp(-0.5 * ((u / r) ** 2 + (v / (q * r)) ** 2))
        colour = np.array([0.3, 0.6, 1.0]) * rng.uniform(0.5, 3)
        out[i] += colour[:, None, None] * profile
    return out.astype(np.float32)


def write_shards(root, n=64, size=64, seed=0, release=10000, brickid=1):
    """A real shard set and its objects table (with Galactic transmissions)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = galaxies(n, size, seed)
    writer = ShardWriter(root / "cutouts", size=size, release="dr10", max_rows=40)
    mags = rng.uniform(15.5, 20.0, n)
    rows = []
    for i in range(n):
        row = {"RELEASE": release, "BRICKID": brickid, "OBJID": i, "BRICKNAME": "1500p020", "RA": 150 + i * 1e-3,
               "DEC": 2.0 + (i % 7) * 1e-3, "TYPE": "SER", "REGION": "DECaLS", "ZEXP_BIN": "3", "MAG_Z": float(mags[i])}
        writer.add(images[i], row)
        ebv = rng.uniform(0.01, 0.08)
        rows.append({**{k: row[k] for k in (*KEY, "RA", "DEC", "TYPE", "REGION", "MAG_Z")}, "EBV": ebv,
                     **{f"MW_TRANSMISSION_{b}": 10 ** (-r * ebv / 2.5) for b, r in zip("GRZ", (3.214, 2.165, 1.211))}})
    writer.close(n)
    pd.DataFrame(rows).to_parquet(root / "objects.parquet")
    return root / "cutouts" / "manifest.json", root / "objects.parquet"


# ----------------------------------------------------------------------------- MoCo
def small_moco(queue=64):
    torch.manual_seed(0)
    return MoCo(EncoderSpec(**SMALL).build(), MoCoConfig(dim=16, queue=queue, bn_splits=2))


def test_moco_loss_on_identical_views_is_at_its_minimum_and_on_swapped_keys_is_not():
    moco = small_moco().eval()  # batch norm from running statistics: identical inputs, identical vectors
    x = torch.from_numpy(galaxies(8, 32, seed=1))
    with torch.no_grad():
        same, logits, keys = moco(x, x)
        swapped, swapped_logits, _ = moco(x, x.roll(1, dims=0))
    t = moco.cfg.temperature
    # the key network starts as a copy of the query network: each positive is cos = 1, the
    # largest a cosine can be, so the loss is -log(e^(1/T) / (e^(1/T) + sum over the queue))
    assert torch.allclose(logits[:, 0], torch.full((8,), 1 / t), atol=1e-5)
    minimum = -torch.log_softmax(torch.cat([torch.full((8, 1), 1 / t), logits[:, 1:]], 1), dim=1)[:, 0].mean()
    assert same.item() == pytest.approx(minimum.item(), abs=1e-5)
    assert swapped.item() > same.item() + 0.1
    assert (swapped_logits[:, 0] < 1 / t - 1e-3).all()
    # and no other key of unit length does better than the query itself
    q = F.normalize(torch.randn(8, 16), dim=1)
    loss_q, _ = info_nce(q, q, moco.queue, t)
    for seed in range(5):
        other = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(seed)), dim=1)
        assert info_nce(q, other, moco.queue, t)[0] > loss_q


def test_split_batch_norm_normalises_each_group_on_its_own():
    from lensfinder.embed.moco import SplitBatchNorm, split_batch_norm

    bn = split_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)), 2)[0]
    assert type(bn) is SplitBatchNorm
    x = torch.randn(8, 3, 5, 5) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)
    y = bn.train()(x)
    for j in (0, 1):  # images i with i % 2 = j form group j
        ref = F.batch_norm(x[j::2], None, None, training=True, eps=bn.eps)
        assert torch.allclose(y[j::2], ref, atol=1e-5)
    assert not torch.allclose(y, F.batch_norm(x, None, None, training=True, eps=bn.eps), atol=1e-3)
    assert torch.allclose(bn.eval()(x), F.batch_norm(x, bn.running_mean, bn.running_var, eps=bn.eps))


def test_moco_queue_takes_the_newest_keys_and_the_key_network_follows_by_momentum():
    moco = small_moco(queue=10)
    keys = F.normalize(torch.randn(4, 16), dim=1)
    for _ in range(3):
        moco.enqueue(keys)
    assert int(moco.queue_ptr) == 2  # 12 keys through a queue of 10
    assert torch.equal(moco.queue[8:10], keys[:2]) and torch.equal(moco.queue[0:2], keys[2:])
    before = [p.clone() for p in moco.key.parameters()]
    with torch.no_grad():
        for p in moco.query.parameters():
            p.add_(1.0)
    moco.momentum_update()
    m = moco.cfg.momentum
    for b, pk, pq in zip(before, moco.key.parameters(), moco.query.parameters()):
        assert torch.allclose(pk, m * b + (1 - m) * pq, atol=1e-6)


# ----------------------------------------------------------------------------- augmentations
def test_augmentations_run_in_s22_order_and_refuse_another():
    assert S22Augment(AugmentConfig()).steps == S22_ORDER == (
        "reddening", "flip_rotate", "size_scale", "psf_blur", "jitter_crop", "noise")
    assert AugmentConfig.from_dict({"steps": ["reddening", "noise"]}).steps == ["reddening", "noise"]
    with pytest.raises(LensfinderError, match="S22's order"):
        AugmentConfig.from_dict({"steps": ["noise", "reddening"]})
    with pytest.raises(LensfinderError, match="too small"):
        S22Augment(AugmentConfig(crop=96))(torch.zeros(2, 3, 101, 101), torch.ones(2, 3), torch.Generator())


def test_augmentations_keep_shape_dtype_and_band_order_and_are_reproducible_by_seed():
    x = torch.from_numpy(galaxies(6, 101, seed=2))
    t = torch.full((6, 3), 0.9)
    aug = S22Augment(AugmentConfig(crop=48))
    a = aug(x, t, torch.Generator().manual_seed(5))
    b = aug(x, t, torch.Generator().manual_seed(5))
    c = aug(x, t, torch.Generator().manual_seed(6))
    assert a.shape == (6, 3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert aug(x.half(), t, torch.Generator().manual_seed(5)).dtype == torch.float16
    # band order: the galaxies are brightest in z, then r, then g, and stay so
    sums = a.sum(dim=(2, 3))
    assert (sums[:, 2] > sums[:, 1]).all() and (sums[:, 1] > sums[:, 0]).all()
    # the object stays at the centre, within the jitter (a point source at the centre pixel)
    point = torch.zeros(4, 3, 101, 101)
    point[:, :, 50, 50] = 10.0
    views = S22Augment(AugmentConfig(crop=48, steps=["flip_rotate", "size_scale", "jitter_crop"]))(
        point, torch.ones(4, 3), torch.Generator().manual_seed(0))
    for v in views:
        peak = np.unravel_index(int(v[0].argmax()), (48, 48))
        assert max(abs(peak[0] - 24), abs(peak[1] - 24)) <= 7 + 1


def test_reddening_scales_each_band_by_its_own_extinction_coefficient():
    """De-reddened by the object's transmission, reddened by one new E(B-V) per image: the
    ratio in band b is 10^(-0.4 R_b E(B-V)) / t_b, with R = 3.214, 2.165, 1.211 for g, r, z."""
    x = torch.from_numpy(galaxies(5, 64, seed=3)) + 1.0
    t_old = torch.tensor([[0.8, 0.86, 0.92]]).repeat(5, 1)
    out = S22Augment(AugmentConfig(crop=64, steps=["reddening"]))(x, t_old, torch.Generator().manual_seed(1))
    ratio = (out / x).mean(dim=(2, 3)) * t_old  # 10^(-0.4 R_b ebv)
    ebv = -2.5 * torch.log10(ratio) / torch.tensor([3.214, 2.165, 1.211])
    assert torch.allclose(ebv, ebv[:, :1].expand(-1, 3), rtol=1e-4)  # one E(B-V) per image, bands in g, r, z order
    assert (ebv > 0).all() and (ebv < 1).all()


def test_gaussian_blur_keeps_flux_and_sigma_zero_keeps_the_image():
    x = torch.zeros(2, 3, 41, 41)
    x[:, :, 20, 20] = 1.0
    sigma = torch.tensor([0.0, 1.0, 2.0, 0.0, 0.5, 3.0])
    y = gaussian_blur(x, sigma)
    assert torch.allclose(y.sum(dim=(2, 3)), torch.ones(2, 3), atol=1e-5)
    assert torch.equal(y[0, 0], x[0, 0]) and torch.equal(y[1, 0], x[1, 0])
    # a Gaussian of sigma s has second moment s^2 along each axis
    yy = torch.arange(41.0) - 20
    var = (y[0, 2].sum(dim=1) * yy**2).sum()
    assert var.item() == pytest.approx(4.0, rel=0.02)


# ----------------------------------------------------------------------------- sample
def test_water_fill_draws_evenly_over_bins_and_gives_small_bins_everything():
    rng = np.random.default_rng(0)
    take = water_fill(np.array([1, 5, 100, 100, 30]), 100, rng)
    assert take.tolist() == [1, 5, 32, 32, 30]  # the 30-bin gives all it has; two bins share the rest
    take = water_fill(np.array([10, 10, 10]), 10, rng)
    assert sorted(take.tolist()) == [3, 3, 4]  # the odd one to a bin chosen at random
    assert water_fill(np.array([3, 4]), 100, rng).tolist() == [3, 4]


def test_pretrain_config_merges_preset_and_overrides():
    cfg = PretrainConfig.resolve({"preset": "resnet50", "augment": {"crop": 64}, "epochs": 3})
    assert cfg.encoder["params"] == {"depth": 50} and cfg.augment == {"crop": 64, "jitter": 7} and cfg.epochs == 3
    spec = cfg.encoder_spec()
    assert spec.input["crop"] == 64 and spec.build().dim == 2048
    with pytest.raises(LensfinderError, match="unknown"):
        PretrainConfig.resolve({"epoch": 3})
    with pytest.raises(LensfinderError, match="preset"):
        PretrainConfig.resolve({"preset": "vit"})


# ----------------------------------------------------------------------------- Faiss
def write_representations(root, vectors, sweeps=2):
    """Representation files as the embed rule writes them, the rows split over ``sweeps``."""
    root.mkdir(parents=True, exist_ok=True)
    pairs = []
    for s, part in enumerate(np.array_split(np.arange(len(vectors)), sweeps)):
        npy, idx = root / f"sweep-{s}.npy", root / f"sweep-{s}.parquet"
        np.save(npy, vectors[part].astype(np.float16))
        pd.DataFrame({"RELEASE": 10000, "BRICKID": 7 + s, "OBJID": np.arange(len(part)), "RA": 150 + part * 1e-4,
                      "DEC": 2.0 + part * 1e-5, "TYPE": "SER", "REGION": "DECaLS", "MAG_Z": 19.0}).to_parquet(idx)
        pairs.append((npy, idx))
    return pairs


def clustered_vectors(n, dim, clusters=50, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))).astype(np.float32)


def test_neighbours_of_an_object_include_itself_first_with_exact_cosine(tmp_path):
    vectors = clustered_vectors(3000, 24)
    pairs = write_representations(tmp_path / "reps", vectors)
    info = build_index(pairs, IndexConfig(kind="exact"), tmp_path / "index")
    assert info["size"] == 3000 and info["recall"]["recall"] == 1.0
    index = SimilarityIndex(tmp_path / "index")
    unit = vectors.astype(np.float16).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    for row in (0, 1499, 1500, 2999):
        nb = index.neighbours(row, 20)
        key = tuple(index.keys.iloc[row][list(KEY)])
        assert tuple(nb.iloc[0][list(KEY)]) == key and nb.SIMILARITY.iloc[0] == pytest.approx(1.0, abs=1e-5)
        assert (np.diff(nb.SIMILARITY.to_numpy()) <= 1e-7).all() and list(nb.RANK) == list(range(20))
        truth = np.argsort(-(unit @ unit[row]), kind="stable")[:20]
        found = index.rows_of(nb[list(KEY)].to_numpy())
        assert set(found) == set(truth)
        assert np.allclose(nb.SIMILARITY, unit[found] @ unit[row], atol=1e-5)


def test_compressed_index_recall_at_100_against_exact_search(tmp_path):
    vectors = clustered_vectors(20000, 32, seed=1)
    pairs = write_representations(tmp_path / "reps", vectors, sweeps=3)
    good = build_index(pairs, IndexConfig(kind="compressed", factory="HNSW32", search={"efSearch": 256},
                                          recall_queries=200), tmp_path / "hnsw")
    poor = build_index(pairs, IndexConfig(kind="compressed", factory="PCA8,PQ4", search={}, recall_queries=200,
                                          train_size=5000), tmp_path / "pq")
    assert good["recall"]["k"] == 100 and good["recall"]["queries"] == 200
    assert good["recall"]["recall"] >= 0.9 > poor["recall"]["recall"] > 0.0
    assert poor["bytes_per_vector"] < good["bytes_per_vector"]
    # the recorded recall is what an independent brute-force count gives
    import faiss

    unit = vectors.astype(np.float16).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    rows = np.sort(np.random.default_rng(0).choice(20000, 200, replace=False))
    exact = np.argsort(-(unit[rows] @ unit.T), axis=1)[:, :100]
    index = faiss.read_index(str(tmp_path / "hnsw/index.faiss"))
    faiss.ParameterSpace().set_index_parameter(index, "efSearch", 256)
    _, approx = index.search(unit[rows], 100)
    assert recall_at_k(approx, exact, 100) == pytest.approx(good["recall"]["recall"], abs=1e-9)
    # searches through the compressed index re-score exactly: the query itself comes first
    nb = SimilarityIndex(tmp_path / "pq").neighbours(123, 10)
    assert nb.SIMILARITY.iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert tuple(nb.iloc[0][list(KEY)]) == tuple(SimilarityIndex(tmp_path / "pq").keys.iloc[123][list(KEY)])


def test_exact_search_streams_blocks_like_one_matrix_product():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(1000, 8)).astype(np.float32)
    q = data[:5]
    sims, ids = exact_search(q, [data[:300], data[300:301], data[301:]], 7)
    full = q @ data.T
    assert np.array_equal(ids, np.argsort(-full, axis=1, kind="stable")[:, :7])
    assert np.allclose(sims, np.take_along_axis(full, ids, axis=1))


# ----------------------------------------------------------------------------- pretraining
TINY_PRETRAIN = {"preset": "cpu_small", "encoder": {"params": {"channels": [8, 16, 16, 32], "stem_width": 8}},
                 "augment": {"crop": 32, "jitter": 4}, "moco": {"dim": 16, "queue": 64}, "epochs": 3,
                 "batch_size": 16, "lr": 0.05, "sample_size": 48, "mag_bin_width": 0.5, "seed": 2, "num_threads": 1}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n=64, size=64)


def pretrain_cmd(shards, out, nproc=1, **settings):
    manifest, objects = shards
    args = ["--manifests", str(manifest), "--objects", str(objects), "--settings",
            json.dumps({**TINY_PRETRAIN, **settings}), "--out", str(out)]
    if nproc == 1:
        return [sys.executable, "-m", "lensfinder.embed.launch", "--nproc", "1", *args]
    return [sys.executable, "-m", "lensfinder.embed.launch", "--nproc", str(nproc), *args]


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pretrained(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoder")
    run(pretrain_cmd(shards, out))
    return out


def test_pretraining_writes_an_encoder_that_carries_its_settings(shards, pretrained):
    tmp_path = pretrained.parent
    (tmp_path / "enc").symlink_to(pretrained)
    encoder, ck = load_encoder(tmp_path / "enc/encoder.pt")
    assert ck["augment"]["crop"] == 32 and ck["augment"]["steps"] == list(S22_ORDER)
    assert ck["input"]["crop"] == 32 and ck["input"].get("scale") is None  # the models' default stretch
    assert ck["moco"]["queue"] == 64 and ck["pretrain"]["preset"] == "cpu_small" and ck["dim"] == 32
    assert ck["cutout_shape"] == [3, 64, 64] and ck["bands"] == ["g", "r", "z"] and ck["units"] == "nanomaggy"
    assert ck["sample"]["objects"] == 48 and ck["sample"]["population"] == 64 and len(ck["sample"]["sha256"]) == 64
    sample = pd.read_parquet(tmp_path / "enc/sample.parquet")
    assert len(sample) == 48 and not sample.duplicated(list(KEY)).any()
    # uniform in MAG_Z: every 0.5-mag bin gives the same number (within one), or all it has
    population = pd.read_parquet(shards[1]).MAG_Z.floordiv(0.5).mul(0.5).value_counts()
    counts = sample.MAG_BIN.value_counts().reindex(population.index, fill_value=0)
    full = counts < population
    assert full.any() and counts[full].max() - counts[full].min() <= 1
    assert (counts[~full] <= counts[full].max()).all()
    metrics = pd.read_csv(tmp_path / "enc/metrics.csv")
    assert list(metrics.epoch) == [0, 1, 2] and np.isfinite(metrics.loss).all()
    for name in ("curves.png", "sample.png"):
        assert (tmp_path / "enc" / name).stat().st_size > 1000
    assert not (tmp_path / "enc/resume.pt").exists()
    # the encoder sees the centre crop of a full cutout: what an augmentation-free view gives
    x = torch.from_numpy(galaxies(3, 64, seed=9))
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder(x[..., 16:48, 16:48]), atol=1e-6)


def test_preempted_pretraining_resumes_to_the_same_encoder(shards, tmp_path):
    settings = {"epochs": 6}
    run(pretrain_cmd(shards, tmp_path / "straight", **settings))
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(pretrain_cmd(shards, out, **settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    while not (out / "resume.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
    assert "run again to resume" in err and not (out / "encoder.pt").exists()
    resumed = run(pretrain_cmd(shards, out, **settings))
    assert "resumed from" in resumed.stderr
    a = torch.load(tmp_path / "straight/encoder.pt", weights_only=False)
    b = torch.load(out / "encoder.pt", weights_only=False)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert pd.read_csv(out / "metrics.csv")[["loss", "top1"]].equals(
        pd.read_csv(tmp_path / "straight/metrics.csv")[["loss", "top1"]])


def test_two_gloo_ranks_pretrain_one_encoder(shards, tmp_path):
    proc = run(pretrain_cmd(shards, tmp_path / "ddp", nproc=2))
    assert "launching:" in proc.stdout
    _, ck = load_encoder(tmp_path / "ddp/encoder.pt")
    assert ck["ranks"] == 2 and len(ck["history"]) == 3


# ----------------------------------------------------------------------------- representations, search, probe
@pytest.fixture(scope="module")
def embedded(shards, pretrained, tmp_path_factory):
    """The synthetic sweep embedded, indexed exactly."""
    from lensfinder.embed.represent import embed_sweep

    out = tmp_path_factory.mktemp("embedded")
    info = embed_sweep(shards[0], pretrained / "encoder.pt", out / "sweep.npy", out / "sweep.parquet", batch_size=20,
                       progress=False)
    build_index([(out / "sweep.npy", out / "sweep.parquet")], IndexConfig(kind="exact"), out / "index")
    return out, info


def test_a_batch_of_sweeps_embeds_as_each_alone_with_an_empty_one_among_them(shards, pretrained, embedded,
                                                                             tmp_path):
    """infer.sweeps_per_job for the representations: one encoder load, one file, each sweep's
    rows as embedding it alone, SWEEP on every row; an empty sweep adds nothing."""
    from lensfinder.cutouts.shards import ShardWriter
    from lensfinder.embed.represent import embed_sweeps

    out, _ = embedded
    ShardWriter(tmp_path / "empty", 64, "dr10").close(0)
    info = embed_sweeps([shards[0], tmp_path / "empty/manifest.json", shards[0]], ["a", "b", "c"],
                        pretrained / "encoder.pt", tmp_path / "batch.npy", tmp_path / "batch.parquet", batch_size=20,
                        progress=False)
    alone_v, alone_i = np.load(out / "sweep.npy"), pd.read_parquet(out / "sweep.parquet")
    v, index = np.load(tmp_path / "batch.npy"), pd.read_parquet(tmp_path / "batch.parquet")
    assert info["rows"] == len(v) == len(index) == 2 * len(alone_v)
    assert index.SWEEP.tolist() == ["a"] * len(alone_v) + ["c"] * len(alone_v)
    assert np.array_equal(v[: len(alone_v)], alone_v) and np.array_equal(v[len(alone_v) :], alone_v)
    assert index[index.SWEEP == "a"].drop(columns="SWEEP").reset_index(drop=True).equals(
        alone_i.drop(columns="SWEEP"))


def test_representations_are_the_encoders_fp16_output_keyed_in_shard_order(shards, pretrained, embedded):
    from lensfinder.cutouts.shards import ShardSet

    out, info = embedded
    vectors, index = np.load(out / "sweep.npy"), pd.read_parquet(out / "sweep.parquet")
    shard_set = ShardSet(shards[0])
    assert info == {"rows": 64, "dim": 32} and vectors.dtype == np.float16 and vectors.shape == (64, 32)
    assert index[list(KEY)].equals(shard_set.index[list(KEY)].reset_index(drop=True))
    encoder, _ = load_encoder(pretrained / "encoder.pt")
    with torch.no_grad():
        direct = encoder(torch.from_numpy(np.stack([shard_set[i] for i in range(64)])).float()).numpy()
    assert np.allclose(vectors, direct, rtol=2e-3, atol=2e-3)
    import pyarrow.parquet as pq

    meta = pq.read_schema(out / "sweep.parquet").metadata
    assert len(meta[b"lensfinder.encoder_sha256"]) == 64


def similar_cmd(*args):
    return [str(Path(sys.executable).parent / "lensfinder-similar"), *map(str, args)]


def test_lensfinder_similar_finds_a_query_by_key_position_or_name_and_writes_neighbours(embedded, tmp_path):
    out, _ = embedded
    keys = pd.read_parquet(out / "index/keys.parquet")
    row = keys.iloc[10]
    key = f"{row.RELEASE}/{row.BRICKID}/{row.OBJID}"
    by_key = run(similar_cmd("--index", out / "index", "--query", key, "--k", 5, "--out", tmp_path / "k.csv"))
    assert "5 objects most similar to" in by_key.stdout and key.split("/")[2] in by_key.stdout
    table = pd.read_csv(tmp_path / "k.csv")
    assert len(table) == 5 and tuple(table.iloc[0][list(KEY)]) == tuple(row[list(KEY)])
    assert table.SIMILARITY.iloc[0] == pytest.approx(1.0, abs=1e-5) and table.SIMILARITY.is_monotonic_decreasing
    from lensfinder.survey.positions import desi_names

    for query in (f"{row.RA:.6f},{row.DEC:.6f}", desi_names([row.RA], [row.DEC])[0]):
        run(similar_cmd("--index", out / "index", "--query", query, "--k", 5, "--out", tmp_path / "q.csv", "--quiet"))
        assert pd.read_csv(tmp_path / "q.csv")[list(KEY)].equals(table[list(KEY)])
    bad = subprocess.run(similar_cmd("--index", out / "index", "--query", "10000/1/9999"), capture_output=True, text=True)
    assert bad.returncode == 1 and "10000/1/9999 is not in the index" in bad.stderr
    far = subprocess.run(similar_cmd("--index", out / "index", "--query", "10.0,-5.0"), capture_output=True, text=True)
    assert far.returncode == 1 and "no indexed object within 1.5 arcsec" in far.stderr


def test_a_query_list_gives_candidates_in_the_recommendations_format_without_known_systems(embedded, tmp_path):
    from lensfinder.embed.similar import candidates_table, match_queries

    out, _ = embedded
    index = SimilarityIndex(out / "index")
    keys = index.keys
    queries = pd.DataFrame({"name": ["q0", "q1", "q2"], "ra": keys.RA.iloc[[0, 20, 40]], "dec": keys.DEC.iloc[[0, 20, 40]]})
    matched = match_queries(index, queries, 1.5)
    assert list(matched.ROW) == [0, 20, 40]
    known = keys.iloc[[int(index.neighbours(0, 3).pipe(lambda f: index.rows_of(f[list(KEY)].to_numpy())[1]))]]
    systems = pd.DataFrame({"name": ["known-1"], "ra": known.RA.to_numpy(), "dec": known.DEC.to_numpy()})
    recs, removed, summary = candidates_table(index, matched, 8, systems, 1.0, 0.0)
    cols = ["RANK", "NAME", "RELEASE", "BRICKID", "OBJID", "RA", "DEC", "TYPE", "REGION", "MAG_G", "MAG_R", "MAG_Z",
            "SCORE_SIMILARITY", "QUERY_NAME", "N_QUERIES", "MERGED", "SWEEP"]
    assert list(recs.columns) == cols and list(recs.RANK) == list(range(1, len(recs) + 1))
    assert recs.SCORE_SIMILARITY.is_monotonic_decreasing
    rows = index.rows_of(recs[list(KEY)].to_numpy())
    assert not set(rows) & {0, 20, 40}  # the queries are no candidates
    assert list(removed.KNOWN_NAME) == ["known-1"] and not set(rows) & set(index.rows_of(known[list(KEY)].to_numpy()))
    assert summary["candidates"] == len(recs) and summary["known_systems_removed"] == 1
    # each candidate's score is its best cosine similarity to a query, named in QUERY_NAME
    vec = index.reps.take(rows)
    q = index.reps.take([0, 20, 40])
    best = (vec @ q.T).max(axis=1)
    assert np.allclose(recs.SCORE_SIMILARITY, best, atol=1e-5)
    assert list(recs.QUERY_NAME) == [["q0", "q1", "q2"][i] for i in (vec @ q.T).argmax(axis=1)]
    # the portal reads it as a candidates table
    from lensfinder.embed.similar import write_candidates
    from lensfinder.portal.candidates import load_candidates

    write_candidates(tmp_path, recs, removed, summary)
    frame, kind = load_candidates(tmp_path / "candidates.fits")
    assert len(frame) == len(recs) and "SCORE_SIMILARITY" in frame.columns


def test_linear_probe_fits_on_frozen_representations_and_writes_the_networks_formats(pretrained, embedded, tmp_path):
    from conftest import make_trainset

    from lensfinder.embed.probe import ProbeConfig, run_probe

    out, _ = embedded
    trainset = make_trainset(tmp_path / "trainset", n=160, size=64)
    info = run_probe(trainset, pretrained / "encoder.pt", [(out / "sweep.npy", out / "sweep.parquet")],
                     [tmp_path / "scores.parquet"], ProbeConfig(cv=3), tmp_path / "probe")
    assert info["n_train"] + info["n_val"] == 160 and info["C"] in ProbeConfig().Cs
    assert info["validation"]["auc"] > 0.8  # the lenses' ring is in the representations
    ts = pd.read_parquet(tmp_path / "probe/trainset_scores.parquet")
    assert list(ts.columns) == ["RELEASE", "BRICKID", "OBJID", "LABEL", "SPLIT", "ROW", "logit", "prob"]
    assert ts.logit.dtype == np.float32 and np.allclose(ts.prob, 1 / (1 + np.exp(-ts.logit.astype(float))))
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    # the networks' columns, and the SWEEP of each row (the representations' batch carries it)
    assert list(scores.columns) == ["RELEASE", "BRICKID", "OBJID", "RA", "DEC", "logit", "prob", "SWEEP"]
    assert len(scores) == 64 and set(scores.SWEEP) == set(pd.read_parquet(out / "sweep.parquet").SWEEP)
    assert scores[list(KEY)].equals(pd.read_parquet(out / "sweep.parquet")[list(KEY)])
    # the probe's score of an object is the same from the sweep and from a direct call
    from lensfinder.embed.probe import load_probe, probe_logit
    from lensfinder.files import sha256

    probe = load_probe(tmp_path / "probe/probe.npz")
    assert np.allclose(scores.logit, probe_logit(probe["model"], np.load(out / "sweep.npy").astype(np.float32)))
    assert probe["encoder_sha256"] == sha256(pretrained / "encoder.pt") and probe["C"] == info["C"]
    # the stored arrays give exactly the scikit-learn pipeline's decision function
    from lensfinder.embed.probe import LinearProbe, fit_probe

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(80, 5)), np.repeat([0, 1], 40)
    x[y == 1] += 0.7
    pipe, _ = fit_probe(x, y, ProbeConfig(C=0.5))
    assert np.allclose(LinearProbe.from_pipeline(pipe).decision_function(x), pipe.decision_function(x), atol=1e-10)


# ----------------------------------------------------------------------------- the rules
@pytest.mark.workflow
def test_rules_pretrain_embed_index_and_probe_on_the_tiny_workflow(tiny_run):
    """The tiny run of the whole workflow (the session's shared run) includes the S22 rules."""
    from lensfinder.cutouts.shards import ShardSet
    from lensfinder.portal.candidates import load_candidates

    work, dry, _ = tiny_run
    stats = dry.stdout.split("Job stats:")[1]
    counts = {p[0]: int(p[1]) for p in (line.split() for line in stats.splitlines()) if len(p) == 2 and p[1].isdigit()}
    assert {r: counts.get(r) for r in ("pretrain", "embed", "similarity_index", "similar_candidates", "probe",
                                        "embed_summary")} == {"pretrain": 1, "embed": 2, "similarity_index": 1,
                                                              "similar_candidates": 1, "probe": 1, "embed_summary": 1}
    res = work / "results/mock"
    _, ck = load_encoder(res / "embed/encoder/encoder.pt")
    assert ck["pretrain"]["preset"] == "cpu_small" and ck["augment"]["steps"] == list(S22_ORDER) and ck["dim"] == 128
    total = 0
    for sweep in ("sweep-145p000-150p005", "sweep-150p000-155p005"):
        shards = ShardSet(res / f"cutouts/{sweep}/manifest.json")
        vectors = np.load(res / f"embed/representations/{sweep}.npy")
        keys = pd.read_parquet(res / f"embed/representations/{sweep}.parquet")
        assert vectors.dtype == np.float16 and vectors.shape == (len(shards), 128)
        assert keys[list(KEY)].equals(shards.index[list(KEY)].reset_index(drop=True))
        total += len(shards)
    info = json.loads((res / "embed/index/index.json").read_text())
    assert info["kind"] == "exact" and info["size"] == total and info["recall"]["recall"] == 1.0
    # candidates: catalogued lenses as queries, none of them (nor any known system) among the candidates
    recs, kind = load_candidates(res / "embed/candidates.parquet")
    summary = json.loads((res / "embed/candidates_summary.json").read_text())
    assert summary["queries"] > 0 and summary["candidates"] == len(recs) > 0
    assert "SCORE_SIMILARITY" in recs.columns and recs.SCORE_SIMILARITY.is_monotonic_decreasing
    from lensfinder.catalog.crossmatch import nearest

    known = pd.read_csv(work / "resources/mock_survey/catalogues/known_lenses.csv")
    idx, _ = nearest(recs.RA.to_numpy(), recs.DEC.to_numpy(), known.ra.to_numpy(), known.dec.to_numpy(), 3.0)
    assert (idx < 0).all()
    # the probe: the networks' score formats, every object scored
    labels = pd.read_parquet(res / "trainset/labels.parquet")
    assert len(pd.read_parquet(res / "embed/probe/trainset_scores.parquet")) == len(labels)
    assert sum(len(pd.read_parquet(res / f"embed/probe/scores/{s}.parquet"))
               for s in ("sweep-145p000-150p005", "sweep-150p000-155p005")) == total
    # the summary: enrichment for every k with Wilson intervals; the probe beside the networks
    result = json.loads((res / "embed/summary.json").read_text())
    enrich = pd.read_csv(res / "embed/enrichment.csv")
    assert list(enrich.k) == [1, 5, 10, 20, 50, 100]
    assert ((enrich.fraction_lo <= enrich.fraction) & (enrich.fraction <= enrich.fraction_hi)).all()
    assert np.allclose(enrich.enrichment, enrich.fraction / enrich.base_rate)
    compare = pd.read_csv(res / "embed/probe_vs_networks.csv")
    networks = json.loads((res / "evaluation/metrics.json").read_text())
    assert list(compare.scorer) == [n for n in networks if not n.startswith("_")] + ["probe (S22)"]
    assert compare.n_lenses.nunique() == 1  # the same never-seen objects for every scorer
    assert 0 <= result["probe_never_seen"]["auc"] <= 1
    for name in ("enrichment.png", "probe.png", "neighbours.png", "encoder/curves.png", "encoder/sample.png"):
        assert (res / "embed" / name).stat().st_size > 1000, name
    # lensfinder-similar from the workflow's directory: a catalogued lens by name, the run's index by default
    keys = pd.read_parquet(res / "embed/index/keys.parquet")
    on_sky, _ = nearest(known.ra.to_numpy(), known.dec.to_numpy(), keys.RA.to_numpy(), keys.DEC.to_numpy(), 1.5)
    name = known.name[on_sky >= 0].iloc[0]
    proc = subprocess.run(similar_cmd("--query", name, "--k", 5), cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "5 objects most similar to" in proc.stdout and "1.000000" in proc.stdout


@pytest.mark.workflow
def test_the_probe_joins_the_meta_learner_as_one_more_base_model(tiny_run, tmp_path):
    """embed.probe.in_ensemble: the probe becomes a base model of the meta-learner; ranking,
    evaluation and the selection function (the probe scores the injections) follow, and
    nothing is retrained."""
    import yaml

    reference, _, _ = tiny_run
    work = tmp_path / "wf"
    shutil.copytree(reference, work, copy_function=shutil.copy2, symlinks=True)  # outputs and Snakemake's records
    cfg = yaml.safe_load((work / "config/config.yaml").read_text())
    cfg["embed"]["probe"]["in_ensemble"] = True
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run = run_snakemake(work)
    ran = set(re.findall(r"^(?:local)?rule (\w+):", run.stdout, flags=re.M))
    assert {"probe_injections", "ensemble", "rank", "evaluate", "selection_function"} <= ran
    assert not ran & {"train", "infer", "pretrain", "embed", "probe", "inject", "infer_injections"}, ran
    res = work / "results/mock"
    meta = json.loads((res / "ensemble/meta.json").read_text())
    assert meta["inputs"] == ["resnet", "shielded", "probe"] and meta["checkpoints"]["probe"]["path"].endswith("probe.npz")
    evaluation = pd.read_csv(res / "ensemble/evaluation.csv")
    assert list(evaluation.scorer) == ["resnet", "shielded", "probe", "mean", "meta-learner"]
    metrics = json.loads((res / "evaluation/metrics.json").read_text())
    assert {"resnet", "shielded", "probe", "mean", "meta-learner"} <= set(metrics)
    recs = pd.read_parquet(res / "recommendations/recommendations.parquet")
    assert {"SCORE_PROBE", "SCORE_RESNET", "LOGIT_ENSEMBLE"} <= set(recs.columns) and np.isfinite(recs.SCORE_PROBE).all()
    injections = pd.read_parquet(res / "injections/scores/probe.parquet")
    n_injected = json.loads((res / "selection_function/summary.json").read_text())
    assert n_injected["models"] == ["resnet", "shielded", "probe"]
    assert len(injections) == n_injected["n_injected"] and np.isfinite(injections.logit).all()
