"""Retrieval for a request: what knowledge it asks for, the search queries its
conversation makes, the hits, and the sources packed into a token budget.

For a request that names a profile (or carries ``knowledge``), the search query is built
from the conversation (the last user turn; a short or pronoun-led follow-up also searches
with the previous user turn), the stores are searched (hybrid + rerank), and the best
chunks are packed, best first, into the budget the caller computed from its model's
context (never more). The result is a value (``Augmentation``): the instruction with the
numbered sources, the citations for its ``[n]`` markers, or the no-answer reply when
nothing passes the score threshold and the profile says so. The caller renders it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from core.errors import InvalidRequestError, NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from kb.filters import Filter, FilterLimits, parse_filter
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import SearchHit
from rag.catalog import Profile, ProfileCatalog
from rag.config import DEFAULT_RAG_PROMPT, NoAnswer, RagSettings

__all__ = [
    "Augmentation",
    "Citation",
    "Knowledge",
    "KnowledgeRequest",
    "RagService",
    "Room",
    "Source",
]

# Words that point back at the conversation: a question holding one is a follow-up.
_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|that|those|this|these|he|she|what about|how about)\b"
    r"|它|他们|她|这个|那个|这些|那些|呢|还有",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class KnowledgeRequest:
    """A request's own ``knowledge`` (already decoded and bounded by the wire type)."""

    vector_store_ids: tuple[str, ...] | None = None
    top_k: int | None = None
    filters: dict[str, object] | None = None
    rerank: bool | None = None
    score_threshold: float | None = None
    max_context_tokens: int | None = None
    no_answer: NoAnswer | None = None
    debug: bool | None = None


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What one request retrieves from, resolved from its profile and its ``knowledge``."""

    store_refs: tuple[str, ...]
    top_k: int
    filter: Filter | None = None
    rerank: bool | None = None
    score_threshold: float = 0.0
    max_context_tokens: int | None = None
    system_prompt: str = DEFAULT_RAG_PROMPT
    no_answer: NoAnswer = NoAnswer.SAY_SO
    no_answer_message: str = ""
    debug: bool = False
    profile: Profile | None = None
    # Whom the stores are resolved and searched as: the caller for stores its request
    # names; the local admin for a profile's configured stores.
    who: Principal = LOCAL_ADMIN


@dataclass(frozen=True, slots=True)
class Citation:
    index: int
    hit: SearchHit

    def to_dict(self) -> dict[str, object]:
        h = self.hit
        out: dict[str, object] = {
            "index": self.index,
            "vector_store_id": h.vector_store_id,
            "file_id": h.file_id,
            "filename": h.filename,
            "chunk_id": h.chunk_id,
            "score": round(h.score, 6),
            "text": h.text,
        }
        if h.page is not None:
            out["page"] = h.page
        if h.sheet is not None:
            out["sheet"] = h.sheet
            out["row"] = h.row
        return out


@dataclass(frozen=True, slots=True)
class Source:
    citation: Citation
    block: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Augmentation:
    queries: list[str]
    sources: list[Source] = field(default_factory=list)
    head: str = ""
    # The reply when nothing was found and the profile says so (the model does not run).
    no_answer: str | None = None
    debug: bool = False

    @property
    def citations(self) -> list[Citation]:
        return [s.citation for s in self.sources]

    @property
    def instruction(self) -> str | None:
        """The system turn holding the numbered sources (None when there are none)."""
        if not self.sources:
            return None
        return self.head + "\n\n".join(s.block for s in self.sources)


@dataclass(frozen=True, slots=True)
class Room:
    """What sources must fit in, counted the way the model counts: its context, the
    tokens the prompt takes without them, those kept for the answer, and what the
    instruction turn costs around a given head (its framing included)."""

    context_length: int
    used: int
    reserve: int
    head_cost: Callable[[str], int]
    count: Callable[[str], int]

    def budget(self, head: str) -> int:
        return self.context_length - self.reserve - self.used - self.head_cost(head)


def _where(h: SearchHit) -> str:
    if h.page is not None:
        return f", page {h.page}"
    if h.sheet is not None:
        return f", sheet {h.sheet} row {h.row}"
    return ""


def source_block(n: int, h: SearchHit) -> str:
    return f"[{n}] {h.filename}{_where(h)}\n{h.text.strip()}"


def sources_head(k: Knowledge) -> str:
    return k.system_prompt + "\n\nSources:\n\n"


class RagService:
    def __init__(
        self,
        kb: KnowledgeBase,
        catalog: ProfileCatalog,
        settings: RagSettings,
        filter_limits: FilterLimits | None = None,
    ) -> None:
        self.kb = kb
        self.catalog = catalog
        self.settings = settings
        self.filter_limits = filter_limits or FilterLimits()

    # -- what a request asks for ---------------------------------------------------------

    def knowledge_for(
        self, model: str, request: KnowledgeRequest | None, who: Principal = LOCAL_ADMIN
    ) -> Knowledge | None:
        """The knowledge a request retrieves from: its profile's, with its own ``knowledge``
        on top; None when it asks for none. Stores the request names are resolved as
        ``who`` (another project's store is missing); a profile's own stores are the
        server's configuration, resolved inside the profile's project (a shared profile's
        as the local admin)."""
        profile = self.catalog.get(model)
        if profile is None and request is None:
            return None
        r = request or KnowledgeRequest()
        refs = r.vector_store_ids or (profile.store_refs if profile else ())
        searcher = who if r.vector_store_ids else LOCAL_ADMIN
        if not r.vector_store_ids and profile is not None and profile.project is not None:
            searcher = Principal(project=profile.project, role="member")
        refs = tuple(dict.fromkeys(refs))  # the same store twice is searched once
        if not refs:
            raise InvalidRequestError(
                "knowledge.vector_store_ids must name at least one vector store",
                param="knowledge.vector_store_ids",
            )
        if len(refs) > self.settings.max_vector_stores:
            raise InvalidRequestError(
                f"knowledge names {len(refs)} vector stores; at most "
                f"{self.settings.max_vector_stores} (rag.max_vector_stores)",
                param="knowledge.vector_store_ids",
                code="too_many_vector_stores",
            )
        flt = profile.filter if profile else None
        if r.filters is not None:
            flt = parse_filter(r.filters, param="knowledge.filters", limits=self.filter_limits)
        default_message = (profile.no_answer_message if profile else None) or (
            self.settings.no_answer_message
        )
        return Knowledge(
            store_refs=refs,
            top_k=r.top_k or (profile.top_k if profile else self.settings.default_top_k),
            filter=flt,
            rerank=r.rerank
            if r.rerank is not None
            else (None if not profile or profile.rerank else False),
            score_threshold=r.score_threshold
            if r.score_threshold is not None
            else (profile.score_threshold if profile else 0.0),
            max_context_tokens=r.max_context_tokens
            or (profile.max_context_tokens if profile else None),
            system_prompt=profile.system_prompt if profile else DEFAULT_RAG_PROMPT,
            no_answer=r.no_answer or (profile.no_answer if profile else NoAnswer.SAY_SO),
            no_answer_message=default_message,
            debug=r.debug if r.debug is not None else self.settings.debug,
            profile=profile,
            who=searcher,
        )

    def search_queries(self, user_turns: list[str]) -> list[str]:
        """The query from the last user turn; a short or pronoun-led follow-up also
        searches with the previous user turn."""
        users = [t.strip() for t in user_turns if t.strip()]
        if not users:
            raise InvalidRequestError(
                "retrieval needs a user message to search for", param="messages"
            )
        last = users[-1]
        queries = [last]
        if len(users) > 1 and (
            len(last.split()) <= self.settings.follow_up_words or _FOLLOW_UP.search(last)
        ):
            queries.append(f"{users[-2]} {last}")
        return queries

    # -- retrieval -----------------------------------------------------------------------

    async def retrieve(self, k: Knowledge, queries: list[str]) -> list[SearchHit]:
        hits: list[SearchHit] = []
        query = SearchQuery(
            tuple(queries),
            k.top_k,
            filter=k.filter,
            rerank=k.rerank,
            score_threshold=k.score_threshold,
        )
        for ref in k.store_refs:
            try:
                col = await self.kb.collection(ref, who=k.who)
            except NotFoundError:
                raise NotFoundError(
                    f"no vector store with id or name {ref!r}",
                    param="knowledge.vector_store_ids",
                ) from None
            hits.extend((await self.kb.search(col.id, query, who=k.who)).hits)
        hits.sort(key=lambda h: -h.score)
        return hits[: k.top_k]

    @staticmethod
    def pack(hits: list[SearchHit], budget: int, count: Callable[[str], int]) -> list[Source]:
        """Sources in score order while they fit ``budget`` tokens (one that does not fit
        is skipped and a shorter one may still go in)."""
        chosen: list[Source] = []
        used = 0
        for h in hits:
            n = len(chosen) + 1
            block = source_block(n, h)
            tokens = count(block)
            if used + tokens <= budget:
                chosen.append(Source(Citation(n, h), block, tokens))
                used += tokens
        return chosen

    async def augment(
        self,
        k: Knowledge,
        queries: list[str],
        budget: Callable[[str], int],
        count: Callable[[str], int],
    ) -> Augmentation:
        """Retrieve and pack. ``budget(head)`` is how many tokens of sources fit once the
        instruction ``head`` is in the prompt (the caller knows its model's context)."""
        hits = await self.retrieve(k, queries)
        head = sources_head(k)
        room = budget(head) if hits else 0
        if k.max_context_tokens is not None:
            room = min(room, k.max_context_tokens)
        sources = self.pack(hits, max(0, room), count)
        no_answer = None
        if not sources and k.no_answer is NoAnswer.SAY_SO:
            no_answer = k.no_answer_message
        return Augmentation(queries, sources, head, no_answer, k.debug)

    # -- augmentation (the one place sources enter a prompt) ------------------------------

    def reserve(self, wanted: int | None, context_length: int) -> int:
        """Tokens kept for the answer: what the request asks (or the default), at most
        half the context."""
        return min(wanted or self.settings.reserve_tokens, context_length // 2)

    async def for_conversation(
        self, k: Knowledge, user_turns: list[str], room: Room
    ) -> Augmentation:
        """Sources for a conversation; the caller puts ``instruction`` in a system turn
        right before the last user turn (RWKV reads in order: next to the question)."""
        return await self.augment(k, self.search_queries(user_turns), room.budget, room.count)

    async def for_prompt(self, k: Knowledge, prompt: str, room: Room) -> tuple[str, Augmentation]:
        """A text prompt with its sources before it (completions never get the no-answer
        reply: the prompt is completed either way)."""
        quiet = replace(k, no_answer=NoAnswer.ANSWER_ANYWAY)
        aug = await self.augment(quiet, [prompt], room.budget, room.count)
        if aug.instruction is None:
            return prompt, aug
        return f"{aug.instruction}\n\n{prompt}", aug
