"""POST/GET/DELETE /v1/responses: the request (the Open Responses shape); responses and
their items are built as JSON objects by the service."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from gateway.schemas.chat import Penalty, PositiveInt, Temperature, TopP
from gateway.schemas.common import Metadata, NonEmptyStr
from gateway.schemas.knowledge import KnowledgeField

__all__ = ["DeletedResponse", "ResponseRequest"]

MAX_ITEMS = 4096


class ResponseRequest(msgspec.Struct, kw_only=True):
    model: NonEmptyStr
    input: str | Annotated[list[dict[str, Any]], msgspec.Meta(max_length=MAX_ITEMS)] = ""
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: int | None = None  # extra (not in the OpenAI schema)
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    tools: Annotated[list[dict[str, Any]], msgspec.Meta(max_length=1024)] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    include: list[str] | None = None
    metadata: Metadata | None = None  # 16 keys of 64 characters, values of 512
    user: str | None = None
    truncation: str | None = None
    background: bool | None = None
    conversation: Any | None = None
    prompt: dict[str, Any] | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    max_tool_calls: PositiveInt | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None
    state: str | None = None  # extra: a State declared for the model
    knowledge: KnowledgeField | None = None  # extra: retrieval, as in chat


class DeletedResponse(msgspec.Struct):
    id: str
    object: str = "response"
    deleted: bool = True
