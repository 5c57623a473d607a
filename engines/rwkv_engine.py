"""RWKV chat engine: continuous batching over the package's weights, State files, prefix cache.

One scheduler thread per model owns the model. Each loop it admits queued requests (up to
``max_batch_size`` sequences), runs one prefill chunk for the oldest prefilling request
(chunks end at ``max_prefill_chunk`` tokens or a cache boundary, so a long prompt never
stalls decoding for long), then one batched decode step for every decoding sequence. Each
sequence samples with its own parameters and RNG; text streams back to the asyncio side
as it is decoded; finished or cancelled sequences leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import EngineError, InvalidRequestError, QueueFullError
from engines.base import ModelInfo
from engines.generation import (
    FinishEvent,
    GenerationRequest,
    TokenEvent,
    TopLogprob,
)
from engines.paths import resolve_model_path
from engines.prefix_cache import PrefixStateCache
from engines.rwkv_model import BatchedStep, LoadedRWKV, load_rwkv, load_state_file
from engines.sampling import Sampler, sample_rows

__all__ = ["RWKVChatEngine", "world_tokenizer"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> Any:
    """The RWKV World tokenizer that ships in the package (loaded once per process)."""
    from importlib.resources import files

    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(files("rwkv") / "rwkv_vocab_v20230424.txt"))


@dataclass(eq=False)
class _Handle:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TokenEvent | FinishEvent]
    cancelled: bool = False


@dataclass(eq=False)
class _Prefill:
    handle: _Handle
    state_name: str
    state: list[Any]
    pos: int
    logits: Any
    boundaries: set[int]


@dataclass(eq=False)
class _Seq:
    handle: _Handle
    index: int
    sampler: Sampler
    last_token: int = 0
    generated: int = 0
    text: str = ""
    emitted: int = 0
    finished: bool = False
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


class RWKVChatEngine:
    def __init__(self, info: ModelInfo, path: Path, options: dict[str, Any]) -> None:
        import torch

        cuda = torch.cuda.is_available()
        self.strategy = str(options.get("strategy", "cuda fp16" if cuda else "cpu fp32"))
        self.lm: LoadedRWKV = load_rwkv(
            path,
            self.strategy,
            jit=bool(options.get("jit", True)),
            cuda_kernels=bool(options.get("cuda_kernels", False)),
        )
        self.step = BatchedStep(self.lm)
        self.tokenizer = world_tokenizer()
        self.context_length = int(options.get("context_length", 8192))
        self.max_batch_size = int(options.get("max_batch_size", 8))
        self.max_queued = int(options.get("max_queued", 64))
        self.max_prefill_chunk = int(options.get("max_prefill_chunk", 256))
        self.cache = PrefixStateCache(int(options.get("prefix_cache_bytes", 256 * 2**20)))
        self.initial_states: dict[str, list[Any]] = {"": self.lm.zero_state()}
        base_dir = Path(str(options.get("_base_dir", ".")))
        for name, state_path in dict(options.get("states", {})).items():
            resolved = resolve_model_path(str(state_path), base_dir)
            # A mismatched State is a startup error, never a silent zero state.
            self.initial_states[str(name)] = load_state_file(resolved, self.lm)
        self.state_names = sorted(n for n in self.initial_states if n)
        self.info = ModelInfo(
            id=info.id,
            kind="chat",
            engine="rwkv",
            owned_by=info.owned_by,
            created=info.created,
            max_input_tokens=self.context_length,
            extra={
                "version": self.lm.version,
                "strategy": self.strategy,
                "n_layer": self.lm.n_layer,
                "n_embd": self.lm.n_embd,
                "states": self.state_names,
            },
        )
        self.healthy = True
        self.last_error: str | None = None
        self.stats = {"prompt_tokens": 0, "prefill_tokens": 0, "generated_tokens": 0}
        self._pending: deque[_Handle] = deque()
        self._prefill: deque[_Prefill] = deque()
        self._batch: list[_Seq] = []
        self._stacked: list[Any] | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"rwkv-{info.id}", daemon=True)
        self._thread.start()

    # -- tokenizer -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self._bytes(t) for t in tokens).decode("utf-8", errors="replace")

    # -- public API ----------------------------------------------------------------------

    @property
    def active(self) -> int:
        return len(self._batch) + sum(p.handle.request.n for p in self._prefill)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def submit(self, request: GenerationRequest) -> _Handle:
        """Queue a request (raises at once when it is invalid or the queue is full)."""
        if not request.prompt_tokens:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        if request.n > self.max_batch_size:
            raise InvalidRequestError(
                f"'n' must be at most {self.max_batch_size} for this model", param="n"
            )
        if request.state and request.state not in self.initial_states:
            raise InvalidRequestError(
                f"unknown state {request.state!r}; declared: {self.state_names}",
                param="state",
                code="state_not_found",
            )
        handle = _Handle(request, asyncio.get_running_loop(), asyncio.Queue())
        with self._cond:
            if len(self._pending) >= self.max_queued:
                raise QueueFullError(
                    f"model {self.info.id!r} has {len(self._pending)} requests queued"
                )
            self._pending.append(handle)
            self._cond.notify()
        return handle

    async def events(self, handle: _Handle) -> AsyncIterator[TokenEvent | FinishEvent]:
        """The submitted request's events; closing this iterator cancels the request."""
        remaining = handle.request.n
        try:
            while remaining:
                event = await handle.queue.get()
                if isinstance(event, FinishEvent):
                    remaining -= 1
                yield event
        finally:
            if remaining:
                handle.cancelled = True
                with self._cond:
                    self._cond.notify()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent | FinishEvent]:
        handle = self.submit(request)
        async for event in self.events(handle):
            yield event

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # -- scheduler thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._pending or self._prefill or self._batch):
                    self._cond.wait()
                if self._stopping:
                    break
                self._admit()
            try:
                self._drop_cancelled()
                if self._prefill:
                    self._prefill_chunk(self._prefill[0])
                if self._batch:
                    self._decode_step()
                self.healthy = True
            except Exception as exc:
                log.exception("rwkv step failed", extra={"model": self.info.id})
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._fail_all()
        self._fail_all(reason="engine stopped")

    def _admit(self) -> None:
        while self._pending:
            head = self._pending[0]
            if head.cancelled:
                self._pending.popleft()
                continue
            if self.active + head.request.n > self.max_batch_size:
                return
            self._pending.popleft()
            self._prefill.append(self._start_prefill(head))

    def _start_prefill(self, handle: _Handle) -> _Prefill:
        req = handle.request
        name = req.state or ""
        tokens = req.prompt_tokens
        self.stats["prompt_tokens"] += len(tokens)
        n, entry = self.cache.lookup(name, tokens)
        if entry is not None:
            state = [t.clone() for t in entry.state]
            logits = entry.logits
        else:
            state = [t.clone() for t in self.initial_states[name]]
            logits = None
        bounds = {b for b in req.boundaries if 0 < b < len(tokens)}
        return _Prefill(handle, name, state, n, logits, bounds)

    def _drop_cancelled(self) -> None:
        for p in [p for p in self._prefill if p.handle.cancelled]:
            self._prefill.remove(p)
        for seq in self._batch:
            if seq.handle.cancelled:
                seq.finished = True

    def _prefill_chunk(self, p: _Prefill) -> None:
        tokens = p.handle.request.prompt_tokens
        if p.pos < len(tokens):
            end = min(len(tokens), p.pos + self.max_prefill_chunk)
            inner = [b for b in p.boundaries if p.pos < b < end]
            if inner:
                end = min(inner)
            logits, p.state = self.lm.model.forward(tokens[p.pos : end], p.state)
            self.stats["prefill_tokens"] += end - p.pos
            p.logits = logits.float()
            p.pos = end
            if p.pos in p.boundaries or p.pos == len(tokens):
                self.cache.put(p.state_name, tokens[: p.pos], p.state, p.logits)
        if p.pos < len(tokens):
            return
        self._prefill.popleft()
        req = p.handle.request
        new: list[tuple[_Seq, list[Any]]] = []
        for i in range(req.n):
            state = p.state if i == req.n - 1 else [t.clone() for t in p.state]
            seq = _Seq(p.handle, i, Sampler(req.params, i))
            self._emit(seq, p.logits)
            if not seq.finished:
                new.append((seq, state))
        if new:
            self._join_batch(new)

    def _join_batch(self, new: list[tuple[_Seq, list[Any]]]) -> None:
        import torch

        self._compact()
        rows = self.step.stack([state for _, state in new])
        if self._stacked is None:
            self._stacked = rows
        else:
            self._stacked = [torch.cat([a, b]) for a, b in zip(self._stacked, rows, strict=True)]
        self._batch.extend(seq for seq, _ in new)

    def _compact(self) -> None:
        keep = [i for i, s in enumerate(self._batch) if not s.finished]
        if len(keep) == len(self._batch):
            return
        self._batch = [self._batch[i] for i in keep]
        if not keep:
            self._stacked = None
        elif self._stacked is not None:
            import torch

            index = torch.tensor(keep, dtype=torch.long, device=self._stacked[0].device)
            self._stacked = [t.index_select(0, index) for t in self._stacked]

    def _decode_step(self) -> None:
        self._compact()
        if not self._batch or self._stacked is None:
            return
        tokens = [s.last_token for s in self._batch]
        if len(tokens) == 1:
            # One sequence: the package's own (JIT-compiled) forward is the fastest path.
            logits, state = self.lm.model.forward([tokens[0]], [t[0] for t in self._stacked])
            self._stacked = [t.unsqueeze(0) for t in state]
            logits = logits.float().unsqueeze(0)
        else:
            logits = self.step(tokens, self._stacked)
        picked, logprobs = sample_rows([s.sampler for s in self._batch], logits)
        for i, seq in enumerate(self._batch):
            if not seq.finished:
                self._emit_token(seq, picked[i], logprobs[i])

    def _emit(self, seq: _Seq, logits: Any) -> None:
        token, logprobs = seq.sampler.sample(logits)
        self._emit_token(seq, token, logprobs)

    def _emit_token(self, seq: _Seq, token: int, logprobs: Any) -> None:
        import torch

        params = seq.handle.request.params
        seq.generated += 1
        self.stats["generated_tokens"] += 1
        seq.last_token = token
        raw = self._bytes(token)
        piece = raw.decode("utf-8", errors="replace")
        lp: float | None = None
        tops: tuple[TopLogprob, ...] = ()
        if params.logprobs:
            lp = float(logprobs[token])
            if params.top_logprobs:
                values, ids = torch.topk(logprobs, params.top_logprobs)
                tops = tuple(
                    TopLogprob(b.decode("utf-8", errors="replace"), float(v), list(b))
                    for v, b in zip(
                        values.tolist(), (self._bytes(int(t)) for t in ids.tolist()), strict=True
                    )
                )
        if token == 0:  # end of text
            self._finish(seq, "stop")
            return
        seq.text += seq.decoder.decode(raw)
        stop_at = _find_stop(seq.text, params.stop, seq.emitted)
        if stop_at is not None:
            seq.text = seq.text[:stop_at]
            self._send(
                seq,
                TokenEvent(seq.index, seq.text[seq.emitted :], token, piece, raw, lp, tops),
            )
            seq.emitted = len(seq.text)
            self._finish(seq, "stop")
            return
        safe = len(seq.text) - _holdback(seq.text, params.stop)
        delta = seq.text[seq.emitted : safe]
        seq.emitted = max(seq.emitted, safe)
        self._send(seq, TokenEvent(seq.index, delta, token, piece, raw, lp, tops))
        if seq.generated >= params.max_tokens:
            self._finish(seq, "length")

    def _bytes(self, token: int) -> bytes:
        # Ids the vocabulary leaves unassigned (the world vocabulary stops short of the
        # embedding size) decode to nothing rather than failing the whole batch.
        return bytes(self.tokenizer.idx2token.get(token, b"")) if token != 0 else b""

    def _finish(self, seq: _Seq, reason: str) -> None:
        tail = seq.decoder.decode(b"", final=True)
        if reason == "length":
            seq.text += tail
        rest = seq.text[seq.emitted :] if reason == "length" else ""
        seq.emitted = len(seq.text)
        seq.finished = True
        self._send(seq, FinishEvent(seq.index, reason, seq.generated, rest))

    def _send(self, seq: _Seq, event: TokenEvent | FinishEvent) -> None:
        handle = seq.handle
        if handle.cancelled:
            return
        try:
            handle.loop.call_soon_threadsafe(handle.queue.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone
            handle.cancelled = True

    def _fail_all(self, reason: str | None = None) -> None:
        error = EngineError(f"model {self.info.id!r} failed: {reason or self.last_error}")
        handles: dict[int, tuple[_Handle, set[int]]] = {}
        for seq in self._batch:
            if not seq.finished:
                handles.setdefault(id(seq.handle), (seq.handle, set()))[1].add(seq.index)
        for p in self._prefill:
            handles.setdefault(id(p.handle), (p.handle, set(range(p.handle.request.n))))
        with self._cond:
            while self._pending:
                h = self._pending.popleft()
                handles.setdefault(id(h), (h, set(range(h.request.n))))
        for handle, indexes in handles.values():
            for i in indexes:
                with contextlib.suppress(RuntimeError):
                    handle.loop.call_soon_threadsafe(
                        handle.queue.put_nowait, FinishEvent(i, "error", 0, "", error)
                    )
        self._batch = []
        self._stacked = None
        self._prefill.clear()


def _find_stop(text: str, stops: tuple[str, ...], emitted: int) -> int | None:
    if not stops:
        return None
    start = max(0, emitted - max(len(s) for s in stops))
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _holdback(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that could begin a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if stop.startswith(text[-n:]):
                best = n
                break
    return best
