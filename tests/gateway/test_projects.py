"""Projects own knowledge-base data: two keys in two projects through the official SDK, on
both backends. Another project's file, store, store file or batch is missing (404, the
same as an unknown id), lists show the caller's own only, an admin sees every project and
the OpenAI-Project header narrows it."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.errors import NotFoundError
from core.tenancy import Principal
from gateway.app import create_app
from tests.conftest import FAKE_MODELS, asgi_client, fake_settings

pytestmark = pytest.mark.usefixtures("kb_backend")

AUTH = {
    "keys": [
        {"key": "sk-alice", "project": "team-a"},
        {"key": "sk-bob", "project": "team-b"},
        {"key": "sk-root", "role": "admin"},
    ]
}
BASE = "http://testserver.local/v1"
PUMP = "To reset the water pump, hold the red button for ten seconds."


@dataclass
class Clients:
    http: httpx.AsyncClient
    alice: openai.AsyncOpenAI
    bob: openai.AsyncOpenAI
    root: openai.AsyncOpenAI

    def sdk(self, key: str, project: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key, base_url=BASE, http_client=self.http, project=project
        )


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[Clients]:
    app = create_app(fake_settings(data_dir=str(tmp_path), auth=AUTH))
    async with asgi_client(app) as http:

        def sdk(key: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(api_key=key, base_url=BASE, http_client=http)

        yield Clients(http, sdk("sk-alice"), sdk("sk-bob"), sdk("sk-root"))


async def _upload(client: openai.AsyncOpenAI, name: str, text: str) -> str:
    f = await client.files.create(file=(name, io.BytesIO(text.encode())), purpose="assistants")
    return f.id


async def _missing(call: Awaitable[Any]) -> None:
    """The call is answered 404 not_found, exactly like an unknown id."""
    with pytest.raises(openai.NotFoundError) as caught:
        await call
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body.get("type"), body.get("code")) == ("invalid_request_error", "not_found")


@dataclass
class AliceData:
    file_id: str
    store_id: str
    batch_id: str
    batch_file: str


async def _alice_data(c: Clients) -> AliceData:
    fid = await _upload(c.alice, "pump.md", PUMP)
    vs = await c.alice.vector_stores.create(name="docs")
    sf = await c.alice.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=fid)
    assert sf.status == "completed"
    other = await _upload(c.alice, "billing.md", "Refunds take five business days.")
    batch = await c.alice.vector_stores.file_batches.create_and_poll(
        vector_store_id=vs.id, file_ids=[other]
    )
    assert batch.status == "completed"
    return AliceData(fid, vs.id, batch.id, other)


async def _alice_is_intact(c: Clients, a: AliceData) -> None:
    assert (await c.alice.files.content(a.file_id)).read() == PUMP.encode()
    vs = await c.alice.vector_stores.retrieve(a.store_id)
    assert vs.name == "docs" and vs.file_counts.completed == 2
    sf = await c.alice.vector_stores.files.retrieve(file_id=a.file_id, vector_store_id=a.store_id)
    assert sf.status == "completed" and not sf.attributes
    batch = await c.alice.vector_stores.file_batches.retrieve(
        a.batch_id, vector_store_id=a.store_id
    )
    assert batch.status == "completed"
    hits = await c.alice.vector_stores.search(a.store_id, query="reset the water pump")
    assert any(h.file_id == a.file_id for h in hits.data)


async def test_a_member_finds_nothing_of_another_project_and_leaves_it_intact(
    clients: Clients,
) -> None:
    c = clients
    a = await _alice_data(c)
    bob = c.bob
    mine = await _upload(bob, "mine.md", "Bob's own notes about bicycles.")
    own_store = await bob.vector_stores.create(name="bob-notes")

    # Lists show only Bob's own.
    assert [f.id async for f in bob.files.list()] == [mine]
    assert [s.id async for s in bob.vector_stores.list()] == [own_store.id]

    # Files: retrieve, content, delete.
    await _missing(bob.files.retrieve(a.file_id))
    await _missing(bob.files.content(a.file_id))
    await _missing(bob.files.delete(a.file_id))

    # Stores, by id and by name: retrieve, update, delete, search.
    for ref in (a.store_id, "docs"):
        await _missing(bob.vector_stores.retrieve(ref))
        await _missing(bob.vector_stores.update(ref, name="taken"))
        await _missing(bob.vector_stores.search(ref, query="pump"))
    await _missing(bob.vector_stores.delete(a.store_id))

    # Store files: list, retrieve, update attributes, detach, content, attach.
    vsf = bob.vector_stores.files
    await _missing(vsf.list(vector_store_id=a.store_id))
    await _missing(vsf.retrieve(file_id=a.file_id, vector_store_id=a.store_id))
    await _missing(vsf.update(file_id=a.file_id, vector_store_id=a.store_id, attributes={"x": 1}))
    await _missing(vsf.delete(file_id=a.file_id, vector_store_id=a.store_id))
    await _missing(vsf.content(file_id=a.file_id, vector_store_id=a.store_id))
    await _missing(vsf.create(vector_store_id=a.store_id, file_id=mine))
    # Alice's file attached to Bob's own store is a missing file (param file_id).
    with pytest.raises(openai.NotFoundError) as caught:
        await vsf.create(vector_store_id=own_store.id, file_id=a.file_id)
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "file_id"
    await _missing(
        bob.vector_stores.create(name="grab", file_ids=[a.file_id]),
    )

    # Batches: retrieve, list its files, cancel, create (on her store or with her file).
    batches = bob.vector_stores.file_batches
    await _missing(batches.retrieve(a.batch_id, vector_store_id=a.store_id))
    await _missing(batches.list_files(a.batch_id, vector_store_id=a.store_id))
    await _missing(batches.cancel(a.batch_id, vector_store_id=a.store_id))
    await _missing(batches.create(vector_store_id=a.store_id, file_ids=[mine]))
    await _missing(batches.create(vector_store_id=own_store.id, file_ids=[a.batch_file]))
    # Her batch id through Bob's own store is missing too.
    await _missing(batches.retrieve(a.batch_id, vector_store_id=own_store.id))

    # The extras: a file's chunks, URL ingestion, jobs.
    for path in (
        f"/v1/vector_stores/{a.store_id}/files/{a.file_id}/chunks",
        f"/v1/vector_stores/{a.store_id}/jobs",
    ):
        r = await c.http.get(path, headers={"Authorization": "Bearer sk-bob"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"

    for path, body in (
        (f"/v1/vector_stores/{a.store_id}/urls", {"url": "https://example.com/"}),
        (f"/v1/vector_stores/{a.store_id}/reembed", {"model": "fake-embed"}),
        (f"/v1/vector_stores/{a.store_id}/web_search", {"query": "pumps"}),
    ):
        r = await c.http.post(path, json=body, headers={"Authorization": "Bearer sk-bob"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path

    # Paging after her id is no cursor of Bob's.
    r = await c.http.get(
        "/v1/files", params={"after": a.file_id}, headers={"Authorization": "Bearer sk-bob"}
    )
    assert r.status_code == 400

    # Nothing of hers moved.
    await _alice_is_intact(c, a)
    assert {f.id async for f in c.alice.files.list()} == {a.file_id, a.batch_file}
    assert [s.id async for s in c.alice.vector_stores.list()] == [a.store_id]


async def test_two_projects_may_each_have_a_store_of_the_same_name(clients: Clients) -> None:
    c = clients
    a = await c.alice.vector_stores.create(name="docs")
    b = await c.bob.vector_stores.create(name="docs")
    assert a.id != b.id
    assert (await c.alice.vector_stores.retrieve("docs")).id == a.id
    assert (await c.bob.vector_stores.retrieve("docs")).id == b.id
    # Bob's writes by name reach his own store only.
    await c.bob.vector_stores.update("docs", metadata={"owner": "bob"})
    assert (await c.alice.vector_stores.retrieve(a.id)).metadata == {}
    assert (await c.bob.vector_stores.retrieve(b.id)).metadata == {"owner": "bob"}
    # An admin seeing both projects (and owning no "docs" itself) is told the name is
    # ambiguous; inside one project the name is that project's store.
    with pytest.raises(openai.BadRequestError):
        await c.root.vector_stores.retrieve("docs")
    narrowed = c.sdk("sk-root", project="team-b")
    assert (await narrowed.vector_stores.retrieve("docs")).id == b.id
    # An admin's own project wins over the others' for a name.
    own = await c.root.vector_stores.create(name="docs")
    assert (await c.root.vector_stores.retrieve("docs")).id == own.id


async def test_an_admin_sees_every_project_and_the_project_header_narrows_it(
    clients: Clients,
) -> None:
    c = clients
    fa = await _upload(c.alice, "a.md", "alpha")
    fb = await _upload(c.bob, "b.md", "beta")
    va = await c.alice.vector_stores.create(name="a-store")
    vb = await c.bob.vector_stores.create(name="b-store")
    root = c.root
    assert {f.id async for f in root.files.list()} >= {fa, fb}
    assert {s.id async for s in root.vector_stores.list()} == {va.id, vb.id}
    assert (await root.files.content(fa)).read() == b"alpha"
    assert (await root.vector_stores.retrieve(vb.id)).name == "b-store"

    in_b = c.sdk("sk-root", project="team-b")
    assert [f.id async for f in in_b.files.list()] == [fb]
    assert [s.id async for s in in_b.vector_stores.list()] == [vb.id]
    await _missing(in_b.files.retrieve(fa))
    await _missing(in_b.vector_stores.retrieve(va.id))
    # What a narrowed admin creates belongs to that project: its member sees it.
    made = await in_b.vector_stores.create(name="from-admin")
    assert (await c.bob.vector_stores.retrieve(made.id)).name == "from-admin"
    await _missing(c.alice.vector_stores.retrieve(made.id))
    # A member naming another project is refused outright.
    with pytest.raises(openai.AuthenticationError):
        await c.sdk("sk-bob", project="team-a").vector_stores.list()


async def test_paging_a_member_list_counts_only_its_own_rows(clients: Clients) -> None:
    c = clients
    for i in range(3):
        await c.alice.vector_stores.create(name=f"a{i}")
    mine = [(await c.bob.vector_stores.create(name=f"b{i}")).id for i in range(3)]
    await c.alice.vector_stores.create(name="a-last")
    first = await c.bob.vector_stores.list(limit=2, order="asc")
    assert [s.id for s in first.data] == mine[:2] and first.has_more
    rest = await c.bob.vector_stores.list(limit=2, order="asc", after=mine[1])
    assert [s.id for s in rest.data] == mine[2:] and not rest.has_more


async def test_dify_retrieval_finds_only_the_callers_knowledge(clients: Clients) -> None:
    c = clients
    a = await _alice_data(c)

    def ask(key: str) -> Callable[[], Awaitable[httpx.Response]]:
        async def go() -> httpx.Response:
            return await c.http.post(
                "/retrieval",
                json={"knowledge_id": a.store_id, "query": "water pump"},
                headers={"Authorization": f"Bearer {key}"},
            )

        return go

    r = await ask("sk-alice")()
    assert r.status_code == 200 and r.json()["records"]
    r = await ask("sk-bob")()
    assert r.status_code == 404 and r.json()["error_code"] == 2001


FAKE_CHAT = {
    "id": "fake-chat",
    "kind": "chat",
    "engine": "fake",
    "options": {"script": ["Hold the red button [1]."]},
}


@pytest.fixture
async def rag(tmp_path: Path) -> AsyncIterator[tuple[Clients, Any]]:
    settings = fake_settings(data_dir=str(tmp_path), auth=AUTH, models=[*FAKE_MODELS, FAKE_CHAT])
    app = create_app(settings)
    async with asgi_client(app) as http:

        def sdk(key: str) -> openai.AsyncOpenAI:
            return openai.AsyncOpenAI(api_key=key, base_url=BASE, http_client=http)

        yield Clients(http, sdk("sk-alice"), sdk("sk-bob"), sdk("sk-root")), app


async def test_rag_over_named_stores_searches_only_the_callers_own(rag: Any) -> None:
    c, app = rag
    a = await _alice_data(c)
    question = [{"role": "user", "content": "How do I reset the water pump?"}]
    for ref in (a.store_id, "docs"):
        knowledge = {"knowledge": {"vector_store_ids": [ref]}}
        out = await c.alice.chat.completions.create(
            model="fake-chat", messages=question, extra_body=knowledge
        )  # type: ignore[arg-type]
        cites = (out.model_extra or {})["citations"]
        assert cites and cites[0]["file_id"] == a.file_id
        with pytest.raises(openai.NotFoundError) as caught:
            await c.bob.chat.completions.create(
                model="fake-chat", messages=question, extra_body=knowledge
            )  # type: ignore[arg-type]
        body = caught.value.body
        assert isinstance(body, dict) and body.get("param") == "knowledge.vector_store_ids"
    # Responses' file_search names stores the same way.
    tools: Any = [{"type": "file_search", "vector_store_ids": [a.store_id]}]
    r = await c.alice.responses.create(model="fake-chat", input="reset the pump?", tools=tools)
    assert r.output[0].type == "file_search_call"
    await _missing(c.bob.responses.create(model="fake-chat", input="reset?", tools=tools))
    # MCP ask's path: the chat core answering from stores, as the caller.
    core = app.state.ctx.core
    bob = Principal(project="team-b", role="member")
    with pytest.raises(NotFoundError):
        await core.answer("reset the pump?", stores=[a.store_id], who=bob)
    alice = Principal(project="team-a", role="member")
    got = await core.answer("reset the pump?", stores=[a.store_id], who=alice)
    assert got.citations and got.citations[0].hit.file_id == a.file_id
