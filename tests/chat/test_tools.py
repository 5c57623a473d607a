"""Tools, structured output and reasoning through the openai SDK.

The guarantees (a valid call under ``required``, schema-valid JSON under a response
format, valid even when ``max_tokens`` cuts the output) do not depend on the weights, so
they are shown on the tiny random model. Reasoning, tool round trips and the prompt
format are shown with the scripted fake chat engine, which records what it was asked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import openai
import pytest
from openai.lib._parsing import type_to_response_format_param
from pydantic import BaseModel, Field

from engines.registry import EngineRegistry
from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import asgi_client

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 8}},
    "required": ["zone"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
CALL = '```json\n{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius","days":2}}\n```'
THOUGHT = ">\nThe user greets me; greet back.\n</think> Hello there!"


def fake_models() -> list[dict[str, Any]]:
    return [
        {
            "id": "fake-thinker",
            "kind": "chat",
            "engine": "fake",
            "options": {"script": [THOUGHT], "chat_template": {"reasoning": True}},
        },
        {
            "id": "fake-caller",
            "kind": "chat",
            "engine": "fake",
            "options": {"script": [" " + CALL]},  # as a model writes it after "Assistant:"
        },
        {
            "id": "fake-plain",
            "kind": "chat",
            "engine": "fake",
            "options": {"script": ["Sunny, 21 degrees."]},
        },
    ]


@pytest.fixture(scope="module")
def registry(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineRegistry]:
    settings = _settings(tiny_dir, tmp_path_factory.mktemp("tools"))
    reg = EngineRegistry(settings.registry_config())
    yield reg
    for m in reg.models.values():
        if m.engine is not None:
            m.engine.close()


def _settings(tiny: Path, data: Path) -> Settings:
    return Settings(
        models=[*chat_models(tiny), *fake_models()],
        load_in_background=False,
        log_json=False,
        data_dir=data,
    )


@pytest.fixture
async def sdk(
    registry: EngineRegistry, tiny_dir: Path, tmp_path: Path
) -> AsyncIterator[openai.AsyncOpenAI]:
    app = create_app(_settings(tiny_dir, tmp_path), engines=registry)
    async with asgi_client(app) as http:
        yield openai.AsyncOpenAI(
            api_key="x", base_url="http://testserver.local/v1", http_client=http
        )


def _prompt(registry: EngineRegistry, model: str) -> str:
    engine: Any = registry.models[model].engine
    return str(engine.decode(engine.prompts[-1]))


def _valid_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


# -- guarantees on random weights ------------------------------------------------------------


class City(BaseModel):
    name: str = Field(max_length=12)
    country: Literal["FR", "DE", "CN"]
    population: int = Field(ge=0, le=10_000_000)
    tags: list[Annotated[str, Field(max_length=8)]] = Field(max_length=2)


class Answer(BaseModel):
    city: City
    summary: str = Field(max_length=20)
    confident: bool


class Essay(BaseModel):  # unbounded strings: only the budget ends them
    title: str
    body: str
    words: list[str]


async def test_parse_returns_a_parsed_object(sdk: openai.AsyncOpenAI) -> None:
    for seed in range(3):
        done = await sdk.chat.completions.parse(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Describe a city as JSON."}],
            response_format=Answer,
            max_tokens=200,
            seed=seed,
        )
        choice = done.choices[0]
        assert isinstance(choice.message.parsed, Answer)
        assert choice.finish_reason == "stop"


@pytest.mark.parametrize("max_tokens", [16, 60])
async def test_a_cut_output_is_still_valid_and_says_length(
    sdk: openai.AsyncOpenAI, max_tokens: int
) -> None:
    for seed in range(3):
        done = await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Write an essay as JSON."}],
            response_format=type_to_response_format_param(Essay),
            max_tokens=max_tokens,
            temperature=1.0,
            seed=seed,
        )
        choice = done.choices[0]
        Essay.model_validate_json(choice.message.content or "")
        assert done.usage is not None and done.usage.completion_tokens <= max_tokens
        assert choice.finish_reason == "length"


async def test_a_budget_below_the_shortest_valid_output_is_a_400(
    sdk: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=TOOLS,
            tool_choice="required",
            max_tokens=3,
        )
    assert err.value.body is not None
    assert err.value.param == "max_tokens"
    assert "shortest valid output" in err.value.message


async def test_json_object_format_gives_a_json_object(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(
        model="rwkv6-tiny",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
        max_tokens=40,
        seed=1,
    )
    assert isinstance(json.loads(done.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("max_tokens", [20, 60])
async def test_required_tool_choice_returns_a_schema_valid_call(
    sdk: openai.AsyncOpenAI, max_tokens: int
) -> None:
    for seed in range(3):
        done = await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=max_tokens,
            seed=seed,
        )
        choice = done.choices[0]
        calls = choice.message.tool_calls or []
        assert len(calls) == 1
        assert calls[0].id.startswith("call_") and calls[0].type == "function"
        _valid_call(calls[0].function.name, calls[0].function.arguments)
        assert choice.finish_reason in ("tool_calls", "length")


async def test_streamed_required_calls_accumulate_like_the_sdk_expects(
    sdk: openai.AsyncOpenAI,
) -> None:
    for seed in range(3):
        stream = await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Weather and time?"}],
            tools=TOOLS,
            tool_choice="required",
            max_tokens=50,
            seed=seed,
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            for tc in delta.tool_calls or []:
                if tc.index not in calls:  # the first delta of a call names it
                    assert tc.id and tc.function and tc.function.name
                    calls[tc.index] = {"name": tc.function.name, "arguments": ""}
                calls[tc.index]["arguments"] += (tc.function and tc.function.arguments) or ""
            finish = chunk.choices[0].finish_reason or finish
        assert calls and sorted(calls) == list(range(len(calls)))
        for call in calls.values():
            _valid_call(call["name"], call["arguments"])
        assert finish in ("tool_calls", "length")


async def test_a_named_function_is_the_one_called(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(
        model="rwkv6-tiny",
        messages=[{"role": "user", "content": "What time is it?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=30,
    )
    calls = done.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]
    _valid_call("get_time", calls[0].function.arguments)
    assert len(json.loads(calls[0].function.arguments)["zone"]) <= 8


async def test_tool_choice_none_is_plain_text(
    sdk: openai.AsyncOpenAI, registry: EngineRegistry
) -> None:
    done = await sdk.chat.completions.create(
        model="fake-caller",
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,
        tool_choice="none",
    )
    assert done.choices[0].message.tool_calls is None
    assert "Tools:" not in _prompt(registry, "fake-caller")


# -- the round trip and the prompt format ----------------------------------------------------


async def test_a_tool_round_trip(sdk: openai.AsyncOpenAI, registry: EngineRegistry) -> None:
    question = [{"role": "user", "content": "Weather in Paris for two days?"}]
    first = await sdk.chat.completions.create(model="fake-caller", messages=question, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius", "days": 2}
    prompt = _prompt(registry, "fake-caller")
    assert prompt.startswith("System: Tools:\n{")
    assert '"name":"get_weather"' in prompt
    assert "return only a JSON function call" in prompt

    history = [
        *question,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21, "sky": "clear"}'},
    ]
    second = await sdk.chat.completions.create(model="fake-plain", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "Sunny, 21 degrees."
    assert second.choices[0].finish_reason == "stop"
    prompt = _prompt(registry, "fake-plain")
    assert f"Assistant: {CALL}\n\n" in prompt
    assert 'User: Function output: {"temp": 21, "sky": "clear"}\n\nAssistant:' in prompt


async def test_auto_text_answer_is_just_content(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.chat.completions.create(
        model="fake-plain", messages=[{"role": "user", "content": "hi"}], tools=TOOLS
    )
    assert done.choices[0].message.content == "Sunny, 21 degrees."
    assert done.choices[0].message.tool_calls is None
    assert done.choices[0].finish_reason == "stop"


async def test_a_tiny_model_round_trip_is_accepted(sdk: openai.AsyncOpenAI) -> None:
    first = await sdk.chat.completions.create(
        model="rwkv7-tiny",
        messages=[{"role": "user", "content": "Weather?"}],
        tools=TOOLS,
        tool_choice="required",
        max_tokens=40,
    )
    msg = first.choices[0].message
    calls = msg.tool_calls or []
    history: list[Any] = [
        {"role": "user", "content": "Weather?"},
        msg.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "21C"} for c in calls),
    ]
    second = await sdk.chat.completions.create(
        model="rwkv7-tiny", messages=history, tools=TOOLS, max_tokens=8
    )
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")


# -- reasoning -------------------------------------------------------------------------------


async def test_reasoning_is_kept_out_of_content(
    sdk: openai.AsyncOpenAI, registry: EngineRegistry
) -> None:
    done = await sdk.chat.completions.create(
        model="fake-thinker",
        messages=[{"role": "user", "content": "hello"}],
        reasoning_effort="medium",
    )
    msg: Any = done.choices[0].message
    assert msg.content == "Hello there!"
    assert msg.reasoning_content == "The user greets me; greet back."
    assert done.usage is not None and done.usage.completion_tokens_details is not None
    # The thought is every token up to and including its closing tag.
    assert done.usage.completion_tokens_details.reasoning_tokens == THOUGHT.index(" Hello")
    assert _prompt(registry, "fake-thinker").endswith("User: hello\n\nAssistant: <think")


async def test_streamed_reasoning_arrives_as_reasoning_content(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="fake-thinker",
        messages=[{"role": "user", "content": "hello"}],
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning = content = ""
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        if chunk.choices:
            delta: Any = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    assert reasoning == "The user greets me; greet back."
    assert content == "Hello there!"
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == THOUGHT.index(" Hello")


@pytest.mark.parametrize(
    ("effort", "ending"),
    [
        ("none", "User: hi\n\nAssistant: <think></think>"),
        ("minimal", "User: hi\n\nAssistant: <think></think>"),
        ("low", "User: hi (think a bit)\n\nAssistant: <think"),
        ("high", "User: hi (think a lot)\n\nAssistant: <think"),
        (None, "User: hi\n\nAssistant:"),
    ],
)
async def test_reasoning_effort_picks_the_g1_mode(
    sdk: openai.AsyncOpenAI, registry: EngineRegistry, effort: str | None, ending: str
) -> None:
    extra: dict[str, Any] = {"reasoning_effort": effort} if effort else {}
    await sdk.chat.completions.create(
        model="fake-thinker", messages=[{"role": "user", "content": "hi"}], **extra
    )
    assert _prompt(registry, "fake-thinker").endswith(ending)


async def test_a_model_without_thinking_ignores_reasoning_effort(
    sdk: openai.AsyncOpenAI, registry: EngineRegistry
) -> None:
    await sdk.chat.completions.create(
        model="fake-plain", messages=[{"role": "user", "content": "hi"}], reasoning_effort="high"
    )
    assert _prompt(registry, "fake-plain").endswith("User: hi\n\nAssistant:")


async def test_thinking_then_json_is_valid_on_random_weights(sdk: openai.AsyncOpenAI) -> None:
    """A thought first (its length unconstrained), then schema-valid JSON, within budget."""
    done = await sdk.chat.completions.create(
        model="rwkv7-tiny",
        messages=[{"role": "user", "content": "hi"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "w", "schema": WEATHER, "strict": True},
        },
        max_tokens=40,
        extra_body={"reasoning_effort": "high"},
    )
    jsonschema.validate(json.loads(done.choices[0].message.content or ""), WEATHER)


# -- conformance -----------------------------------------------------------------------------


async def test_no_nulls_where_the_schema_forbids_them(
    registry: EngineRegistry, tmp_path: Path, tiny_dir: Path
) -> None:
    app = create_app(_settings(tiny_dir, tmp_path), engines=registry)
    async with asgi_client(app) as http:
        r = await http.post(
            "/v1/chat/completions",
            json={
                "model": "fake-caller",
                "messages": [{"role": "user", "content": "x"}],
                "tools": TOOLS,
            },
        )
        body = r.json()
        assert body["service_tier"] == "default"
        assert body["choices"][0]["message"]["tool_calls"][0]["type"] == "function"
        models = (await http.get("/v1/models")).json()["data"]
        assert models and all(m["object"] == "model" for m in models)
        streamed = await http.post(
            "/v1/chat/completions",
            json={
                "model": "fake-plain",
                "messages": [{"role": "user", "content": "x"}],
                "stream": True,
            },
        )
        for line in streamed.text.splitlines():
            if line.startswith("data: {"):
                assert json.loads(line[6:])["service_tier"] == "default"


CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
    },
    "required": ["name", "country", "population"],
    "additionalProperties": False,
}
SHORT_CITY_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}
LONG_QUERY_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string", "minLength": 300}},
            "required": ["q"],
        },
    },
}


@pytest.mark.parametrize("max_tokens", [42, 120])
async def test_auto_tools_beside_a_json_format_end_validly_when_cut(
    sdk: openai.AsyncOpenAI, max_tokens: int
) -> None:
    """Calls or a schema-valid answer, never the answer's ending glued onto calls."""
    tools = {"get_weather": SHORT_CITY_TOOL, "search": LONG_QUERY_TOOL}
    for seed in (10, 11, 12, 13):
        try:
            done = await sdk.chat.completions.create(
                model="rwkv6-tiny",
                messages=[{"role": "user", "content": "Which city?"}],
                tools=list(tools.values()),  # type: ignore[arg-type]
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "City", "schema": CITY, "strict": True},
                },
                max_tokens=max_tokens,
                seed=seed,
            )
        except openai.BadRequestError as exc:  # the budget holds no call and no answer
            assert exc.param == "max_tokens"
            continue
        choice = done.choices[0]
        if choice.message.tool_calls:
            assert not choice.message.content
            for call in choice.message.tool_calls:
                params = tools[call.function.name]["function"]["parameters"]
                jsonschema.validate(json.loads(call.function.arguments), params)
        else:
            jsonschema.validate(json.loads(choice.message.content or ""), CITY)


def _wide(n: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(n)}}


async def test_a_response_format_with_600_optional_properties_is_answered_validly(
    sdk: openai.AsyncOpenAI,
) -> None:
    done = await sdk.chat.completions.create(
        model="rwkv7-tiny",
        messages=[{"role": "user", "content": "Fill the form."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "Form", "schema": _wide(600)},
        },
        max_tokens=40,
        seed=1,
    )
    jsonschema.validate(json.loads(done.choices[0].message.content or ""), _wide(600))


async def test_an_object_wider_than_max_schema_properties_is_a_400(
    sdk: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Fill the form."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Form", "schema": _wide(1001)},
            },
            max_tokens=40,
        )
    assert err.value.code == "schema_too_large"
    assert err.value.param == "response_format.json_schema.schema"


async def test_parallel_tool_calls_false_gives_one_call(sdk: openai.AsyncOpenAI) -> None:
    for seed in range(4):
        done = await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=150,
            seed=seed,
            temperature=1.0,
        )
        assert len(done.choices[0].message.tool_calls or []) == 1
