"""Chat and text completions: wire requests -> GenerationRequests -> wire responses or SSE."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from engines.chat_template import ChatTemplate
from engines.errors import APIError, ContextLengthError, EngineError, InvalidRequestError
from engines.generation import FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from engines.registry import EngineRegistry, ServedModel
from gateway.schemas_chat import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionRequest,
    CompletionUsage,
)
from gateway.settings import ChatSettings

__all__ = ["ChatService", "PreparedChat", "sse"]

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()


def sse(payload: Any) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


@dataclass(frozen=True)
class _Envelope:
    """What every chunk of one streamed response repeats."""

    id: str
    object: str
    created: int
    model: str
    system_fingerprint: str
    include_usage: bool
    prompt_tokens: int

    def chunk(self, choices: list[dict[str, Any]], usage: Any = None, **extra: Any) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.system_fingerprint,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        body.update(extra)
        return sse(body)

    def tail(self, completion_tokens: int) -> Iterator[bytes]:
        """The usage chunk (when asked for), then the end marker."""
        if self.include_usage:
            yield self.chunk([], usage=_usage(self.prompt_tokens, completion_tokens))
        yield b"data: [DONE]\n\n"


@dataclass
class PreparedChat:
    """What a retrieval step may change before generation: messages, state, citations."""

    model: ServedModel
    messages: list[tuple[str, str]]
    state: str | None = None
    citations: list[dict[str, Any]] | None = None
    # Set by retrieval when nothing was found and the profile says so: the answer given
    # without running the model.
    answer: str | None = None
    debug: bool = False


class ChatService:
    def __init__(self, registry: EngineRegistry, settings: ChatSettings) -> None:
        self.registry = registry
        self.settings = settings
        # The RAG service (gateway.services.rag.RagService) once the app wires it.
        self.rag: Any = None
        self._templates: dict[str, ChatTemplate] = {}

    # -- shared --------------------------------------------------------------------------

    def _template(self, model: ServedModel) -> ChatTemplate:
        tpl = self._templates.get(model.info.id)
        if tpl is None:
            tpl = ChatTemplate.from_options(model.config.options.get("chat_template"))
            self._templates[model.info.id] = tpl
        return tpl

    def _fingerprint(self, model: ServedModel) -> str:
        extra = model.info.extra
        return (
            f"fp_{extra.get('version', 'rwkv')}_{str(extra.get('strategy', '')).replace(' ', '_')}"
        )

    def _params(
        self,
        req: ChatCompletionRequest | CompletionRequest,
        max_tokens: int | None,
        extra_stop: tuple[str, ...],
        prompt_len: int,
        context_length: int,
        logprobs: bool,
        top_logprobs: int,
    ) -> SamplingParams:
        s = self.settings
        if req.n < 1 or req.n > s.max_n:
            raise InvalidRequestError(f"'n' must be between 1 and {s.max_n}", param="n")
        if req.temperature is not None and not 0.0 <= req.temperature <= 2.0:
            raise InvalidRequestError("'temperature' must be between 0 and 2", param="temperature")
        if req.top_p is not None and not 0.0 < req.top_p <= 1.0:
            raise InvalidRequestError("'top_p' must be in (0, 1]", param="top_p")
        if req.top_k is not None and req.top_k < 0:
            raise InvalidRequestError("'top_k' must be >= 0", param="top_k")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(req, name)
            if value is not None and not -2.0 <= value <= 2.0:
                raise InvalidRequestError(f"'{name}' must be between -2 and 2", param=name)
        if req.logit_bias:
            raise InvalidRequestError(
                "'logit_bias' is not supported by this server",
                param="logit_bias",
                code="unsupported_parameter",
            )
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > s.max_stop_sequences or any(not x for x in stops):
            raise InvalidRequestError(
                f"'stop' takes up to {s.max_stop_sequences} non-empty strings", param="stop"
            )
        if prompt_len > context_length:
            raise ContextLengthError(
                f"the prompt has {prompt_len} tokens; this model's context limit is "
                f"{context_length}",
                param="messages" if isinstance(req, ChatCompletionRequest) else "prompt",
            )
        room = context_length - prompt_len
        if max_tokens is not None and max_tokens < 1:
            raise InvalidRequestError("'max_tokens' must be at least 1", param="max_tokens")
        limit = min(max_tokens or s.default_max_tokens, s.max_tokens_limit, max(room, 1))
        return SamplingParams(
            max_tokens=limit,
            temperature=s.default_temperature if req.temperature is None else req.temperature,
            top_p=s.default_top_p if req.top_p is None else req.top_p,
            top_k=req.top_k or 0,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            penalty_decay=s.penalty_decay,
            stop=tuple(dict.fromkeys([*stops, *extra_stop])),
            seed=req.seed,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )

    # -- chat ----------------------------------------------------------------------------

    def _check_chat(self, req: ChatCompletionRequest) -> list[tuple[str, str]]:
        if req.tools:
            raise InvalidRequestError(
                "'tools' are not supported by this server",
                param="tools",
                code="unsupported_parameter",
            )
        if req.functions:
            raise InvalidRequestError(
                "'functions' are not supported by this server",
                param="functions",
                code="unsupported_parameter",
            )
        if req.response_format and req.response_format.get("type", "text") != "text":
            raise InvalidRequestError(
                "only response_format {'type': 'text'} is supported",
                param="response_format",
                code="unsupported_parameter",
            )
        if req.modalities and set(req.modalities) - {"text"}:
            raise InvalidRequestError(
                "only the 'text' modality is supported",
                param="modalities",
                code="unsupported_parameter",
            )
        for name in ("audio", "prediction"):
            if getattr(req, name):
                raise InvalidRequestError(
                    f"'{name}' is not supported by this server",
                    param=name,
                    code="unsupported_parameter",
                )
        if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
            raise InvalidRequestError(
                "'top_logprobs' must be between 0 and 20", param="top_logprobs"
            )
        if req.top_logprobs and not req.logprobs:
            raise InvalidRequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        if not req.messages:
            raise InvalidRequestError("'messages' must not be empty", param="messages")
        out: list[tuple[str, str]] = []
        for i, m in enumerate(req.messages):
            if m.role not in ("system", "developer", "user", "assistant"):
                raise InvalidRequestError(
                    f"messages[{i}].role {m.role!r} is not supported "
                    "(system, developer, user, assistant)",
                    param=f"messages[{i}].role",
                )
            out.append((m.role, _text_content(m.content, i)))
        return out

    def _resolve(self, name: str) -> tuple[ServedModel, str | None]:
        """The chat model behind ``name`` (a model, an alias or a knowledge profile)."""
        target = self.rag.profile_target(name) if self.rag is not None else None
        if target is not None:
            return self.registry.resolve(target[0], "chat"), target[1]
        return self.registry.resolve(name, "chat"), None

    async def prepare_chat(self, req: ChatCompletionRequest) -> PreparedChat:
        messages = self._check_chat(req)
        model, profile_state = self._resolve(req.model)
        prepared = PreparedChat(model=model, messages=messages, state=req.state or profile_state)
        if self.rag is None:
            if req.knowledge:
                raise InvalidRequestError(
                    "this server has no knowledge base configured", param="knowledge"
                )
            return prepared
        engine = model.engine
        tpl = self._template(model)
        wanted = req.max_completion_tokens or req.max_tokens or self.rag.settings.reserve_tokens
        reserve = min(wanted, engine.context_length // 2)
        result: PreparedChat = await self.rag.augment(
            req.model,
            req.knowledge,
            prepared,
            context_length=engine.context_length,
            reserve=reserve,
            count=lambda text: len(engine.encode(text)),
            rendered_len=lambda msgs: len(tpl.render(msgs, engine.encode).tokens),
        )
        return result

    async def chat(self, req: ChatCompletionRequest) -> ChatCompletion | AsyncIterator[bytes]:
        prepared = await self.prepare_chat(req)
        model = prepared.model
        if prepared.answer is not None:
            return self._canned(req, prepared)
        engine = model.engine
        tpl = self._template(model)
        rendered = await asyncio.to_thread(tpl.render, prepared.messages, engine.encode)
        max_tokens = req.max_completion_tokens or req.max_tokens
        params = self._params(
            req,
            max_tokens,
            tpl.stop,
            len(rendered.tokens),
            engine.context_length,
            req.logprobs,
            req.top_logprobs or 0,
        )
        gen = GenerationRequest(
            rendered.tokens,
            params,
            n=req.n,
            state=prepared.state,
            boundaries=rendered.boundaries,
        )
        handle = engine.submit(gen)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        fp = self._fingerprint(model)
        if req.stream:
            envelope = _Envelope(
                rid,
                "chat.completion.chunk",
                created,
                req.model,
                fp,
                _include_usage(req),
                len(rendered.tokens),
            )
            return _guard(self._chat_stream(engine, handle, envelope, prepared.citations))
        texts, reasons, counts, logprobs = await _collect(engine, handle, req.n)
        choices = [
            ChatCompletionChoice(
                index=i,
                message=ChatCompletionMessage(content=texts[i]),
                finish_reason=reasons[i],
                logprobs={"content": logprobs[i], "refusal": None} if req.logprobs else None,
            )
            for i in range(req.n)
        ]
        completion = sum(counts)
        out = ChatCompletion(
            id=rid,
            created=created,
            model=req.model,
            choices=choices,
            usage=CompletionUsage(
                len(rendered.tokens), completion, len(rendered.tokens) + completion
            ),
            system_fingerprint=fp,
        )
        if prepared.citations is not None:
            out.citations = prepared.citations
        if prepared.debug:
            out.rag_prompt = rendered.text
        return out

    def _canned(
        self, req: ChatCompletionRequest, prepared: PreparedChat
    ) -> ChatCompletion | AsyncIterator[bytes]:
        """The no-answer reply: the model does not run, so no tokens are used."""
        answer = prepared.answer or ""
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        fp = self._fingerprint(prepared.model)
        citations = prepared.citations or []
        if req.stream:
            envelope = _Envelope(
                rid, "chat.completion.chunk", created, req.model, fp, _include_usage(req), 0
            )

            async def stream() -> AsyncIterator[bytes]:
                for i in range(req.n):
                    yield envelope.chunk(
                        [
                            {
                                "index": i,
                                "delta": {"role": "assistant", "content": answer},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                        citations=citations,
                    )
                    yield envelope.chunk(
                        [{"index": i, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
                    )
                for item in envelope.tail(0):
                    yield item

            return stream()
        return ChatCompletion(
            id=rid,
            created=created,
            model=req.model,
            choices=[
                ChatCompletionChoice(
                    index=i, message=ChatCompletionMessage(content=answer), finish_reason="stop"
                )
                for i in range(req.n)
            ],
            usage=CompletionUsage(0, 0, 0),
            system_fingerprint=fp,
            citations=citations,
        )

    async def _chat_stream(
        self,
        engine: Any,
        handle: Any,
        envelope: _Envelope,
        citations: list[dict[str, Any]] | None,
    ) -> AsyncIterator[bytes]:
        chunk = envelope.chunk
        n = handle.request.n
        completion = 0
        cited = citations is None
        yield chunk(
            [
                {
                    "index": i,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for i in range(n)
            ]
        )
        async for ev in engine.events(handle):
            if isinstance(ev, TokenEvent):
                if not ev.text and not handle.request.params.logprobs:
                    continue
                extra: dict[str, Any] = {}
                if not cited and ev.text:
                    extra["citations"] = citations
                    cited = True
                yield chunk(
                    [
                        {
                            "index": ev.index,
                            "delta": {"content": ev.text},
                            "logprobs": {"content": [_chat_logprob(ev)], "refusal": None}
                            if handle.request.params.logprobs
                            else None,
                            "finish_reason": None,
                        }
                    ],
                    **extra,
                )
            else:
                if ev.reason == "error":
                    raise ev.error or EngineError("generation failed")
                completion += ev.completion_tokens
                delta = {"content": ev.text} if ev.text else {}
                yield chunk(
                    [
                        {
                            "index": ev.index,
                            "delta": delta,
                            "logprobs": None,
                            "finish_reason": ev.reason,
                        }
                    ]
                )
        for item in envelope.tail(completion):
            yield item

    # -- completions ---------------------------------------------------------------------

    async def complete(self, req: CompletionRequest) -> Completion | AsyncIterator[bytes]:
        if req.suffix:
            raise InvalidRequestError(
                "'suffix' is not supported by this server",
                param="suffix",
                code="unsupported_parameter",
            )
        if req.best_of is not None and req.best_of != req.n:
            raise InvalidRequestError(
                "'best_of' must equal 'n' on this server",
                param="best_of",
                code="unsupported_parameter",
            )
        if req.logprobs is not None and not 0 <= req.logprobs <= 5:
            raise InvalidRequestError("'logprobs' must be between 0 and 5", param="logprobs")
        model, _ = self._resolve(req.model)
        engine = model.engine
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
            params = self._params(
                req, max_tokens, (), len(tokens), engine.context_length, want_lp, req.logprobs or 0
            )
            handles.append(engine.submit(GenerationRequest(tokens, params, n=req.n)))
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        fp = self._fingerprint(model)
        prompt_total = sum(len(t) for t in prompts)
        echoes = [engine.decode(t) if req.echo else "" for t in prompts]
        if req.stream:
            envelope = _Envelope(
                rid, "text_completion", created, req.model, fp, _include_usage(req), prompt_total
            )
            return _guard(self._completion_stream(engine, handles, envelope, echoes))
        choices: list[CompletionChoice] = []
        completion = 0
        results = await asyncio.gather(*(_collect(engine, h, req.n) for h in handles))
        for p_i, (texts, reasons, counts, lps) in enumerate(results):
            completion += sum(counts)
            for j in range(req.n):
                choices.append(
                    CompletionChoice(
                        index=p_i * req.n + j,
                        text=echoes[p_i] + texts[j],
                        finish_reason=reasons[j],
                        logprobs=_completion_logprobs(lps[j], len(echoes[p_i]))
                        if want_lp
                        else None,
                    )
                )
        out = Completion(
            id=rid,
            created=created,
            model=req.model,
            choices=choices,
            usage=CompletionUsage(prompt_total, completion, prompt_total + completion),
            system_fingerprint=fp,
        )
        if citations is not None:
            out.citations = citations
        return out

    async def _augment_prompt(
        self, req: CompletionRequest, engine: Any
    ) -> tuple[str | list[Any], list[dict[str, Any]] | None]:
        if self.rag is None:
            if req.knowledge:
                raise InvalidRequestError(
                    "this server has no knowledge base configured", param="knowledge"
                )
            return req.prompt, None
        result: tuple[str | list[Any], list[dict[str, Any]] | None]
        result = await self.rag.augment_prompt(
            req.model,
            req.knowledge,
            req.prompt,
            context_length=engine.context_length,
            reserve=min(req.max_tokens or 16, engine.context_length // 2),
            count=lambda text: len(engine.encode(text)),
        )
        return result

    async def _completion_stream(
        self, engine: Any, handles: list[Any], envelope: _Envelope, echoes: list[str]
    ) -> AsyncIterator[bytes]:
        chunk = envelope.chunk
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        async def pump(p_i: int, handle: Any) -> None:
            try:
                async for ev in engine.events(handle):
                    await queue.put((p_i, ev))
            finally:
                await queue.put((p_i, None))

        n = handles[0].request.n
        tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
        completion = 0
        try:
            for p_i, echo in enumerate(echoes):
                for j in range(n):
                    if echo:
                        yield chunk(
                            [
                                {
                                    "index": p_i * n + j,
                                    "text": echo,
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ]
                        )
            open_pumps = len(tasks)
            while open_pumps:
                p_i, ev = await queue.get()
                if ev is None:
                    open_pumps -= 1
                    continue
                index = p_i * n + ev.index
                if isinstance(ev, TokenEvent):
                    if ev.text:
                        yield chunk(
                            [
                                {
                                    "index": index,
                                    "text": ev.text,
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ]
                        )
                elif isinstance(ev, FinishEvent):
                    if ev.reason == "error":
                        raise ev.error or EngineError("generation failed")
                    completion += ev.completion_tokens
                    yield chunk(
                        [
                            {
                                "index": index,
                                "text": ev.text,
                                "logprobs": None,
                                "finish_reason": ev.reason,
                            }
                        ]
                    )
            for item in envelope.tail(completion):
                yield item
        finally:
            for t in tasks:
                t.cancel()


def _include_usage(req: ChatCompletionRequest | CompletionRequest) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _guard(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the stream has started becomes one error event, then the end."""
    try:
        async for item in stream:
            yield item
    except APIError as exc:
        yield sse(exc.to_dict())
    except Exception:
        log.exception("stream failed")
        yield sse(EngineError("the server had an error while streaming").to_dict())


