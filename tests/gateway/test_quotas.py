"""Per-project quotas through the OpenAI SDK: requests and generated tokens per minute,
open streams, stored bytes; 429s in the OpenAI shape with Retry-After and the
x-ratelimit headers; another project unaffected; counters shared by two gateways over one
database; refusals counted in /metrics by project; fair admission between projects."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.app import create_app
from tests.chat.conftest import chat_models
from tests.conftest import (
    FAKE_MODELS,
    RunningServer,
    asgi_client,
    fake_settings,
    start_server,
    stop_server,
)

MODEL = "rwkv7-tiny"
KEYS = {
    name: {"key": f"sk-{name}-000000", "project": name}
    for name in ("alpha", "beta", "gamma", "eta", "delta", "omega")
}
KEYS["omega"]["role"] = "admin"  # reads /metrics
QUOTAS = {
    "projects": {
        "alpha": {"requests_per_minute": 3},
        "beta": {"requests_per_minute": 3},
        "gamma": {"tokens_per_minute": 6},
        "eta": {"tokens_per_minute": 6},
        "delta": {"concurrent_streams": 1},
    }
}
RESET = re.compile(r"^(\d+ms|\d+s|\d+m\d+s)$")
HI = [{"role": "user", "content": "Say something."}]


def key(project: str) -> str:
    return str(KEYS[project]["key"])


def fresh_window(need: float = 20.0) -> None:
    """Wait (at most ``need`` seconds) until at least ``need`` seconds of the current
    one-minute window remain, so a test's requests all fall in one window."""
    left = 60 - time.time() % 60
    if left < need:
        time.sleep(left + 0.05)


@pytest.fixture(scope="module")
def server(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # Room in the batch for a held stream of four choices beside the other requests.
    rwkv7 = [
        {**m, "options": {**m["options"], "max_batch_size": 16}}
        for m in chat_models(tiny_dir)
        if m["id"] == MODEL
    ]
    config = {
        "models": rwkv7,
        "auth": {"keys": list(KEYS.values())},
        "quotas": QUOTAS,
        "log_json": False,
    }
    running = start_server(config, tmp_path_factory.mktemp("quotas"))
    yield running
    stop_server(running)


def sdk(server: RunningServer, project: str) -> openai.OpenAI:
    # No retries: the SDK would otherwise wait out each 429 itself.
    return openai.OpenAI(
        api_key=key(project), base_url=f"{server.base_url}/v1", max_retries=0, timeout=120
    )


def assert_rate_limited(err: openai.RateLimitError, code: str = "rate_limit_exceeded") -> None:
    assert err.status_code == 429
    assert err.code == code
    body = err.response.json()["error"]
    assert body["type"] == code and set(body) == {"message", "type", "param", "code"}


def test_a_project_over_its_requests_per_minute_is_refused_while_another_is_served(
    server: RunningServer,
) -> None:
    fresh_window()
    alpha, beta = sdk(server, "alpha"), sdk(server, "beta")
    for i in range(3):
        raw = alpha.models.with_raw_response.list()
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert RESET.match(raw.headers["x-ratelimit-reset-requests"])
    with pytest.raises(openai.RateLimitError) as caught:
        alpha.models.list()
    assert_rate_limited(caught.value)
    headers = caught.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(headers["x-ratelimit-reset-requests"])
    # The same limit, another project: its own count.
    raw = beta.models.with_raw_response.list()
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    # A project without limits gets no rate-limit headers at all.
    free = sdk(server, "omega").models.with_raw_response.list()
    assert "x-ratelimit-limit-requests" not in free.headers
    metrics = httpx.get(
        f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {key('omega')}"}
    ).text
    assert 'rwkv_rag_quota_refusals_total{kind="requests",project="alpha"} 1.0' in metrics
    # Refusals only where there were refusals (requests are counted by project too).
    assert 'rwkv_rag_quota_refusals_total{kind="requests",project="beta"}' not in metrics
    assert key("alpha") not in metrics


def test_generated_tokens_are_charged_and_a_project_past_its_tokens_per_minute_is_refused(
    server: RunningServer,
) -> None:
    fresh_window()
    gamma, omega = sdk(server, "gamma"), sdk(server, "omega")
    used = 0
    for seed in range(10):
        raw = gamma.chat.completions.with_raw_response.create(
            model=MODEL, messages=HI, max_tokens=4, seed=seed
        )
        assert raw.headers["x-ratelimit-limit-tokens"] == "6"
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(max(0, 6 - used))
        out = raw.parse()
        assert out.usage is not None
        used += out.usage.completion_tokens
        if used >= 6:
            break
    assert used >= 6
    with pytest.raises(openai.RateLimitError) as caught:
        gamma.chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
    assert_rate_limited(caught.value)
    headers = caught.value.response.headers
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert RESET.match(headers["x-ratelimit-reset-tokens"])
    # Embeddings and listings generate nothing: still served.
    assert gamma.models.list().data
    out = omega.chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
    assert out.choices


def test_a_stream_is_let_in_under_the_token_limit_and_charged_when_it_ends(
    server: RunningServer,
) -> None:
    fresh_window()
    eta = sdk(server, "eta")
    generated = 0
    stream = eta.chat.completions.create(
        model=MODEL,
        messages=HI,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            generated = chunk.usage.completion_tokens
    # One answer may go past the limit: it was let in under it.
    assert generated > 6
    with pytest.raises(openai.RateLimitError) as caught:
        eta.completions.create(model=MODEL, prompt="Hello", max_tokens=2)
    assert_rate_limited(caught.value)
    assert caught.value.response.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_project_holding_its_open_streams_is_refused_another_until_one_closes(
    server: RunningServer,
) -> None:
    delta, omega = sdk(server, "delta"), sdk(server, "omega")
    # Four long choices with every alternative's logprob: megabytes more than the socket
    # buffers hold, so the unread stream stays open on the server while the test runs.
    body = {
        "model": MODEL,
        "messages": HI,
        "max_tokens": 4000,
        "n": 4,
        "logprobs": True,
        "top_logprobs": 20,
        "stream": True,
    }
    auth = {"Authorization": f"Bearer {key('delta')}"}
    with (
        httpx.Client(base_url=server.base_url, timeout=120) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=auth) as held,
    ):
        assert held.status_code == 200
        # One reader for the whole block: a dropped reader would close the connection.
        lines = held.iter_lines()
        assert next(lines).startswith("data: ")
        with pytest.raises(openai.RateLimitError) as caught:
            delta.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, stream=True)
        assert_rate_limited(caught.value)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        # Answers that do not stream, and other projects' streams, are not held back.
        assert delta.chat.completions.create(model=MODEL, messages=HI, max_tokens=2).choices
        other = omega.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, stream=True)
        assert [c for c in other if c.choices]
    # The held stream is closed: the project streams again once the server has seen it go
    # (bounded: a handful of tries).
    for _ in range(50):
        try:
            again = delta.chat.completions.create(
                model=MODEL, messages=HI, max_tokens=2, stream=True
            )
        except openai.RateLimitError:
            time.sleep(0.1)
            continue
        assert [c for c in again if c.choices]
        break
    else:
        pytest.fail("the project's stream slot was not given back after its stream closed")


