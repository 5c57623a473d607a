"""The committed OpenAPI document is the contract: the app must produce exactly it.

Regenerate after an intended change with: UPDATE_OPENAPI=1 pytest tests/gateway/test_openapi.py
"""

from __future__ import annotations

import json
import os
from typing import Any

from litestar.testing import AsyncTestClient

from gateway.app import create_app
from tests.conftest import ROOT, fake_settings

SNAPSHOT = ROOT / "docs" / "openapi.json"


async def test_app_serves_the_committed_openapi_document() -> None:
    async with AsyncTestClient(create_app(fake_settings())) as c:
        r = await c.get("/schema/openapi.json")
        assert r.status_code == 200
        doc: dict[str, Any] = r.json()
    if os.environ.get("UPDATE_OPENAPI") == "1":
        SNAPSHOT.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    assert doc == json.loads(SNAPSHOT.read_text())
    for path in (
        "/v1/models",
        "/v1/models/{model_id}",
        "/v1/me",
        "/v1/embeddings",
        "/v1/rerank",
        "/rerank",
        "/v2/rerank",
        "/v1/chat/completions",
        "/v1/completions",
        "/health",
        "/metrics",
    ):
        assert path in doc["paths"], path
    for name in ("EmbeddingRequest", "RerankRequest", "ChatCompletionRequest", "CompletionRequest"):
        assert name in doc["components"]["schemas"], name
