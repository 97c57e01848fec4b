"""The on-disk cutout format: fixed-shape fp16 shards that can be memory-mapped.

A shard set (one directory per sweep) holds:

* ``shard-NNN.npy``: float16 array (N, 3, H, W), nanomaggies, bands g, r, z; row 0 of
  each image is the South edge (display with origin='lower': North up, East left);
* ``shard-NNN.index.parquet``: row i describes array row i (RELEASE, BRICKID, OBJID,
  RA, DEC, TYPE, REGION, ..., the pixel offset of the true centre from the centre pixel,
  the fraction of missing pixels per band, flags);
* ``failures.parquet``: the objects that have no cutout, with the reason and a detail
  (e.g. the unreadable file and band);
* ``manifest.json``: written last: shape, dtype, band order, units, source release, the
  SHA-256 of each array and the counts (selected = written + failed).

Every file is written under a temporary name and renamed, and the manifest comes last,
so a set with a manifest is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lensfinder.constants import BANDS, KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path, crc32, sha256

FLAG_MISSING_PIXELS = 1  # some pixels had no data anywhere (set to 0)
FLAG_FROM_NEIGHBOURS = 2  # part of the cutout was resampled from neighbouring bricks
FLAG_RECENTRED = 4  # Lanczos-3 resampled so the object sits on the centre pixel
FLAG_SATURATED = 8  # some pixel was beyond the float16 range (|x| > 65504 nanomaggies) and clipped
FLAG_NEIGHBOUR_UNREADABLE = 16  # a neighbouring coadd that covers part of the cutout could not be read
# (those pixels are 0 and count as missing); the manifest's "notes" names the file and the error
FP16_MAX = float(np.finfo(np.float16).max)


def manifests_by_sweep(sweeps, manifests) -> dict:
    """Sweep id -> its shard set: the manifest under ``.../<sweep id>/manifest.json`` (an id
    may name its region, ``north/sweep-...``); else, for lists not laid out so (one set for
    several sweeps), by position."""
    manifests = [Path(m) for m in manifests]
    if len(manifests) != len(sweeps):
        raise LensfinderError(f"{len(manifests)} shard sets for {len(sweeps)} sweeps: give one manifest "
                              "per sweep")
    tails: dict[int, dict] = {}  # id depth -> {the manifests' directories' last parts: manifest}
    out = {}
    for sweep, fallback in zip(sweeps, manifests):
        parts = Path(sweep).parts
        if len(parts) not in tails:
            tails[len(parts)] = {m.parent.parts[-len(parts):]: m for m in manifests}
        out[sweep] = tails[len(parts)].get(parts, fallback)
    return out


def sweep_ids(paths) -> list[str]:
    """The sweep ids of per-sweep files (``.../<sweep>.parquet``, or ``.../<region>/<sweep>.parquet``
    where several regions share a stem): the shortest tails that tell them apart."""
    paths = [Path(p) for p in paths]
    for depth in range(1, 4):
        ids = ["/".join((*p.parent.parts[len(p.parent.parts) - depth + 1:], p.stem)) for p in paths]
        if len(set(ids)) == len(ids):
            return ids
    raise LensfinderError(f"per-sweep files with the same name in the same place, e.g. {paths[:2]}: "
                          "list each sweep once")


def common_shape(manifests):
    """The cutout shape (3, H, W) shared by shard sets' manifests (dicts); None for none. Sets of
    different shapes cannot be mixed in one training set, injection set or mosaic."""
    shapes = {tuple(m["shape"]) for m in manifests}
    if len(shapes) > 1:
        raise LensfinderError(f"cutout shards of different shapes {sorted(shapes)}: re-run cutouts with one size")
    return shapes.pop() if shapes else None


def check_one_set_per_sweep(manifest_paths, sweeps):
    """A batch job's shard sets and sweeps pair up one to one."""
    if len(manifest_paths) != len(sweeps):
        raise LensfinderError(f"{len(manifest_paths)} shard sets for {len(sweeps)} sweeps: give one per sweep")


