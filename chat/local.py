"""The local backend: a chat engine in this process (the RWKV engine, or the fake).

A conversation is rendered turn by turn with the model's template (the tools' System
turn first, the sources' System turn right before the last user turn), submitted with
its grammar, and read back through the output parser: the one loop over engine events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from chat.backend import Generation, Target, canned
from chat.budget import shortest_call_bytes, shortest_json_bytes, shortest_output_bytes
from chat.command import ChatCommand, CompletionCommand
from chat.config import ChatSettings
from chat.events import Delta, Finish, GenerationEvent, Part, TokenLogprob, TopLogprob
from chat.limits import check_limits, sampling_params
from chat.output import OutputParser
from chat.tools import OutputMode, OutputSpec, Plan, plan
from chat.turns import to_turns
from core.errors import EngineError, InvalidRequestError
from engines.chat_template import ChatTemplate, RenderedPrompt, Turn
from engines.constraint import Constraint
from engines.generation import ChatEngine, FinishEvent, GenerationRequest, TokenEvent
from rag.service import Augmentation, RagService, Room

__all__ = ["LocalBackend"]


def _unsupported(name: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"'{name}' is not supported by this server", param=name, code="unsupported_parameter"
    )


@dataclass
class _Prompt:
    rendered: RenderedPrompt
    plan: Plan
    augmentation: Augmentation | None


class LocalBackend:
    def __init__(
        self,
        engine: ChatEngine,
        template: ChatTemplate,
        settings: ChatSettings,
        rag: RagService | None,
    ) -> None:
        self.engine = engine
        self.template = template
        self.settings = settings
        self.rag = rag

    def _rag(self) -> RagService:
        """The RAG service (a target carries knowledge only where there is one)."""
        if self.rag is None:
            raise InvalidRequestError("this server has no knowledge base configured")
        return self.rag

    def _check(self, n: int, stop: tuple[str, ...], logit_bias: bool, refusals: Any) -> None:
        check_limits(n, stop, self.settings)
        if logit_bias:
            raise _unsupported("logit_bias")
        if refusals:
            raise refusals[0]

    # -- chat ------------------------------------------------------------------------------

    async def _prompt(self, cmd: ChatCommand, target: Target) -> _Prompt:
        engine, tpl = self.engine, self.template
        how = plan(cmd.output, tpl, cmd.reasoning_effort)
        pairs = to_turns(list(cmd.messages), tpl)
        asked = [text for role, text in pairs if role == "user"]
        if how.suffix:
            last = max((i for i, (role, _) in enumerate(pairs) if role == "user"), default=None)
            if last is not None:
                pairs[last] = (pairs[last][0], pairs[last][1] + how.suffix)
        if how.tools_turn is not None:
            pairs.insert(0, ("system", how.tools_turn))
        turns = await asyncio.to_thread(tpl.turns, pairs, engine.encode)
        aug = None
        if target.knowledge is not None:
            room = Room(
                engine.context_length,
                sum(len(t.tokens) for t in turns) + len(engine.encode(how.generation_prompt)),
                self._rag().reserve(cmd.sampling.max_tokens, engine.context_length),
                lambda head: len(tpl.turn("system", head, engine.encode).tokens),
                lambda text: len(engine.encode(text)),
            )
            aug = await self._rag().for_conversation(target.knowledge, asked, room)
            turns = await self._with_sources(aug, pairs, turns)
        rendered = tpl.prompt(turns, engine.encode, how.generation_prompt)
        return _Prompt(rendered, how, aug)

    async def _with_sources(
        self, aug: Augmentation, pairs: list[tuple[str, str]], turns: list[Turn]
    ) -> list[Turn]:
        if aug.instruction is None or not any(role == "user" for role, _ in pairs):
            return turns
        last_user = max(i for i, (role, _) in enumerate(pairs) if role == "user")
        system = await asyncio.to_thread(
            self.template.turn, "system", aug.instruction, self.engine.encode
        )
        return [*turns[:last_user], system, *turns[last_user:]]

    async def chat(self, cmd: ChatCommand, target: Target) -> Generation:
        self._check(cmd.n, cmd.sampling.stop, cmd.sampling.logit_bias, cmd.refusals)
        self._check_cost(cmd, None)
        p = await self._prompt(cmd, target)
        aug = p.augmentation
        citations = aug.citations if aug is not None else None
        if aug is not None and aug.no_answer is not None:
            return canned(aug.no_answer, cmd.n, target.fingerprint, citations or [])
        params = sampling_params(
            cmd.sampling,
            self.settings,
            max_tokens=cmd.sampling.max_tokens,
            extra_stop=self.template.stop,
            prompt_len=len(p.rendered.tokens),
            context_length=self.engine.context_length,
            param="messages",
        )
        self._check_cost(cmd, params.max_tokens)
        try:
            constraint = await asyncio.wait_for(
                asyncio.to_thread(
                    _prepared,
                    p.plan.constraint,
                    cmd.output,
                    min(
                        self.settings.max_constrained_output_bytes,
                        params.max_tokens * self.engine.max_token_bytes,
                    ),
                    params.max_tokens,
                    self.engine,
                ),
                self.settings.prepare_timeout_s,
            )
        except TimeoutError:
            raise InvalidRequestError(
                f"preparing the constrained output took over {self.settings.prepare_timeout_s} s "
                "(chat.prepare_timeout_s); simplify the schema",
                param="response_format",
                code="schema_too_complex",
            ) from None
        keys: list[str] = []
        state_name = cmd.state or target.state
        handle = self.engine.submit(
            GenerationRequest(
                p.rendered.tokens,
                params,
                n=cmd.n,
                state=state_name,
                boundaries=p.rendered.boundaries,
                owner=cmd.caller.fair_key,
                constraint=constraint,
                prepared=True,
                persist_states=cmd.persist_states,
                state_keys=keys,
            )
        )
        events = self._events([handle], cmd.n, p.plan.mode, cmd.sampling.logprobs)
        debug = p.rendered.text if aug is not None and aug.debug else None
        gen = Generation(
            events, len(p.rendered.tokens), target.fingerprint, citations, rag_prompt=debug
        )
        gen.states = {"model": self.engine.info.id, "state": state_name or "", "keys": keys}
        return gen

    def _check_cost(self, cmd: ChatCommand, max_tokens: int | None) -> None:
        """A constrained output whose shortest valid form cannot fit is refused before
        anything is built (the figures are arithmetic, from the schemas alone): past the
        named cap for any tool or format, past what ``max_tokens`` can hold when the
        output must be constrained. Under ``auto`` a call that cannot fit the budget just
        leaves a text answer."""
        spec, cap = cmd.output, self.settings.max_constrained_output_bytes
        usable = spec.tools if spec.choice != "none" else ()
        for i, t in enumerate(usable):
            need = shortest_call_bytes(t.name, t.parameters)
            if need > cap:
                raise _too_large(need, cap, f"tools[{i}]")
        if spec.schema is not None and (need := shortest_json_bytes(spec.schema)) > cap:
            raise _too_large(need, cap, "response_format")
        must = shortest_output_bytes(spec)
        if max_tokens is not None and must is not None:
            room = max_tokens * self.engine.max_token_bytes
            if must > room:
                raise InvalidRequestError(
                    f"the shortest output this schema allows is at least {must} bytes, more "
                    f"than {max_tokens} tokens can hold; raise max_tokens or relax the schema",
                    param="max_tokens",
                    code="max_tokens_too_small",
                )

    # -- completions -------------------------------------------------------------------------

    async def complete(self, cmd: CompletionCommand, target: Target) -> Generation:
        self._check(cmd.n, cmd.sampling.stop, cmd.sampling.logit_bias, cmd.refusals)
        engine = self.engine
        max_tokens = 16 if cmd.sampling.max_tokens is None else cmd.sampling.max_tokens
        prompt, citations = cmd.prompt, None
        if target.knowledge is not None:
            if not isinstance(prompt, str):
                raise InvalidRequestError("retrieval needs a single text prompt", param="prompt")
            text = prompt
            room = Room(
                engine.context_length,
                0,
                min(max_tokens or 16, engine.context_length // 2),
                lambda head: len(engine.encode(head + "\n\n" + text)),
                lambda t: len(engine.encode(t)),
            )
            prompt, aug = await self._rag().for_prompt(target.knowledge, text, room)
            citations = aug.citations
        prompts = await asyncio.to_thread(_prompt_tokens, prompt, engine.encode)
        if len(prompts) * cmd.n > self.settings.max_n:
            raise InvalidRequestError(
                f"prompts x n must be at most {self.settings.max_n}", param="prompt"
            )
        handles = []
        for tokens in prompts:
            params = sampling_params(
                cmd.sampling,
                self.settings,
                max_tokens=max_tokens,
                extra_stop=(),
                prompt_len=len(tokens),
                context_length=engine.context_length,
                param="prompt",
            )
            req = GenerationRequest(tokens, params, n=cmd.n, owner=cmd.caller.fair_key)
            handles.append(engine.submit(req))
        events = self._events(handles, cmd.n, None, cmd.sampling.logprobs)
        gen = Generation(events, sum(len(t) for t in prompts), target.fingerprint, citations)
        gen.echoes = [engine.decode(t) if cmd.echo else "" for t in prompts]
        return gen

    # -- the loop over engine events ----------------------------------------------------------

    async def _events(
        self, handles: list[Any], n: int, mode: OutputMode | None, logprobs: bool
    ) -> AsyncIterator[GenerationEvent]:
        """Every handle's events as typed output, choice ``p * n + j`` for handle ``p``'s
        choice ``j`` (several prompts interleave as they come). ``mode`` None: raw text
        (completions), no parsing."""
        parsers = [OutputParser(mode or OutputMode()) for _ in range(n * len(handles))]
        reasoning = [0] * len(parsers)
        async for p_i, ev in _merged(self.engine, handles):
            i = p_i * n + ev.index
            parser = parsers[i]
            if isinstance(ev, TokenEvent):
                parts: tuple[Part, ...] = ()
                if mode is not None:
                    reasoning[i] += parser.in_reasoning
                    parts = tuple(parser.feed(ev.text))
                yield Delta(i, ev.text, parts, _logprob(ev) if logprobs else None)
                continue
            if ev.reason == "error":
                raise ev.error or EngineError("generation failed")
            tail = () if mode is None else (*parser.feed(ev.text), *parser.finish())
            yield Finish(
                i,
                ev.reason,
                ev.text,
                tail,
                parser.calls,
                ev.completion_tokens,
                reasoning[i],
                ev.cached_tokens,
            )


async def _merged(
    engine: ChatEngine, handles: list[Any]
) -> AsyncIterator[tuple[int, TokenEvent | FinishEvent]]:
    """(handle index, event) of every handle; one handle is read directly."""
    if len(handles) == 1:
        async for ev in engine.events(handles[0]):
            yield 0, ev
        return
    queue: asyncio.Queue[tuple[int, TokenEvent | FinishEvent | None]] = asyncio.Queue()

    async def pump(p_i: int, handle: Any) -> None:
        try:
            async for ev in engine.events(handle):
                await queue.put((p_i, ev))
        finally:
            await queue.put((p_i, None))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        open_pumps = len(tasks)
        while open_pumps:
            p_i, got = await queue.get()
            if got is None:
                open_pumps -= 1
                continue
            yield p_i, got
    finally:
        for t in tasks:
            t.cancel()


def _logprob(ev: TokenEvent) -> TokenLogprob:
    return TokenLogprob(
        ev.token_text,
        ev.logprob,
        list(ev.token_bytes),
        tuple(TopLogprob(t.token, t.logprob, t.bytes) for t in ev.top_logprobs),
    )


def _too_large(need: int, cap: int, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"the shortest output this schema allows is at least {need} bytes; the limit is "
        f"{cap} (chat.max_constrained_output_bytes)",
        param=param,
        code="schema_too_large",
    )


def _prepared(
    constraint: Constraint | None,
    spec: OutputSpec,
    room: int,
    budget: int,
    engine: ChatEngine,
) -> Constraint | None:
    """The constraint to generate under, checked by the engine (in a worker thread)."""
    fitting = _fitting(constraint, spec, room, budget, engine)
    if fitting is not None:
        engine.prepare(fitting, budget)
    return fitting


def _fitting(
    constraint: Constraint | None, spec: OutputSpec, room: int, budget: int, engine: ChatEngine
) -> Constraint | None:
    """Under ``tool_choice: auto`` a budget too small for any call leaves text only. The
    arithmetic bound (``room`` bytes) is checked first: the shortest call is built and
    tokenized only when it may fit."""
    if constraint is None or constraint.kind != "auto" or constraint.closer is None:
        return constraint
    if spec.tools and min(shortest_call_bytes(t.name, t.parameters) for t in spec.tools) > room:
        return None
    call = constraint.closer.complete(b"")
    if call is not None and len(engine.encode(call.decode("utf-8", "replace"))) > budget:
        return None
    return constraint


def _prompt_tokens(prompt: str | list[Any], encode: Callable[[str], list[int]]) -> list[list[int]]:
    if isinstance(prompt, str):
        return [encode(prompt) or [0]]
    if not prompt:
        raise InvalidRequestError("'prompt' must not be an empty list", param="prompt")
    if all(isinstance(x, int) for x in prompt):
        return [_check_ids(prompt)]
    if all(isinstance(x, str) for x in prompt):
        return [encode(x) or [0] for x in prompt]
    if all(isinstance(x, list) and x and all(isinstance(y, int) for y in x) for x in prompt):
        return [_check_ids(x) for x in prompt]
    raise InvalidRequestError(
        "'prompt' must be a string, a list of strings, or token-id arrays", param="prompt"
    )


def _check_ids(ids: list[int]) -> list[int]:
    if any(not 0 <= t < 65536 for t in ids):
        raise InvalidRequestError("token ids must be in [0, 65536)", param="prompt")
    return list(ids)
