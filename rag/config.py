"""Retrieval-augmented chat settings: knowledge profiles and request defaults."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.tenancy import PROJECT_PATTERN

__all__ = [
    "DEFAULT_NO_ANSWER_MESSAGE",
    "DEFAULT_RAG_PROMPT",
    "NoAnswer",
    "ProfileConfig",
    "RagSettings",
]

DEFAULT_RAG_PROMPT = (
    "Answer the question using only the numbered sources below. Cite the sources you use "
    "with their numbers in square brackets, like [1] or [2][3]. If the sources do not "
    "contain the answer, say that you do not know."
)
DEFAULT_NO_ANSWER_MESSAGE = "I could not find anything about that in the knowledge base."


class NoAnswer(StrEnum):
    """What happens when no source passes the score threshold."""

    SAY_SO = "say so"  # answer `no_answer_message` without running the model
    ANSWER_ANYWAY = "answer anyway"  # let the model answer without sources


class ProfileConfig(BaseModel):
    """A knowledge profile: a chat model answering from vector stores, listed in
    /v1/models and used like a model."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="The name clients send in `model`.")
    model: str = Field(description="The chat model (id or alias) that answers.")
    state: str | None = Field(None, description="A State of that model to answer with.")
    vector_store_ids: list[str] = Field(
        min_length=1, description="Vector stores searched (ids or unique names)."
    )
    top_k: int = Field(5, ge=1, le=50, description="Most sources put in the prompt.")
    rerank: bool = Field(True, description="Rerank hits when a rerank model is configured.")
    score_threshold: float = Field(
        0.0, ge=0, le=1, description="Hits scoring below this are not used."
    )
    max_context_tokens: int | None = Field(
        None, ge=1, description="Most tokens of sources in the prompt (null = what fits)."
    )
    system_prompt: str = Field(DEFAULT_RAG_PROMPT, description="Instruction given with sources.")
    no_answer: NoAnswer = Field(
        NoAnswer.SAY_SO,
        description=(
            "When nothing passes the threshold: `say so` answers `no_answer_message` without "
            "running the model; `answer anyway` lets the model answer without sources."
        ),
    )
    no_answer_message: str | None = Field(
        None,
        description=(
            "The answer given when `no_answer` is `say so` and nothing was found "
            "(null = rag.no_answer_message)."
        ),
    )
    filters: dict[str, Any] | None = Field(
        None, description="Attribute filter applied to every search (Vector Stores syntax)."
    )
    description: str | None = Field(None, description="Shown in /v1/models.")
    project: str | None = Field(
        None,
        pattern=PROJECT_PATTERN,
        description=(
            "The project whose callers (and admins) see and use this profile; without one it "
            "is shared read-only with every project (auth.shared_profiles), else admins only."
        ),
    )


class RagSettings(BaseModel):
    """Retrieval-augmented chat defaults (per-request `knowledge` and profiles)."""

    model_config = ConfigDict(extra="forbid")

    default_top_k: int = Field(5, ge=1, le=50, description="top_k of a `knowledge` request.")
    reserve_tokens: int = Field(
        256,
        ge=0,
        description="Context kept free for the answer when a request names no max_tokens.",
    )
    follow_up_words: int = Field(
        6,
        ge=0,
        description=(
            "A last user turn with at most this many words (or with a pronoun) is a "
            "follow-up: the previous user turn joins the search query."
        ),
    )
    no_answer_message: str = Field(
        DEFAULT_NO_ANSWER_MESSAGE,
        description=(
            "The reply when nothing passes the threshold and `no_answer` is `say so` "
            "(a profile may set its own)."
        ),
    )
    max_vector_stores: int = Field(
        16, ge=1, le=256, description="Most vector stores one request's `knowledge` may name."
    )
    debug: bool = Field(
        False, description="Return the prompt sent to the model (`rag_prompt`) in responses."
    )