class ShardWriter:
    """Accumulate cutouts and index rows; flush fixed-size shards atomically."""

    def __init__(self, out_dir, size: int, release: str, max_rows: int = 20000, source: str = "bricks"):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # the directory is this writer's: what a killed or earlier run left there goes first
        for stale in [*self.dir.glob(".tmp-*"), *self.dir.glob("shard-*"), self.dir / "manifest.json"]:
            if stale.is_file():
                stale.unlink()
        self.size, self.release, self.max_rows, self.source = size, release, max_rows, source
        self._images, self._rows, self.shards, self.failures, self.notes = [], [], [], [], []

    def add(self, image: np.ndarray, row: dict):
        if image.shape != (3, self.size, self.size):
            raise ValueError(f"cutout shape {image.shape} != (3, {self.size}, {self.size})")
        self._images.append(image.astype(np.float16))
        self._rows.append(row)
        if len(self._images) >= self.max_rows:
            self._flush()

    def note(self, row: dict, reason: str, detail: str):
        """Record a problem with a cutout that was still written (e.g. an unreadable neighbour)."""
        self.notes.append({**{k: int(row[k]) for k in KEY}, "reason": reason, "detail": detail})

    def fail(self, row: dict, reason: str, detail: str = ""):
        self.failures.append({**row, "reason": reason, "detail": detail})

    def _flush(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._images:
            return
        name = f"shard-{len(self.shards):03d}"
        array_path = self.dir / f"{name}.npy"
        with atomic_path(array_path) as tmp:
            np.save(tmp, np.stack(self._images))
        with atomic_path(self.dir / f"{name}.index.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(self._rows), tmp)
        self.shards.append({"array": array_path.name, "index": f"{name}.index.parquet", "rows": len(self._images),
                            "sha256": sha256(array_path), "crc32": crc32(array_path)})
        self._images, self._rows = [], []

    def close(self, n_selected: int, extra: dict | None = None) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush()
        written = sum(s["rows"] for s in self.shards)
        failed = len(self.failures)
        if written + failed != n_selected:
            raise LensfinderError(f"cutouts in {self.dir}: {written} written + {failed} failed != {n_selected} selected")
        schema = pa.schema([(k, pa.int64()) for k in KEY] + [("RA", pa.float64()), ("DEC", pa.float64()),
                                                             ("reason", pa.string()), ("detail", pa.string())])
        fail_rows = [{k: r.get(k, "") for k in (*KEY, "RA", "DEC", "reason", "detail")} for r in self.failures]
        with atomic_path(self.dir / "failures.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(fail_rows, schema=schema), tmp)
        manifest = {
            "format": "lensfinder-shards-1",
            "shape": [3, self.size, self.size],
            "dtype": "float16",
            "bands": list(BANDS),
            "units": "nanomaggy",
            "orientation": "row 0 = South; +x toward decreasing RA (East left); North up with origin='lower'",
            "release": self.release,
            "source": self.source,
            "shards": self.shards,
            "counts": {"selected": n_selected, "written": written, "failed": failed},
            # cutouts written despite a problem, each with its key, reason and detail
            "notes": self.notes,
            **(extra or {}),
        }
        with atomic_path(self.dir / "manifest.json") as tmp:
            tmp.write_text(json.dumps(manifest, indent=1))
        return manifest


@dataclass
class ShardSet:
    """Read a shard set: memory-mapped arrays, the concatenated index, batches, lookup by key."""

    manifest_path: Path

    def __post_init__(self):
        import pandas as pd
        import pyarrow.parquet as pq

        self.manifest_path = Path(self.manifest_path)
        if not self.manifest_path.exists():
            raise LensfinderError(f"shard manifest {self.manifest_path} does not exist: run the cutouts rule for it")
        self.dir = self.manifest_path.parent
        self.manifest = json.loads(self.manifest_path.read_text())
        self.arrays = []
        frames = []
        for s in self.manifest["shards"]:
            path = self.dir / s["array"]
            if not path.exists():
                raise LensfinderError(f"shard {path} listed in {self.manifest_path} is missing: re-run its cutouts job")
            arr = np.load(path, mmap_mode="r")
            if arr.shape[0] != s["rows"] or list(arr.shape[1:]) != self.manifest["shape"]:
                raise LensfinderError(f"shard {path} has shape {arr.shape}, not what {self.manifest_path} says")
            index = pq.read_table(self.dir / s["index"]).to_pandas()
            if len(index) != len(arr):
                raise LensfinderError(f"shard index {self.dir / s['index']} has {len(index)} rows for {len(arr)} "
                                      f"cutouts in {path}: re-run its cutouts job")
            self.arrays.append(arr)
            frames.append(index)
        # a sweep with nothing selected, or whose cutouts all failed, is a valid empty set
        empty = pd.DataFrame({**{k: pd.Series(dtype="int64") for k in KEY},
                              **{c: pd.Series(dtype="float64") for c in ("RA", "DEC", "MAG_Z", "CENTER_DX", "CENTER_DY",
                                                                          "FRAC_MISSING_G", "FRAC_MISSING_R",
                                                                          "FRAC_MISSING_Z")},
                              **{c: pd.Series(dtype="object") for c in ("BRICKNAME", "TYPE", "REGION", "ZEXP_BIN")},
                              "FLAGS": pd.Series(dtype="int64")})
        self.index = pd.concat(frames, ignore_index=True) if frames else empty
        self._offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        keys = list(zip(*(self.index[c].astype("int64").tolist() for c in KEY)))
        self._by_key = {k: i for i, k in enumerate(keys)}
        if len(self._by_key) != len(keys):
            dup = self.index[self.index.duplicated(list(KEY), keep=False)][list(KEY)].drop_duplicates()
            raise LensfinderError(f"shard set {self.manifest_path} holds {len(keys) - len(self._by_key)} duplicate "
                                  f"key(s) (RELEASE, BRICKID, OBJID), e.g. {dup.head(3).values.tolist()}: "
                                  "check the sweep for repeated rows and re-run select and cutouts")

    def __len__(self):
        return int(self._offsets[-1])

    def verify(self):
        """Recompute each array's SHA-256 against the manifest."""
        for s in self.manifest["shards"]:
            if sha256(self.dir / s["array"]) != s["sha256"]:
                self._damaged(s)

    def _damaged(self, shard: dict):
        raise LensfinderError(f"shard {self.dir / shard['array']} does not match its checksum (recorded in "
                              f"{self.manifest_path}): delete the directory and re-run its cutouts job")

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return self.arrays[k][i - self._offsets[k]]

    def __contains__(self, key) -> bool:
        return tuple(int(v) for v in key) in self._by_key

    def get(self, key) -> np.ndarray:
        """The cutout (3, H, W) fp16 of object key (RELEASE, BRICKID, OBJID)."""
        try:
            return self[self._by_key[tuple(int(v) for v in key)]]
        except KeyError:
            raise KeyError(f"object {tuple(key)} is not in {self.manifest_path}") from None

    def batches(self, batch_size: int = 1024, as_torch: bool = True, verify: bool = True):
        """Yield (images, index rows) in shard order; images are fp16 (B, 3, H, W).

        Batches never span two shards, so each is one contiguous slice of a memory map.
        With ``as_torch`` the images come as a torch tensor (convert to fp32 on the device).
        With ``verify`` (the default) each shard's file is checksummed (its CRC-32; the
        SHA-256 for manifests older than the CRC) and compared with the manifest's before the
        shard's last batch is handed out, so a damaged shard fails the stage instead of being
        scored. The checksums run on threads of their own (zlib and hashlib release the GIL),
        up to four shards at once and ahead of the reader, beside the batches' copy and their
        consumer (cost: ``benchmarks/host_pipeline.py``).
        """
        import os
        from concurrent.futures import ThreadPoolExecutor

        ahead = min(4, len(os.sched_getaffinity(0)))  # the job's cores, not the node's
        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="shard-checksum") as checker:
            checks = {}
            for k, arr in enumerate(self.arrays):
                if verify:
                    for j in range(k, min(k + ahead, len(self.arrays))):
                        if j not in checks:
                            checks[j] = checker.submit(_checksum_matches, self.dir, self.manifest["shards"][j])
                for start in range(0, len(arr), batch_size):
                    block = np.array(arr[start : start + batch_size])  # one sequential read, writable
                    rows = self.index.iloc[self._offsets[k] + start : self._offsets[k] + start + len(block)]
                    if verify and start + batch_size >= len(arr) and not checks.pop(k).result():
                        self._damaged(self.manifest["shards"][k])
                    if as_torch:
                        import torch

                        block = torch.from_numpy(block)
                    yield block, rows


def _checksum_matches(directory: Path, entry: dict) -> bool:
    """Whether a shard's array file has the manifest's CRC-32 (or, for manifests older than
    the CRC, its SHA-256)."""
    path = directory / entry["array"]
    return crc32(path) == entry["crc32"] if "crc32" in entry else sha256(path) == entry["sha256"]


class ShardCollection:
    """The cutouts of several shard sets (e.g. every sweep), looked up by key."""

    def __init__(self, manifests):
        self.sets = [ShardSet(m) for m in manifests]
        self.shape = common_shape([s.manifest for s in self.sets])

    def __contains__(self, key) -> bool:
        return any(key in s for s in self.sets)

    def get(self, key) -> np.ndarray:
        for s in self.sets:
            if key in s:
                return np.asarray(s.get(key))
        raise KeyError(f"object {tuple(key)} is in none of the {len(self.sets)} shard sets")

    def stack(self, keys) -> np.ndarray:
        """(N, 3, H, W) fp16 cutouts of the keys, in their order."""
        return np.stack([self.get(k) for k in keys]) if keys else np.zeros((0, *self.shape), np.float16)
