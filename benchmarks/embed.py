"""Self-supervised search throughput (S22 stages).

1. Representations per second: ``lensfinder.embed.represent.embed_sweep`` over memory-mapped
   fp16 shards (read, fp32 conversion on the device, centre crop and asinh stretch, encoder,
   fp16 output, Parquet index) beside the bare encoder forward on fp32 batches already in
   memory, measured in one run, per encoder preset.
2. Faiss query latency on ``--vectors`` synthetic unit vectors (``--dim`` wide, clustered in
   a 16-d latent space, as learned representations are): exact ``IndexFlatIP`` and a
   compressed index (``--factory``), per query in batches of ``--queries`` and one query at a
   time, k = 100, with the compressed index's recall@100 against exact search on the same
   queries, alone and with ``--rerank`` x 100 candidates re-scored exactly (the pipeline's
   search). Memory: the exact index holds 4 x dim bytes per vector (512 MB for 1M x 128) and
   the fp16 copy for re-scoring 2 x dim; the vectors are generated in chunks.

    python benchmarks/embed.py                                 # CPU presets, 1M x 128-d
    python benchmarks/embed.py --presets resnet50 --n 4096     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lensfinder.cutouts.shards import ShardWriter
from lensfinder.embed.pretrain import CHECKPOINT_FORMAT, PretrainConfig
from lensfinder.embed.represent import embed_sweep
from lensfinder.nets.registry import count_parameters


def make_shards(path: Path, n: int, size: int):
    rng = np.random.default_rng(0)
    writer = ShardWriter(path, size, "dr10", max_rows=max(n // 2, 1))
    for i in range(n):
        writer.add(rng.normal(0, 0.05, (3, size, size)).astype(np.float32),
                   {"RELEASE": 10000, "BRICKID": 1, "OBJID": i, "RA": 150.0, "DEC": 2.0, "TYPE": "SER",
                    "REGION": "DECaLS", "MAG_Z": 19.0})
    writer.close(n)
    return path / "manifest.json"


def make_encoder(path: Path, preset: str, size: int):
    cfg = PretrainConfig.resolve({"preset": preset})
    spec = cfg.encoder_spec()
    encoder = spec.build().eval()
    torch.save({"format": CHECKPOINT_FORMAT, "encoder_spec": spec.to_dict(), "dim": encoder.dim,
                "state_dict": encoder.state_dict(), "input": spec.input, "cutout_shape": [3, size, size],
                "bands": ["g", "r", "z"], "units": "nanomaggy"}, path)
    return encoder


def bench_representations(args, work):
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    manifest = make_shards(work / "shards", args.n, args.size)
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, {args.n} cutouts of {args.size} x {args.size} px, batch {args.batch}")
    print(f"{'preset':<12}{'params':>12}{'dim':>6}{'bare img/s':>12}{'pipeline img/s':>16}{'ratio':>7}")
    results = []
    for preset in args.presets:
        ck = work / f"{preset}.pt"
        encoder = make_encoder(ck, preset, args.size).to(device)
        x = torch.randn(args.batch, 3, args.size, args.size, device=device) * 0.05
        if cuda:
            encoder, x = encoder.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

        @torch.no_grad()
        def bare():
            for _ in range(0, args.n, args.batch):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                    encoder(x).float().cpu()
            if cuda:
                torch.cuda.synchronize()

        bare()  # warm-up
        t0 = time.perf_counter()
        bare()
        raw = args.n / (time.perf_counter() - t0)
        embed_sweep(manifest, ck, work / "warm.npy", work / "warm.parquet", batch_size=args.batch, progress=False)
        t0 = time.perf_counter()
        embed_sweep(manifest, ck, work / f"{preset}.npy", work / f"{preset}.parquet", batch_size=args.batch,
                    progress=False)
        pipe = args.n / (time.perf_counter() - t0)
        print(f"{preset:<12}{count_parameters(encoder):>12,}{encoder.dim:>6}{raw:>12.1f}{pipe:>16.1f}{pipe / raw:>7.2f}")
        results.append({"preset": preset, "bare": raw, "pipeline": pipe, "ratio": pipe / raw})
    return results


def synthetic_vectors(n, dim, seed=0, chunk=100_000, latent=16, clusters=200):
    """Unit vectors with the structure of learned representations: clusters in a low-dimensional
    latent space (``latent``-d), mapped linearly into ``dim`` dimensions, plus a little noise.
    (Isotropic noise in all ``dim`` dimensions would make every neighbour list random.)"""
    rng = np.random.default_rng(0)  # the same map and clusters for every call
    mix = rng.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        z = centres[rng.integers(0, clusters, m)] + 0.5 * rng.normal(size=(m, latent)).astype(np.float32)
        v = z @ mix + 0.05 * rng.normal(size=(m, dim)).astype(np.float32)
        yield v / np.linalg.norm(v, axis=1, keepdims=True)


def bench_faiss(args):
    import faiss

    from lensfinder.embed.index import recall_at_k

    k = 100
    exact = faiss.IndexFlatIP(args.dim)
    compressed = faiss.index_factory(args.dim, args.factory, faiss.METRIC_INNER_PRODUCT)
    train = next(synthetic_vectors(min(args.train, args.vectors), args.dim, seed=1, chunk=args.train))
    t0 = time.perf_counter()
    compressed.train(train)
    train_s = time.perf_counter() - t0
    add_s, stored = 0.0, []
    for block in synthetic_vectors(args.vectors, args.dim):
        exact.add(block)
        stored.append(block.astype(np.float16))  # as the representations files hold them
        t0 = time.perf_counter()
        compressed.add(block)
        add_s += time.perf_counter() - t0
    stored = np.concatenate(stored)
    faiss.ParameterSpace().set_index_parameter(compressed, "nprobe", args.nprobe) if "IVF" in args.factory else None
    queries = next(synthetic_vectors(args.queries, args.dim, seed=2, chunk=args.queries))
    rows = []
    found = {}
    for name, index in (("exact (IndexFlatIP)", exact), (f"compressed ({args.factory})", compressed)):
        index.search(queries[:10], k)  # warm-up
        t0 = time.perf_counter()
        _, ids = index.search(queries, k)
        batch_ms = 1000 * (time.perf_counter() - t0) / len(queries)
        t0 = time.perf_counter()
        for q in queries[:20]:
            index.search(q[None], k)
        single_ms = 1000 * (time.perf_counter() - t0) / 20
        found[name] = ids
        rows.append({"index": name, "ms_per_query_batched": batch_ms, "ms_single_query": single_ms,
                     "bytes_per_vector": len(faiss.serialize_index(index)) / index.ntotal})
    recall = recall_at_k(found[rows[1]["index"]], found[rows[0]["index"]], k)
    # the pipeline's search: rerank x k candidates from the compressed index, re-scored exactly
    t0 = time.perf_counter()
    _, cand = compressed.search(queries, args.rerank * k)
    reranked = np.stack([c[np.argsort(-(stored[c].astype(np.float32) @ q), kind="stable")[:k]]
                         for q, c in zip(queries, cand)])
    rerank_ms = 1000 * (time.perf_counter() - t0) / len(queries)
    recall_reranked = recall_at_k(reranked, found[rows[0]["index"]], k)
    print(f"Faiss: {args.vectors:,} unit vectors of {args.dim}-d, k = {k}, {args.queries} queries, "
          f"{faiss.omp_get_max_threads()} thread(s); {args.factory} trained on {len(train):,} in {train_s:.1f} s, "
          f"filled in {add_s:.1f} s")
    print(f"{'index':<36}{'ms/query (batch)':>18}{'ms (1 query)':>14}{'bytes/vector':>14}")
    for r in rows:
        print(f"{r['index']:<36}{r['ms_per_query_batched']:>18.3f}{r['ms_single_query']:>14.3f}{r['bytes_per_vector']:>14.1f}")
    print(f"recall@{k} of the compressed index against exact search: {recall:.4f}; with {args.rerank} x {k} "
          f"candidates re-scored exactly (lensfinder-similar's search): {recall_reranked:.4f} "
          f"({rerank_ms:.3f} ms/query)")
    return {"vectors": args.vectors, "dim": args.dim, "factory": args.factory, "nprobe": args.nprobe,
            "recall_at_100": recall, "recall_at_100_reranked": recall_reranked, "rerank": args.rerank,
            "rerank_ms_per_query": rerank_ms, "indexes": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["cpu_small"])
    ap.add_argument("--n", type=int, default=2048, help="cutouts embedded")
    ap.add_argument("--size", type=int, default=101)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--vectors", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--factory", default="IVF1024,PQ32")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rerank", type=int, default=4, help="candidates per neighbour re-scored exactly")
    ap.add_argument("--skip-faiss", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lensfinder-embed-bench-"))
    reps = bench_representations(args, work)
    faiss_result = None if args.skip_faiss else bench_faiss(args)
    print(json.dumps({"representations": reps, "faiss": faiss_result}))


if __name__ == "__main__":
    main()
