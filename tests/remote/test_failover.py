"""Failover with real worker processes: `kill -9` of one worker under load, streams on it
end with an error event, the dead worker is ejected and rejoins once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import RunningServer, asgi_client, start_server, stop_server
from tests.remote.conftest import ENGINE_ROLE, metric, remote_models, start_workers, urls


@pytest.fixture
def pair(tmp_path: Path, tiny_dir: Path) -> Iterator[tuple[list[RunningServer], dict[str, Any]]]:
    config = {"models": chat_models(tiny_dir)[1:]}  # rwkv7-tiny only
    started = start_workers(config, tmp_path, 2)
    yield started, config
    for w in started:
        if w.proc.poll() is None:
            stop_server(w)


def _gateway(servers: list[RunningServer], tmp: Path, **options: Any) -> Any:
    models = remote_models([("rwkv7-tiny", "chat")], urls(servers), eject_after=2, **options)
    return create_app(
        Settings(models=models, load_in_background=False, log_json=False, data_dir=tmp)
    )


async def _upstreams(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = (await http.get("/v1/models/rwkv7-tiny")).json()["details"][
        "upstreams"
    ]
    return got


async def _until(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_kill_9_under_load_loses_no_request_and_the_worker_rejoins(
    pair: tuple[list[RunningServer], dict[str, Any]], tmp_path: Path
) -> None:
    servers, config = pair
    victim = servers[0]
    async with asgi_client(_gateway(servers, tmp_path / "gw")) as http:
        gate = asyncio.Semaphore(16)
        finished = 0

        async def one(i: int) -> int:
            nonlocal finished
            async with gate:
                r = await http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "rwkv7-tiny",
                        "messages": [{"role": "user", "content": f"request {i}"}],
                        "max_tokens": 8,
                        "seed": i,
                    },
                    timeout=120,
                )
                finished += 1
                return r.status_code

        tasks = [asyncio.ensure_future(one(i)) for i in range(200)]
        while finished < 40:
            await asyncio.sleep(0.01)
        victim.proc.kill()  # SIGKILL: no goodbye, connections reset mid-request
        victim.proc.wait(timeout=10)
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 240)
        assert codes == [200] * 200
        text = (await http.get("/metrics")).text
        label = f'{{model="rwkv7-tiny",upstream="{urls([victim])[0]}"}}'
        assert metric(text, f"rwkv_rag_upstream_errors_total{label}") >= 1
        assert metric(text, f"rwkv_rag_upstream_requests_total{label}") >= 1

        async def ejected() -> bool:
            return not (await _upstreams(http))[0]["healthy"]

        assert await _until(ejected, 10)
        # Back on the same port: the health checks let it in again.
        port = int(victim.base_url.rsplit(":", 1)[1])
        servers[0] = start_server(
            {"load_in_background": False, "torch_threads": 1, **config},
            Path(victim.log).parent,
            args=ENGINE_ROLE,
            port=port,
        )

        async def rejoined() -> bool:
            return bool((await _upstreams(http))[0]["healthy"])

        assert await _until(rejoined, 15)
        before = metric(
            (await http.get("/metrics")).text, f"rwkv_rag_upstream_requests_total{label}"
        )
        await asyncio.gather(*(one(1000 + i) for i in range(16)))
        after = metric(
            (await http.get("/metrics")).text, f"rwkv_rag_upstream_requests_total{label}"
        )
        assert after > before


async def test_streams_on_a_killed_worker_end_with_an_error_event(
    pair: tuple[list[RunningServer], dict[str, Any]], tmp_path: Path
) -> None:
    servers, _ = pair
    # Least outstanding requests: the streams alternate, so both workers carry some.
    async with asgi_client(_gateway(servers, tmp_path / "gw", affinity="off")) as http:

        async def stream(i: int) -> list[str]:
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "rwkv7-tiny",
                    "messages": [{"role": "user", "content": "Go on and on."}],
                    "max_tokens": 1500,
                    "seed": i,
                    "stream": True,
                },
                timeout=120,
            ) as r:
                assert r.status_code == 200
                return [line async for line in r.aiter_lines() if line]

        tasks = [asyncio.ensure_future(stream(i)) for i in range(6)]

        async def both_busy() -> bool:
            return all(u["in_flight"] > 0 for u in await _upstreams(http))

        assert await _until(both_busy, 20)
        # The victim decodes every stream it holds (none queued), and has generated
        # several tokens for each since: what the kill breaks has streamed.
        label = '{model="rwkv7-tiny"}'

        async def victim(name: str) -> float:
            async with httpx.AsyncClient(base_url=servers[0].base_url, timeout=10) as w:
                return metric((await w.get("/metrics")).text, name)

        async def all_decoding() -> bool:
            queued = await victim(f"rwkv_rag_chat_queued_requests{label}")
            return queued == 0 and await victim(f"rwkv_rag_chat_active_sequences{label}") > 0

        assert await _until(all_decoding, 20)
        generated = 'rwkv_rag_chat_tokens_total{model="rwkv7-tiny",phase="generated"}'
        start = await victim(generated)
        active = await victim(f"rwkv_rag_chat_active_sequences{label}")

        async def streamed() -> bool:
            return await victim(generated) >= start + 8 * active

        assert await _until(streamed, 20)
        servers[0].proc.kill()
        servers[0].proc.wait(timeout=10)
        ends = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        broken = [lines for lines in ends if lines[-1] != "data: [DONE]"]
        whole = [lines for lines in ends if lines[-1] == "data: [DONE]"]
        assert broken and whole  # the dead worker's streams broke, the other's did not
        for lines in broken:
            assert '"error"' in lines[-1] and "upstream_stream_failed" in lines[-1]
            assert len(lines) > 2  # it had streamed: it is not replayed on the other worker
