"""The official openai SDK against the app in-process (sync and async) and a real server."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import openai
import pytest
from litestar.testing import AsyncTestClient, TestClient

from gateway.app import create_app
from tests.conftest import RunningServer, fake_settings


async def test_async_sdk_lists_models_with_kind_and_aliases() -> None:
    async with AsyncTestClient(create_app(fake_settings())) as http:
        sdk = openai.AsyncOpenAI(
            api_key="x", base_url="http://testserver.local/v1", http_client=http
        )
        models = await sdk.models.list()
        by_id = {m.id: m for m in models.data}
        assert set(by_id) == {"fake-embed", "fake-rerank"}
        assert by_id["fake-embed"].owned_by == "rwkv-rag-gateway"
        extra: Any = by_id["fake-embed"].model_extra
        assert extra["kind"] == "embedding"
        assert extra["aliases"] == ["text-embedding-3-small"]
        one = await sdk.models.retrieve("fake-rerank")
        assert one.id == "fake-rerank"


async def test_async_sdk_embeddings_default_base64_equals_float() -> None:
    async with AsyncTestClient(create_app(fake_settings())) as http:
        sdk = openai.AsyncOpenAI(
            api_key="x", base_url="http://testserver.local/v1", http_client=http
        )
        texts = ["the cat sat on the mat", "a dog ran", "paris is in france"]
        as_b64 = await sdk.embeddings.create(model="fake-embed", input=texts)  # SDK asks base64
        as_float = await sdk.embeddings.create(
            model="fake-embed", input=texts, encoding_format="float"
        )
        a = np.array([d.embedding for d in as_b64.data])
        b = np.array([d.embedding for d in as_float.data])
        assert a.shape == (3, 64)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
        assert [d.index for d in as_b64.data] == [0, 1, 2]
        assert as_float.usage.prompt_tokens == 6 + 3 + 4
        assert as_float.usage.total_tokens == as_float.usage.prompt_tokens


def test_sync_sdk_embeddings_via_alias_and_dimensions() -> None:
    with TestClient(create_app(fake_settings())) as http:
        sdk = openai.OpenAI(api_key="x", base_url="http://testserver.local/v1", http_client=http)
        full = sdk.embeddings.create(model="text-embedding-3-small", input="hello world")
        short = sdk.embeddings.create(
            model="text-embedding-3-small", input="hello world", dimensions=8
        )
        assert full.model == "text-embedding-3-small"
        v = np.array(full.data[0].embedding)
        s = np.array(short.data[0].embedding)
        assert s.shape == (8,)
        np.testing.assert_allclose(s, v[:8] / np.linalg.norm(v[:8]), atol=1e-6)


def test_raw_base64_is_little_endian_float32() -> None:
    with TestClient(create_app(fake_settings())) as http:
        r = http.post(
            "/v1/embeddings",
            json={"model": "fake-embed", "input": "x y z", "encoding_format": "base64"},
        )
        f = http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x y z"})
        raw = base64.b64decode(r.json()["data"][0]["embedding"])
        assert np.frombuffer(raw, "<f4").tolist() == pytest.approx(
            f.json()["data"][0]["embedding"], abs=1e-7
        )


def test_sdk_raises_typed_errors_in_openai_shape() -> None:
    with TestClient(create_app(fake_settings())) as http:
        sdk = openai.OpenAI(api_key="x", base_url="http://testserver.local/v1", http_client=http)
        with pytest.raises(openai.NotFoundError) as nf:
            sdk.embeddings.create(model="missing", input="x")
        assert nf.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as br:
            sdk.embeddings.create(model="fake-embed", input="x", dimensions=1000)
        assert br.value.param == "dimensions"


def test_real_server_answers_sync_sdk(fake_server: RunningServer) -> None:
    sdk = openai.OpenAI(api_key="x", base_url=fake_server.base_url + "/v1")
    assert {m.id for m in sdk.models.list()} == {"fake-embed", "fake-rerank"}
    out = sdk.embeddings.create(model="fake-embed", input=["a b", "c"])
    assert len(out.data) == 2 and len(out.data[0].embedding) == 64


async def test_real_server_answers_async_sdk(fake_server: RunningServer) -> None:
    sdk = openai.AsyncOpenAI(api_key="x", base_url=fake_server.base_url + "/v1")
    out = await sdk.embeddings.create(model="fake-embed", input="hello", encoding_format="float")
    assert len(out.data[0].embedding) == 64
    await sdk.close()
