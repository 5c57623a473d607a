"""Chat and text completions: wire requests -> generation requests -> wire responses/SSE.

Everything a request asks is checked before any work starts (features, limits, sampling);
retrieval (for a knowledge profile or a request's ``knowledge``) then fills the prompt
within the room the model's context leaves, and the prompt is rendered once, turn by turn.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from core.errors import EngineError, InvalidRequestError
from engines.chat_template import ChatTemplate, RenderedPrompt, Turn
from engines.constraint import Constraint
from engines.generation import ChatEngine, GenerationRequest, TokenEvent
from engines.registry import EngineRegistry, ServedModel
from engines.remote.engine import RemoteChat
from gateway.schemas.chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
)
from gateway.schemas.knowledge import KnowledgeField
from gateway.services.chat.params import check_chat, check_completion, check_limits, sampling
from gateway.services.chat.remote import (
    Forwarded,
    affinity_key,
    augment_messages,
    augment_prompt,
    finish,
    forward_body,
    prompt_key,
    rag_prompt_text,
    relay,
)
from gateway.services.chat.reply import collect_chat, usage_of
from gateway.services.chat.stream import (
    ChatEnvelope,
    CompletionEnvelope,
    canned_chat_stream,
    chat_logprob,
    chat_stream,
    completion_stream,
    guard,
)
from gateway.services.chat.tools import OutputMode, OutputSpec, Plan, chat_output_spec, plan
from gateway.services.chat.turns import Message, to_turns
from gateway.settings import ChatSettings
from rag.catalog import ProfileCatalog
from rag.config import NoAnswer
from rag.service import Augmentation, Knowledge, KnowledgeRequest, RagService

__all__ = ["Answer", "Begun", "ChatService", "knowledge_request"]

# A dict: a remote model's answer, passed on from its upstream.
ChatResult = ChatCompletion | dict[str, Any] | AsyncIterator[bytes]
CompletionResult = Completion | dict[str, Any] | AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class Answer:
    """A grounded answer to one question (MCP ``ask``)."""

    text: str
    profile: str
    citations: list[dict[str, Any]]


def knowledge_request(f: KnowledgeField | None) -> KnowledgeRequest | None:
    """The request's ``knowledge`` as the RAG service takes it."""
    if f is None:
        return None
    return KnowledgeRequest(
        vector_store_ids=tuple(f.vector_store_ids) if f.vector_store_ids else None,
        top_k=f.top_k,
        filters=f.filters,
        rerank=f.rerank,
        score_threshold=f.score_threshold,
        max_context_tokens=f.max_context_tokens,
        no_answer=NoAnswer(f.no_answer) if f.no_answer else None,
        debug=f.debug,
    )


@dataclass
class _Prompt:
    model: ServedModel
    engine: ChatEngine
    template: ChatTemplate
    rendered: RenderedPrompt
    state: str | None
    augmentation: Augmentation | None
    plan: Plan


@dataclass
class Begun:
    """A chat generation under way (or the canned no-answer reply) and how to read it."""

    model: ServedModel
    engine: ChatEngine
    handle: Any  # None: the no-answer reply, which the model does not produce
    mode: OutputMode
    prompt_tokens: int
    fingerprint: str
    citations: list[dict[str, Any]] | None
    no_answer: str | None = None
    rag_prompt: str | None = None


