"""Representations: a pretrained encoder over cutouts -> fp16 vectors keyed by object.

Rule ``embed`` (one job per sweep): the sweep's shards are memory-mapped and streamed in
batches (``ShardSet.batches``), each image's centre ``crop`` encoded (the encoder's input
transform does the crop and the asinh stretch, as in pretraining, with no augmentation),
and written as

* ``<sweep>.npy``: float16 (N, D), row i the representation of the index's row i;
* ``<sweep>.parquet``: RELEASE, BRICKID, OBJID, RA, DEC, TYPE, REGION, MAG_Z, in the shards'
  order, with the encoder's SHA-256 in the file's metadata.

fp16 keeps 11 significant bits, ample for cosine similarities, and halves the disk and
memory of the index stage (2048-d: 4 kB per object, 180 GB for DR10). On GPUs the encoder
runs under bf16 autocast (7 significant bits; its output is exactly representable in fp16).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet, check_one_set_per_sweep
from lensfinder.embed.index import read_representations  # noqa: F401 - re-exported: the files this module writes
from lensfinder.embed.pretrain import load_encoder
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path, sha256
from lensfinder.tables import write_batch_table

log = logging.getLogger(__name__)


INDEX_COLUMNS = (*KEY, "RA", "DEC", "TYPE", "REGION", "MAG_Z")


def check_compatible(encoder_path, ck, manifest_path, manifest):
    """The shards must hold what the encoder was pretrained on: bands, units, cutouts at least
    as large as its crop."""
    problems = []
    if ck.get("bands") != manifest["bands"]:
        problems.append(f"bands {ck.get('bands')} (encoder) vs {manifest['bands']} (shards)")
    if ck.get("units") != manifest["units"]:
        problems.append(f"units {ck.get('units')} vs {manifest['units']}")
    crop = ck["input"].get("crop")
    if crop and min(manifest["shape"][1:]) < crop:
        problems.append(f"cutouts of {manifest['shape'][1:]} px are smaller than the encoder's {crop}-px crop")
    if problems:
        raise LensfinderError(f"encoder {encoder_path} does not match shards {manifest_path}: {'; '.join(problems)}; "
                              "re-run the cutouts or the pretraining")


@torch.no_grad()
def encode_batches(encoder, batches, device, bf16=True):
    """Yield float16 (B, D) numpy representations per batch of fp16 nanomaggy cutouts."""
    cuda = device.type == "cuda"
    for images in batches:
        x = images.to(device, non_blocking=True).float()
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bf16):
            z = encoder(x)
        yield z.float().cpu().numpy().astype(np.float16)


def _device(device):
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def embed_sweep(manifest_path, encoder_path, out_npy, out_index, batch_size=512, device=None, threads=None,
                progress=True) -> dict:
    """Representations of every cutout of one sweep's shard set (see the module docstring)."""
    return embed_sweeps([manifest_path], [Path(manifest_path).parent.name], encoder_path, out_npy, out_index,
                        batch_size, device, threads, progress)


def embed_sweeps(manifest_paths, sweeps, encoder_path, out_npy, out_index, batch_size=512, device=None, threads=None,
                 progress=True) -> dict:
    """Representations of every cutout of several sweeps' shard sets with one encoder load
    (a batch of ``infer.sweeps_per_job`` sweeps): one .npy and one index (with SWEEP), sweep
    by sweep in shard order."""
    check_one_set_per_sweep(manifest_paths, sweeps)
    if threads:
        torch.set_num_threads(threads)
    device = _device(device)
    encoder, ck = load_encoder(encoder_path, device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    # the batch's vectors go straight into a memory-mapped .npy (a batch of 50 DR10 sweeps
    # holds ~1.5M x 2048 values): sized from the shard sets' row counts
    rows = [len(ShardSet(m)) for m in manifest_paths]
    tables, start = [], 0
    with atomic_path(out_npy) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(sum(rows), ck["dim"]))
        for manifest_path, n in zip(manifest_paths, rows):
            reps, table = _embed_shard_set(encoder, ck, device, manifest_path, encoder_path, batch_size, progress)
            out[start : start + n] = reps
            start += n
            tables.append(table)
        out.flush()
        del out
    meta = {b"lensfinder.encoder": str(encoder_path).encode(), b"lensfinder.encoder_sha256": sha256(encoder_path).encode(),
            b"lensfinder.dim": str(ck["dim"]).encode()}
    write_batch_table(tables, sweeps, meta, out_index)
    return {"rows": int(sum(rows)), "dim": int(ck["dim"])}


def _embed_shard_set(encoder, ck, device, manifest_path, encoder_path, batch_size, progress):
    """(fp16 representations, index table) of one shard set."""
    import pyarrow as pa
    from tqdm import tqdm

    try:
        shards = ShardSet(manifest_path)
    except LensfinderError as err:
        raise LensfinderError(f"{err} (needed to embed it with {encoder_path})") from err
    check_compatible(encoder_path, ck, manifest_path, shards.manifest)
    total = (len(shards) + batch_size - 1) // batch_size
    images = (batch for batch, _ in shards.batches(batch_size))
    parts = list(tqdm(encode_batches(encoder, images, device), total=total,
                      desc=f"embed {Path(manifest_path).parent.name}", disable=not progress, mininterval=10))
    reps = np.concatenate(parts) if parts else np.zeros((0, ck["dim"]), np.float16)
    index = shards.index
    if len(reps) != len(index):
        raise LensfinderError(f"internal: {len(reps)} representations for {len(index)} cutouts of {manifest_path}")
    bad = ~np.isfinite(reps).all(axis=1)
    if bad.any():
        raise LensfinderError(f"{int(bad.sum())} non-finite representation(s) in {manifest_path}, e.g. "
                              f"{index.loc[bad, list(KEY)].head(2).values.tolist()}: check the encoder {encoder_path}")
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise LensfinderError(f"shard index of {manifest_path} lacks {missing}: re-run its cutouts job")
    return reps, pa.Table.from_pandas(index[list(INDEX_COLUMNS)].reset_index(drop=True), preserve_index=False)


def embed_array(images, encoder_path, batch_size=512, device=None) -> np.ndarray:
    """fp16 representations (N, D) of an array of cutouts (N, 3, H, W) in nanomaggies (e.g. a
    training set's ``cutouts.npy``, memory-mapped)."""
    device = _device(device)
    encoder, ck = load_encoder(encoder_path, device)
    batches = (torch.from_numpy(np.array(images[i : i + batch_size])) for i in range(0, len(images), batch_size))
    parts = list(encode_batches(encoder, batches, device))
    return np.concatenate(parts) if parts else np.zeros((0, ck["dim"]), np.float16)
