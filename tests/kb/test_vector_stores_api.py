"""The Files and Vector Stores API through the official openai SDK against the real app."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from tests.conftest import asgi_client, fake_settings
from tests.kb.fixtures import encrypt_pdf, make_pdf, make_xlsx, make_zip_bomb

pytestmark = pytest.mark.usefixtures("kb_backend")

DOCS = {
    "pump.md": "# Pump\n## Reset\nTo reset the water pump, hold the red button for ten seconds.",
    "billing.txt": "Invoices are sent on the first business day. Refunds take five days.",
    "museum.txt": "The museum opens at nine and closes at six. Tickets are sold online.",
}


@pytest.fixture
async def sdk(tmp_path: Path) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    app = create_app(fake_settings(data_dir=str(tmp_path)))
    async with asgi_client(app) as http:
        yield (
            openai.AsyncOpenAI(
                api_key="x", base_url="http://testserver.local/v1", http_client=http
            ),
            http,
        )


async def _upload(sdk: openai.AsyncOpenAI, name: str, data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    f = await sdk.files.create(file=(name, io.BytesIO(raw)), purpose="assistants")
    return f.id


async def test_files_api_roundtrip(sdk: Any) -> None:
    client, http = sdk
    fid = await _upload(client, "notes.txt", "hello files")
    got = await client.files.retrieve(fid)
    assert got.filename == "notes.txt" and got.bytes == 11 and got.purpose == "assistants"
    content = await client.files.content(fid)
    assert content.read() == b"hello files"
    listed = [f.id async for f in client.files.list()]
    assert fid in listed
    deleted = await client.files.delete(fid)
    assert deleted.deleted and deleted.id == fid
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(fid)
    r = await http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "nope"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    r = await http.post("/v1/files", json={"purpose": "assistants"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]["message"]


async def test_upload_over_the_limit_is_413_and_keeps_nothing(tmp_path: Path) -> None:
    app = create_app(fake_settings(data_dir=str(tmp_path), knowledge={"max_upload_bytes": 4096}))
    async with asgi_client(app) as http:
        r = await http.post(
            "/v1/files", files={"file": ("big.txt", b"x" * 10_000)}, data={"purpose": "assistants"}
        )
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"
        spool = app.state.ctx.kb.backend.upload_path("probe").parent
        assert list(spool.iterdir()) == []
        r = await http.get("/v1/files")
        assert r.json()["data"] == []


async def test_vector_store_upload_and_poll_and_search(sdk: Any) -> None:
    client, _ = sdk
    vs = await client.vector_stores.create(name="manuals", metadata={"team": "ops"})
    assert vs.name == "manuals" and vs.metadata == {"team": "ops"}
    for name, text in DOCS.items():
        done = await client.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=(name, io.BytesIO(text.encode()))
        )
        assert done.status == "completed", done.last_error
    vs = await client.vector_stores.retrieve(vs.id)
    assert vs.file_counts.completed == 3 and vs.file_counts.total == 3
    assert vs.status == "completed" and vs.usage_bytes > 0
    metrics = (await sdk[1].get("/metrics")).text
    assert f'rwkv_rag_kb_chunks{{vector_store="{vs.id}"}} 3.0' in metrics
    assert f'rwkv_rag_kb_files{{status="completed",vector_store="{vs.id}"}} 3.0' in metrics
    page = await client.vector_stores.search(vs.id, query="reset the pump red button")
    first = page.data[0]
    assert first.filename == "pump.md"
    assert "red button" in first.content[0].text
    # Markdown headings ride along as context.
    assert first.content[0].text.startswith("Pump > Reset")
    assert 0 < first.score <= 1


async def test_filters_paging_and_attributes(sdk: Any) -> None:
    client, http = sdk
    vs = await client.vector_stores.create(name="f")
    ids = {}
    for i, (name, text) in enumerate(DOCS.items()):
        fid = await _upload(client, name, text)
        ids[name] = fid
        await client.vector_stores.files.create_and_poll(
            vector_store_id=vs.id,
            file_id=fid,
            attributes={"year": 2020 + i, "kind": name.split(".")[1], "public": i != 1},
        )

    async def names(filters: dict[str, Any]) -> set[str]:
        page = await client.vector_stores.search(
            vs.id,
            query="pump invoices museum",
            filters=filters,
            max_num_results=10,  # type: ignore[arg-type]
        )
        return {d.filename for d in page.data}

    assert await names({"type": "eq", "key": "kind", "value": "md"}) == {"pump.md"}
    assert await names({"type": "ne", "key": "kind", "value": "md"}) == {
        "billing.txt",
        "museum.txt",
    }
    assert await names({"type": "gte", "key": "year", "value": 2021}) == {
        "billing.txt",
        "museum.txt",
    }
    assert await names({"type": "lt", "key": "year", "value": 2021}) == {"pump.md"}
    assert await names({"type": "in", "key": "year", "value": [2020, 2022]}) == {
        "pump.md",
        "museum.txt",
    }
    assert await names({"type": "nin", "key": "year", "value": [2020, 2022]}) == {"billing.txt"}
    assert await names(
        {
            "type": "and",
            "filters": [
                {"type": "eq", "key": "public", "value": True},
                {"type": "gt", "key": "year", "value": 2020},
            ],
        }
    ) == {"museum.txt"}
    assert await names(
        {
            "type": "or",
            "filters": [
                {"type": "eq", "key": "kind", "value": "md"},
                {"type": "eq", "key": "year", "value": 2021},
            ],
        }
    ) == {"pump.md", "billing.txt"}
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search",
        json={"query": "x", "filters": {"type": "like", "key": "a", "value": 1}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "filters"
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search", json={"query": "x", "max_num_results": 51}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_num_results"

    # Paging over store files: asc, limit 2, after.
    first = await client.vector_stores.files.list(vs.id, limit=2, order="asc")
    assert [f.id for f in first.data] == [ids["pump.md"], ids["billing.txt"]] and first.has_more
    rest = await client.vector_stores.files.list(
        vs.id, limit=2, order="asc", after=first.data[-1].id
    )
    assert [f.id for f in rest.data] == [ids["museum.txt"]] and not rest.has_more
    every = [f.id async for f in client.vector_stores.files.list(vs.id, limit=1)]
    assert every == [ids["museum.txt"], ids["billing.txt"], ids["pump.md"]]
    # Attributes can be updated and take effect in filters.
    await client.vector_stores.files.update(
        file_id=ids["pump.md"], vector_store_id=vs.id, attributes={"kind": "txt"}
    )
    assert await names({"type": "eq", "key": "kind", "value": "md"}) == set()


async def test_vector_store_paging_update_delete(sdk: Any) -> None:
    client, _ = sdk
    made = [(await client.vector_stores.create(name=f"s{i}")).id for i in range(5)]
    page = await client.vector_stores.list(limit=2)
    assert [v.id for v in page.data] == made[::-1][:2] and page.has_more
    before = await client.vector_stores.list(limit=2, order="asc", before=made[3])
    assert [v.id for v in before.data] == made[1:3]
    every = [v.id async for v in client.vector_stores.list(limit=2, order="asc")]
    assert every == made
    upd = await client.vector_stores.update(
        made[0], name="renamed", expires_after={"anchor": "last_active_at", "days": 2}
    )
    assert upd.name == "renamed" and upd.expires_at == upd.last_active_at + 2 * 86400
    d = await client.vector_stores.delete(made[0])
    assert d.deleted
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(made[0])


async def test_dedupe_and_delete_removes_chunks_everywhere(sdk: Any) -> None:
    client, http = sdk
    vs = await client.vector_stores.create(name="d")
    text = "The lighthouse keeper logs the fog horn every evening."
    a = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("a.txt", io.BytesIO(text.encode()))
    )
    # Same content again under another name: no new chunks.
    b = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("b.txt", io.BytesIO(text.encode()))
    )
    info = (await http.get(f"/v1/vector_stores/{vs.id}")).json()
    assert info["chunk_count"] == 1 and info["file_counts"]["completed"] == 2
    # Attaching the same file again is a no-op.
    again = await client.vector_stores.files.create(vector_store_id=vs.id, file_id=a.id)
    assert again.status == "completed"
    # Deleting one owner keeps the shared chunk for the other.
    await client.vector_stores.files.delete(file_id=a.id, vector_store_id=vs.id)
    page = await client.vector_stores.search(vs.id, query="lighthouse fog horn")
    assert [d.file_id for d in page.data] == [b.id]
    # Deleting the last owner removes it from FTS (keyword) and FAISS (dense) alike.
    await client.files.delete(b.id)
    for ranker in ("auto", "none"):
        page = await client.vector_stores.search(
            vs.id, query="lighthouse fog horn", ranking_options={"ranker": ranker}
        )  # type: ignore[typeddict-item]
        assert page.data == []
    info = (await http.get(f"/v1/vector_stores/{vs.id}")).json()
    assert info["chunk_count"] == 0 and info["file_counts"]["total"] == 0
    kb = http._transport.app.state.ctx.kb  # type: ignore[attr-defined]
    assert kb.backend.count(vs.id) == 0
    if kb.backend.name == "sqlite":
        assert len(kb.backend.indexes.get(vs.id)) == 0


async def test_file_batches_and_chunks_listing(sdk: Any) -> None:
    client, http = sdk
    vs = await client.vector_stores.create(name="b")
    fids = [await _upload(client, n, t) for n, t in DOCS.items()]
    batch = await client.vector_stores.file_batches.create_and_poll(
        vector_store_id=vs.id,
        file_ids=fids,
        attributes={"batch": True},  # type: ignore[call-arg]
    )
    assert batch.status == "completed" and batch.file_counts.completed == 3
    files = [
        f
        async for f in client.vector_stores.file_batches.list_files(
            batch_id=batch.id, vector_store_id=vs.id
        )
    ]
    assert {f.id for f in files} == set(fids) and all(
        f.attributes == {"batch": True} for f in files
    )
    r = await http.get(f"/v1/vector_stores/{vs.id}/files/{fids[0]}/chunks")
    chunks = r.json()["data"]
    assert (
        chunks
        and chunks[0]["object"] == "vector_store.file.chunk"
        and "red button" in chunks[0]["text"]
    )
    content = await client.vector_stores.files.content(file_id=fids[1], vector_store_id=vs.id)
    assert "Refunds" in "".join([c.text or "" async for c in content])


async def test_loaders_through_the_api(sdk: Any, tmp_path: Path) -> None:
    client, http = sdk
    vs = await client.vector_stores.create(
        name="loaders",
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
        },
    )
    pdf = make_pdf(
        [
            ["The warranty lasts two years."],
            ["Returns need the original receipt."],
            ["Shipping is free above fifty euros."],
        ]
    )
    ok = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("guide.pdf", io.BytesIO(pdf))
    )
    assert ok.status == "completed"
    page = await client.vector_stores.search(vs.id, query="original receipt returns")
    hit = page.data[0]
    assert hit.filename == "guide.pdf" and (hit.model_extra or {})["page"] == 2
    zh = make_pdf(
        [["退款需要五到七个工作日才能到账。"], ["发票在每月第一个工作日发送。"]], chinese=True
    )
    await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("zh.pdf", io.BytesIO(zh))
    )
    page = await client.vector_stores.search(vs.id, query="发票什么时候发送")
    assert page.data[0].filename == "zh.pdf" and "发票" in page.data[0].content[0].text
    xlsx = make_xlsx(
        {
            "Staff": [["Name", "Role"], ["Ada", "Engineer"], ["Bo", "Chef"]],
            "Prices": [["Item", "Price"], ["Tea", 3.5]],
        }
    )
    await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("book.xlsx", io.BytesIO(xlsx))
    )
    # (ranker none: the fake reranker scores word overlap, which says nothing here)
    page = await client.vector_stores.search(
        vs.id, query="who is the chef", max_num_results=1, ranking_options={"ranker": "none"}
    )
    extra = page.data[0].model_extra or {}
    assert "Name: Bo; Role: Chef" in page.data[0].content[0].text
    assert extra["sheet"] == "Staff" and extra["row"] == 3
    html = b"<html><head><title>Pump guide</title><script>var secret=1;</script></head><body><p>Hold the red button to reset.</p></body></html>"
    await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("p.html", io.BytesIO(html))
    )
    page = await client.vector_stores.search(vs.id, query="red button reset", max_num_results=1)
    assert page.data[0].filename == "p.html" and "secret" not in page.data[0].content[0].text

    enc = encrypt_pdf(make_pdf([["classified"]]), "pw")
    failed = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("enc.pdf", io.BytesIO(enc))
    )
    assert failed.status == "failed" and failed.last_error is not None
    assert "encrypted" in failed.last_error.message and failed.last_error.code == "invalid_file"
    fid = await _upload(client, "enc2.pdf", enc)
    r = await http.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": fid, "password": "pw"})
    assert "password" not in r.json()
    done = await client.vector_stores.files.poll(fid, vector_store_id=vs.id)
    assert done.status == "completed"
    bad = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("bad.pdf", io.BytesIO(b"%PDF-1.4\ngarbage"))
    )
    assert bad.status == "failed" and "corrupt" in (
        bad.last_error.message if bad.last_error else ""
    )
    bomb = tmp_path / "bomb.xlsx"
    make_zip_bomb(bomb, 8)
    boom = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("bomb.xlsx", io.BytesIO(bomb.read_bytes()))
    )
    assert boom.status == "failed" and "zip bomb" in (
        boom.last_error.message if boom.last_error else ""
    )
    # Failures never lose what was stored before.
    vs_now = await client.vector_stores.retrieve(vs.id)
    assert vs_now.file_counts.completed == 5 and vs_now.file_counts.failed == 3


async def test_bad_ids_are_404_in_openai_shape(sdk: Any) -> None:
    client, http = sdk
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.search("vs_missing", query="x")
    vs = await client.vector_stores.create(name="x")
    with pytest.raises(openai.NotFoundError) as err:
        await client.vector_stores.files.create(vector_store_id=vs.id, file_id="file-missing")
    assert "file-missing" in str(err.value)
    r = await http.post(
        "/v1/vector_stores",
        json={
            "chunking_strategy": {
                "type": "static",
                "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0},
            }
        },
    )
    assert r.status_code == 400


async def test_query_lists_rewrite_and_score_threshold(sdk: Any) -> None:
    client, http = sdk
    vs = await client.vector_stores.create(name="q")
    for name, text in DOCS.items():
        await client.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=(name, io.BytesIO(text.encode()))
        )
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search",
        json={
            "query": "Could you please tell me how to reset the water pump?",
            "rewrite_query": True,
            "ranking_options": {"ranker": "none"},
        },
    )
    body = r.json()
    assert body["search_query"] == ["how to reset the water pump"]
    assert body["data"][0]["filename"] == "pump.md"
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search",
        json={
            "query": ["museum tickets", "refunds invoices"],
            "max_num_results": 2,
            "ranking_options": {"ranker": "none"},
        },
    )
    assert {d["filename"] for d in r.json()["data"]} == {"museum.txt", "billing.txt"}
    everything = (
        await http.post(
            f"/v1/vector_stores/{vs.id}/search",
            json={"query": "pump", "ranking_options": {"ranker": "none"}},
        )
    ).json()["data"]
    cut = everything[0]["score"] - 1e-6
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search",
        json={"query": "pump", "ranking_options": {"ranker": "none", "score_threshold": cut}},
    )
    assert all(d["score"] >= cut for d in r.json()["data"]) and len(r.json()["data"]) < len(
        everything
    )
    r = await http.post(
        f"/v1/vector_stores/{vs.id}/search",
        json={"query": "pump", "ranking_options": {"ranker": "magic"}},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "ranking_options.ranker"


async def test_unsupported_types_and_model_mismatch(tmp_path: Path) -> None:
    settings = fake_settings(
        data_dir=str(tmp_path), knowledge={"allowed_extensions": [".txt", ".md"]}
    )
    async with asgi_client(create_app(settings)) as http:
        client = openai.AsyncOpenAI(
            api_key="x", base_url="http://testserver.local/v1", http_client=http
        )
        vs = await client.vector_stores.create(name="t")
        binary = await client.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("blob.txt", io.BytesIO(b"\x00\x01\x02binary"))
        )
        assert (
            binary.status == "failed"
            and binary.last_error
            and binary.last_error.code == "unsupported_file"
        )
        pdf = await client.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("a.pdf", io.BytesIO(make_pdf([["hello"]])))
        )
        assert (
            pdf.status == "failed"
            and pdf.last_error
            and "allowed_extensions" in pdf.last_error.message
        )
        ok = await client.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=("a.md", io.BytesIO(b"# Title\nfine"))
        )
        assert ok.status == "completed"
        r = await http.post(
            f"/v1/vector_stores/{vs.id}/search", json={"query": "fine", "model": "other-model"}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "embedding_model_mismatch"
        r = await http.post(
            f"/v1/vector_stores/{vs.id}/search", json={"query": "fine", "model": "fake-embed"}
        )
        assert r.status_code == 200 and r.json()["data"]


async def test_bad_knowledge_base_inputs_are_4xx_in_openai_shape(sdk: Any) -> None:
    _, http = sdk
    vs = (await http.post("/v1/vector_stores", json={"name": "bad"})).json()["id"]
    fid = (
        await http.post(
            "/v1/files", files={"file": ("a.txt", b"hello")}, data={"purpose": "assistants"}
        )
    ).json()["id"]
    boundary = "XyZ"
    cases: list[tuple[str, str, dict[str, Any], int, str | None]] = [
        (
            "POST",
            "/v1/files",
            {"data": {"purpose": "assistants"}, "files": {"other": ("a.txt", b"x")}},
            400,
            "file",
        ),
        (
            "POST",
            "/v1/files",
            {
                "content": b"--XyZ\r\nbroken",
                "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
            },
            400,
            "file",
        ),
        (
            "POST",
            "/v1/vector_stores",
            {"json": {"metadata": {f"k{i}": "v" for i in range(17)}}},
            400,
            "metadata",
        ),
        (
            "POST",
            f"/v1/vector_stores/{vs}/files",
            {"json": {"file_id": fid, "attributes": {"a": [1, 2]}}},
            400,
            "attributes",
        ),
        ("GET", "/v1/vector_stores?limit=0", {}, 400, "limit"),
        ("GET", "/v1/vector_stores?order=sideways", {}, 400, "order"),
        ("GET", "/v1/vector_stores?after=vs_nope", {}, 400, "after"),
        ("GET", f"/v1/vector_stores/{vs}/files?filter=done", {}, 400, "filter"),
        (
            "POST",
            f"/v1/vector_stores/{vs}/search",
            {"json": {"query": "x", "ranking_options": {"score_threshold": 2}}},
            400,
            "ranking_options.score_threshold",
        ),
        ("POST", f"/v1/vector_stores/{vs}/search", {"json": {"query": "  "}}, 400, "query"),
        ("POST", f"/v1/vector_stores/{vs}/file_batches", {"json": {}}, 400, "file_ids"),
        ("GET", f"/v1/vector_stores/{vs}/file_batches/vsfb_nope", {}, 404, "batch_id"),
        ("GET", f"/v1/vector_stores/{vs}/jobs/job_nope", {}, 404, "job_id"),
        (
            "POST",
            f"/v1/vector_stores/{vs}/urls",
            {"json": {"url": "ftp://example.com/x"}},
            400,
            "url",
        ),
    ]
    for method, url, kwargs, status, param in cases:
        r = await http.request(method, url, **kwargs)
        assert r.status_code == status, (url, r.text)
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["message"], (url, err)
        assert err["param"] == param, (url, err)
    r = await http.get(f"/v1/vector_stores/{vs}/files/{fid}/chunks?limit=0")
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
