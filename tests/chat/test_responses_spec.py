"""Responses objects and stream events validate against OpenAI's published OpenAPI
document: the ``Response`` schema and ``ResponseStreamEvent`` with everything they
reference, cut from openai/openai-openapi into ``tests/gateway/openai_spec/responses.json``
(its ``source`` names the commit). Plain, streamed, function-calling, reasoning,
incomplete and file_search responses are checked, and every event of their streams."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema

from tests.chat.test_responses import FN_TOOL, stack  # noqa: F401 - the app fixture
from tests.conftest import ROOT

SPEC = json.loads((ROOT / "tests/gateway/openai_spec/responses.json").read_text())


def _event_schemas() -> dict[str, str]:
    """Each stream event's own schema, by its ``type`` (the union's branches)."""
    schemas = SPEC["components"]["schemas"]
    found: dict[str, str] = {}
    for branch in schemas["ResponseStreamEvent"]["anyOf"]:
        name = branch["$ref"].rsplit("/", 1)[-1]
        for kind in schemas[name]["properties"]["type"].get("enum", []):
            found[kind] = name
    return found


EVENTS = _event_schemas()


def _errors(body: Any, schema_name: str) -> list[str]:
    schema = {"$ref": f"#/components/schemas/{schema_name}", **SPEC}
    found = jsonschema.Draft202012Validator(schema).iter_errors(body)
    return [f"{list(e.path)}: {e.message[:200]}" for e in sorted(found, key=lambda e: list(e.path))]


async def _both(http: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    """Every way the plain answer and the stream's events fail the spec."""
    plain = await http.post("/v1/responses", json=body)
    assert plain.status_code == 200, plain.text
    problems = [f"Response {e}" for e in _errors(plain.json(), "Response")]
    async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        events = [
            json.loads(line[6:]) async for line in r.aiter_lines() if line.startswith("data: ")
        ]
    assert events
    for ev in events:
        assert ev["type"] in EVENTS, ev["type"]
        problems += [f"{ev['type']} {e}" for e in _errors(ev, EVENTS[ev["type"]])]
    return problems


async def test_responses_and_their_events_match_the_published_spec(stack: Any) -> None:  # noqa: F811
    http, vs = stack[1], stack[2]
    problems = await _both(http, {"model": "fake-plain", "input": "What is the weather?"})
    problems += await _both(
        http,
        {"model": "fake-caller", "input": "Weather in Paris?", "tools": [FN_TOOL]},
    )
    problems += await _both(http, {"model": "fake-thinker", "input": "Think first."})
    problems += await _both(
        http, {"model": "fake-plain", "input": "Weather?", "max_output_tokens": 3}
    )
    problems += await _both(
        http,
        {
            "model": "fake-cited",
            "input": "How do I reset the pump?",
            "tools": [{"type": "file_search", "vector_store_ids": [vs]}],
            "include": ["file_search_call.results"],
        },
    )
    assert sorted(set(problems)) == []
