"""Retrieval-augmented chat: knowledge profiles and the per-request `knowledge` field.

For a request that names a profile (or carries ``knowledge``), the search query is built
from the conversation (the last user turn; a short or pronoun-led follow-up also searches
with the previous user turn), the vector stores are searched (hybrid + rerank), and the
best chunks are packed into what the chat model's context has left (never more), as
numbered sources in a system message right before the last user turn — RWKV reads in
order, so the sources sit next to the question. The response carries ``citations`` for
the ``[n]`` markers. When nothing passes the score threshold, ``no_answer`` decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engines.errors import InvalidRequestError, NotFoundError
from gateway.services.chat import PreparedChat
from gateway.settings import DEFAULT_RAG_PROMPT, ProfileConfig, RagSettings
from kb.service import KnowledgeBase, SearchResult

__all__ = ["Knowledge", "RagService"]

# Words that point back at the conversation: a question holding one is a follow-up.
_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|that|those|this|these|he|she|what about|how about)\b"
    r"|它|他们|她|这个|那个|这些|那些|呢|还有",
    re.IGNORECASE,
)


@dataclass
class Knowledge:
    store_ids: list[str]
    top_k: int
    filters: dict[str, Any] | None = None
    rerank: bool | None = None
    score_threshold: float = 0.0
    max_context_tokens: int | None = None
    system_prompt: str = DEFAULT_RAG_PROMPT
    no_answer: str = "say so"
    no_answer_message: str = "I could not find anything about that in the knowledge base."
    debug: bool = False


@dataclass
class Retrieval:
    queries: list[str]
    results: list[SearchResult]


class RagService:
    def __init__(
        self, kb: KnowledgeBase, profiles: list[ProfileConfig], settings: RagSettings
    ) -> None:
        self.kb = kb
        self.profiles = {p.id: p for p in profiles}
        self.settings = settings

    # -- what a request asks for ---------------------------------------------------------

    def profile_target(self, name: str) -> tuple[str, str | None] | None:
        """(chat model, state) behind a profile name, or None when it is not a profile."""
        p = self.profiles.get(name)
        return (p.model, p.state) if p else None

    def knowledge_for(self, model: str, field_: dict[str, Any] | None) -> Knowledge | None:
        profile = self.profiles.get(model)
        if profile is None and not field_:
            return None
        if profile is not None:
            k = Knowledge(
                store_ids=list(profile.vector_store_ids),
                top_k=profile.top_k,
                filters=profile.filters,
                rerank=None if profile.rerank else False,
                score_threshold=profile.score_threshold,
                max_context_tokens=profile.max_context_tokens,
                system_prompt=profile.system_prompt,
                no_answer=profile.no_answer,
                no_answer_message=profile.no_answer_message,
            )
        else:
            k = Knowledge(store_ids=[], top_k=self.settings.default_top_k)
        k.debug = self.settings.debug
        if field_:
            _apply_field(k, field_)
        if not k.store_ids:
            raise InvalidRequestError(
                "knowledge.vector_store_ids must name at least one vector store",
                param="knowledge.vector_store_ids",
            )
        return k

    # -- retrieval -----------------------------------------------------------------------

    def search_queries(self, messages: list[tuple[str, str]]) -> list[str]:
        users = [text for role, text in messages if role == "user" and text.strip()]
        if not users:
            raise InvalidRequestError(
                "retrieval needs a user message to search for", param="messages"
            )
        last = users[-1].strip()
        queries = [last]
        if len(users) > 1 and (
            len(last.split()) <= self.settings.follow_up_words or _FOLLOW_UP.search(last)
        ):
            queries.append(f"{users[-2].strip()} {last}")
        return queries

    async def retrieve(self, k: Knowledge, queries: list[str]) -> Retrieval:
        results: list[SearchResult] = []
        for name in k.store_ids:
            try:
                cid = self.kb.collection_by_name(name)["id"]
            except NotFoundError:
                raise NotFoundError(
                    f"no vector store named or with id {name!r}",
                    param="knowledge.vector_store_ids",
                ) from None
            outcome = await self.kb.search(
                cid,
                queries,
                k.top_k,
                filters=k.filters,
                rerank=k.rerank,
                score_threshold=k.score_threshold,
            )
            results.extend(outcome.results)
        results.sort(key=lambda r: -r.score)
        return Retrieval(queries, results[: k.top_k])

    @staticmethod
    def pack(
        results: list[SearchResult], budget: int, count: Callable[[str], int]
    ) -> list[tuple[SearchResult, str]]:
        """Sources in score order while they fit ``budget`` tokens (one that does not fit
        is skipped and a shorter one may still go in)."""
        chosen: list[tuple[SearchResult, str]] = []
        used = 0
        for r in results:
            block = _source_block(len(chosen) + 1, r)
            n = count(block)
            if used + n <= budget:
                chosen.append((r, block))
                used += n
        return chosen

    @staticmethod
    def citations(chosen: list[tuple[SearchResult, str]]) -> list[dict[str, Any]]:
        return [_citation(i, r) for i, (r, _) in enumerate(chosen, start=1)]

    # -- the chat hook -------------------------------------------------------------------

    def _fit(
        self,
        k: Knowledge,
        results: list[SearchResult],
        used: int,
        context_length: int,
        reserve: int,
        count: Callable[[str], int],
    ) -> list[tuple[SearchResult, str]]:
        """The sources that fit what the context leaves after ``used`` tokens (the prompt
        with the instruction) and the answer's ``reserve`` (and the profile's own cap)."""
        budget = context_length - used - reserve
        if k.max_context_tokens is not None:
            budget = min(budget, k.max_context_tokens)
        return self.pack(results, max(0, budget), count)

    async def augment(
        self,
        req_model: str,
        knowledge_field: dict[str, Any] | None,
        prepared: PreparedChat,
        *,
        context_length: int,
        reserve: int,
        count: Callable[[str], int],
        rendered_len: Callable[[list[tuple[str, str]]], int],
    ) -> PreparedChat:
        """Chat: sources go in a system turn right before the last user turn."""
        k = self.knowledge_for(req_model, knowledge_field)
        if k is None:
            return prepared
        retrieval = await self.retrieve(k, self.search_queries(prepared.messages))
        base = list(prepared.messages)
        last_user = max(i for i, (role, _) in enumerate(base) if role == "user")
        head = k.system_prompt + "\n\nSources:\n\n"
        chosen = []
        if retrieval.results:
            skeleton = [*base[:last_user], ("system", head), *base[last_user:]]
            used = rendered_len(skeleton)
            chosen = self._fit(k, retrieval.results, used, context_length, reserve, count)
        prepared.citations = self.citations(chosen)
        if not chosen:
            if k.no_answer == "say so":
                prepared.answer = k.no_answer_message
            return prepared
        sources = head + "\n\n".join(block for _, block in chosen)
        prepared.messages = [*base[:last_user], ("system", sources), *base[last_user:]]
        prepared.debug = k.debug
        return prepared

    async def augment_prompt(
        self,
        req_model: str,
        knowledge_field: dict[str, Any] | None,
        prompt: str | list[Any],
        *,
        context_length: int,
        reserve: int,
        count: Callable[[str], int],
    ) -> tuple[str | list[Any], list[dict[str, Any]] | None]:
        """Completions: sources go before a text prompt."""
        k = self.knowledge_for(req_model, knowledge_field)
        if k is None:
            return prompt, None
        if not isinstance(prompt, str):
            raise InvalidRequestError("retrieval needs a single text prompt", param="prompt")
        retrieval = await self.retrieve(k, [prompt])
        head = k.system_prompt + "\n\nSources:\n\n"
        used = count(head + "\n\n" + prompt)
        chosen = self._fit(k, retrieval.results, used, context_length, reserve, count)
        if not chosen:
            return prompt, []
        sources = "\n\n".join(block for _, block in chosen)
        return f"{head}{sources}\n\n{prompt}", self.citations(chosen)


def _apply_field(k: Knowledge, f: dict[str, Any]) -> None:
    if not isinstance(f, dict):
        raise InvalidRequestError("'knowledge' must be an object", param="knowledge")
    known = {
        "vector_store_ids",
        "top_k",
        "filters",
        "rerank",
        "score_threshold",
        "max_context_tokens",
        "no_answer",
        "debug",
    }
    unknown = set(f) - known
    if unknown:
        raise InvalidRequestError(
            f"unknown knowledge field(s) {sorted(unknown)}; known: {sorted(known)}",
            param="knowledge",
        )
    if "vector_store_ids" in f:
        ids = f["vector_store_ids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise InvalidRequestError(
                "knowledge.vector_store_ids must be a non-empty list of ids",
                param="knowledge.vector_store_ids",
            )
        k.store_ids = ids
    if "top_k" in f:
        if not isinstance(f["top_k"], int) or not 1 <= f["top_k"] <= 50:
            raise InvalidRequestError(
                "knowledge.top_k must be between 1 and 50", param="knowledge.top_k"
            )
        k.top_k = f["top_k"]
    if "filters" in f:
        k.filters = f["filters"]
    if "rerank" in f:
        k.rerank = None if f["rerank"] else False
    if "score_threshold" in f:
        v = f["score_threshold"]
        if not isinstance(v, int | float) or not 0 <= v <= 1:
            raise InvalidRequestError(
                "knowledge.score_threshold must be between 0 and 1",
                param="knowledge.score_threshold",
            )
        k.score_threshold = float(v)
    if "max_context_tokens" in f:
        v = f["max_context_tokens"]
        if not isinstance(v, int) or v < 1:
            raise InvalidRequestError(
                "knowledge.max_context_tokens must be a positive integer",
                param="knowledge.max_context_tokens",
            )
        k.max_context_tokens = v
    if "no_answer" in f:
        if f["no_answer"] not in ("say so", "answer anyway"):
            raise InvalidRequestError(
                "knowledge.no_answer must be 'say so' or 'answer anyway'",
                param="knowledge.no_answer",
            )
        k.no_answer = f["no_answer"]
    if "debug" in f:
        k.debug = bool(f["debug"])


def _where(r: SearchResult) -> str:
    if r.page is not None:
        return f", page {r.page}"
    if r.sheet is not None:
        return f", sheet {r.sheet} row {r.row}"
    return ""


def _source_block(n: int, r: SearchResult) -> str:
    return f"[{n}] {r.filename}{_where(r)}\n{r.text.strip()}"


def _citation(n: int, r: SearchResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": n,
        "vector_store_id": r.vector_store_id,
        "file_id": r.file_id,
        "filename": r.filename,
        "chunk_id": r.chunk_id,
        "score": round(r.score, 6),
        "text": r.text,
    }
    if r.page is not None:
        out["page"] = r.page
    if r.sheet is not None:
        out["sheet"] = r.sheet
        out["row"] = r.row
    return out
