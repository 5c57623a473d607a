"""What a surface asks of the chat core, typed: a ``ChatCommand`` (a conversation) or a
``CompletionCommand`` (text prompts), each with its sampling, its output spec, the
knowledge it retrieves from, and who asks (owner, project, session).

Wire-level refusals a local engine makes (content parts it cannot read, deprecated
fields) travel as ``refusals``: a local backend raises the first, a remote one leaves the
judgement to its upstream, which may serve them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chat.tools import OutputSpec
from chat.turns import Message
from core.errors import InvalidRequestError
from core.tenancy import LOCAL_ADMIN, Principal
from rag.service import KnowledgeRequest

__all__ = ["Caller", "ChatCommand", "CompletionCommand", "Forward", "Sampling"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling as asked (None: the server's default, applied by the backend)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: bool = False  # the request sent one (the RWKV engine does not take it)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: the key's digest, its project (fair admission), its conversation, and
    the principal whose stores a request's own ``knowledge`` may name."""

    owner: str | None = None
    project: str | None = None
    session: str | None = None  # X-Session-Id
    user: str | None = None  # the request's ``user``
    # What the caller may see (knowledge profiles, stores); None: an internal caller.
    principal: Principal | None = None

    @property
    def who(self) -> Principal:
        """The principal stores are resolved as. Without one, a caller that names a
        project is a member of it (it sees no other project's stores); a caller naming
        none is the local admin (internal callers)."""
        if self.principal is not None:
            return self.principal
        if self.project is not None:
            return Principal(project=self.project, role="member", key_id=self.owner)
        return LOCAL_ADMIN

    @property
    def fair_key(self) -> str | None:
        """What the engine's scheduler takes turns between: the project, else the key."""
        return self.project or self.owner


@dataclass(frozen=True, slots=True)
class Forward:
    """The client's own JSON, for a backend that passes requests through as sent (so
    fields this server does not know still reach the upstream)."""

    path: str  # chat/completions | completions
    body: dict[str, Any]
    stream: bool


@dataclass(frozen=True, slots=True)
class ChatCommand:
    model: str  # a model, an alias or a knowledge profile, as asked
    messages: tuple[Message, ...]
    sampling: Sampling = field(default_factory=Sampling)
    output: OutputSpec = field(default_factory=OutputSpec)
    n: int = 1
    reasoning_effort: str | None = None
    knowledge: KnowledgeRequest | None = None
    state: str | None = None
    caller: Caller = field(default_factory=Caller)
    forward: Forward | None = None
    refusals: tuple[InvalidRequestError, ...] = ()
    # False when the client asked that nothing of the conversation be stored: its
    # states stay in memory and never reach the disk tier.
    persist_states: bool = True


@dataclass(frozen=True, slots=True)
class CompletionCommand:
    model: str
    prompt: str | list[Any]
    sampling: Sampling = field(default_factory=Sampling)
    n: int = 1
    echo: bool = False
    knowledge: KnowledgeRequest | None = None
    caller: Caller = field(default_factory=Caller)
    forward: Forward | None = None
    refusals: tuple[InvalidRequestError, ...] = ()
