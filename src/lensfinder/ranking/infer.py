"""Sharded inference: one model over one sweep's cutout shards -> one Parquet of scores
(rules ``infer``, ``infer_injections`` and, on the sealed survey, ``sealed_infer`` and
``sealed_infer_injections``).

The fp16 shards are memory-mapped and streamed in large batches; the conversion to fp32
happens on the device, with bf16 autocast on GPUs. The model applies the input transform
saved in its checkpoint, so inference sees what training saw. Optionally the 8 flips and
rotations of the square are averaged (test-time augmentation, on logits).

The stored logit is float32 from a float32 head: under bf16 autocast the backbone runs in
bf16, but the final linear layer runs in float32, so logits are never rounded to bf16's 8
bits of mantissa (which would make ties of the top scores). Rankings use the logit; the
probability is its sigmoid, in float64, for people to read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from scipy.special import expit

from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet, check_one_set_per_sweep
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.nets.checkpoint import load_checkpoint
from lensfinder.nets.scoring import check_compatible, score_batches
from lensfinder.tables import write_batch_table

log = logging.getLogger(__name__)


def infer_sweep(manifest_path, checkpoint_path, out_path, batch_size=1024, tta=False, device=None, progress=True):
    """Score every cutout of one sweep's shard set; write keys, RA/Dec, logit, prob to Parquet."""
    return infer_sweeps([manifest_path], [Path(manifest_path).parent.name], checkpoint_path, out_path, batch_size,
                        tta, device, progress)


def infer_sweeps(manifest_paths, sweeps, checkpoint_path, out_path, batch_size=1024, tta=False, device=None,
                 progress=True):
    """Score every cutout of several sweeps' shard sets with one model load; write one
    Parquet table: RELEASE, BRICKID, OBJID, RA, DEC, logit (float32), prob (its sigmoid)
    and SWEEP, sweep by sweep in shard order."""
    check_one_set_per_sweep(manifest_paths, sweeps)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ck = load_checkpoint(checkpoint_path, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    tables, nan_total = [], 0
    for manifest_path in manifest_paths:
        table, nan = _score_shard_set(model, ck, device, manifest_path, checkpoint_path, batch_size, tta, progress)
        tables.append(table)
        nan_total += nan
    meta = {b"lensfinder.checkpoint": str(checkpoint_path).encode(), b"lensfinder.tta": str(tta).encode(),
            b"lensfinder.trainset_fingerprint": str(ck.get("trainset_fingerprint")).encode()}
    return {"rows": write_batch_table(tables, sweeps, meta, out_path), "nan": nan_total}


def _score_shard_set(model, ck, device, manifest_path, checkpoint_path, batch_size, tta, progress):
    """(keys, RA/Dec, logit, prob) of one shard set as an Arrow table, and its NaN count."""
    import pyarrow as pa
    from tqdm import tqdm

    try:
        shards = ShardSet(manifest_path)
    except LensfinderError as err:
        raise LensfinderError(f"{err} (needed to score it with {checkpoint_path})") from err
    check_compatible(checkpoint_path, ck, manifest_path, shards.manifest)
    logits, probs = [], []
    total = (len(shards) + batch_size - 1) // batch_size
    images_only = (images for images, _ in shards.batches(batch_size))
    for lg, p in tqdm(score_batches(model, images_only, device, tta), total=total,
                      desc=f"infer {Path(manifest_path).parent.name}", disable=not progress, mininterval=10):
        logits.append(lg)
        probs.append(p)
    index = shards.index
    logit = np.concatenate(logits) if logits else np.zeros(0, np.float32)
    prob = np.concatenate(probs) if probs else np.zeros(0)
    if len(prob) != len(index):
        raise LensfinderError(f"internal: {len(prob)} scores for {len(index)} cutouts of {manifest_path}")
    nan = ~np.isfinite(logit)
    if nan.any():
        log.warning("%d NaN score(s) in %s, e.g. %s", nan.sum(), manifest_path, index.loc[nan, list(KEY)].head(3).values.tolist())
    table = pa.table({**{k: index[k].astype(np.int64).to_numpy() for k in KEY},
                      "RA": index["RA"].to_numpy(), "DEC": index["DEC"].to_numpy(), "logit": logit, "prob": prob})
    return table, int(nan.sum())


def score_trainset(trainset_dir, checkpoint_path, out_path, batch_size=1024, tta=False, device=None):
    """Scores of one model on the whole training set (both splits), for the meta-learner."""
    import pandas as pd

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ck = load_checkpoint(checkpoint_path, device)
    d = Path(trainset_dir)
    labels = pd.read_parquet(d / "labels.parquet")
    images = np.load(d / "cutouts.npy", mmap_mode="r")
    batches = (torch.from_numpy(np.array(images[i : i + batch_size])) for i in range(0, len(images), batch_size))
    scored = list(score_batches(model, batches, device, tta))
    logits = np.concatenate([lg for lg, _ in scored]) if scored else np.zeros(0, np.float32)
    out = labels[[*KEY, "LABEL", "SPLIT", "ROW"]].copy()
    out["logit"] = logits[labels["ROW"].to_numpy()]
    out["prob"] = expit(out["logit"].to_numpy(np.float64))
    with atomic_path(out_path) as tmp:
        out.to_parquet(tmp, index=False)
    return out
