"""Property test of the constrained-output guarantees on a real server.

Hypothesis draws random requests (``tests/chat/constrained_cases.py``: schemas inside
the supported subset, tool sets, tool choices, response formats, budgets of 1..200
tokens, seeds, ``n`` up to 3), sends each, streamed and not, to the server running the
tiny random model, and checks every choice of every 200 answer; any other answer must be
a 4xx in the OpenAI error shape. Derandomized, so CI runs the same cases every time.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings

from tests.chat.constrained_cases import requests, send
from tests.conftest import RunningServer

FUZZ = settings(
    max_examples=14,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=server.base_url + "/v1", max_retries=0)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_every_constrained_answer_validates_or_is_a_client_error(
    chat_server: RunningServer, stream: bool
) -> None:
    client = _client(chat_server)
    seen: list[str] = []  # finish reasons of checked choices, "4xx" for refusals

    @FUZZ
    @given(req=requests())
    def case(req: dict[str, Any]) -> None:
        try:
            seen.extend(send(client, req, stream))
        except openai.APIStatusError as exc:
            assert 400 <= exc.status_code < 500, (exc.status_code, exc.body)
            assert isinstance(exc.body, dict) and exc.body.get("type"), exc.body
            seen.append("4xx")

    case()
    # The cases reach the guarantees: answers were checked, some of them cut by the budget.
    assert seen.count("length") >= 3, seen
    assert len([r for r in seen if r != "4xx"]) >= 10, seen
