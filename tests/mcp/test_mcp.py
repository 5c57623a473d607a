"""The MCP server through the SDK's own client: in memory, over stdio against a
subprocess, and over Streamable HTTP against a real uvicorn server."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from chat.core import ChatCore
from gateway.compose import compose, mcp_server
from gateway.settings import Settings
from gateway.state import AppContext
from mcp_server.server import build_server
from tests.conftest import FAKE_MODELS, ROOT, start_server, stop_server

pytestmark = pytest.mark.usefixtures("kb_backend")

READ_TOOLS = {"search", "list_vector_stores", "list_files", "read_chunk", "ask"}
WRITE_TOOLS = {"add_text", "ingest_url", "web_search_ingest", "delete_file"}
DOCS = {
    "pump.md": "To reset the water pump hold the red button for ten seconds.",
    "billing.md": "Refunds reach your bank account within five business days.",
}


async def _kb_with_docs(settings: Settings) -> tuple[Any, AppContext, str]:
    ctx = compose(settings)
    await ctx.registry.load()
    kb = ctx.kb
    await kb.start()
    cid = (await kb.create_store("manuals")).id
    for name, text in DOCS.items():
        await kb.add_text(cid, text, title=name, attributes={"kind": name.split(".")[0]})
    return kb, ctx, cid


def _asker(kb: Any, ctx: AppContext, settings: Settings) -> ChatCore:
    return ctx.core


def _settings(tmp: Path, **mcp: Any) -> Settings:
    return Settings(
        models=FAKE_MODELS, data_dir=tmp, load_in_background=False, log_json=False, mcp=mcp
    )


@pytest.fixture
async def kb_env(tmp_path: Path) -> AsyncIterator[tuple[Any, AppContext, str, Path]]:
    kb, ctx, cid = await _kb_with_docs(_settings(tmp_path))
    yield kb, ctx, cid, tmp_path
    await kb.stop()
    kb.close()
    ctx.response_api.store.close()
    await ctx.registry.close()


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def test_in_memory_read_only_tools(kb_env: Any) -> None:
    kb, ctx, cid, tmp = kb_env
    server = build_server(kb, _settings(tmp).mcp, _asker(kb, ctx, _settings(tmp)))
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == READ_TOOLS
        assert (
            tools["search"].output_schema is not None
            and "query" in tools["search"].input_schema["properties"]
        )
        assert tools["search"].description and "chunk_id" in tools["search"].description

        res = await client.call_tool(
            "search", {"query": "reset the pump red button", "vector_store": "manuals", "top_k": 2}
        )
        assert not res.is_error
        hits = res.structured_content["hits"]
        assert hits[0]["filename"] == "pump.md" and hits[0]["vector_store_id"] == cid
        assert "red button" in _text(res) and "chunk_id" in _text(res)

        res = await client.call_tool(
            "search",
            {"query": "refunds", "filters": {"type": "eq", "key": "kind", "value": "billing"}},
        )
        assert [h["filename"] for h in res.structured_content["hits"]] == ["billing.md"]

        stores = (await client.call_tool("list_vector_stores", {})).structured_content[
            "vector_stores"
        ]
        assert stores[0]["name"] == "manuals" and stores[0]["files"] == 2

        files = (await client.call_tool("list_files", {"vector_store": cid})).structured_content[
            "files"
        ]
        assert {f["filename"] for f in files} == set(DOCS) and all(
            f["status"] == "completed" for f in files
        )

        chunk = (
            await client.call_tool("read_chunk", {"chunk_id": hits[0]["chunk_id"], "neighbours": 1})
        ).structured_content
        assert chunk["filename"] == "pump.md" and "red button" in chunk["chunks"][0]["text"]

        # Failures a model should read come back as tool errors, naming the problem.
        res = await client.call_tool("search", {"query": "x", "vector_store": "nope"})
        # ... without listing the other stores.
        assert res.is_error and "nope" in _text(res) and "manuals" not in _text(res)
        res = await client.call_tool("search", {"query": "x", "filters": {"type": "like"}})
        assert res.is_error and "filters" in _text(res)
        res = await client.call_tool("read_chunk", {"chunk_id": "chunk_999999"})
        assert res.is_error and "999999" in _text(res)
        res = await client.call_tool("search", {"query": "x", "top_k": 500})
        assert res.is_error
        res = await client.call_tool("ask", {"question": "x"})
        assert res.is_error and "profile" in _text(res)
        res = await client.call_tool("add_text", {"vector_store": "manuals", "text": "x"})
        assert res.is_error


async def test_in_memory_write_tools(kb_env: Any) -> None:
    kb, ctx, _cid, tmp = kb_env
    other = (await kb.create_store("scratch")).id
    settings = _settings(tmp, allow_writes=True, writable_stores=["scratch"])
    server = build_server(kb, settings.mcp, _asker(kb, ctx, settings))
    async with Client(server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == READ_TOOLS | WRITE_TOOLS
        res = await client.call_tool("add_text", {"vector_store": "manuals", "text": "no"})
        assert res.is_error and "read-only" in _text(res)
        res = await client.call_tool(
            "add_text",
            {
                "vector_store": "scratch",
                "text": "The lighthouse keeper logs fog at dusk.",
                "title": "log.md",
            },
        )
        assert not res.is_error and res.structured_content["status"] == "completed"
        fid = res.structured_content["file_id"]
        found = await client.call_tool("search", {"query": "lighthouse fog", "vector_store": other})
        assert found.structured_content["hits"][0]["file_id"] == fid
        res = await client.call_tool(
            "ingest_url", {"vector_store": "scratch", "url": "http://127.0.0.1:9/x"}
        )
        assert res.is_error and "non-public" in _text(res)
        res = await client.call_tool("delete_file", {"vector_store": "scratch", "file_id": fid})
        assert res.structured_content["chunks_removed"] == 1
        res = await client.call_tool("delete_file", {"vector_store": "scratch", "file_id": fid})
        assert res.is_error and fid in _text(res)


async def test_ask_without_a_profile_answers_from_the_stores_with_the_first_chat_model(
    tmp_path: Path,
) -> None:
    chat = {
        "id": "fake-chat",
        "kind": "chat",
        "engine": "fake",
        "options": {"script": ["Hold the red button [1]."]},
    }
    settings = Settings(
        models=[*FAKE_MODELS, chat],
        data_dir=tmp_path,
        load_in_background=False,
        log_json=False,
        limits={"max_filter_depth": 1},
    )
    kb, ctx, _cid = await _kb_with_docs(settings)
    try:
        async with Client(mcp_server(ctx)) as client:
            res = await client.call_tool("ask", {"question": "How do I reset the water pump?"})
            assert not res.is_error, _text(res)
            out = res.structured_content
            assert out["profile"] is None and out["model"] == "fake-chat"
            assert out["answer"] == "Hold the red button [1]."
            assert out["citations"][0]["filename"] == "pump.md"
            assert "fake-chat" in _text(res)
            # The composed server keeps the configured filter limits (depth 1 here).
            nested = {
                "type": "and",
                "filters": [{"type": "eq", "key": "kind", "value": "pump"}],
            }
            res = await client.call_tool("search", {"query": "pump", "filters": nested})
            assert res.is_error and "filters" in _text(res)
            flat = {"type": "eq", "key": "kind", "value": "pump"}
            res = await client.call_tool("search", {"query": "pump", "filters": flat})
            assert not res.is_error
    finally:
        await kb.stop()
        kb.close()
        ctx.response_api.store.close()
        await ctx.registry.close()


async def test_stdio_subprocess(kb_env: Any) -> None:
    kb, _, _, tmp = kb_env
    await kb.stop()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"models": FAKE_MODELS, "data_dir": str(tmp), "log_json": False}))
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "gateway.cli", "mcp", "--config", str(cfg)],
        cwd=str(ROOT),
        # The knowledge-base backend of this test run; the data dir is the config's.
        env={k: v for k, v in os.environ.items() if k != "RWKV_RAG_DATA_DIR"},
    )
    async with Client(params) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == READ_TOOLS
        res = await client.call_tool("search", {"query": "refunds bank account"})
        assert res.structured_content["hits"][0]["filename"] == "billing.md"


def test_streamable_http_on_the_real_server(tmp_path: Path) -> None:
    import asyncio

    server = start_server(
        {"models": FAKE_MODELS, "api_keys": ["sk-mcp"], "data_dir": str(tmp_path / "d")}, tmp_path
    )
    try:
        base = server.base_url
        with httpx2.Client(base_url=base, headers={"Authorization": "Bearer sk-mcp"}) as http:
            vs = http.post("/v1/vector_stores", json={"name": "manuals"}).json()["id"]
            fid = http.post(
                "/v1/files",
                files={"file": ("pump.md", DOCS["pump.md"].encode())},
                data={"purpose": "assistants"},
            ).json()["id"]
            http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid})

        async def run() -> None:
            async with (
                httpx2.AsyncClient(
                    headers={"Authorization": "Bearer sk-mcp"}, timeout=30
                ) as authed,
                Client(streamable_http_client(f"{base}/mcp", http_client=authed)) as client,
            ):
                names = {t.name for t in (await client.list_tools()).tools}
                assert names == READ_TOOLS
                for _ in range(100):
                    res = await client.call_tool(
                        "search", {"query": "reset the pump", "vector_store": "manuals"}
                    )
                    if res.structured_content["hits"]:
                        break
                    await asyncio.sleep(0.05)
                assert res.structured_content["hits"][0]["file_id"] == fid
            # No key: refused before MCP sees the request.
            async with httpx2.AsyncClient(timeout=10) as anon:
                r = await anon.post(
                    f"{base}/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Accept": "application/json, text/event-stream"},
                )
                assert r.status_code == 401
            # A Host outside the allowlist (DNS rebinding) is refused by the transport.
            async with httpx2.AsyncClient(
                timeout=10, headers={"Authorization": "Bearer sk-mcp", "Host": "evil.example"}
            ) as evil:
                r = await evil.post(
                    f"{base}/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                    headers={"Accept": "application/json, text/event-stream"},
                )
                assert r.status_code == 421

        asyncio.run(run())
    finally:
        stop_server(server)
