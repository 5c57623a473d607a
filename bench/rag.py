"""Retrieval-augmented chat latency: time to first token split into retrieval (query
embedding + hybrid search), rerank, prefill and decode, at 1k and 100k chunks, against
plain chat on the same question. Prints a table, writes bench/results/rag.json.

In process (no HTTP): the real MiniLM embeds queries; a random RWKV x070 checkpoint in
the released format answers (12 x 1024 by default, CPU fp32). The 1k-chunk store is real
text ingested end to end; the 100k-chunk store holds real text with synthetic vectors
(embedding 100k chunks on 2 cores would take hours; search cost does not depend on
what the vectors mean). Rerank is the cosine reranker over 20 candidates via MiniLM.

    python bench/rag.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import paragraphs  # noqa: E402
from bench.kb import clustered  # noqa: E402
from kb.config import KnowledgeSettings  # noqa: E402
from kb.providers import minilm_provider  # noqa: E402
from kb.retrieval import SearchQuery  # noqa: E402
from kb.service import KnowledgeBase  # noqa: E402
from kb.types import ChunkRecord  # noqa: E402
from rag.config import DEFAULT_RAG_PROMPT  # noqa: E402
from rag.service import RagService  # noqa: E402

QUESTIONS = [
    "How do I open a file for reading and writing?",
    "What does the timeout argument control?",
    "How are exceptions raised when a lock cannot be acquired?",
    "Which encoding is used by default?",
    "How do I convert a string to bytes?",
    "What happens when the queue is full?",
    "How can I compare two dates?",
    "What is returned when the key is missing?",
]


async def ttft(engine: Any, tokens: list[int], max_tokens: int) -> tuple[float, float, int]:
    from engines.generation import GenerationRequest, SamplingParams, TokenEvent

    req = GenerationRequest(tokens, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    started = time.perf_counter()
    first = 0.0
    n = 0
    async for ev in engine.generate(req):
        if isinstance(ev, TokenEvent):
            n += 1
            if n == 1:
                first = time.perf_counter() - started
    return first, time.perf_counter() - started, n


async def build_store(kb: KnowledgeBase, n: int, real: bool) -> str:
    cid = (await kb.create_store(f"s{n}", "m")).id
    texts = paragraphs(max(n * 3, 3000))
    if real:
        await kb.start()
        per_file = 60
        for i in range(0, n * 3, per_file):
            row = await kb.add_file_bytes(
                "\n\n".join(texts[i : i + per_file]).encode(), f"f{i}.txt"
            )
            await kb.attach(cid, row.id)
        await kb.drain()
        return cid
    vecs = clustered(n, seed=3)
    for start in range(0, n, 5000):
        recs = [
            ChunkRecord(f"file-{i // 20}", i % 20, f"{texts[i % len(texts)]} [{i}]", 80)
            for i in range(start, min(n, start + 5000))
        ]
        kb.backend.add_chunks(cid, recs, vecs[start : start + len(recs)], model="m")
    await kb.rebuild(cid)
    return cid


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from engines.base import ModelInfo
    from engines.chat_template import ChatTemplate
    from engines.rwkv.engine import RWKVChatEngine
    from engines.rwkv_tiny import write_rwkv_checkpoint

    torch.set_num_threads(args.threads)
    provider = minilm_provider()
    out: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": f"random x070 {args.layers} x {args.embd}, cpu fp32, {args.threads} thread(s)",
        "embedder": "all-minilm-l6-v2",
        "rerank": "cosine via MiniLM over 20 candidates",
        "stores": {},
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        ckpt = tmp / "m.pth"
        write_rwkv_checkpoint(ckpt, "x070", n_layer=args.layers, n_embd=args.embd)
        engine = RWKVChatEngine(
            ModelInfo("bench", "chat", "rwkv"),
            ckpt,
            {"strategy": "cpu fp32", "context_length": 4096, "prefix_cache_bytes": 0},
        )
        tpl = ChatTemplate()
        await ttft(engine, engine.encode("warm up the model"), 2)
        plain = []
        for q in QUESTIONS:
            rendered = tpl.render([("user", q)], engine.encode)
            plain.append(await ttft(engine, rendered.tokens, args.tokens))
        out["plain_ttft_ms"] = round(float(np.median([p[0] for p in plain])) * 1e3, 1)
        for n, real in ((1000, True), (100_000, False)):
            kb = KnowledgeBase.open_sqlite(tmp / f"kb{n}", provider, KnowledgeSettings())
            t = time.perf_counter()
            cid = await build_store(kb, n, real)
            build_s = time.perf_counter() - t
            rows = []
            for q in QUESTIONS:
                t0 = time.perf_counter()
                found = await kb.search(cid, SearchQuery((q,), 20, rerank=False))
                t1 = time.perf_counter()
                docs = [r.text for r in found.hits]
                mat, _ = await provider.embed("m", [q, *docs])
                scores = mat[1:] @ mat[0]
                ranked = [found.hits[i] for i in np.argsort(-scores)][:5]
                t2 = time.perf_counter()
                chosen = RagService.pack(ranked, 1500, lambda s: len(engine.encode(s)))
                sources = (
                    DEFAULT_RAG_PROMPT + "\n\nSources:\n\n" + "\n\n".join(c.block for c in chosen)
                )
                rendered = tpl.render([("system", sources), ("user", q)], engine.encode)
                first, total, ntok = await ttft(engine, rendered.tokens, args.tokens)
                rows.append(
                    {
                        "retrieval_ms": (t1 - t0) * 1e3,
                        "rerank_ms": (t2 - t1) * 1e3,
                        "prefill_ms": first * 1e3,
                        "decode_ms_per_token": (total - first) / max(1, ntok - 1) * 1e3,
                        "prompt_tokens": len(rendered.tokens),
                    }
                )
            med = {k: round(float(np.median([r[k] for r in rows])), 1) for k in rows[0]}
            med["ttft_ms"] = round(med["retrieval_ms"] + med["rerank_ms"] + med["prefill_ms"], 1)
            med["added_over_plain_ms"] = round(med["ttft_ms"] - out["plain_ttft_ms"], 1)
            med["store_build_s"] = round(build_s, 1)
            out["stores"][str(n)] = med
            await kb.stop()
            kb.close()
        engine.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--embd", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rag.json"))
    args = ap.parse_args()
    result = asyncio.run(run(args))
    print(f"plain chat TTFT (median): {result['plain_ttft_ms']} ms")
    cols = ["retrieval_ms", "rerank_ms", "prefill_ms", "ttft_ms", "added_over_plain_ms"]
    print(f"{'chunks':>8} " + " ".join(f"{c:>20}" for c in cols) + f" {'prompt_tokens':>14}")
    for n, med in result["stores"].items():
        print(f"{n:>8} " + " ".join(f"{med[c]:>20}" for c in cols) + f" {med['prompt_tokens']:>14}")
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
