"""The exact -> IVF switch happens by itself, off the request path; re-embed is a job."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.app import create_app
from kb.index import VectorIndex
from tests.conftest import FAKE_MODELS, asgi_client, fake_settings


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(32, d))
    x = centers[rng.integers(0, 32, n)] + 0.3 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("ann", ["hnsw", "ivf"])
def test_upgrade_replays_writes_made_while_building(ann: str) -> None:
    d = 32
    vecs = _clustered(6000, d)
    index = VectorIndex(d, ann_threshold=5000, nprobe=64, ann=ann)
    index.add(np.arange(5000), vecs[:5000])
    done = threading.Event()
    seen_during: list[str] = []

    def build() -> None:
        assert index.upgrade_to_ann()
        done.set()

    t = threading.Thread(target=build)
    t.start()
    # Writes and searches keep working while the IVF index trains.
    for start in range(5000, 6000, 100):
        index.add(np.arange(start, start + 100), vecs[start : start + 100])
        _, ids = index.search(vecs[start], 1)
        assert ids[0][0] == start
        seen_during.append(index.kind)
    index.remove(list(range(0, 100)))
    t.join(timeout=60)
    assert done.is_set() and index.kind == ann
    assert index.ids() == set(range(100, 6000))
    _, got = index.search(vecs[:100], 5)
    assert not set(got.ravel().tolist()) & set(range(100))  # removed during the build
    # Recall against exact search on the same data.
    flat = VectorIndex(d)
    flat.add(np.arange(100, 6000), vecs[100:])
    q = vecs[np.random.default_rng(1).choice(6000, 50)]
    _, exact = flat.search(q, 10)
    _, approx = index.search(q, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    assert not index.upgrade_to_ann()  # already ANN: nothing to do


def test_hnsw_tombstones_filters_persistence_and_compaction(tmp_path: Path) -> None:
    d = 16
    vecs = _clustered(3000, d)
    index = VectorIndex(d, ann="hnsw")
    index.build_ann(np.arange(3000), vecs)
    assert index.remove(list(range(0, 300))) == 300
    assert len(index) == 2700 and not index.needs_compaction
    _, got = index.search(vecs[:300], 3)
    assert not set(got.ravel().tolist()) & set(range(300))
    _, got = index.search(vecs[500], 5, allowed={500, 7, 8})
    assert set(got[0].tolist()) <= {500, 7, 8, -1} and got[0][0] == 500
    index.save(tmp_path / "i.faiss")
    again = VectorIndex.load(tmp_path / "i.faiss", d)
    assert again.kind == "hnsw" and again.ids() == set(range(300, 3000))
    again.remove(list(range(300, 1000)))
    assert again.needs_compaction
    assert again.upgrade_to_ann()
    assert again.kind == "hnsw" and not again.needs_compaction and len(again) == 2000
    assert again.ids() == set(range(1000, 3000))


async def test_store_switches_to_ivf_past_the_threshold(tmp_path: Path) -> None:
    settings = fake_settings(data_dir=str(tmp_path), knowledge={"ann_threshold": 200})
    app = create_app(settings)
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "big"})).json()["id"]
        text = "\n\n".join(
            f"Item {i} is a widget of kind k{i} made in batch b{i}. "
            + " ".join(f"f{i}x{j}" for j in range(70))
            for i in range(300)
        )
        fid = (
            await http.post(
                "/v1/files",
                files={"file": ("w.txt", text.encode())},
                data={"purpose": "assistants"},
            )
        ).json()["id"]
        await http.post(
            f"/v1/vector_stores/{vs}/files",
            json={
                "file_id": fid,
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
                },
            },
        )
        kb = app.state.ctx.kb
        await kb.drain()
        assert kb.backend.indexes.get(vs).kind == "hnsw"
        hits = (
            await http.post(
                f"/v1/vector_stores/{vs}/search",
                json={"query": "k17 b17", "ranking_options": {"ranker": "none"}},
            )
        ).json()["data"]
        assert "Item 17 " in hits[0]["content"][0]["text"]


async def test_reembed_job_moves_a_store_to_another_model(tmp_path: Path, kb_backend: str) -> None:
    models: list[dict[str, Any]] = [
        *FAKE_MODELS,
        {
            "id": "fake-embed-32",
            "kind": "embedding",
            "engine": "fake",
            "options": {"dimensions": 32},
        },
    ]
    app = create_app(fake_settings(data_dir=str(tmp_path), models=models))
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "r"})).json()
        assert vs["embedding_model"] == "fake-embed" and vs["dimensions"] == 64
        for i in range(3):
            fid = (
                await http.post(
                    "/v1/files",
                    files={"file": (f"{i}.txt", f"document {i} about topic t{i}".encode())},
                    data={"purpose": "assistants"},
                )
            ).json()["id"]
            await http.post(f"/v1/vector_stores/{vs['id']}/files", json={"file_id": fid})
        await app.state.ctx.kb.drain()
        r = await http.post(f"/v1/vector_stores/{vs['id']}/reembed", json={"model": "nope"})
        assert r.status_code == 404
        job = (
            await http.post(
                f"/v1/vector_stores/{vs['id']}/reembed", json={"model": "fake-embed-32"}
            )
        ).json()
        assert job["object"] == "vector_store.job" and job["total"] == 3
        for _ in range(200):
            job = (await http.get(f"/v1/vector_stores/{vs['id']}/jobs/{job['id']}")).json()
            if job["status"] != "in_progress":
                break
            await asyncio.sleep(0.02)
        assert job["status"] == "completed" and job["progress"] == 3
        after = (await http.get(f"/v1/vector_stores/{vs['id']}")).json()
        assert after["embedding_model"] == "fake-embed-32" and after["dimensions"] == 32
        hits = (
            await http.post(
                f"/v1/vector_stores/{vs['id']}/search",
                json={"query": "topic t2", "ranking_options": {"ranker": "none"}},
            )
        ).json()["data"]
        assert "t2" in hits[0]["content"][0]["text"]
        backend = app.state.ctx.kb.backend
        assert backend.name == kb_backend
        if kb_backend == "sqlite":
            assert backend.indexes.get(vs["id"]).dimensions == 32
        ids, vectors = backend.vectors(vs["id"])
        assert len(ids) == 3 and vectors.shape == (3, 32)
