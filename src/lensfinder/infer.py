"""Sharded inference: one model over one sweep's cutout shards -> one Parquet of scores.

The fp16 shards are memory-mapped and streamed in large batches; the conversion to fp32
happens on the device, with bf16 autocast on GPUs. The model applies the input transform
saved in its checkpoint, so inference sees what training saw. Optionally the 8 flips and
rotations of the square are averaged (test-time augmentation).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .errors import LensfinderError, atomic_path
from .shards import KEY, ShardSet
from .train import load_checkpoint

log = logging.getLogger(__name__)


def d4(x):
    """The 8 images of the dihedral group of the square (rotations, then mirrored)."""
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rots + [torch.flip(r, dims=(-1,)) for r in rots]


def check_compatible(checkpoint_path, ck, manifest_path, manifest):
    """A checkpoint and shards must agree on bands, units and cutout shape."""
    problems = []
    if list(ck.get("cutout_shape", [])) != list(manifest["shape"]):
        problems.append(f"cutout shape {ck.get('cutout_shape')} (model) vs {manifest['shape']} (shards)")
    if ck.get("bands") != manifest["bands"]:
        problems.append(f"bands {ck.get('bands')} vs {manifest['bands']}")
    if ck.get("units") != manifest["units"]:
        problems.append(f"units {ck.get('units')} vs {manifest['units']}")
    if problems:
        raise LensfinderError(
            f"checkpoint {checkpoint_path} does not match shards {manifest_path}: {'; '.join(problems)}; "
            "re-run the cutouts with the model's cutout size, or retrain"
        )


@torch.no_grad()
def score_batches(model, batches, device, tta=False, bf16=True):
    """Yield (logits, probabilities) per batch of fp16 nanomaggy cutouts."""
    cuda = device.type == "cuda"
    for images in batches:
        x = images.to(device, non_blocking=True).float()
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        views = d4(x) if tta else [x]
        probs = []
        logits = []
        for v in views:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and bf16):
                lg = model(v).float()
            logits.append(lg)
            probs.append(torch.sigmoid(lg))
        p = torch.stack(probs).mean(0)
        lg = torch.stack(logits).mean(0)
        yield lg.double().cpu().numpy(), p.double().cpu().numpy()


def infer_sweep(manifest_path, checkpoint_path, out_path, batch_size=1024, tta=False, device=None, progress=True):
    """Score every cutout of one sweep's shard set; write keys, RA/Dec, logit, prob to Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ck = load_checkpoint(checkpoint_path, device)
    try:
        shards = ShardSet(manifest_path)
    except LensfinderError as err:
        raise LensfinderError(f"{err} (needed to score it with {checkpoint_path})") from err
    check_compatible(checkpoint_path, ck, manifest_path, shards.manifest)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    logits, probs = [], []
    total = (len(shards) + batch_size - 1) // batch_size
    images_only = (images for images, _ in shards.batches(batch_size))
    for lg, p in tqdm(score_batches(model, images_only, device, tta), total=total, desc=f"infer {Path(out_path).stem}",
                      disable=not progress, mininterval=10):
        logits.append(lg)
        probs.append(p)
    index = shards.index
    logit = np.concatenate(logits) if logits else np.zeros(0)
    prob = np.concatenate(probs) if probs else np.zeros(0)
    if len(prob) != len(index):
        raise LensfinderError(f"internal: {len(prob)} scores for {len(index)} cutouts of {manifest_path}")
    nan = ~np.isfinite(prob)
    if nan.any():
        log.warning("%d NaN score(s) in %s, e.g. %s", nan.sum(), manifest_path, index.loc[nan, list(KEY)].head(3).values.tolist())
    table = pa.table({**{k: index[k].astype(np.int64).to_numpy() for k in KEY},
                      "RA": index["RA"].to_numpy(), "DEC": index["DEC"].to_numpy(), "logit": logit, "prob": prob})
    meta = {b"lensfinder.checkpoint": str(checkpoint_path).encode(), b"lensfinder.tta": str(tta).encode(),
            b"lensfinder.trainset_fingerprint": str(ck.get("trainset_fingerprint")).encode()}
    with atomic_path(out_path) as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return {"rows": len(table), "nan": int(nan.sum())}


def score_trainset(trainset_dir, checkpoint_path, out_path, batch_size=1024, tta=False, device=None):
    """Scores of one model on the whole training set (both splits), for the meta-learner."""
    import pandas as pd

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, ck = load_checkpoint(checkpoint_path, device)
    d = Path(trainset_dir)
    labels = pd.read_parquet(d / "labels.parquet")
    images = np.load(d / "cutouts.npy", mmap_mode="r")
    batches = (torch.from_numpy(np.array(images[i : i + batch_size])) for i in range(0, len(images), batch_size))
    probs = np.concatenate([p for _, p in score_batches(model, batches, device, tta)]) if len(images) else np.zeros(0)
    out = labels[[*KEY, "LABEL", "SPLIT", "ROW"]].copy()
    out["prob"] = probs[labels["ROW"].to_numpy()]
    with atomic_path(out_path) as tmp:
        out.to_parquet(tmp, index=False)
    return out
