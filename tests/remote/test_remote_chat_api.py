"""The chat and completions suite, unchanged, against a gateway whose chat models are
remote over two real engine workers (the fixtures here replace the local ones)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.chat.test_chat_api import (  # noqa: F401 - collected here, against the remote path
    test_batched_results_equal_unbatched_results,
    test_completions_prompt_list_echo_and_stream,
    test_logprobs_and_top_logprobs,
    test_non_stream_chat_counts_usage_with_the_tokenizer,
    test_same_seed_same_text_and_n_choices,
    test_sixteen_concurrent_streams_all_complete,
    test_state_file_changes_the_output,
    test_stop_sequence_ends_the_text_and_is_never_emitted,
    test_stream_sends_role_first_then_content_finish_usage_and_done,
)


@pytest.fixture
async def http(remote_http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    yield remote_http


@pytest.fixture
def sdk(http: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="x", base_url="http://testserver.local/v1", http_client=http)
