"""The chat core: resolves what a command names (a model, an alias or a knowledge
profile, with its State and knowledge), picks the model's backend, and starts the
generation. Every surface comes through here; ``answer`` is MCP ``ask``'s whole path."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chat.backend import ChatBackend, Generation, Relayed, Target
from chat.command import Caller, ChatCommand, CompletionCommand
from chat.config import ChatSettings
from chat.events import Content, Finish, GenerationEvent
from chat.local import LocalBackend
from chat.remote import RemoteBackend
from chat.turns import Message
from core.errors import EngineError, InvalidRequestError
from core.tenancy import LOCAL_ADMIN, Principal
from engines.chat_template import ChatTemplate
from engines.generation import ChatEngine
from engines.registry import EngineRegistry, ServedModel
from engines.remote.engine import RemoteChat
from rag.catalog import ProfileCatalog
from rag.service import Citation, KnowledgeRequest, RagService

__all__ = ["Answer", "ChatCore", "UsageSink"]

# Told (project, generated tokens) as each choice finishes: per-project token quotas.
UsageSink = Callable[[str, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """A grounded answer to one question (MCP ``ask``)."""

    text: str
    profile: str | None  # the profile it came from (None: the caller's stores)
    model: str  # the chat model that answered
    citations: Sequence[Citation]


class ChatCore:
    def __init__(
        self,
        registry: EngineRegistry,
        settings: ChatSettings,
        catalog: ProfileCatalog,
        rag: RagService | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.catalog = catalog
        self.rag = rag
        self._backends: dict[str, tuple[object, ChatBackend]] = {}
        self.on_generated: UsageSink | None = None

    def _backend(self, served: ServedModel) -> ChatBackend:
        """The model's backend, built once per loaded engine."""
        engine = served.engine
        found = self._backends.get(served.info.id)
        if found is not None and found[0] is engine:
            return found[1]
        backend: ChatBackend
        if isinstance(engine, RemoteChat):
            backend = RemoteBackend(engine, self.settings, self.rag)
        elif isinstance(engine, ChatEngine):
            template = ChatTemplate.from_options(engine.chat_template)
            backend = LocalBackend(engine, template, self.settings, self.rag)
        else:
            raise EngineError(f"the model {served.info.id!r} has no chat engine")
        self._backends[served.info.id] = (engine, backend)
        return backend

    def target(
        self, name: str, knowledge: KnowledgeRequest | None, who: Principal = LOCAL_ADMIN
    ) -> Target:
        """What ``name`` (a model, an alias or a profile) resolves to for one request: a
        profile ``who`` may not see is an unknown model (``model_not_found``), and the
        stores ``knowledge`` names are resolved as ``who``."""
        profile = self.catalog.get(name, who)
        served = self.registry.resolve(profile.model if profile else name, "chat")
        if self.rag is None:
            if knowledge is not None:
                raise InvalidRequestError(
                    "this server has no knowledge base configured", param="knowledge"
                )
            return Target(served, None, None)
        return Target(
            served,
            profile.state if profile else None,
            self.rag.knowledge_for(name, knowledge, who),
        )

    async def chat(self, cmd: ChatCommand) -> Generation | Relayed:
        target = self.target(cmd.model, cmd.knowledge, cmd.caller.who)
        return await self._metered(await self._backend(target.served).chat(cmd, target), cmd)

    async def complete(self, cmd: CompletionCommand) -> Generation | Relayed:
        target = self.target(cmd.model, cmd.knowledge, cmd.caller.who)
        out = await self._backend(target.served).complete(cmd, target)
        return await self._metered(out, cmd)

    async def _metered(
        self, out: Generation | Relayed, cmd: ChatCommand | CompletionCommand
    ) -> Generation | Relayed:
        """``out`` with its generated tokens reported to ``on_generated`` as they are known:
        a generation's as each choice finishes, a relayed JSON answer's from its usage (a
        relayed stream's usage is the upstream's own and is not read)."""
        sink, project = self.on_generated, cmd.caller.project
        if sink is None or project is None:
            return out
        if isinstance(out, Generation):
            out.events = _reporting(out.events, sink, project)
        elif isinstance(out.body, dict):
            usage = out.body.get("usage")
            tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if isinstance(tokens, int) and tokens > 0:
                await sink(project, tokens)
        return out

    def forget_states(self, states: dict[str, Any]) -> None:
        """Delete the disk states a stored conversation kept (``Generation.states``)."""
        served = self.registry.models.get(str(states.get("model")))
        if served is not None and isinstance(served.engine, ChatEngine):
            keys = [str(k) for k in states.get("keys", [])]
            served.engine.forget_states(str(states.get("state") or ""), keys)

    async def generate(self, cmd: ChatCommand, target: Target | None = None) -> Generation:
        """A typed generation whatever the backend (``cmd`` forwards nothing)."""
        target = target or self.target(cmd.model, cmd.knowledge, cmd.caller.who)
        out = await self._metered(await self._backend(target.served).chat(cmd, target), cmd)
        if isinstance(out, Relayed):  # a command without ``forward`` is never relayed
            raise EngineError("the backend passed a typed command through")
        return out

    async def answer(
        self,
        question: str,
        profile: str | None = None,
        *,
        caller: Caller | None = None,
        stores: Sequence[str] | None = None,
        who: Principal | None = None,
    ) -> Answer:
        """A grounded answer: from a knowledge profile (the named one, else the first),
        or, with no profile configured, from ``stores`` with the first chat model; those
        stores are resolved as the caller (``caller.who``), so only its own are searched."""
        if caller is None:
            who = who or LOCAL_ADMIN
            caller = Caller(owner=who.key_id, project=who.project, principal=who)
        chosen = (
            self.catalog.get(profile, caller.who) if profile else self.catalog.first(caller.who)
        )
        if profile and chosen is None:
            raise InvalidRequestError(f"no knowledge profile named {profile!r}", param="profile")
        knowledge = None
        if chosen is not None:
            name = chosen.id
        else:
            models = [m for m in self.registry.models.values() if "chat" in m.capabilities]
            if not models:
                raise InvalidRequestError(
                    "no knowledge profile is configured and this server serves no chat model",
                    param="profile",
                )
            if not stores:
                raise InvalidRequestError(
                    "no knowledge profile is configured and there are no vector stores to search",
                    param="profile",
                )
            name = models[0].info.id
            knowledge = KnowledgeRequest(vector_store_ids=tuple(stores))
        cmd = ChatCommand(name, (Message("user", question),), knowledge=knowledge, caller=caller)
        target = self.target(name, knowledge, caller.who)
        gen = await self.generate(cmd, target)
        text = ""
        async for ev in gen.events:
            if ev.index == 0:
                text += "".join(p.text for p in ev.parts if isinstance(p, Content))
        return Answer(
            text, chosen.id if chosen else None, target.served.info.id, list(gen.citations or [])
        )


async def _reporting(
    events: AsyncIterator[GenerationEvent], sink: UsageSink, project: str
) -> AsyncIterator[GenerationEvent]:
    try:
        async for ev in events:
            if isinstance(ev, Finish) and ev.completion_tokens > 0:
                await sink(project, ev.completion_tokens)
            yield ev
    finally:
        # A reader that stops early closes this wrapper: the generation under it is
        # closed at once too (a local engine frees its slot), not whenever it is collected.
        if isinstance(events, AsyncGenerator):
            await events.aclose()
