"""MCP over Streamable HTTP runs every tool as the caller's key: two keys in two projects
against a real server see only their own stores, files and chunks; chunk ids are sealed
tokens that another project's caller (or a forger) cannot read."""

from __future__ import annotations

import asyncio
import io
import stat
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from core.tenancy import Principal
from gateway.compose import compose, mcp_server
from gateway.settings import Settings
from mcp_server.chunk_ids import KEY_FILE, ChunkIds, load_key
from mcp_server.server import build_server
from tests.conftest import FAKE_MODELS, start_server, stop_server

pytestmark = pytest.mark.usefixtures("kb_backend")

AUTH = {
    "keys": [
        {"key": "sk-alice", "project": "team-a"},
        {"key": "sk-bob", "project": "team-b"},
        {"key": "sk-root", "role": "admin"},
    ]
}
PUMP = "To reset the water pump hold the red button for ten seconds."
BILLING = "Refunds reach your bank account within five business days."


def _text(result: Any) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


def _altered(token: str) -> str:
    """The token with one character of its seal changed."""
    at = len("chunk_") + 3
    return token[:at] + ("B" if token[at] != "B" else "C") + token[at + 1 :]


def _store_with(base: str, key: str, name: str, text: str) -> tuple[str, str]:
    """(store id, file id): a store of the key's project holding one ingested file."""
    with openai.OpenAI(api_key=key, base_url=f"{base}/v1", timeout=30) as sdk:
        vs = sdk.vector_stores.create(name="docs")
        sf = sdk.vector_stores.files.upload_and_poll(
            vector_store_id=vs.id, file=(name, io.BytesIO(text.encode()))
        )
    assert sf.status == "completed"
    return vs.id, sf.id


async def _as(base: str, key: str, calls: Any) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        return await calls(client)


def test_each_key_sees_only_its_projects_knowledge_over_http(tmp_path: Path) -> None:
    data = tmp_path / "d"
    server = start_server(
        {"models": FAKE_MODELS, "auth": AUTH, "mcp": {"allow_writes": True}, "data_dir": str(data)},
        tmp_path,
    )
    try:
        base = server.base_url
        a_store, a_file = _store_with(base, "sk-alice", "pump.md", PUMP)
        b_store, b_file = _store_with(base, "sk-bob", "billing.md", BILLING)

        async def alice(client: Client) -> str:
            stores = (await client.call_tool("list_vector_stores", {})).structured_content
            assert [s["id"] for s in stores["vector_stores"]] == [a_store]
            hits = (
                await client.call_tool("search", {"query": "reset the pump"})
            ).structured_content["hits"]
            assert hits and {h["file_id"] for h in hits} == {a_file}
            token = hits[0]["chunk_id"]
            assert isinstance(token, str) and not token.isdigit()
            read = await client.call_tool("read_chunk", {"chunk_id": token, "neighbours": 1})
            assert not read.is_error and read.structured_content["file_id"] == a_file
            assert read.structured_content["chunks"][0]["chunk_id"] == token
            # A name resolves inside the caller's project ("docs" exists in both).
            files = (
                await client.call_tool("list_files", {"vector_store": "docs"})
            ).structured_content
            assert [f["file_id"] for f in files["files"]] == [a_file]
            return str(token)

        async def bob(client: Client, token: str) -> None:
            stores = (await client.call_tool("list_vector_stores", {})).structured_content
            assert [s["id"] for s in stores["vector_stores"]] == [b_store]
            hits = (
                await client.call_tool("search", {"query": "reset the pump"})
            ).structured_content["hits"]
            assert {h["file_id"] for h in hits} <= {b_file}
            for name, args in [
                ("read_chunk", {"chunk_id": token}),
                ("read_chunk", {"chunk_id": _altered(token)}),
                ("read_chunk", {"chunk_id": "1"}),
                ("search", {"query": "pump", "vector_store": a_store}),
                ("list_files", {"vector_store": a_store}),
                ("add_text", {"vector_store": a_store, "text": "bob was here"}),
                ("delete_file", {"vector_store": a_store, "file_id": a_file}),
            ]:
                res = await client.call_tool(name, args)
                assert res.is_error, (name, args)
                assert "does not exist" in _text(res) or "is not in" in _text(res), _text(res)
            # Bob's write by the shared name lands in his own store.
            res = await client.call_tool("add_text", {"vector_store": "docs", "text": "bob note"})
            assert not res.is_error and res.structured_content["vector_store_id"] == b_store

        async def root(client: Client) -> None:
            stores = (await client.call_tool("list_vector_stores", {})).structured_content
            assert {s["id"] for s in stores["vector_stores"]} == {a_store, b_store}

        async def run() -> None:
            token = await _as(base, "sk-alice", alice)
            await _as(base, "sk-bob", lambda c: bob(c, token))
            await _as(base, "sk-root", root)
            # Alice's store is as she left it (Bob's add_text went to his own "docs").
            async with openai.AsyncOpenAI(
                api_key="sk-alice", base_url=f"{base}/v1", timeout=30
            ) as sdk:
                listed = sdk.vector_stores.files.list(vector_store_id=a_store)
                files = [f.id async for f in listed]
            assert files == [a_file]

        asyncio.run(run())
    finally:
        stop_server(server)
    key = data / KEY_FILE
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_chunk_ids_are_sealed_tokens_only_their_install_opens(tmp_path: Path) -> None:
    key = load_key(tmp_path)
    assert load_key(tmp_path) == key  # kept, not made anew
    ids = ChunkIds(key)
    token = ids.seal("vs_abc", 42)
    assert not token.isdigit()
    assert ids.open(token) == ("vs_abc", 42)
    assert ids.seal("vs_abc", 43) != token
    assert ChunkIds(load_key(tmp_path / "other")).open(token) is None
    for forged in ("42", "chunk_", "chunk_!!", _altered(token), token[:-1], token.upper()):
        assert ids.open(forged) is None, forged


