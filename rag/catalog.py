"""Knowledge profiles, resolved once: each profile's chat model (aliases followed), its
State and its retrieval settings. The catalog feeds /v1/models, chat and completions,
the Responses API and MCP ``ask``; nothing else reads profile settings.

A profile with a ``project`` exists only for that project's callers and for admins; one
without is shared with every project (``shared``), else with admins only. A profile a
caller may not see is answered like an unknown model, so its name is never confirmed."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import APIError
from core.tenancy import Principal
from kb.filters import Filter, parse_filter
from rag.config import NoAnswer, ProfileConfig

__all__ = ["Profile", "ProfileCatalog", "ProfileError"]


class ProfileError(ValueError):
    """A profile the configuration cannot serve (a startup error)."""


@dataclass(frozen=True, slots=True)
class Profile:
    id: str
    model: str  # the chat model's id (an alias resolved)
    state: str | None
    store_refs: tuple[str, ...]
    top_k: int
    rerank: bool
    score_threshold: float
    max_context_tokens: int | None
    system_prompt: str
    no_answer: NoAnswer
    no_answer_message: str | None
    filter: Filter | None
    filters_spec: dict[str, Any] | None
    description: str | None
    project: str | None = None


class ProfileCatalog:
    def __init__(self, profiles: list[Profile], *, shared: bool = True) -> None:
        self._by_id = {p.id: p for p in profiles}
        self.shared = shared

    @classmethod
    def build(
        cls,
        configs: list[ProfileConfig],
        chat_models: Mapping[str, str],
        taken: Collection[str] = (),
        *,
        shared: bool = True,
    ) -> ProfileCatalog:
        """Resolve profiles against the chat models' names (alias -> id); a profile named
        like a model, or naming no chat model, is a ``ProfileError``."""
        out: list[Profile] = []
        seen: set[str] = set()
        for p in configs:
            if p.id in taken or p.id in chat_models or p.id in seen:
                raise ProfileError(f"profile id {p.id!r} clashes with a model, alias or profile")
            seen.add(p.id)
            if p.model not in chat_models:
                raise ProfileError(f"profile {p.id!r}: {p.model!r} is not a configured chat model")
            try:
                flt = (
                    parse_filter(p.filters, param=f"profiles.{p.id}.filters") if p.filters else None
                )
            except APIError as exc:
                raise ProfileError(f"profile {p.id!r}: {exc.message}") from None
            out.append(
                Profile(
                    id=p.id,
                    model=chat_models[p.model],
                    state=p.state,
                    store_refs=tuple(p.vector_store_ids),
                    top_k=p.top_k,
                    rerank=p.rerank,
                    score_threshold=p.score_threshold,
                    max_context_tokens=p.max_context_tokens,
                    system_prompt=p.system_prompt,
                    no_answer=p.no_answer,
                    no_answer_message=p.no_answer_message,
                    filter=flt,
                    filters_spec=p.filters,
                    description=p.description,
                    project=p.project,
                )
            )
        return cls(out, shared=shared)

    def sees(self, who: Principal | None, profile: Profile) -> bool:
        """Whether ``profile`` exists for ``who`` (None: an internal caller, sees all)."""
        if who is None:
            return True
        if profile.project is None:
            return self.shared or who.is_admin
        return who.sees(profile.project)

    def get(self, name: str, who: Principal | None = None) -> Profile | None:
        """The profile ``name`` as ``who`` sees it (None when it may not see it)."""
        found = self._by_id.get(name)
        return found if found is not None and self.sees(who, found) else None

    def visible(self, who: Principal | None) -> list[Profile]:
        return [p for p in self._by_id.values() if self.sees(who, p)]

    def first(self, who: Principal | None = None) -> Profile | None:
        return next(iter(self.visible(who)), None)

    def __iter__(self) -> Iterator[Profile]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, name: object) -> bool:
        return name in self._by_id