# -- counters shared by two gateways over one database --------------------------------


def _app_settings(data_dir: Path, **overrides: Any) -> Any:
    base: dict[str, Any] = {"auth": {"keys": list(KEYS.values())}, "quotas": QUOTAS}
    return fake_settings(data_dir=str(data_dir), **{**base, **overrides})


def _async_sdk(client: httpx.AsyncClient, project: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=key(project),
        base_url="http://testserver.local/v1",
        http_client=client,
        max_retries=0,
    )


@pytest.mark.usefixtures("kb_backend")
async def test_two_gateways_over_one_database_share_a_projects_request_count(
    tmp_path: Path,
) -> None:
    fresh_window()
    one, two = create_app(_app_settings(tmp_path)), create_app(_app_settings(tmp_path))
    async with asgi_client(one) as first, asgi_client(two) as second:
        a1, a2 = _async_sdk(first, "alpha"), _async_sdk(second, "alpha")
        await a1.embeddings.create(model="fake-embed", input="x")
        await a2.embeddings.create(model="fake-embed", input="x")
        raw = await a1.embeddings.with_raw_response.create(model="fake-embed", input="x")
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as caught:
            await a2.embeddings.create(model="fake-embed", input="x")
        assert_rate_limited(caught.value)
        # The other project's count is its own on both gateways.
        assert (await _async_sdk(second, "beta").models.list()).data


# -- storage ---------------------------------------------------------------------------


@pytest.fixture
async def storage_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The default meter: a project's files, what ingestion stored and its responses."""
    quotas = {"projects": {"alpha": {"storage_bytes": 1000}, "beta": {"storage_bytes": 1000}}}
    async with asgi_client(create_app(_app_settings(tmp_path, quotas=quotas))) as client:
        yield client