async def test_writable_stores_names_ids_and_only_unambiguous_names(tmp_path: Path) -> None:
    def settings(**mcp: Any) -> Settings:
        return Settings(
            models=FAKE_MODELS, data_dir=tmp_path, load_in_background=False, log_json=False, mcp=mcp
        )

    ctx = compose(settings())
    await ctx.registry.load()
    kb = ctx.kb
    try:
        team_a = Principal(project="team-a", role="member")
        team_b = Principal(project="team-b", role="member")
        docs_a = (await kb.create_store("docs", who=team_a)).id
        docs_b = (await kb.create_store("docs", who=team_b)).id
        solo = (await kb.create_store("solo", who=team_a)).id

        async def add(cfg: Settings, store: str) -> bool:
            server = build_server(kb, cfg.mcp)
            async with Client(server) as client:
                res = await client.call_tool("add_text", {"vector_store": store, "text": "note"})
                return not res.is_error

        by_name = settings(allow_writes=True, writable_stores=["docs", "solo"])
        # "docs" names two stores (in two projects): neither is writable through the name.
        assert not await add(by_name, docs_a) and not await add(by_name, docs_b)
        assert await add(by_name, solo)
        by_id = settings(allow_writes=True, writable_stores=[docs_b])
        assert await add(by_id, docs_b) and not await add(by_id, docs_a)
    finally:
        kb.close()
        ctx.response_api.store.close()
        await ctx.registry.close()


async def test_a_configured_chunk_id_key_seals_the_ids_and_a_bad_one_stops_startup(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="chunk_id_key"):
        Settings(models=FAKE_MODELS, data_dir=tmp_path, mcp={"chunk_id_key": "not-hex"})
    key = "ab" * 32
    settings = Settings(
        models=FAKE_MODELS,
        data_dir=tmp_path,
        load_in_background=False,
        log_json=False,
        mcp={"chunk_id_key": key},
    )
    ctx = compose(settings)
    await ctx.registry.load()
    kb = ctx.kb
    try:
        store = (await kb.create_store("docs")).id
        await kb.add_text(store, PUMP, title="pump.md")
        async with Client(mcp_server(ctx)) as client:
            hits = (await client.call_tool("search", {"query": "pump"})).structured_content["hits"]
        opened = ChunkIds(bytes.fromhex(key)).open(hits[0]["chunk_id"])
        assert opened is not None and opened[0] == store
        assert not (tmp_path / KEY_FILE).exists()
    finally:
        kb.close()
        ctx.response_api.store.close()
        await ctx.registry.close()
