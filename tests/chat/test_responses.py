"""The Responses API through the openai SDK and the OpenAI Agents SDK: plain and streamed
answers, function tools, ``previous_response_id``, stored responses, ``file_search`` over
the gateway's own vector stores with ``file_citation`` annotations (chat gets the same
citations as ``message.annotations``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.chat.test_tools import CALL, THOUGHT, WEATHER
from tests.conftest import MINILM, asgi_client

PUMP = "The water pump resets when you hold the red button for ten seconds."
CITED = "Hold the red button for ten seconds [1]."
FN_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather",
    "parameters": WEATHER,
}


def _fake(mid: str, script: list[str], **template: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"script": script}
    if template:
        options["chat_template"] = template
    return {"id": mid, "kind": "chat", "engine": "fake", "options": options}


def _settings(tiny: Path, data: Path) -> Settings:
    return Settings(
        models=[
            MINILM,
            *chat_models(tiny),
            _fake("fake-plain", ["Sunny, 21 degrees."]),
            _fake("fake-caller", [" " + CALL]),
            _fake("fake-cited", [CITED]),
            _fake("fake-thinker", [THOUGHT], reasoning=True),
            _fake("fake-agent", [" " + CALL, "It is sunny in Paris."]),
        ],
        profiles=[{"id": "pump-bot", "model": "fake-cited", "vector_store_ids": ["manuals"]}],
        load_in_background=False,
        log_json=False,
        data_dir=data,
    )


@pytest.fixture(scope="module")
async def stack(
    tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str, str]]:
    app = create_app(_settings(tiny_dir, tmp_path_factory.mktemp("responses")))
    async with asgi_client(app) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "manuals"})).json()["id"]
        fid = (
            await http.post(
                "/v1/files",
                files={"file": ("pump.md", PUMP.encode())},
                data={"purpose": "assistants"},
            )
        ).json()["id"]
        await http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid})
        await app.state.ctx.kb.drain()
        yield app, http, vs, fid


@pytest.fixture
def sdk(stack: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key="x", base_url="http://testserver.local/v1", http_client=stack[1]
    )


def _prompt(stack: Any, model: str) -> str:
    engine = stack[0].state.ctx.registry.models[model].engine
    return str(engine.decode(engine.prompts[-1]))


async def test_a_plain_response(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(model="fake-plain", input="What is the weather?")
    assert r.status == "completed" and r.object == "response"
    assert r.output_text == "Sunny, 21 degrees."
    (msg,) = r.output
    assert msg.type == "message" and msg.role == "assistant"
    assert r.usage is not None and r.usage.output_tokens == len("Sunny, 21 degrees.")
    assert r.usage.input_tokens > 0 and r.usage.total_tokens == r.usage.input_tokens + 18


async def test_instructions_and_items_reach_the_prompt(sdk: openai.AsyncOpenAI, stack: Any) -> None:
    await sdk.responses.create(
        model="fake-plain",
        instructions="Answer briefly.",
        input=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
        ],
    )
    assert _prompt(stack, "fake-plain") == (
        "System: Answer briefly.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Weather?\n\nAssistant:"
    )


async def test_a_streamed_response_follows_the_lifecycle(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.responses.create(model="fake-plain", input="Weather?", stream=True)
    events = [ev async for ev in stream]
    kinds = [ev.type for ev in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert "".join(e.delta for e in deltas) == "Sunny, 21 degrees."
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    final: Any = events[-1]
    assert (
        final.response.output_text == "Sunny, 21 degrees."
        and final.response.usage.output_tokens == 18
    )


async def test_max_output_tokens_makes_it_incomplete(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(model="fake-plain", input="Weather?", max_output_tokens=5)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Sunny"
    stream = await sdk.responses.create(
        model="fake-plain", input="Weather?", max_output_tokens=5, stream=True
    )
    last: Any = [ev async for ev in stream][-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"


async def test_function_tools_and_a_continuation(sdk: openai.AsyncOpenAI, stack: Any) -> None:
    first = await sdk.responses.create(
        model="fake-caller", input="Weather in Paris?", tools=[FN_TOOL]
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "celsius", "days": 2}
    second = await sdk.responses.create(
        model="fake-plain",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "21C, clear"}],
        tools=[FN_TOOL],
    )
    assert second.output_text == "Sunny, 21 degrees."
    assert second.previous_response_id == first.id
    prompt = _prompt(stack, "fake-plain")
    assert "User: Weather in Paris?\n\nAssistant: ```json\n" in prompt
    assert prompt.endswith("User: Function output: 21C, clear\n\nAssistant:")


async def test_streamed_function_call_events(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.responses.create(
        model="rwkv7-tiny",
        input="Weather?",
        tools=[FN_TOOL],
        tool_choice="required",
        max_output_tokens=50,
        stream=True,
    )
    events = [ev async for ev in stream]
    kinds = [ev.type for ev in events]
    added: Any = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.name == "get_weather"
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")  # type: ignore[union-attr]
    done: Any = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == args
    jsonschema.validate(json.loads(args), WEATHER)
    assert kinds.index("response.function_call_arguments.done") < kinds.index(
        "response.output_item.done"
    )
    assert kinds[-1] in ("response.completed", "response.incomplete")


class Reading(BaseModel):
    sensor: str = Field(max_length=10)
    value: int = Field(ge=0, le=100)
    ok: bool


async def test_text_format_through_constrained_decoding(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.parse(
        model="rwkv7-tiny", input="A reading as JSON.", text_format=Reading, max_output_tokens=80
    )
    assert isinstance(r.output_parsed, Reading)


async def test_reasoning_becomes_a_reasoning_item(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(
        model="fake-thinker", input="hello", reasoning={"effort": "high"}
    )
    kinds = [item.type for item in r.output]
    assert kinds == ["reasoning", "message"]
    item: Any = r.output[0]
    assert item.content[0].text == "The user greets me; greet back."
    assert r.output_text == "Hello there!"
    assert r.usage is not None and r.usage.output_tokens_details.reasoning_tokens > 0


async def test_stored_responses_can_be_read_listed_and_deleted(sdk: openai.AsyncOpenAI) -> None:
    r = await sdk.responses.create(model="fake-plain", input="Weather?", metadata={"run": "7"})
    got = await sdk.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.metadata == {"run": "7"}
    items = await sdk.responses.input_items.list(r.id)
    (item,) = items.data
    assert item.type == "message" and item.role == "user"  # type: ignore[union-attr]
    deleted = await sdk.responses.with_raw_response.delete(r.id)
    assert deleted.http_response.json() == {"id": r.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(r.id)
    unstored = await sdk.responses.create(model="fake-plain", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(unstored.id)


async def test_previous_response_id_reuses_the_prefix_cache(sdk: openai.AsyncOpenAI) -> None:
    first = await sdk.responses.create(
        model="rwkv7-tiny", input="Tell me a long story about a pump." * 8, max_output_tokens=4
    )
    second = await sdk.responses.create(
        model="rwkv7-tiny", previous_response_id=first.id, input="And then?", max_output_tokens=4
    )
    assert first.usage is not None and second.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    # Everything up to the end of the first question came from the cache.
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 3


async def test_file_search_cites_the_gateways_own_stores(
    sdk: openai.AsyncOpenAI, stack: Any
) -> None:
    _, _, vs, fid = stack
    r = await sdk.responses.create(
        model="fake-cited",
        input="How do I reset the water pump?",
        tools=[{"type": "file_search", "vector_store_ids": [vs], "max_num_results": 2}],
        include=["file_search_call.results"],
    )
    search, msg = r.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == ["How do I reset the water pump?"]
    assert search.results and search.results[0].file_id == fid
    assert "red button" in (search.results[0].text or "")
    assert msg.type == "message"
    (note,) = msg.content[0].annotations  # type: ignore[union-attr]
    assert note.type == "file_citation" and note.file_id == fid and note.filename == "pump.md"
    assert note.index == CITED.index("[1]") + 3
    assert "[1] pump.md\nThe water pump resets" in _prompt(stack, "fake-cited")
    bare = await sdk.responses.create(
        model="fake-cited",
        input="How do I reset the water pump?",
        tools=[{"type": "file_search", "vector_store_ids": [vs]}],
    )
    assert bare.output[0].results is None  # type: ignore[union-attr]


async def test_a_profile_is_a_model_for_responses(sdk: openai.AsyncOpenAI, stack: Any) -> None:
    r = await sdk.responses.create(model="pump-bot", input="How do I reset the water pump?")
    assert r.output_text == CITED
    (note,) = r.output[0].content[0].annotations  # type: ignore[union-attr]
    assert note.file_id == stack[3]


async def test_chat_citations_are_message_annotations(sdk: openai.AsyncOpenAI, stack: Any) -> None:
    _, _, vs, fid = stack
    question = [{"role": "user", "content": "How do I reset the water pump?"}]
    out = await sdk.chat.completions.create(
        model="fake-cited", messages=question, extra_body={"knowledge": {"vector_store_ids": [vs]}}
    )  # type: ignore[arg-type]
    msg = out.choices[0].message
    (note,) = msg.annotations or []
    assert note.type == "url_citation"
    start = CITED.index("[1]")
    assert (note.url_citation.start_index, note.url_citation.end_index) == (start, start + 3)
    assert note.url_citation.title == "pump.md" and fid in note.url_citation.url
    assert (out.model_extra or {})["citations"][0]["file_id"] == fid  # the extra field stays
    stream = await sdk.chat.completions.create(
        model="fake-cited",
        messages=question,
        stream=True,
        extra_body={"knowledge": {"vector_store_ids": [vs]}},
    )  # type: ignore[arg-type]
    notes = [
        a
        async for chunk in stream
        if chunk.choices
        for a in chunk.choices[0].delta.model_extra.get("annotations") or []
    ]  # type: ignore[union-attr]
    assert [n["url_citation"]["start_index"] for n in notes] == [start]


async def test_an_agents_sdk_turn_runs_against_responses(stack: Any) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(
        api_key="x", base_url="http://testserver.local/v1", http_client=stack[1]
    )
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str, unit: str, days: int) -> str:
        """The weather in a city."""
        seen.append(city)
        return f"clear in {city}"

    agent = agents.Agent(
        name="weather",
        instructions="You answer weather questions.",
        model=agents.OpenAIResponsesModel(model="fake-agent", openai_client=client),
        tools=[get_weather],
    )
    result = await agents.Runner.run(agent, "Weather in Paris?", max_turns=4)
    assert seen == ["Paris"]  # the model's call ran the tool
    assert result.final_output == "It is sunny in Paris."


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"previous_response_id": "resp_missing"}, 404, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        (
            {"tools": [FN_TOOL], "tool_choice": {"type": "function", "name": "nope"}},
            400,
            "tool_choice",
        ),
        (
            {"tools": [{**FN_TOOL, "parameters": {"type": "object", "not": {}}}]},
            400,
            "tools[0].parameters",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            400,
            "messages[0].tool_call_id",
        ),
        ({"input": [{"type": "item_reference", "id": "x"}]}, 400, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            400,
            "input[0].content[0]",
        ),
        (
            {
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "x",
                        "schema": {"type": "object", "patternProperties": {}},
                    }
                }
            },
            400,
            "text.format.schema",
        ),
        (
            {"tools": [{"type": "file_search", "vector_store_ids": []}]},
            400,
            "tools[0].vector_store_ids",
        ),
        ({"background": True}, 400, "background"),
        ({"include": ["message.output_text.logprobs"]}, 400, "include"),
    ],
)
async def test_bad_responses_requests_are_4xx(
    stack: Any, body: dict[str, Any], status: int, param: str
) -> None:
    http = stack[1]
    r = await http.post("/v1/responses", json={"model": "fake-plain", "input": "hi", **body})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    for path in ("/v1/responses/resp_nope", "/v1/responses/resp_nope/input_items"):
        missing = await http.get(path)
        assert missing.status_code == 404 and missing.json()["error"]["param"] == "response_id"


RESPONSE_FIELDS = (
    "completed_at",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "max_tool_calls",
    "safety_identifier",
    "prompt_cache_key",
)


async def test_the_response_object_carries_every_field_of_the_specification(
    stack: Any,
) -> None:
    http = stack[1]
    body = {"model": "fake-caller", "input": "Weather in Paris?", "tools": [FN_TOOL]}
    plain = (await http.post("/v1/responses", json=body)).json()
    for name in RESPONSE_FIELDS:
        assert name in plain, name
    assert plain["status"] == "completed"
    assert isinstance(plain["completed_at"], int) and plain["completed_at"] >= plain["created_at"]
    assert plain["presence_penalty"] == 0.0 and plain["top_logprobs"] == 0
    assert plain["safety_identifier"] is None and plain["prompt_cache_key"] is None
    # The echoed function tool has every field the function-tool schema requires.
    (tool,) = plain["tools"]
    assert tool == {**FN_TOOL, "strict": True}
    async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in lines]
    created, done = events[0], events[-1]
    assert created["type"] == "response.created" and done["type"] == "response.completed"
    for name in RESPONSE_FIELDS:
        assert name in created["response"] and name in done["response"], name
    assert created["response"]["completed_at"] is None
    assert isinstance(done["response"]["completed_at"], int)


async def test_compact_is_a_404_in_the_error_shape(stack: Any) -> None:
    r = await stack[1].post("/v1/responses/compact", json={"model": "fake-plain", "input": "x"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_url"


@pytest.mark.parametrize("limit", [1, 2])
async def test_max_tool_calls_bounds_the_calls_of_a_turn(
    sdk: openai.AsyncOpenAI, limit: int
) -> None:
    for seed in range(3):
        r = await sdk.responses.create(
            model="rwkv7-tiny",
            input="Weather in Paris and Rome?",
            tools=[FN_TOOL],  # type: ignore[list-item]
            tool_choice="required",
            max_tool_calls=limit,
            max_output_tokens=200,
            temperature=1.0,
            extra_body={"seed": seed},
        )
        calls = [item for item in r.output if item.type == "function_call"]
        assert 1 <= len(calls) <= limit