async def test_an_upload_past_the_projects_storage_quota_is_refused_as_insufficient_quota(
    storage_app: httpx.AsyncClient,
) -> None:
    client = storage_app
    alpha, beta = _async_sdk(client, "alpha"), _async_sdk(client, "beta")
    await alpha.files.create(file=("a.txt", b"a" * 600), purpose="assistants")
    with pytest.raises(openai.RateLimitError) as caught:
        await alpha.files.create(file=("b.txt", b"b" * 600), purpose="assistants")
    assert_rate_limited(caught.value, "insufficient_quota")
    # Waiting cannot help: the SDKs are told not to retry.
    assert caught.value.response.headers["x-should-retry"] == "false"
    # The other project has its own room.
    assert (await beta.files.create(file=("d.txt", b"d" * 600), purpose="assistants")).id
    metrics = (
        await client.get("/metrics", headers={"Authorization": f"Bearer {key('omega')}"})
    ).text
    assert 'rwkv_rag_quota_refusals_total{kind="storage",project="alpha"} 1.0' in metrics


async def test_stored_responses_count_against_the_storage_quota(tmp_path: Path) -> None:
    quotas = {"projects": {"alpha": {"storage_bytes": 4000}, "beta": {"storage_bytes": 4000}}}
    models = [*FAKE_MODELS, {"id": "scripted-chat", "kind": "chat", "engine": "fake"}]
    app = create_app(_app_settings(tmp_path, quotas=quotas, models=models))
    async with asgi_client(app) as client:
        alpha, beta = _async_sdk(client, "alpha"), _async_sdk(client, "beta")
        # One stored answer with a long input fills most of alpha's room.
        await alpha.responses.create(model="scripted-chat", input="words " * 600)
        for attempt in (
            alpha.files.create(file=("a.txt", b"a" * 1500), purpose="assistants"),
            alpha.responses.create(model="scripted-chat", input="Hi."),
        ):
            with pytest.raises(openai.RateLimitError) as caught:
                await attempt
            assert_rate_limited(caught.value, "insufficient_quota")
        # An answer not stored takes no room; the other project has its own.
        assert (await alpha.responses.create(model="scripted-chat", input="Hi.", store=False)).id
        assert (await beta.files.create(file=("b.txt", b"b" * 1500), purpose="assistants")).id


# -- fair admission ----------------------------------------------------------------------


async def test_a_project_queued_behind_another_projects_six_requests_is_admitted_first(
    tiny_dir: Path, tmp_path: Path
) -> None:
    """Two batch slots, project A asks six times, then project B once: B's request is let
    in at the first free slot, before A's later requests (every answer runs to max_tokens
    under greedy sampling, so the order they end in is the order they were let in)."""
    rwkv7 = [
        {**m, "options": {**m["options"], "max_batch_size": 2}}
        for m in chat_models(tiny_dir)
        if m["id"] == MODEL
    ]
    settings = fake_settings(
        models=rwkv7, data_dir=str(tmp_path), auth={"keys": list(KEYS.values())}
    )
    app = create_app(settings)
    finished: list[str] = []
    metrics_auth = {"Authorization": f"Bearer {key('omega')}"}

    async with asgi_client(app) as client:

        async def ask(project: str, i: int) -> None:
            out = await _async_sdk(client, project).chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": f"Question {i}."}],
                max_tokens=24,
                temperature=0,
            )
            assert out.choices
            finished.append(f"{project}{i}")

        async def gauge(name: str) -> float:
            text = (await client.get("/metrics", headers=metrics_auth)).text
            found = re.search(rf'^{name}\{{model="{MODEL}"\}} (\S+)$', text, re.M)
            return float(found.group(1)) if found else 0.0

        tasks = [asyncio.create_task(ask("alpha", i)) for i in range(6)]
        # Bounded: every one of A's requests is in the engine (two running, four queued).
        for _ in range(500):
            if await gauge("rwkv_rag_chat_queued_requests") == 4:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("project A's requests never queued")
        tasks.append(asyncio.create_task(ask("beta", 0)))
        await asyncio.gather(*tasks)
        deferred = await gauge("rwkv_rag_chat_fairness_deferrals_total")
    # A's first two held both slots; when they end (maybe at one step) B goes in with at
    # most one more of A's, never behind the rest: it ends before A's last three.
    assert finished.index("beta0") <= 3, finished
    later = [f"alpha{i}" for i in range(3, 6)]
    assert all(finished.index(a) > finished.index("beta0") for a in later), finished
    assert deferred > 0
