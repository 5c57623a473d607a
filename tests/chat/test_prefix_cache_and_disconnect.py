"""The prefix-state cache changes nothing but speed; a client disconnect frees its slot."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from engines.rwkv.tokenizer import world_tokenizer
from gateway.app import create_app
from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.conftest import RunningServer, asgi_client

SYSTEM = "You are a careful assistant. " * 40


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("model", ["rwkv6-tiny", "rwkv7-tiny"])
async def test_cache_on_and_off_give_identical_results(tiny_dir: Path, model: str) -> None:
    conversations = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "First question"}],
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Second question"}],
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "An answer."},
            {"role": "user", "content": "A follow-up"},
        ],
    ]
    results = {}
    for cache_bytes in (0, 64 * 2**20):
        settings = Settings(
            models=chat_models(
                tiny_dir, prefix_cache_bytes=cache_bytes, state_disk_bytes=0, max_prefill_chunk=64
            ),
            load_in_background=False,
        )
        async with asgi_client(create_app(settings)) as http:
            sdk = openai.AsyncOpenAI(
                api_key="x", base_url="http://testserver.local/v1", http_client=http
            )
            texts = []
            for msgs in conversations:
                out = await sdk.chat.completions.create(
                    model=model,
                    messages=msgs,
                    max_tokens=16,
                    temperature=0.9,
                    seed=7,  # type: ignore[arg-type]
                    logprobs=True,
                )
                lps = [c.logprob for c in out.choices[0].logprobs.content]  # type: ignore[union-attr]
                texts.append((out.choices[0].message.content, lps))
            metrics = (await http.get("/metrics")).text
        results[cache_bytes] = texts
        hits = _metric(metrics, f'rwkv_rag_prefix_cache_hits_total{{model="{model}"}}')
        if cache_bytes:
            # The second and third conversations reuse the system prompt (and the first turn).
            assert hits >= 2
            saved = _metric(metrics, f'rwkv_rag_prefix_cache_hit_tokens_total{{model="{model}"}}')
            system_tokens = len(world_tokenizer().encode(f"System: {SYSTEM.strip()}\n\n"))
            assert system_tokens > 200
            assert saved >= 2 * system_tokens
        else:
            assert hits == 0
    for (t0, lp0), (t1, lp1) in zip(results[0], results[64 * 2**20], strict=True):
        assert t0 == t1
        # TorchScript re-optimises kernels after warm-up runs, which moves logits in the
        # last float bits; the cache itself adds no difference (the tokens are identical).
        assert lp0 == pytest.approx(lp1, abs=1e-4)


def test_disconnect_cancels_the_sequence_and_frees_its_slot(chat_server: RunningServer) -> None:
    base = chat_server.base_url
    # A random model may sample end-of-text early; pick a seed whose text runs long.
    seed = next(
        s
        for s in range(1, 20)
        if httpx.post(
            f"{base}/v1/completions",
            timeout=60,
            json={
                "model": "rwkv7-tiny",
                "prompt": "Go on forever:",
                "max_tokens": 200,
                "temperature": 1.0,
                "seed": s,
            },
        ).json()["choices"][0]["finish_reason"]
        == "length"
    )
    body = {
        "model": "rwkv7-tiny",
        "prompt": "Go on forever:",
        "max_tokens": 15000,
        "temperature": 1.0,
        "seed": seed,
        "stream": True,
    }
    active = 'rwkv_rag_chat_active_sequences{model="rwkv7-tiny"}'
    generated = 'rwkv_rag_chat_tokens_total{model="rwkv7-tiny",phase="generated"}'
    before = _metric(httpx.get(f"{base}/metrics").text, generated)
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{base}/v1/completions", json=body) as r,
    ):
        lines = r.iter_lines()  # kept alive: breaking out of it would close the connection
        seen = 0
        while seen < 5:
            if next(lines).startswith("data: "):
                seen += 1
        assert _metric(httpx.get(f"{base}/metrics").text, active) == 1
        r.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _metric(httpx.get(f"{base}/metrics").text, active) == 0:
            break
        time.sleep(0.05)
    text = httpx.get(f"{base}/metrics").text
    assert _metric(text, active) == 0
    after = _metric(text, generated)
    assert after - before < 15000  # stopped long before max_tokens
    time.sleep(0.3)
    assert _metric(httpx.get(f"{base}/metrics").text, generated) == after