class ChatService:
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
        self._templates: dict[str, ChatTemplate] = {}

    # -- shared --------------------------------------------------------------------------

    def _template(self, model: ServedModel) -> ChatTemplate:
        tpl = self._templates.get(model.info.id)
        if tpl is None:
            tpl = ChatTemplate.from_options(model.config.options.get("chat_template"))
            self._templates[model.info.id] = tpl
        return tpl

    @staticmethod
    def _fingerprint(model: ServedModel) -> str:
        extra = model.info.extra
        strategy = str(extra.get("strategy", "")).replace(" ", "_")
        return f"fp_{extra.get('version', 'rwkv')}_{strategy}"

    def _resolve(self, name: str) -> tuple[ServedModel, str | None]:
        """The chat model behind ``name`` (a model, an alias or a knowledge profile) and
        the profile's State."""
        profile = self.catalog.get(name)
        if profile is not None:
            return self.registry.resolve(profile.model, "chat"), profile.state
        return self.registry.resolve(name, "chat"), None

    def serves_remotely(self, name: str) -> bool:
        """Whether ``name`` (a model, alias or profile) is served by remote upstreams."""
        return self._resolve(name)[0].remote

    def _knowledge(self, req: ChatCompletionRequest | CompletionRequest) -> Knowledge | None:
        wanted = knowledge_request(req.knowledge)
        if self.rag is None:
            if wanted is not None:
                raise InvalidRequestError(
                    "this server has no knowledge base configured", param="knowledge"
                )
            return None
        return self.rag.knowledge_for(req.model, wanted)

    # -- chat ----------------------------------------------------------------------------

    async def _prompt(
        self, req: ChatCompletionRequest, messages: list[Message], spec: OutputSpec
    ) -> _Prompt:
        model, profile_state = self._resolve(req.model)
        knowledge = self._knowledge(req)
        engine = cast(ChatEngine, model.engine)
        tpl = self._template(model)
        how = plan(spec, tpl, req.reasoning_effort)
        pairs = to_turns(messages, tpl)
        if how.suffix:
            last = max((i for i, (role, _) in enumerate(pairs) if role == "user"), default=None)
            if last is not None:
                pairs[last] = (pairs[last][0], pairs[last][1] + how.suffix)
        if how.tools_turn is not None:
            pairs.insert(0, ("system", how.tools_turn))
        turns = await asyncio.to_thread(tpl.turns, pairs, engine.encode)
        augmentation = None
        if knowledge is not None and self.rag is not None:
            augmentation, turns = await self._augment(
                req, knowledge, pairs, turns, engine, tpl, how
            )
        rendered = tpl.prompt(turns, engine.encode, how.generation_prompt)
        state = req.state or profile_state
        return _Prompt(model, engine, tpl, rendered, state, augmentation, how)

    async def _augment(
        self,
        req: ChatCompletionRequest,
        knowledge: Knowledge,
        messages: list[tuple[str, str]],
        turns: list[Turn],
        engine: ChatEngine,
        tpl: ChatTemplate,
        how: Plan,
    ) -> tuple[Augmentation, list[Turn]]:
        """Sources go in a system turn right before the last user turn (RWKV reads in
        order, so they sit next to the question)."""
        if self.rag is None:
            return Augmentation([]), turns
        asked = [text for role, text in messages if role == "user"]
        if how.suffix and asked and asked[-1].endswith(how.suffix):
            asked[-1] = asked[-1][: -len(how.suffix)]
        queries = self.rag.search_queries(asked)
        wanted = req.max_completion_tokens or req.max_tokens or self.rag.settings.reserve_tokens
        reserve = min(wanted, engine.context_length // 2)
        used = sum(len(t.tokens) for t in turns) + len(engine.encode(how.generation_prompt))

        def budget(head: str) -> int:
            return (
                engine.context_length
                - reserve
                - used
                - len(tpl.turn("system", head, engine.encode).tokens)
            )

        aug = await self.rag.augment(knowledge, queries, budget, lambda t: len(engine.encode(t)))
        if aug.instruction is None or not any(role == "user" for role, _ in messages):
            return aug, turns
        last_user = max(i for i, (role, _) in enumerate(messages) if role == "user")
        system = await asyncio.to_thread(tpl.turn, "system", aug.instruction, engine.encode)
        return aug, [*turns[:last_user], system, *turns[last_user:]]

    async def begin(
        self,
        req: ChatCompletionRequest,
        owner: str | None = None,
        *,
        spec: OutputSpec | None = None,
    ) -> Begun:
        """Check ``req``, build its prompt and submit it to a local model (chat and the
        Responses API)."""
        messages = check_chat(req, self.settings)
        if spec is None:
            spec = chat_output_spec(
                req.tools,
                req.tool_choice,
                req.parallel_tool_calls,
                req.response_format,
                self.settings,
            )
        p = await self._prompt(req, messages, spec)
        aug = p.augmentation
        citations = [c.to_dict() for c in aug.citations] if aug is not None else None
        fp = self._fingerprint(p.model)
        debug = p.rendered.text if aug is not None and aug.debug else None
        if aug is not None and aug.no_answer is not None:
            return Begun(
                p.model, p.engine, None, p.plan.mode, 0, fp, citations or [], aug.no_answer
            )
        params = sampling(
            req,
            self.settings,
            max_tokens=req.max_completion_tokens or req.max_tokens,
            extra_stop=p.template.stop,
            prompt_len=len(p.rendered.tokens),
            context_length=p.engine.context_length,
            logprobs=req.logprobs,
            top_logprobs=req.top_logprobs or 0,
        )
        gen = GenerationRequest(
            p.rendered.tokens,
            params,
            n=req.n,
            state=p.state,
            boundaries=p.rendered.boundaries,
            owner=owner,
            constraint=_fitting(p.plan.constraint, params.max_tokens, p.engine),
        )
        handle = p.engine.submit(gen)
        return Begun(
            p.model,
            p.engine,
            handle,
            p.plan.mode,
            len(p.rendered.tokens),
            fp,
            citations,
            rag_prompt=debug,
        )

    async def chat(
        self,
        req: ChatCompletionRequest,
        owner: str | None = None,
        *,
        raw: bytes | None = None,
        session: str | None = None,
    ) -> ChatResult:
        """``raw``: the client's JSON body (a remote model forwards it); ``session``: its
        X-Session-Id (a remote model routes the conversation by it)."""
        model, profile_state = self._resolve(req.model)
        if model.remote:
            return await self._remote_chat(req, model, profile_state, raw, session)
        run = await self.begin(req, owner)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        env = ChatEnvelope(
            rid, created, req.model, run.fingerprint, _include_usage(req), run.prompt_tokens
        )
        if run.no_answer is not None:
            return self._canned(req, env, run.no_answer, run.citations or [])
        if req.stream:
            return guard(chat_stream(run, req.n, env, req.logprobs))
        outs = await collect_chat(run, req.n, req.logprobs)
        out = ChatCompletion(
            id=rid,
            created=created,
            model=req.model,
            choices=[
                ChatCompletionChoice(
                    index=i,
                    message=o.message(run.citations),
                    finish_reason=o.finish_reason,
                    logprobs={"content": o.logprobs, "refusal": None} if req.logprobs else None,
                )
                for i, o in enumerate(outs)
            ],
            usage=usage_of(run.prompt_tokens, outs),
            system_fingerprint=run.fingerprint,
        )
        if run.citations is not None:
            out.citations = run.citations
        if run.rag_prompt is not None:
            out.rag_prompt = run.rag_prompt
        return out

    async def _remote_chat(
        self,
        req: ChatCompletionRequest,
        model: ServedModel,
        profile_state: str | None,
        raw: bytes | None,
        session: str | None,
    ) -> ChatResult:
        check_limits(req, self.settings)  # the rest is the upstream's to judge
        engine = cast(RemoteChat, model.engine)
        body = forward_body(req, raw)
        state = req.state or profile_state
        if state is not None:
            body["state"] = state
        extra = Forwarded(req.model)
        knowledge = self._knowledge(req)
        if knowledge is not None and self.rag is not None:
            wanted = req.max_completion_tokens or req.max_tokens
            aug, messages = await augment_messages(self.rag, knowledge, engine, body, wanted)
            extra.citations = [c.to_dict() for c in aug.citations]
            if aug.no_answer is not None:
                rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
                fp = self._fingerprint(model)
                env = ChatEnvelope(rid, created, req.model, fp, _include_usage(req), 0)
                return self._canned(req, env, aug.no_answer, extra.citations)
            body["messages"] = messages
            if aug.debug:
                extra.rag_prompt = rag_prompt_text(messages)
        key = affinity_key(engine.options, session, req.user, body.get("messages") or [])
        needs = state is not None
        if req.stream:
            named, chunks = await engine.stream("chat/completions", body, key=key, extras=needs)
            return relay(chunks, named, extra, engine.options.max_event_bytes)
        return finish(await engine.post("chat/completions", body, key=key, extras=needs), extra)

    def _canned(
        self,
        req: ChatCompletionRequest,
        env: ChatEnvelope,
        answer: str,
        citations: list[dict[str, Any]],
    ) -> ChatResult:
        """The no-answer reply: the model does not run, so no tokens are used."""
        if req.stream:
            return canned_chat_stream(answer, req.n, replace(env, prompt_tokens=0), citations)
        return ChatCompletion(
            id=env.id,
            created=env.created,
            model=req.model,
            choices=[
                ChatCompletionChoice(i, ChatCompletionMessage(content=answer), "stop")
                for i in range(req.n)
            ],
            usage=_usage(0, 0),
            system_fingerprint=env.system_fingerprint,
            citations=citations,
        )

    async def answer(self, question: str, profile: str | None = None) -> Answer:
        """A grounded answer from a knowledge profile (the first one by default)."""
        chosen = self.catalog.get(profile) if profile else self.catalog.first()
        if chosen is None:
            raise InvalidRequestError(
                f"no knowledge profile named {profile!r}"
                if profile
                else "no knowledge profile is configured",
                param="profile",
            )
        req = ChatCompletionRequest(
            model=chosen.id, messages=[ChatMessage(role="user", content=question)]
        )
        result = await self.chat(req)
        if isinstance(result, dict):  # a remote model's answer
            found = result.get("citations")
            text = ((result.get("choices") or [{}])[0].get("message") or {}).get("content")
            return Answer(text or "", chosen.id, found if isinstance(found, list) else [])
        if not isinstance(result, ChatCompletion):  # a non-streamed request never streams
            raise EngineError("the answer came back as a stream")
        cites = result.citations if isinstance(result.citations, list) else []
        return Answer(result.choices[0].message.content or "", chosen.id, cites)

    # -- completions ---------------------------------------------------------------------

    async def complete(
        self,
        req: CompletionRequest,
        owner: str | None = None,
        *,
        raw: bytes | None = None,
        session: str | None = None,
    ) -> CompletionResult:
        model, _ = self._resolve(req.model)
        if model.remote:
            return await self._remote_complete(req, model, raw, session)
        check_completion(req, self.settings)
        engine = cast(ChatEngine, model.engine)
        prompt, citations = await self._augment_prompt(req, engine)
        prompts = await asyncio.to_thread(_prompt_tokens, prompt, engine.encode)
        if len(prompts) * req.n > self.settings.max_n:
            raise InvalidRequestError(
                f"prompts x n must be at most {self.settings.max_n}", param="prompt"
            )
        want_lp = req.logprobs is not None
        max_tokens = 16 if req.max_tokens is None else req.max_tokens
        handles = []
        for tokens in prompts:
            params = sampling(
                req,
                self.settings,
                max_tokens=max_tokens,
                extra_stop=(),
                prompt_len=len(tokens),
                context_length=engine.context_length,
                logprobs=want_lp,
                top_logprobs=req.logprobs or 0,
            )
            handles.append(engine.submit(GenerationRequest(tokens, params, n=req.n, owner=owner)))
        rid, created, fp = f"cmpl-{uuid.uuid4().hex}", int(time.time()), self._fingerprint(model)
        prompt_total = sum(len(t) for t in prompts)
        echoes = [engine.decode(t) if req.echo else "" for t in prompts]
        if req.stream:
            env = CompletionEnvelope(rid, created, req.model, fp, _include_usage(req), prompt_total)
            return guard(completion_stream(engine, handles, req.n, env, echoes))
        results = await asyncio.gather(*(_collect(engine, h, req.n, want_lp) for h in handles))
        choices: list[CompletionChoice] = []
        for p_i, (texts, reasons, _, lps) in enumerate(results):
            for j in range(req.n):
                lp = _completion_logprobs(lps[j], len(echoes[p_i])) if want_lp else None
                choices.append(
                    CompletionChoice(p_i * req.n + j, echoes[p_i] + texts[j], reasons[j], lp)
                )
        completion = sum(sum(r[2]) for r in results)
        out = Completion(
            id=rid,
            created=created,
            model=req.model,
            choices=choices,
            usage=_usage(prompt_total, completion),
            system_fingerprint=fp,
        )
        if citations is not None:
            out.citations = citations
        return out

    async def _remote_complete(
        self, req: CompletionRequest, model: ServedModel, raw: bytes | None, session: str | None
    ) -> CompletionResult:
        check_limits(req, self.settings)  # the rest is the upstream's to judge
        engine = cast(RemoteChat, model.engine)
        body = forward_body(req, raw)
        extra = Forwarded(req.model)
        knowledge = self._knowledge(req)
        if knowledge is not None and self.rag is not None:
            wanted = 16 if req.max_tokens is None else req.max_tokens
            body["prompt"], extra.citations = await augment_prompt(
                self.rag, knowledge, engine, req.prompt, wanted
            )
        key = prompt_key(engine.options, session, body.get("prompt"))
        if req.stream:
            named, chunks = await engine.stream("completions", body, key=key, extras=False)
            return relay(chunks, named, extra, engine.options.max_event_bytes)
        return finish(await engine.post("completions", body, key=key, extras=False), extra)

    async def _augment_prompt(
        self, req: CompletionRequest, engine: ChatEngine
    ) -> tuple[str | list[Any], list[dict[str, Any]] | None]:
        """Completions: sources go before a text prompt."""
        knowledge = self._knowledge(req)
        if knowledge is None or self.rag is None:
            return req.prompt, None
        if not isinstance(req.prompt, str):
            raise InvalidRequestError("retrieval needs a single text prompt", param="prompt")
        prompt = req.prompt
        reserve = min(req.max_tokens or 16, engine.context_length // 2)

        def budget(head: str) -> int:
            return engine.context_length - reserve - len(engine.encode(head + "\n\n" + prompt))

        quiet = replace(knowledge, no_answer=NoAnswer.ANSWER_ANYWAY)
        aug = await self.rag.augment(quiet, [prompt], budget, lambda t: len(engine.encode(t)))
        if aug.instruction is None:
            return prompt, []
        return f"{aug.instruction}\n\n{prompt}", [c.to_dict() for c in aug.citations]


def _fitting(constraint: Constraint | None, budget: int, engine: ChatEngine) -> Constraint | None:
    """Under ``tool_choice: auto`` a budget too small for any call leaves text only."""
    if constraint is None or constraint.kind != "auto" or constraint.closer is None:
        return constraint
    call = constraint.closer.complete(b"")
    if call is not None and len(engine.encode(call.decode("utf-8", "replace"))) > budget:
        return None
    return constraint


def _include_usage(req: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


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


async def _collect(
    engine: ChatEngine, handle: Any, n: int, logprobs: bool
) -> tuple[list[str], list[str], list[int], list[list[dict[str, Any]]]]:
    texts = [""] * n
    reasons = ["stop"] * n
    counts = [0] * n
    lps: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    async for ev in engine.events(handle):
        if isinstance(ev, TokenEvent):
            texts[ev.index] += ev.text
            if logprobs:
                lps[ev.index].append(chat_logprob(ev))
            continue
        if ev.reason == "error":
            raise ev.error or EngineError("generation failed")
        texts[ev.index] += ev.text
        reasons[ev.index] = ev.reason
        counts[ev.index] = ev.completion_tokens
    return texts, reasons, counts, lps


def _completion_logprobs(items: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    offsets = []
    pos = offset
    for it in items:
        offsets.append(pos)
        pos += len(it["token"])
    return {
        "tokens": [it["token"] for it in items],
        "token_logprobs": [it["logprob"] for it in items],
        "top_logprobs": [{t["token"]: t["logprob"] for t in it["top_logprobs"]} for it in items],
        "text_offset": offsets,
    }
