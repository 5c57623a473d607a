"""A conversation behind a gateway of remote workers: it stays on the worker that holds its
state, and when that worker is gone another one loads the state from the shared tier
instead of re-reading the conversation, with the same text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.chat.test_state_tiers import NO_CACHE, TURN_1, _chat, _turn_2
from tests.conftest import asgi_client, stop_server
from tests.remote.conftest import metric, remote_models, start_workers, urls


async def _turn(http: httpx.AsyncClient, messages: list[dict[str, str]]) -> tuple[str, int, int]:
    r = await http.post(
        "/v1/chat/completions",
        json={"model": "rwkv7-tiny", "messages": messages, "max_tokens": 12, "temperature": 0},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    usage = body["usage"]
    return (
        body["choices"][0]["message"]["content"],
        usage["prompt_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
    )


async def _served(base_url: str) -> float:
    async with httpx.AsyncClient(base_url=base_url) as c:
        text = (await c.get("/metrics")).text
    return metric(
        text,
        'rwkv_rag_requests_total{method="POST",project="default",route="/v1/chat/completions",status="200"}',
    )


async def test_when_the_worker_holding_a_state_is_gone_another_loads_it_from_the_shared_tier(
    tiny_dir: Path, tmp_path: Path
) -> None:
    # Both workers' disk tier is one directory (PostgreSQL works the same way).
    options: dict[str, Any] = {"state_disk_dir": str(tmp_path / "shared-states")}
    (tmp_path / "workers").mkdir()
    workers = start_workers({"models": chat_models(tiny_dir, **options)}, tmp_path / "workers", 2)
    try:
        settings = Settings(
            models=remote_models([("rwkv7-tiny", "chat")], urls(workers)),
            load_in_background=False,
            log_json=False,
            data_dir=tmp_path / "gw",
        )
        async with asgi_client(create_app(settings)) as http:
            answer, prompt_1, _ = await _turn(http, TURN_1)
            counts = [await _served(w.base_url) for w in workers]
            home = counts.index(1)
            assert sorted(counts) == [0, 1]
            stop_server(workers[home])
            text, _, cached = await _turn(http, _turn_2(answer))
            other = workers[1 - home]
            assert await _served(other.base_url) == 1
    finally:
        for w in workers:
            stop_server(w)
    [(scratch, _, none)] = await _chat(
        Settings(
            models=[
                {**m, "options": {**m["options"], **NO_CACHE}}
                for m in chat_models(tiny_dir)
                if m["id"] == "rwkv7-tiny"
            ],
            load_in_background=False,
            log_json=False,
            data_dir=tmp_path / "ref",
        ),
        [_turn_2(answer)],
        None,
    )
    assert none == 0
    # The other worker never saw turn 1, yet reads all of it but the generation prompt.
    assert 0 < cached < prompt_1 and prompt_1 - cached <= 4
    assert text == scratch
