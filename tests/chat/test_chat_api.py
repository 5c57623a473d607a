"""/v1/chat/completions and /v1/completions through the official SDK on tiny x060/x070."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from engines.rwkv.tokenizer import world_tokenizer
from tests.conftest import RunningServer

MODELS = ["rwkv6-tiny", "rwkv7-tiny"]
HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def n_tokens(text: str) -> int:
    return len(world_tokenizer().encode(text))


@pytest.mark.parametrize("model", MODELS)
async def test_non_stream_chat_counts_usage_with_the_tokenizer(
    sdk: openai.AsyncOpenAI, model: str
) -> None:
    out = await sdk.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, *HELLO],
        max_tokens=12,
        temperature=0,
        seed=3,
    )
    prompt = "System: Be brief.\n\nUser: Hello, who are you?\n\nAssistant:"
    # Turns are tokenized one by one (stable prefix boundaries for the state cache).
    expected = (
        n_tokens("System: Be brief.\n\n")
        + n_tokens("User: Hello, who are you?\n\n")
        + n_tokens("Assistant:")
    )
    assert out.usage is not None and out.usage.prompt_tokens == expected
    assert expected >= n_tokens(prompt) - 2
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.refusal is None
    assert choice.logprobs is None and out.system_fingerprint
    assert out.usage.completion_tokens <= 12
    if choice.finish_reason == "length":
        assert out.usage.completion_tokens == 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


@pytest.mark.parametrize("model", MODELS)
async def test_stream_sends_role_first_then_content_finish_usage_and_done(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, model: str
) -> None:
    stream = await sdk.chat.completions.create(
        model=model,
        messages=HELLO,
        max_tokens=8,
        stream=True,
        seed=1,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    same = await sdk.chat.completions.create(model=model, messages=HELLO, max_tokens=8, seed=1)
    assert text == same.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == same.usage.completion_tokens  # type: ignore[union-attr]
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": model, "messages": HELLO, "max_tokens": 3, "stream": True},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("model", MODELS)
async def test_same_seed_same_text_and_n_choices(sdk: openai.AsyncOpenAI, model: str) -> None:
    kw: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": 16, "temperature": 1.0}
    a = await sdk.chat.completions.create(seed=42, n=3, **kw)
    b = await sdk.chat.completions.create(seed=42, n=3, **kw)
    c = await sdk.chat.completions.create(seed=43, n=3, **kw)
    texts = [ch.message.content for ch in a.choices]
    assert texts == [ch.message.content for ch in b.choices]
    assert texts != [ch.message.content for ch in c.choices]
    assert len(set(texts)) > 1  # the n choices are different samples
    assert [ch.index for ch in a.choices] == [0, 1, 2]


@pytest.mark.parametrize("model", MODELS)
async def test_stop_sequence_ends_the_text_and_is_never_emitted(
    sdk: openai.AsyncOpenAI, model: str
) -> None:
    base = await sdk.chat.completions.create(
        model=model, messages=HELLO, max_tokens=24, temperature=0
    )
    text = base.choices[0].message.content or ""
    assert len(text) > 12
    stop = text[8:11]
    out = await sdk.chat.completions.create(
        model=model, messages=HELLO, max_tokens=24, temperature=0, stop=[stop]
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == text[: text.index(stop)]
    stream = await sdk.chat.completions.create(
        model=model, messages=HELLO, max_tokens=24, temperature=0, stop=stop, stream=True
    )
    streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert streamed == text[: text.index(stop)]


@pytest.mark.parametrize("model", MODELS)
async def test_state_file_changes_the_output(sdk: openai.AsyncOpenAI, model: str) -> None:
    kw: dict[str, Any] = {"model": model, "messages": HELLO, "max_tokens": 12, "temperature": 0}
    plain = await sdk.chat.completions.create(**kw)
    tuned = await sdk.chat.completions.create(extra_body={"state": "tuned"}, **kw)
    again = await sdk.chat.completions.create(extra_body={"state": "tuned"}, **kw)
    assert plain.choices[0].message.content != tuned.choices[0].message.content
    assert tuned.choices[0].message.content == again.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        await sdk.chat.completions.create(extra_body={"state": "../../etc/passwd"}, **kw)
    assert err.value.code == "state_not_found"


@pytest.mark.parametrize("model", MODELS)
async def test_logprobs_and_top_logprobs(sdk: openai.AsyncOpenAI, model: str) -> None:
    out = await sdk.chat.completions.create(
        model=model, messages=HELLO, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) <= 5
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert item.top_logprobs[0].logprob == pytest.approx(item.logprob, abs=1e-5)


@pytest.mark.parametrize("model", MODELS)
async def test_completions_prompt_list_echo_and_stream(sdk: openai.AsyncOpenAI, model: str) -> None:
    out = await sdk.completions.create(
        model=model,
        prompt=["The capital of France is", "One two three"],
        max_tokens=5,
        temperature=0,
        echo=True,
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].text.startswith("The capital of France is")
    assert out.choices[1].text.startswith("One two three")
    assert out.usage is not None
    assert out.usage.prompt_tokens == n_tokens("The capital of France is") + n_tokens(
        "One two three"
    )
    plain = await sdk.completions.create(
        model=model, prompt="One two three", max_tokens=5, temperature=0
    )
    stream = await sdk.completions.create(
        model=model, prompt="One two three", max_tokens=5, temperature=0, stream=True
    )
    streamed = "".join([c.choices[0].text async for c in stream if c.choices])
    assert streamed == plain.choices[0].text
    assert out.choices[1].text == "One two three" + plain.choices[0].text


async def test_batched_results_equal_unbatched_results(sdk: openai.AsyncOpenAI) -> None:
    prompts = [f"Tell me about topic number {i}" for i in range(6)]

    async def one(i: int) -> str:
        out = await sdk.chat.completions.create(
            model="rwkv7-tiny",
            messages=[{"role": "user", "content": prompts[i]}],
            max_tokens=20,
            temperature=0.8,
            seed=100 + i,
        )
        return out.choices[0].message.content or ""

    sequential = [await one(i) for i in range(6)]
    concurrent = await asyncio.gather(*(one(i) for i in range(6)))
    assert list(concurrent) == sequential


async def test_sixteen_concurrent_streams_all_complete(sdk: openai.AsyncOpenAI) -> None:
    async def run(i: int) -> tuple[str | None, int]:
        stream = await sdk.chat.completions.create(
            model="rwkv6-tiny",
            messages=[{"role": "user", "content": f"stream {i}"}],
            max_tokens=10,
            stream=True,
            seed=i,
        )
        n = 0
        reason = None
        async for c in stream:
            if c.choices and c.choices[0].finish_reason:
                reason = c.choices[0].finish_reason
            n += 1
        return reason, n

    results = await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(16))), 120)
    assert all(reason in ("stop", "length") for reason, _ in results)


def test_real_server_sync_sdk_stream_and_plain(chat_server: RunningServer) -> None:
    sdk = openai.OpenAI(api_key="x", base_url=chat_server.base_url + "/v1")
    for model in MODELS:
        out = sdk.chat.completions.create(model=model, messages=HELLO, max_tokens=6, seed=5)
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(
                model=model, messages=HELLO, max_tokens=6, seed=5, stream=True
            )
            if c.choices
        )
        assert streamed == out.choices[0].message.content
