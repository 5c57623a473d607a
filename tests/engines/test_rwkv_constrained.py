"""Constrained decoding on the tiny random RWKV model: the closer ends any valid prefix
validly (fuzzed over llguidance's own masks), constrained and plain rows share a batch,
every constrained answer parses and validates within its budget, and a constrained
request whose grammar work fails fails alone."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest

from engines.base import ModelInfo
from engines.constraint import JSON_OPTIONS, JsonCloser, calls_constraint, json_constraint
from engines.generation import FinishEvent, GenerationRequest, SamplingParams
from engines.rwkv.engine import RWKVChatEngine
from engines.rwkv.grammar import MaskWorker, ll_tokenizer
from engines.rwkv.tokenizer import world_tokenizer

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 3, "maximum": 90},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 2}, "minItems": 2},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "a": {"type": "string", "enum": ["red", "green", "blue"]},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "c": {"type": "boolean"},
            "d": {"type": "number"},
        },
        "required": ["a", "c"],
    },
    {
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "note": {"type": "string", "maxLength": 10},
        },
        "required": ["items", "note"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "m": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {"type": "number", "minimum": -5, "maximum": 5},
                    "minItems": 1,
                },
                "minItems": 2,
            },
            "o": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": 10},
                    "y": {"type": "string", "minLength": 3},
                },
                "required": ["y"],
            },
        },
        "required": ["m", "o"],
        "additionalProperties": False,
    },
]


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> Iterator[RWKVChatEngine]:
    e = RWKVChatEngine(
        ModelInfo("t", "chat", "rwkv"),
        tiny_dir / "rwkv7-tiny-random.pth",
        {"strategy": "cpu fp32", "max_batch_size": 8},
    )
    yield e
    e.close()


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_the_closer_ends_any_valid_prefix_validly(index: int) -> None:
    """Random walks through llguidance's masks, cut anywhere, then closed: the result is
    accepted by the grammar and validates against the schema."""
    schema = SCHEMAS[index]
    tok, llt = world_tokenizer(), ll_tokenizer()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
    closer = JsonCloser(schema)
    rng = random.Random(index)
    for _ in range(40):
        m = llguidance.LLMatcher(llt, grammar, log_level=0)
        out = b""
        for _ in range(rng.randint(0, 40)):
            mask = np.frombuffer(m.compute_bitmask(), dtype=np.uint32)
            allowed = (
                np.nonzero((mask[np.arange(1, 65536) >> 5] >> (np.arange(1, 65536) & 31)) & 1)[0]
                + 1
            )
            if not len(allowed):
                break
            pick = int(rng.choice(list(allowed[:2000] if rng.random() < 0.5 else allowed)))
            assert m.consume_token(pick)
            out += tok.idx2token[pick]
            if m.is_stopped():
                break
        whole = out + closer.complete(out)
        check = llguidance.LLMatcher(llt, grammar, log_level=0)
        assert check.consume_tokens(tok.encodeBytes(whole)) and check.is_accepting(), whole
        jsonschema.validate(json.loads(whole), schema)


def _walk(m: Any, rng: random.Random, steps: int) -> bytes:
    """Random tokens the matcher allows (half the time from the first 2000), consumed."""
    tok, out = world_tokenizer(), b""
    for _ in range(steps):
        mask = np.frombuffer(m.compute_bitmask(), dtype=np.uint32)
        ids = np.arange(1, 65536)
        allowed = np.nonzero((mask[ids >> 5] >> (ids & 31)) & 1)[0] + 1
        if not len(allowed) or m.is_stopped():
            break
        pick = int(rng.choice(list(allowed[:2000] if rng.random() < 0.5 else allowed)))
        assert m.consume_token(pick)
        out += tok.idx2token[pick]
    return out


FENCE = (" ```json\n", "\n```")
ANSWER = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", range(4))
def test_the_answer_or_calls_closer_continues_the_branch_the_output_is_on(seed: int) -> None:
    """``tool_choice: auto`` with a JSON format, cut anywhere: some proposed ending is
    accepted by the grammar, and it ends the branch begun (a call block stays a call
    block, an answer stays a schema-valid document)."""
    tools = [
        ("get_weather", SCHEMAS[0]),
        (
            "search",
            {
                "type": "object",
                "properties": {"q": {"type": "string", "minLength": 30}},
                "required": ["q"],
            },
        ),
    ]
    c = calls_constraint(tools, parallel=True, fence=FENCE, text_start=" ", alt_schema=ANSWER)
    assert c.closer is not None and c.kind == "answer"
    tok, llt, rng = world_tokenizer(), ll_tokenizer(), random.Random(seed)
    for _ in range(25):
        m = llguidance.LLMatcher(llt, c.grammar, log_level=0)
        out = _walk(m, rng, rng.randint(0, 30))
        endings = c.closer.endings(out) or []
        valid = [
            e
            for e in endings
            if llguidance.LLMatcher(llt, c.grammar, log_level=0).consume_tokens(
                tok.encodeBytes(out + e)
            )
        ]
        assert valid, (out, endings)
        whole = (out + valid[0]).decode()
        if out.startswith(FENCE[0].encode()):  # inside the call block: it stays one
            assert whole.startswith(FENCE[0]) and whole.endswith(FENCE[1]), whole
        if whole.startswith(FENCE[0]):
            calls = json.loads(whole[len(FENCE[0]) : -len(FENCE[1])])
            for call in calls if isinstance(calls, list) else [calls]:
                jsonschema.validate(call["arguments"], dict(tools)[call["name"]])
        else:  # an answer begun stays an answer
            assert not FENCE[0].startswith(out.decode(errors="replace")) or len(out) <= 1, out
            jsonschema.validate(json.loads(whole), ANSWER)


def test_max_calls_bounds_the_calls_a_grammar_admits() -> None:
    tools = [("get_weather", SCHEMAS[0])]
    call = json.dumps(
        {"name": "get_weather", "arguments": {"name": "P", "age": 5, "tags": ["ab", "cd"]}},
        separators=(",", ":"),
    )
    tok, llt = world_tokenizer(), ll_tokenizer()

    def accepts(c: Any, text: str) -> bool:
        m = llguidance.LLMatcher(llt, c.grammar, log_level=0)
        return bool(m.consume_tokens(tok.encodeBytes(text.encode())) and m.is_accepting())

    two = calls_constraint(tools, parallel=True, max_calls=2)
    assert accepts(two, f"[{call},{call}]") and accepts(two, call)
    assert not accepts(two, f"[{call},{call},{call}]")
    one = calls_constraint(tools, parallel=True, max_calls=1)
    assert accepts(one, call) and not accepts(one, f"[{call}]")
    assert accepts(calls_constraint(tools, parallel=True), f"[{call},{call},{call}]")


async def _run(engine: RWKVChatEngine, req: GenerationRequest) -> tuple[str, str, int]:
    text, reason, count = "", "", 0
    async for ev in engine.generate(req):
        text += ev.text
        if isinstance(ev, FinishEvent):
            reason, count = ev.reason, ev.completion_tokens
    return text, reason, count


async def test_constrained_and_plain_rows_share_a_batch(engine: RWKVChatEngine) -> None:
    weather = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    calls = calls_constraint([("get_weather", weather)], parallel=True)
    jobs = []
    for i in range(12):
        budget = 20 + 8 * (i % 4)
        params = SamplingParams(max_tokens=budget, temperature=1.0, seed=i)
        kind = i % 3
        constraint = (
            json_constraint(SCHEMAS[i % 4], prefix=" ")
            if kind == 0
            else calls
            if kind == 1
            else None
        )
        req = GenerationRequest(
            [(i * 977) % 60000 + 1 for _ in range(5)], params, constraint=constraint
        )
        jobs.append((kind, budget, i, req))
    results = await asyncio.gather(*(_run(engine, req) for *_, req in jobs))
    for (kind, budget, i, _), (text, reason, count) in zip(jobs, results, strict=True):
        assert reason in ("stop", "length") and count <= budget
        if kind == 0:
            jsonschema.validate(json.loads(text), SCHEMAS[i % 4])
        elif kind == 1:
            doc = json.loads(text)
            for call in doc if isinstance(doc, list) else [doc]:
                assert call["name"] == "get_weather"
                jsonschema.validate(call["arguments"], weather)
        else:
            assert reason == "length"  # random weights rarely end on their own


async def test_a_failing_constrained_request_fails_alone(
    engine: RWKVChatEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: MaskWorker, rows: Any, batch: int) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_exception(RuntimeError("mask failed"))
        return f

    plain = GenerationRequest([5, 6, 7], SamplingParams(max_tokens=12))
    running = asyncio.create_task(_run(engine, plain))
    await asyncio.sleep(0)
    monkeypatch.setattr(MaskWorker, "start", broken)
    bad = GenerationRequest(
        [1, 2, 3], SamplingParams(max_tokens=30), constraint=json_constraint(SCHEMAS[0])
    )
    _, reason, _ = await asyncio.wait_for(_run(engine, bad), 30)
    assert reason == "error"
    monkeypatch.undo()
    _, reason, count = await asyncio.wait_for(running, 30)
    assert (reason, count) == ("length", 12)
    again = GenerationRequest([9, 9], SamplingParams(max_tokens=6))
    assert (await asyncio.wait_for(_run(engine, again), 30))[1] == "length"
