"""POST /v1/chat/completions and POST /v1/completions: requests, responses, stream chunks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.schemas.common import Metadata, NonEmptyStr
from gateway.schemas.knowledge import KnowledgeField

__all__ = [
    "ChatCompletion",
    "ChatCompletionChoice",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChunkChoice",
    "ChunkDelta",
    "Completion",
    "CompletionChoice",
    "CompletionChunk",
    "CompletionChunkChoice",
    "CompletionRequest",
    "CompletionUsage",
    "StreamOptions",
]

# Hard ceilings of the decoder; the configured caps (limits, chat settings) are lower.
MAX_MESSAGES = 4096
MAX_STOP = 64

Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
TopP = Annotated[float, msgspec.Meta(gt=0, le=1)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatMessage(msgspec.Struct, kw_only=True):
    role: Role
    # A string or a list of content parts ({"type": "text", "text": ...}).
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class _Sampling(msgspec.Struct, kw_only=True):
    model: NonEmptyStr
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0)] | None = None  # extra (not in the OpenAI schema)
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=MAX_STOP)] | None = None
    seed: int | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] = 1
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    state: str | None = None  # extra: a State declared for the model
    knowledge: KnowledgeField | None = None  # extra: retrieval (see the RAG docs)


class ChatCompletionRequest(_Sampling, kw_only=True):
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    service_tier: str | None = None


class CompletionRequest(_Sampling, kw_only=True):
    prompt: str | list[Any]
    echo: bool = False
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    suffix: str | None = None
    best_of: int | None = None


# Optional extras are UNSET (left out of the JSON) rather than null, so no field the
# OpenAI schema types as non-nullable is ever sent as null.
Unset = msgspec.UnsetType
UNSET = msgspec.UNSET


class CompletionUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, int] | Unset = UNSET
    prompt_tokens_details: dict[str, int] | Unset = UNSET


class ChatCompletionMessage(msgspec.Struct):
    content: str | None
    role: Literal["assistant"] = "assistant"
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | Unset = UNSET
    reasoning_content: str | Unset = UNSET
    annotations: list[dict[str, Any]] | Unset = UNSET


class ChatCompletionChoice(msgspec.Struct):
    index: int
    message: ChatCompletionMessage
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str
    object: Literal["chat.completion"] = "chat.completion"
    service_tier: str = "default"
    # Extra: the sources behind `[n]` markers (retrieval-augmented answers only).
    citations: list[dict[str, Any]] | Unset = UNSET
    # Extra, with knowledge.debug / rag.debug: the prompt the model read.
    rag_prompt: str | Unset = UNSET


class ChunkDelta(msgspec.Struct):
    role: Literal["assistant"] | Unset = UNSET
    content: str | Unset = UNSET
    refusal: str | Unset | None = UNSET
    reasoning_content: str | Unset = UNSET
    tool_calls: list[dict[str, Any]] | Unset = UNSET
    annotations: list[dict[str, Any]] | Unset = UNSET


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    service_tier: str = "default"
    # With stream_options.include_usage: null on every chunk but the last.
    usage: CompletionUsage | Unset | None = UNSET
    citations: list[dict[str, Any]] | Unset = UNSET


class CompletionChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: dict[str, Any] | None = None


class Completion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage
    system_fingerprint: str
    object: Literal["text_completion"] = "text_completion"
    citations: list[dict[str, Any]] | Unset = UNSET


class CompletionChunkChoice(msgspec.Struct):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class CompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    system_fingerprint: str
    object: Literal["text_completion"] = "text_completion"
    usage: CompletionUsage | Unset | None = UNSET
