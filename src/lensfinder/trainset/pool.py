"""The run's selected objects as the training set draws from them: read one sweep at a
time into compact arrays (key, position, stratum, sweep, row, the shard set holding its
cutout), about 50 bytes per object plus a sort index, so that DR10's 43.5M objects fit in a
few GB (4.85 GB peak for the whole training-set draw, ``benchmarks/scale.py``). Full
rows and cutouts are read back only for the objects drawn, sweep by sweep.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from lensfinder.catalog.crossmatch import nearest
from lensfinder.constants import KEY
from lensfinder.cutouts.shards import ShardSet, common_shape
from lensfinder.errors import LensfinderError
from lensfinder.tables import KEY_BITS, pack_keys

POOL_COLUMNS = [*KEY, "RA", "DEC", "TYPE", "REGION", "ZEXP_BIN"]


def stratum_of(frame) -> pd.Series:
    """The training set's stratum: TYPE|REGION|ZEXP_BIN."""
    return frame["TYPE"].astype(str) + "|" + frame["REGION"].astype(str) + "|" + frame["ZEXP_BIN"].astype(str)


def _shard_keys(manifest_path) -> pd.DataFrame:
    """The keys a sweep's shard set holds (its index files' key columns only)."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text())
    frames = [pq.read_table(manifest_path.parent / s["index"], columns=list(KEY)).to_pandas()
              for s in manifest["shards"]]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({k: pd.Series(dtype="int64") for k in KEY})


class ObjectPool:
    """Every selected object of the run, one row per object in the order of
    ``object_paths`` (sweep by sweep), and the shard sets (``manifests``) holding their
    cutouts; an object in none has no cutout."""

    def __init__(self, object_paths, manifests, progress=False):
        self.object_paths, self.manifests = [Path(p) for p in object_paths], [Path(m) for m in manifests]
        codes: dict[str, int] = {}
        parts = []
        paths = self.object_paths
        if progress:
            from tqdm import tqdm

            paths = tqdm(paths, desc="objects", unit="sweep")
        for i, path in enumerate(paths):
            t = pq.read_table(path, columns=POOL_COLUMNS).to_pandas()
            names = stratum_of(t)
            for name in names.unique():
                codes.setdefault(name, len(codes))
            parts.append({"key": pack_keys(*(t[k] for k in KEY)), "ra": t["RA"].to_numpy(np.float64),
                          "dec": t["DEC"].to_numpy(np.float64), "stratum": names.map(codes).to_numpy(np.int32),
                          "sweep": np.full(len(t), i, np.int32), "row": np.arange(len(t), dtype=np.int32)})
        cols = ("key", "ra", "dec", "stratum", "sweep", "row")
        arrays = {c: np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, np.int64) for c in cols}
        self.key, self.ra, self.dec = arrays["key"], arrays["ra"].astype(np.float64), arrays["dec"].astype(np.float64)
        self.stratum, self.sweep, self.row = arrays["stratum"], arrays["sweep"], arrays["row"]
        self.strata = list(codes)  # code -> name
        self._sweep_starts = np.searchsorted(self.sweep, np.arange(len(self.object_paths) + 1))
        self._by_key = np.argsort(self.key, kind="stable")
        self._check_unique_keys()
        # the shard set of each object's cutout (-1: none), one set's keys at a time
        self.shard_set = np.full(len(self.key), -1, np.int32)
        for j, manifest in enumerate(self.manifests):
            self.shard_set[self._locate(pack_keys(*(_shard_keys(manifest)[k] for k in KEY)))] = j
        self.has_cutout = self.shard_set >= 0
        self._open = lru_cache(maxsize=8)(lambda i: ShardSet(self.manifests[i]))
        self.shape = common_shape([json.loads(m.read_text()) for m in self.manifests])

    def _check_unique_keys(self):
        """One object, one key: a key in two rows would give one object two labels."""
        sorted_keys = self.key[self._by_key]
        dup = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
        if len(dup):
            first, second = self._by_key[dup[0]], self._by_key[dup[0] + 1]
            key = tuple(int(v) for v in pq.read_table(self.object_paths[self.sweep[first]], columns=list(KEY))
                        .slice(int(self.row[first]), 1).to_pylist()[0].values())
            where = [f"{self.object_paths[self.sweep[i]]} row {self.row[i]}" for i in (first, second)]
            fix = ("re-run the select rule for it" if self.sweep[first] == self.sweep[second] else
                   "check survey.sweeps for a sweep listed twice or overlapping trees")
            raise LensfinderError(f"{len(np.unique(sorted_keys[dup]))} key(s) appear in several selected rows, e.g. "
                                  f"(RELEASE, BRICKID, OBJID) = {key} in {where[0]} and {where[1]}: {fix}")

    def nearest_objects(self, ra, dec, radius_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
        """For each position (ra, dec) [deg]: the pool index of its nearest object within
        ``radius_arcsec`` (-1 if none) and the separation [arcsec], one sweep at a time (no
        tree over the whole survey)."""
        best = np.full(len(ra), -1, np.int64)
        best_sep = np.full(len(ra), np.inf)
        for start, stop in zip(self._sweep_starts[:-1], self._sweep_starts[1:]):
            idx, sep = nearest(ra, dec, self.ra[start:stop], self.dec[start:stop], radius_arcsec)
            closer = (idx >= 0) & (sep < best_sep)
            best[closer], best_sep[closer] = start + idx[closer], sep[closer]
        return best, best_sep

    def __len__(self):
        return len(self.ra)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.key, self.ra, self.dec, self.stratum, self.sweep, self.row, self._by_key,
                                      self.shard_set, self.has_cutout))

    def _locate(self, packed) -> np.ndarray:
        """Pool indices of the packed keys that are in the pool (others are skipped)."""
        packed = np.asarray(packed, dtype=np.int64)
        if len(self.key) == 0 or len(packed) == 0:
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(self.key, packed, sorter=self._by_key), len(self.key) - 1)
        return self._by_key[at[self.key[self._by_key[at]] == packed]]

    def in_stratum(self, name: str, exclude=None) -> np.ndarray:
        """Pool indices of the stratum's objects (less ``exclude``), sorted by key."""
        code = self.strata.index(name) if name in self.strata else -1
        mask = self.stratum == code
        if exclude is not None and len(exclude):
            mask[np.asarray(exclude, dtype=np.int64)] = False
        idx = np.flatnonzero(mask)
        return idx[np.argsort(self.key[idx], kind="stable")]

    def find(self, keys) -> np.ndarray:
        """Pool indices (ascending) of the objects whose key is in ``keys``."""
        keys = np.array(sorted({tuple(int(v) for v in k) for k in keys}), dtype=np.int64).reshape(-1, 3)
        packable = np.all((keys >= 0) & (keys < np.array([1 << b for b in KEY_BITS])), axis=1)  # others are in no pool
        keys = keys[packable]
        return np.sort(self._locate(pack_keys(keys[:, 0], keys[:, 1], keys[:, 2])))

    def rows(self, idx) -> pd.DataFrame:
        """Full object rows (every column of the objects tables) of pool indices ``idx``, in
        that order, with STRATUM, KEY, HAS_CUTOUT and POOL_INDEX."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            frame = pq.read_table(self.object_paths[0]).to_pandas().iloc[:0] if self.object_paths else pd.DataFrame()
        else:
            pieces, order = [], []
            for s in np.unique(self.sweep[idx]):
                at = np.flatnonzero(self.sweep[idx] == s)
                pieces.append(pq.read_table(self.object_paths[s]).take(self.row[idx[at]]).to_pandas())
                order.append(at)
            frame = pd.concat(pieces, ignore_index=True)
            frame = frame.iloc[np.argsort(np.concatenate(order), kind="stable")].reset_index(drop=True)
        frame["STRATUM"] = stratum_of(frame)
        frame["KEY"] = list(zip(*(frame[k].astype(np.int64).tolist() for k in KEY)))
        frame["HAS_CUTOUT"] = self.has_cutout[idx]
        frame["POOL_INDEX"] = idx
        return frame

    def stack(self, keys) -> np.ndarray:
        """(N, 3, H, W) fp16 cutouts of ``keys``, in their order (read from their shard sets)."""
        out = np.empty((len(keys), *(self.shape or ())), np.float16)
        self.fill(keys, out, range(len(keys)))
        return out

    def fill(self, keys, out, at):
        """Write the cutout of ``keys[n]`` to ``out[at[n]]`` (``out`` may be a memory map),
        shard set by shard set, so each set is opened once and nothing else is held."""
        keys, at = [tuple(int(v) for v in k) for k in keys], list(at)
        if not keys:
            return
        found = self.find(keys)
        where = dict(zip(self.key[found].tolist(), found.tolist()))
        packed = pack_keys(*np.array(keys, dtype=np.int64).T).tolist()
        sets = [int(self.shard_set[where[p]]) if p in where else -1 for p in packed]
        for n in sorted(range(len(keys)), key=lambda n: sets[n]):
            if sets[n] < 0:
                raise KeyError(f"object {keys[n]} has no cutout in the run's shard sets")
            out[at[n]] = self._open(sets[n]).get(keys[n])