def _text_content(content: str | list[dict[str, Any]] | None, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"messages[{i}].content[{j}] has type {kind!r}; only text parts are supported",
                param=f"messages[{i}].content",
                code="unsupported_content",
            )
        parts.append(part["text"])
    return "".join(parts)


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
    engine: Any, handle: Any, n: int
) -> tuple[list[str], list[str], list[int], list[list[dict[str, Any]]]]:
    texts = [""] * n
    reasons = ["stop"] * n
    counts = [0] * n
    logprobs: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    async for ev in engine.events(handle):
        if isinstance(ev, TokenEvent):
            texts[ev.index] += ev.text
            if handle.request.params.logprobs:
                logprobs[ev.index].append(_chat_logprob(ev))
        else:
            if ev.reason == "error":
                raise ev.error or EngineError("generation failed")
            texts[ev.index] += ev.text
            reasons[ev.index] = ev.reason
            counts[ev.index] = ev.completion_tokens
    return texts, reasons, counts, logprobs


def _chat_logprob(ev: TokenEvent) -> dict[str, Any]:
    return {
        "token": ev.token_text,
        "logprob": ev.logprob,
        "bytes": list(ev.token_bytes),
        "top_logprobs": [
            {"token": t.token, "logprob": t.logprob, "bytes": t.bytes} for t in ev.top_logprobs
        ],
    }


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
