"""Conversation states on disk: a restarted app continues where the last one stopped, and a
state that belongs elsewhere, or is damaged, is re-read, never applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import asgi_client

SYSTEM = "You are a careful assistant who answers in short sentences. " * 20
TURN_1 = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "What is a state?"},
]
NO_CACHE = {"prefix_cache_bytes": 0, "state_disk_bytes": 0}


def _settings(tiny: Path, data: Path, model: str, serve_as: str, **options: Any) -> Settings:
    (entry,) = [m for m in chat_models(tiny, **options) if m["id"] == model]
    entry = {**entry, "id": serve_as}
    return Settings(models=[entry], load_in_background=False, log_json=False, data_dir=data)


async def _chat(
    settings: Settings, conversations: list[list[dict[str, str]]], state: str | None
) -> list[tuple[str, int, int]]:
    return (await _chat_and_metrics(settings, conversations, state))[0]


async def _chat_and_metrics(
    settings: Settings, conversations: list[list[dict[str, str]]], state: str | None
) -> tuple[list[tuple[str, int, int]], str]:
    """(text, prompt tokens, cached tokens) of each conversation, greedy, in one app, and
    the app's metrics after them."""
    out = []
    async with asgi_client(create_app(settings)) as http:
        for messages in conversations:
            body: dict[str, Any] = {
                "model": settings.models[0].id,
                "messages": messages,
                "max_tokens": 12,
                "temperature": 0,
            }
            if state:
                body["state"] = state
            r = await http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            got = r.json()
            usage = got["usage"]
            out.append(
                (
                    got["choices"][0]["message"]["content"],
                    usage["prompt_tokens"],
                    usage["prompt_tokens_details"]["cached_tokens"],
                )
            )
        metrics = (await http.get("/metrics")).text
    return out, metrics


