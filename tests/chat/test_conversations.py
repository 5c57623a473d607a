"""The Conversations API through the openai SDK: create, read, update and delete a
conversation and its items (checked against the SDK's own types), items paged in both
orders, responses that read and extend a conversation (with the tiny RWKV model, the
same greedy text as the history sent in full), and projects kept apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.conversations import (
    Conversation,
    ConversationDeletedResource,
    ConversationItem,
    ConversationItemList,
)
from pydantic import TypeAdapter

from gateway.app import create_app
from tests.chat.conftest import chat_models
from tests.chat.test_response_storage import PLAIN, _not_found, _sdk, _settings
from tests.chat.test_responses_spec import _errors
from tests.conftest import asgi_client

ITEM = TypeAdapter(ConversationItem)


@pytest.fixture(scope="module")
async def http(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    (tiny,) = [m for m in chat_models(tiny_dir) if m["id"] == "rwkv7-tiny"]
    settings = _settings(tmp_path_factory.mktemp("conversations"), models=[PLAIN, tiny])
    async with asgi_client(create_app(settings)) as c:
        yield c


@pytest.fixture
def alice(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return _sdk(http, "sk-alice")


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def test_a_conversation_is_created_read_updated_and_deleted(
    http: httpx.AsyncClient, alice: openai.AsyncOpenAI
) -> None:
    headers = {"Authorization": "Bearer sk-alice"}
    r = await http.post(
        "/v1/conversations",
        json={"metadata": {"topic": "pumps"}, "items": [_user("Hello")]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    conv = Conversation.model_validate(r.json())
    assert conv.object == "conversation" and conv.metadata == {"topic": "pumps"}
    got = await http.get(f"/v1/conversations/{conv.id}", headers=headers)
    assert Conversation.model_validate(got.json()) == conv
    updated = await alice.conversations.update(conv.id, metadata={"topic": "valves"})
    assert updated.metadata == {"topic": "valves"} and updated.created_at == conv.created_at
    assert (await alice.conversations.retrieve(conv.id)).metadata == {"topic": "valves"}
    (item,) = [it async for it in alice.conversations.items.list(conv.id)]
    assert item.type == "message" and item.role == "user"
    assert item.content[0].type == "input_text" and item.content[0].text == "Hello"
    gone = await http.delete(f"/v1/conversations/{conv.id}", headers=headers)
    deleted = ConversationDeletedResource.model_validate(gone.json())
    assert (deleted.id, deleted.object, deleted.deleted) == (conv.id, "conversation.deleted", True)
    await _not_found(alice.conversations.retrieve(conv.id))
    await _not_found(alice.conversations.items.list(conv.id))


async def test_items_are_added_paged_in_both_orders_read_and_deleted(
    http: httpx.AsyncClient, alice: openai.AsyncOpenAI
) -> None:
    conv = await alice.conversations.create()
    with pytest.raises(openai.BadRequestError):
        await alice.conversations.items.create(
            conv.id,
            items=[_user(str(i)) for i in range(21)],  # type: ignore[misc]
        )
    headers = {"Authorization": "Bearer sk-alice"}
    r = await http.post(
        f"/v1/conversations/{conv.id}/items",
        json={"items": [_user(str(i)) for i in range(20)]},
        headers=headers,
    )
    added = ConversationItemList.model_validate(r.json())
    assert [it.content[0].text for it in added.data] == [str(i) for i in range(20)]  # type: ignore[union-attr]
    more = await alice.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "assistant", "content": "20"},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "21"},
        ],
    )
    assert [it.type for it in more.data] == ["message", "function_call", "function_call_output"]
    texts = []
    async for it in alice.conversations.items.list(conv.id, limit=7, order="asc"):
        ITEM.validate_python(it.model_dump())
        texts.append(it.content[0].text if it.type == "message" else it.type)  # type: ignore[union-attr]
    assert texts == [*(str(i) for i in range(21)), "function_call", "function_call_output"]
    first = await alice.conversations.items.list(conv.id, limit=5)  # newest first
    assert first.has_more and first.data[0].type == "function_call_output"
    after = await alice.conversations.items.list(conv.id, limit=5, after=first.data[-1].id)
    assert [it.content[0].text for it in after.data] == ["17", "16", "15", "14", "13"]  # type: ignore[union-attr]
    page = await http.get(
        f"/v1/conversations/{conv.id}/items", params={"limit": 100}, headers=headers
    )
    assert page.json()["has_more"] is False and len(page.json()["data"]) == 23
    target = added.data[3]
    got = await alice.conversations.items.retrieve(target.id, conversation_id=conv.id)
    assert got.id == target.id
    left = await http.delete(f"/v1/conversations/{conv.id}/items/{target.id}", headers=headers)
    assert Conversation.model_validate(left.json()).id == conv.id
    await _not_found(alice.conversations.items.retrieve(target.id, conversation_id=conv.id))
    await _not_found(alice.conversations.items.delete(target.id, conversation_id=conv.id))
    with pytest.raises(openai.BadRequestError):
        await alice.conversations.items.list(conv.id, after="msg_nope")
    # The SDK sends `include[]=...`.
    included = await alice.conversations.items.list(
        conv.id, limit=2, include=["file_search_call.results", "reasoning.encrypted_content"]
    )
    assert len(included.data) == 2


async def test_a_response_reads_and_extends_its_conversation(
    alice: openai.AsyncOpenAI,
) -> None:
    conv = await alice.conversations.create(items=[_user("My name is Ada.")])
    first = await alice.responses.create(
        model="fake-plain", conversation=conv.id, input="What is my name?"
    )
    assert first.conversation is not None and first.conversation.id == conv.id
    items = [it async for it in alice.conversations.items.list(conv.id, order="asc")]
    assert [(it.type, it.role) for it in items] == [  # type: ignore[union-attr]
        ("message", "user"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[2].id == first.output[0].id
    second = await alice.responses.create(
        model="fake-plain", conversation={"id": conv.id}, input="Again?", store=False
    )
    assert second.usage is not None and first.usage is not None
    # The whole history was read: both earlier user turns and the answer.
    assert second.usage.input_tokens > first.usage.input_tokens + len("Sunny.")
    assert len([it async for it in alice.conversations.items.list(conv.id)]) == 5


async def test_a_streamed_response_extends_its_conversation_and_matches_the_spec(
    http: httpx.AsyncClient, alice: openai.AsyncOpenAI
) -> None:
    conv = await alice.conversations.create()
    headers = {"Authorization": "Bearer sk-alice"}
    body = {"model": "fake-plain", "input": "Hi", "conversation": conv.id}
    plain = await http.post("/v1/responses", json=body, headers=headers)
    assert plain.status_code == 200, plain.text
    assert _errors(plain.json(), "Response") == []
    assert plain.json()["conversation"] == {"id": conv.id}
    stream = await alice.responses.create(
        model="fake-plain", input="Again", conversation=conv.id, stream=True
    )
    done = [ev async for ev in stream if ev.type == "response.completed"]
    assert len(done) == 1
    texts = [
        it.content[0].text  # type: ignore[union-attr]
        async for it in alice.conversations.items.list(conv.id, order="asc")
    ]
    assert texts == ["Hi", "Sunny.", "Again", "Sunny."]


async def test_conversation_with_previous_response_id_is_a_400(
    alice: openai.AsyncOpenAI,
) -> None:
    conv = await alice.conversations.create()
    r = await alice.responses.create(model="fake-plain", input="x")
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.responses.create(
            model="fake-plain", input="y", conversation=conv.id, previous_response_id=r.id
        )
    assert caught.value.response.json()["error"]["type"] == "invalid_request_error"
    assert [it async for it in alice.conversations.items.list(conv.id)] == []


async def test_another_projects_conversation_is_missing_everywhere_and_stays_intact(
    http: httpx.AsyncClient, alice: openai.AsyncOpenAI
) -> None:
    bob = _sdk(http, "sk-bob")
    conv = await alice.conversations.create(metadata={"a": "1"}, items=[_user("secret")])
    (item,) = (await alice.conversations.items.list(conv.id)).data
    missing = await _not_found(bob.conversations.retrieve("conv_nope"))
    calls = (
        bob.conversations.retrieve(conv.id),
        bob.conversations.update(conv.id, metadata={"a": "2"}),
        bob.conversations.delete(conv.id),
        bob.conversations.items.list(conv.id),
        bob.conversations.items.create(conv.id, items=[_user("mine")]),  # type: ignore[list-item]
        bob.conversations.items.retrieve(item.id, conversation_id=conv.id),
        bob.conversations.items.delete(item.id, conversation_id=conv.id),
    )
    for call in calls:
        err = await _not_found(call)
        assert (err["code"], err["param"]) == (missing["code"], missing["param"])
    err = await _not_found(
        bob.responses.create(model="fake-plain", conversation=conv.id, input="read it")
    )
    assert err["param"] == "conversation"
    assert (await alice.conversations.retrieve(conv.id)).metadata == {"a": "1"}
    (still,) = (await alice.conversations.items.list(conv.id)).data
    assert still.id == item.id
    assert (await _sdk(http, "sk-root").conversations.retrieve(conv.id)).id == conv.id


def _text(r: Any) -> str:
    return str(r.output_text)


async def test_a_greedy_conversation_says_what_the_full_history_says(
    alice: openai.AsyncOpenAI,
) -> None:
    """Turn by turn through ``conversation``, the tiny model's greedy answer equals the
    answer to the same history sent whole; the continued turn starts from a kept state,
    and after an earlier item is deleted the next turn reads the rest from the start."""
    opts: dict[str, Any] = {"model": "rwkv7-tiny", "temperature": 0, "max_output_tokens": 8}
    opening = "You are a careful assistant who answers in short sentences. " * 8
    conv = await alice.conversations.create(items=[_user(opening)])
    first = await alice.responses.create(conversation=conv.id, input="What is a state?", **opts)
    second = await alice.responses.create(conversation=conv.id, input="How big is it?", **opts)
    history = [
        _user(opening),
        _user("What is a state?"),
        {"type": "message", "role": "assistant", "content": _text(first)},
        _user("How big is it?"),
    ]
    whole = await alice.responses.create(input=history, store=False, **opts)  # type: ignore[arg-type]
    assert _text(second) == _text(whole)
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 3
    # Delete the opening: the next turn sees only what is left.
    items = [it async for it in alice.conversations.items.list(conv.id, order="asc")]
    await alice.conversations.items.delete(items[0].id, conversation_id=conv.id)
    third = await alice.responses.create(conversation=conv.id, input="Why?", **opts)
    rest = [
        *history[1:],
        {"type": "message", "role": "assistant", "content": _text(second)},
        _user("Why?"),
    ]
    again = await alice.responses.create(input=rest, store=False, **opts)  # type: ignore[arg-type]
    assert _text(third) == _text(again)
    assert third.usage is not None
    # Nothing of the old history's states applies to the new one.
    assert third.usage.input_tokens_details.cached_tokens == 0


async def test_bad_conversation_requests_are_400s(
    http: httpx.AsyncClient, alice: openai.AsyncOpenAI
) -> None:
    headers = {"Authorization": "Bearer sk-alice"}
    bad = [
        ("/v1/conversations", {"items": [{"type": "item_reference", "id": "x"}]}, "items[0].type"),
        ("/v1/conversations", {"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
    ]
    for path, body, param in bad:
        r = await http.post(path, json=body, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    conv = await alice.conversations.create()
    r = await http.get(
        f"/v1/conversations/{conv.id}/items", params={"include": "nope"}, headers=headers
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "include"
    r = await http.post(
        "/v1/responses",
        json={"model": "fake-plain", "input": "x", "conversation": {"nope": 1}},
        headers=headers,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "conversation"
