"""Faiss similarity index over the representations, by cosine similarity (S22 eq. 1).

Vectors are L2-normalised, so an inner product is the cosine similarity.

* ``kind: exact``: ``IndexFlatIP``, brute force, exact (the mock, or any sample that fits in
  memory: 4 bytes x D per object).
* ``kind: compressed``: any Faiss ``index_factory`` string (``factory``), inner-product metric,
  e.g. ``PCA256,IVF4096,PQ32`` (32 bytes per object: 1.4 GB for DR10's 43.5M) or ``HNSW32``;
  trained on ``train_size`` vectors drawn at random, then filled sweep by sweep, so memory
  holds the codes and one sweep's vectors, never the whole survey. Its **recall@k** against
  exact search is measured on ``recall_queries`` objects drawn at random (exact neighbours by
  a streamed brute-force pass over every sweep file) and recorded in ``index.json``. Searches
  fetch ``rerank`` x k candidates and re-score them with the exact cosine from the stored
  fp16 vectors, so the similarities printed are exact either way.

Outputs (``out_dir``): ``index.faiss``; ``keys.parquet`` (row i = vector i: RELEASE, BRICKID,
OBJID, RA, DEC, TYPE, REGION, MAG_Z, FILE, ROW: which representations file and row);
``index.json`` (kind, factory, size, dimension, the representation files relative to
``out_dir``, search parameters, recall).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from lensfinder.constants import KEY
from lensfinder.errors import LensfinderError
from lensfinder.files import atomic_path
from lensfinder.settings import Settings

log = logging.getLogger(__name__)


def read_representations(npy_path, index_path):
    """(fp16 vectors memory-mapped, index frame) of one sweep, checked to agree."""
    for p in (npy_path, index_path):
        if not Path(p).exists():
            raise LensfinderError(f"representations file {p} does not exist: run the embed rule for its sweep")
    vectors = np.load(npy_path, mmap_mode="r")
    index = pd.read_parquet(index_path)
    if len(vectors) != len(index):
        raise LensfinderError(f"{npy_path} has {len(vectors)} rows but {index_path} {len(index)}: re-run its embed job")
    return vectors, index


@dataclass
class IndexConfig(Settings):
    section: ClassVar[str] = "embed.index"

    kind: str = "exact"  # exact | compressed
    factory: str = "PCA256,IVF4096,PQ32"  # compressed: a faiss.index_factory string
    train_size: int = 200_000  # compressed: vectors drawn to train it
    search: dict = field(default_factory=lambda: {"nprobe": 64})  # faiss ParameterSpace settings (nprobe, efSearch)
    rerank: int = 4  # compressed: candidates fetched per neighbour, re-scored exactly
    recall_k: int = 100
    recall_queries: int = 1000
    seed: int = 0

    @classmethod
    def from_dict(cls, d):
        cfg = cls(**cls.check_keys(d))
        if cfg.kind not in ("exact", "compressed"):
            raise LensfinderError(f"embed.index.kind {cfg.kind!r} must be exact or compressed")
        return cfg


def normalise(vectors) -> np.ndarray:
    """float32 rows scaled to unit length (all-zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _faiss(threads=None):
    import faiss

    if threads:
        faiss.omp_set_num_threads(int(threads))
    return faiss


def exact_search(queries: np.ndarray, blocks, k: int):
    """Exact top-k inner products of unit ``queries`` (Q, D) over the vectors that ``blocks``
    yields in order ((n_i, D) unit vectors); returns (similarities, global row ids), best first.
    Streams: memory holds one block and the running top k."""
    q = np.asarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    offset = 0
    for block in blocks:
        for start in range(0, len(block), 200_000):
            part = np.asarray(block[start : start + 200_000], dtype=np.float32)
            s = q @ part.T
            ids = np.broadcast_to(np.arange(offset + start, offset + start + len(part)), s.shape)
            s, ids = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, ids], axis=1)
            keep = min(k, s.shape[1])
            top = np.argpartition(-s, keep - 1, axis=1)[:, :keep] if s.shape[1] > keep else np.argsort(-s, axis=1)
            best_s, best_i = np.take_along_axis(s, top, axis=1), np.take_along_axis(ids, top, axis=1)
        offset += len(block)
    order = np.lexsort((best_i, -best_s), axis=1) if best_s.size else np.zeros_like(best_i)
    return np.take_along_axis(best_s, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of each query's k exact neighbours that the approximate search returned
    among its k."""
    hits = [len(set(a[:k].tolist()) & set(e[:k].tolist())) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits) / k) if hits else float("nan")


class RepresentationFiles:
    """Every sweep's representations (memory-mapped) and the concatenated keys."""

    def __init__(self, pairs):
        self.pairs = [(Path(n), Path(i)) for n, i in pairs]
        self.vectors, frames = [], []
        for f, (npy, idx) in enumerate(self.pairs):
            v, index = read_representations(npy, idx)
            self.vectors.append(v)
            frames.append(index.assign(FILE=f, ROW=np.arange(len(index))))
        if not frames:
            raise LensfinderError("no representations file given to index")
        dims = {v.shape[1] for v in self.vectors}
        if len(dims) > 1:
            raise LensfinderError(f"representations of different sizes {sorted(dims)}: re-run embed with one encoder")
        self.dim = dims.pop()
        self.keys = pd.concat(frames, ignore_index=True)
        dup = self.keys.duplicated(list(KEY))
        if dup.any():
            raise LensfinderError(f"{int(dup.sum())} object(s) appear in two representations files, e.g. "
                                  f"{self.keys.loc[dup, list(KEY)].head(2).values.tolist()}: check survey.sweeps")
        self.offsets = np.cumsum([0] + [len(v) for v in self.vectors])

    def __len__(self):
        return int(self.offsets[-1])

    def blocks(self, rows: int = 250_000):
        """Unit float32 vectors in file order, at most ``rows`` at a time (a batch of sweeps'
        file can hold millions)."""
        for v in self.vectors:
            for i in range(0, len(v), rows):
                yield normalise(v[i : i + rows])

    def take(self, rows) -> np.ndarray:
        """Unit float32 vectors of global rows (any order)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(rows), self.dim), np.float32)
        files = np.searchsorted(self.offsets, rows, side="right") - 1
        for f in np.unique(files):
            sel = files == f
            out[sel] = normalise(self.vectors[f][rows[sel] - self.offsets[f]])
        return out


def build_index(pairs, cfg: IndexConfig, out_dir, threads=None) -> dict:
    """Build, measure and write the index of the representation files ``pairs`` ((npy, parquet)
    per sweep); returns the contents of ``index.json``."""
    faiss = _faiss(threads)
    out_dir = Path(out_dir)
    reps = RepresentationFiles(pairs)
    n, d = len(reps), reps.dim
    t0 = time.time()
    rng = np.random.default_rng(cfg.seed)
    if cfg.kind == "exact":
        index = faiss.IndexFlatIP(d)
    else:
        try:
            index = faiss.index_factory(d, cfg.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as err:
            raise LensfinderError(f"embed.index.factory {cfg.factory!r} is not a valid Faiss index for {d}-d vectors "
                                  f"({str(err).strip().splitlines()[-1]})") from err
        if not index.is_trained:
            rows = np.sort(rng.choice(n, size=min(cfg.train_size, n), replace=False))
            try:
                index.train(reps.take(rows))
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[-1]
                raise LensfinderError(f"training the {cfg.factory!r} index on {len(rows)} vectors failed ({reason}): "
                                      "lower its list count or code size, or raise train_size") from err
        _set_search(faiss, index, cfg.search)
    for block in reps.blocks():
        index.add(block)
    build_seconds = time.time() - t0
    info = {"kind": cfg.kind, "factory": "Flat" if cfg.kind == "exact" else cfg.factory, "metric": "inner product of "
            "unit vectors (cosine similarity)", "size": int(index.ntotal), "dim": int(d),
            "files": [[os.path.relpath(p, out_dir) for p in pair] for pair in reps.pairs],
            "search": {} if cfg.kind == "exact" else dict(cfg.search), "rerank": 1 if cfg.kind == "exact" else cfg.rerank,
            "build_seconds": build_seconds, "bytes_per_vector": _bytes_per_vector(faiss, index, n)}
    info["recall"] = measure_recall(index, reps, cfg, rng) if cfg.kind == "compressed" else {
        "k": cfg.recall_k, "recall": 1.0, "note": "exact search"}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "index.faiss") as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(out_dir / "keys.parquet") as tmp:
        reps.keys.to_parquet(tmp, index=False)
    with atomic_path(out_dir / "index.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    log.info("index of %d %d-d vectors (%s) in %.1f s; recall@%d %.4f", n, d, info["factory"], build_seconds,
             info["recall"]["k"], info["recall"]["recall"])
    return info


def _set_search(faiss, index, params: dict):
    space = faiss.ParameterSpace()
    for name, value in (params or {}).items():
        try:
            space.set_index_parameter(index, name, value)
        except RuntimeError as err:
            raise LensfinderError(f"embed.index.search {name}={value} does not apply to this index "
                                  f"({str(err).strip().splitlines()[-1]})") from err


def _bytes_per_vector(faiss, index, n) -> float:
    if n == 0:
        return 0.0
    return len(faiss.serialize_index(index)) / n


def measure_recall(index, reps: RepresentationFiles, cfg: IndexConfig, rng) -> dict:
    """recall@k of the index's own search (no re-ranking) against exact search, on random
    objects as queries."""
    n, k = len(reps), min(cfg.recall_k, len(reps))
    rows = np.sort(rng.choice(n, size=min(cfg.recall_queries, n), replace=False))
    queries = reps.take(rows)
    t0 = time.time()
    _, exact_ids = exact_search(queries, reps.blocks(), k)
    exact_seconds = time.time() - t0
    t0 = time.time()
    _, approx_ids = index.search(queries, k)
    approx_seconds = time.time() - t0
    return {"k": k, "queries": len(rows), "recall": recall_at_k(approx_ids, exact_ids, k),
            "exact_ms_per_query": 1000 * exact_seconds / len(rows), "index_ms_per_query": 1000 * approx_seconds / len(rows)}


class SimilarityIndex:
    """A built index: look objects up, and find neighbours with exact cosine similarities."""

    def __init__(self, index_dir, threads=None):
        self.dir = Path(index_dir)
        for name in ("index.json", "index.faiss", "keys.parquet"):
            if not (self.dir / name).exists():
                raise LensfinderError(f"similarity index file {self.dir / name} does not exist: run the similarity_index "
                                      "rule (or give --index the directory that holds index.json)")
        faiss = _faiss(threads)
        self.info = json.loads((self.dir / "index.json").read_text())
        self.index = faiss.read_index(str(self.dir / "index.faiss"))
        if self.info.get("search"):
            _set_search(faiss, self.index, self.info["search"])
        self.reps = RepresentationFiles([[self.dir / p for p in pair] for pair in self.info["files"]])
        self.keys = self.reps.keys
        if len(self.keys) != self.index.ntotal:
            raise LensfinderError(f"{self.dir}: the index holds {self.index.ntotal} vectors, the representations "
                                  f"{len(self.keys)}: re-run the similarity_index rule")
        self._by_key = pd.MultiIndex.from_frame(self.keys[list(KEY)].astype(np.int64))

    def rows_of(self, keys) -> np.ndarray:
        """Index rows of (RELEASE, BRICKID, OBJID) keys; -1 where not indexed."""
        keys = np.asarray(keys, dtype=np.int64).reshape(-1, 3)
        return self._by_key.get_indexer(pd.MultiIndex.from_arrays(keys.T))

    def search(self, vectors: np.ndarray, k: int):
        """(cosine similarities, rows), (Q, k) each, best first, for unit query vectors."""
        k = min(int(k), len(self.keys))
        fetch = min(len(self.keys), k * max(1, int(self.info.get("rerank", 1))))
        sims, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), fetch)
        if self.info["kind"] != "exact":  # re-score the candidates exactly
            for i in range(len(rows)):
                ok = rows[i] >= 0
                exact = self.reps.take(rows[i][ok]) @ vectors[i]
                sims[i] = -np.inf
                sims[i][ok] = exact
        order = np.lexsort((rows, -sims), axis=1)[:, :k]
        return np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def neighbours(self, row: int, k: int) -> pd.DataFrame:
        """The k objects most similar to indexed object ``row``: itself first (similarity 1),
        then by decreasing cosine similarity; columns of keys.parquet plus RANK, SIMILARITY."""
        q = self.reps.take([row])
        sims, rows = self.search(q, k)
        sims, rows = sims[0], rows[0]
        if row not in rows:  # a compressed index may miss the query itself
            sims, rows = np.r_[1.0, sims[:-1]], np.r_[row, rows[:-1]]
        first = np.argsort(np.where(rows == row, 0, 1), kind="stable")  # itself first among equals
        sims, rows = sims[first], rows[first]
        out = self.keys.iloc[rows].drop(columns=["FILE", "ROW"]).reset_index(drop=True)
        out.insert(0, "RANK", np.arange(len(out)))
        out["SIMILARITY"] = sims.astype(np.float64)
        return out