def _metric(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def _turn_2(answer: str) -> list[dict[str, str]]:
    return [
        *TURN_1,
        {"role": "assistant", "content": answer or "..."},
        {"role": "user", "content": "And how large is it?"},
    ]


def _state_files(data: Path) -> list[Path]:
    return sorted((data / "states").rglob("*.rwkvstate"))


@pytest.mark.parametrize("state", [None, "tuned"])
@pytest.mark.parametrize("model", ["rwkv6-tiny", "rwkv7-tiny"])
async def test_a_restarted_app_continues_from_the_disk_state_with_the_same_text(
    tiny_dir: Path, tmp_path: Path, model: str, state: str | None
) -> None:
    [(answer, prompt_1, _)] = await _chat(
        _settings(tiny_dir, tmp_path / "a", model, "m"), [TURN_1], state
    )
    assert _state_files(tmp_path / "a")
    [(text, _, cached)] = await _chat(
        _settings(tiny_dir, tmp_path / "a", model, "m"), [_turn_2(answer)], state
    )
    [(scratch, _, none)] = await _chat(
        _settings(tiny_dir, tmp_path / "ref", model, "m", **NO_CACHE), [_turn_2(answer)], state
    )
    assert none == 0
    # The first turn's messages (all of its prompt but the generation prompt) come from disk.
    assert 0 < cached < prompt_1
    assert prompt_1 - cached <= 4
    assert text == scratch


async def test_a_restart_counts_a_disk_hit_in_the_metrics(tiny_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_dir, tmp_path, "rwkv7-tiny", "m")
    [(answer, _, _)] = await _chat(settings, [TURN_1], None)
    [(_, _, cached)], text = await _chat_and_metrics(settings, [_turn_2(answer)], None)
    assert cached > 0
    assert _metric(text, 'rwkv_rag_state_tier_hits_total{model="m",tier="disk"}') == 1
    assert _metric(text, 'rwkv_rag_state_tier_bytes{model="m",tier="disk"}') > 0


@pytest.mark.parametrize(
    ("first", "second", "serve_as"),
    [
        ("rwkv7-tiny", "rwkv6-tiny", "m"),  # the same model id over other weights
        ("rwkv7-tiny", "rwkv7-tiny", "other"),  # another model over the same directory
    ],
)
async def test_a_state_of_another_model_or_other_weights_is_never_applied(
    tiny_dir: Path, tmp_path: Path, first: str, second: str, serve_as: str
) -> None:
    shared = tmp_path / "shared"
    [(answer, _, _)] = await _chat(_settings(tiny_dir, shared, first, "m"), [TURN_1], None)
    assert _state_files(shared)
    settings = _settings(tiny_dir, shared, second, serve_as)
    [(text, _, cached)], metrics = await _chat_and_metrics(settings, [_turn_2(answer)], None)
    [(scratch, _, _)] = await _chat(
        _settings(tiny_dir, tmp_path / "ref", second, serve_as, **NO_CACHE),
        [_turn_2(answer)],
        None,
    )
    assert cached == 0
    assert text == scratch
    refused = _metric(
        metrics, f'rwkv_rag_state_disk_events_total{{event="refused",model="{serve_as}"}}'
    )
    # Files are named by model: another model never opens them; other weights read and refuse.
    assert (refused > 0) if serve_as == "m" else (refused == 0)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _unrenamed(path: Path) -> None:
    path.rename(path.with_name(path.name + ".4242.1.tmp"))


@pytest.mark.parametrize("damage", [_flip_last_byte, _truncate, _unrenamed])
async def test_a_damaged_or_torn_state_file_is_re_read_not_loaded(
    tiny_dir: Path, tmp_path: Path, damage: Any
) -> None:
    data = tmp_path / "data"
    [(answer, _, _)] = await _chat(_settings(tiny_dir, data, "rwkv7-tiny", "m"), [TURN_1], None)
    files = _state_files(data)
    assert files
    for f in files:
        damage(f)
    settings = _settings(tiny_dir, data, "rwkv7-tiny", "m")
    [(text, _, cached)], metrics = await _chat_and_metrics(settings, [_turn_2(answer)], None)
    [(scratch, _, _)] = await _chat(
        _settings(tiny_dir, tmp_path / "ref", "rwkv7-tiny", "m", **NO_CACHE),
        [_turn_2(answer)],
        None,
    )
    assert cached == 0
    assert text == scratch
    refused = _metric(metrics, 'rwkv_rag_state_disk_events_total{event="refused",model="m"}')
    # A file left under its temporary name is never even opened.
    assert (refused == 0) if damage is _unrenamed else (refused > 0)


async def test_a_tiny_disk_budget_evicts_states_and_answers_stay_the_same(
    tiny_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "probe"
    await _chat(_settings(tiny_dir, data, "rwkv7-tiny", "m"), [TURN_1], None)
    one = max(f.stat().st_size for f in _state_files(data))
    budget = one + one // 2  # room for a single state
    conversations = [TURN_1, _turn_2("A state is memory."), _turn_2("It is small.")]
    got = await _chat(
        _settings(
            tiny_dir,
            tmp_path / "tight",
            "rwkv7-tiny",
            "m",
            prefix_cache_bytes=0,
            state_disk_bytes=budget,
        ),
        conversations,
        None,
    )
    ref = await _chat(
        _settings(tiny_dir, tmp_path / "ref", "rwkv7-tiny", "m", **NO_CACHE), conversations, None
    )
    assert [t for t, _, _ in got] == [t for t, _, _ in ref]
    kept = _state_files(tmp_path / "tight")
    assert kept
    assert sum(f.stat().st_size for f in kept) <= budget


async def _respond(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post("/v1/responses", json={"model": "m", "max_output_tokens": 12, **body})
    assert r.status_code == 200, r.text
    got: dict[str, Any] = r.json()
    return got


async def test_a_stored_response_continues_after_a_restart_from_its_disk_state(
    tiny_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = _settings(tiny_dir, data, "rwkv7-tiny", "m")
    async with asgi_client(create_app(settings)) as http:
        first = await _respond(http, {"input": TURN_1, "temperature": 0})
    async with asgi_client(create_app(settings)) as http:
        second = await _respond(
            http,
            {
                "previous_response_id": first["id"],
                "input": "And how large is it?",
                "temperature": 0,
            },
        )
    ref_settings = _settings(tiny_dir, tmp_path / "ref", "rwkv7-tiny", "m", **NO_CACHE)
    async with asgi_client(create_app(ref_settings)) as http:
        ref_first = await _respond(http, {"input": TURN_1, "temperature": 0})
        ref_second = await _respond(
            http,
            {
                "previous_response_id": ref_first["id"],
                "input": "And how large is it?",
                "temperature": 0,
            },
        )
    cached = second["usage"]["input_tokens_details"]["cached_tokens"]
    assert 0 < cached < first["usage"]["input_tokens"]
    assert _texts(second) == _texts(ref_second)
    assert _texts(first) == _texts(ref_first)


def _texts(response: dict[str, Any]) -> list[str]:
    return [
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    ]


async def test_a_response_with_store_false_leaves_no_state_on_disk(
    tiny_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    async with asgi_client(create_app(_settings(tiny_dir, data, "rwkv7-tiny", "m"))) as http:
        await _respond(http, {"input": TURN_1, "store": False})
    assert _state_files(data) == []


async def test_deleting_a_stored_response_deletes_its_states(
    tiny_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    settings = _settings(tiny_dir, data, "rwkv7-tiny", "m")
    async with asgi_client(create_app(settings)) as http:
        kept = await _respond(http, {"input": [{"role": "user", "content": SYSTEM}]})
        gone = await _respond(http, {"input": TURN_1})
    before = set(_state_files(data))
    async with asgi_client(create_app(settings)) as http:
        r = await http.delete(f"/v1/responses/{gone['id']}")
        assert r.status_code == 200, r.text
        assert (await http.get(f"/v1/responses/{kept['id']}")).status_code == 200
    after = set(_state_files(data))
    # The deleted conversation's prefixes are gone; the other one's state is still there.
    assert after < before
    assert after
