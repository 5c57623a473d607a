"""RWKV chat engine: continuous batching over device-resident state rows.

One scheduler thread per model owns the model. Each step it:
1. admits queued requests while there are slots (an API key holding more than its share of
   the batch waits while others are queued), looking each prompt up in the prefix cache;
2. splits a token budget between decode (one token per running sequence) and prefill:
   every prefilling prompt advances by a chunk (cut at turn boundaries, where the prefix
   cache stores the state), all of them in one batched, chunked forward;
3. decodes every running sequence in one batched step (a CUDA graph on GPU) and samples
   all of them on the device with their own parameters and seeds.

States live in two row pools (prefilling prompts, decoding sequences); joining and leaving
copies one row. Text streams back to the asyncio side as it is decoded; a cancelled or
stalled reader leaves at the next step and frees its slot.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import EngineError, InvalidRequestError, QueueFullError
from core.threads import call_in_new_thread
from engines.base import ModelInfo
from engines.constraint import Constraint
from engines.generation import FinishEvent, GenerationRequest, TokenEvent, TopLogprob
from engines.paths import resolve_model_path
from engines.rwkv import sampler
from engines.rwkv.cache import PrefixStateCache
from engines.rwkv.forward import Forward
from engines.rwkv.grammar import Guided, MaskWorker, check_grammar
from engines.rwkv.graphs import DecodeGraphs
from engines.rwkv.linear import choose_linear_kind
from engines.rwkv.model import LoadedRWKV, load_rwkv, load_state_file
from engines.rwkv.options import RWKVOptions
from engines.rwkv.pool import RowPool
from engines.rwkv.states import build_state_tiers
from engines.rwkv.tokenizer import world_tokenizer
from engines.rwkv.wkv import Wkv

# world_tokenizer stays importable from here: the chat tests count tokens with it.
__all__ = ["RWKVChatEngine", "world_tokenizer"]

log = logging.getLogger(__name__)


# A token's log-probability and its top alternatives (text, log-probability, bytes).
_Logprob = tuple[float, tuple[TopLogprob, ...]]


@dataclass(eq=False)
class _Handle:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[TokenEvent | FinishEvent]
    cancelled: bool = False
    last_read: float = field(default_factory=time.monotonic)
    open: set[int] = field(default_factory=set)  # choices not finished yet
    cached: int = 0  # prompt tokens the prefix cache held


@dataclass(eq=False)
class _Prefill:
    handle: _Handle
    state_name: str
    pos: int
    logits: Any
    boundaries: set[int]
    row: int = -1


@dataclass(eq=False)
class _Seq:
    handle: _Handle
    index: int
    row: int = -1
    last_token: int = 0
    generated: int = 0
    text: str = ""
    emitted: int = 0
    finished: bool = False
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    guided: Guided | None = None


class RWKVChatEngine:
    def __init__(self, info: ModelInfo, path: Path, options: dict[str, Any]) -> None:
        # Loading runs torch ops on a thread that ends with it: whichever thread calls
        # this keeps no OpenMP team of its own that would slow the scheduler's steps
        # (``core.threads``).
        call_in_new_thread(self._load, info, path, options, name=f"rwkv-load-{info.id}")
        self._thread = threading.Thread(target=self._run, name=f"rwkv-{info.id}", daemon=True)
        self._thread.start()

    def _load(self, info: ModelInfo, path: Path, options: dict[str, Any]) -> None:
        import torch

        raw = dict(options)
        data_dir = Path(str(raw["_base_dir"])) if "_base_dir" in raw else None
        base_dir = Path(str(raw.pop("_base_dir", ".")))
        state_dsn = raw.pop("_state_dsn", None)
        self.options = opts = RWKVOptions.model_validate(raw)
        cuda = torch.cuda.is_available()
        self.strategy = opts.strategy or ("cuda fp16" if cuda else "cpu fp32")
        self.lm: LoadedRWKV = load_rwkv(
            path, self.strategy, jit=opts.jit, cuda_kernels=opts.cuda_kernels
        )
        self.tokenizer = world_tokenizer()
        self.chat_template = opts.chat_template
        self.max_token_bytes = max(len(t) for t in self.tokenizer.idx2token.values())
        self.context_length = opts.context_length
        self.max_batch_size = opts.max_batch_size
        self.max_queued = opts.max_queued
        self.max_prefill_chunk = opts.max_prefill_chunk
        host = opts.prefix_cache_host_bytes
        if host is None:
            host = 4 * opts.prefix_cache_bytes if self.lm.device.startswith("cuda") else 0
        memory = PrefixStateCache(opts.prefix_cache_bytes, host)
        self.initial_states: dict[str, list[Any]] = {"": self.lm.zero_state()}
        for name, state_path in opts.states.items():
            resolved = resolve_model_path(state_path, base_dir)
            # A mismatched State is a startup error, never a silent zero state.
            self.initial_states[name] = load_state_file(resolved, self.lm)
        self.state_names = sorted(n for n in self.initial_states if n)
        self.cache = build_state_tiers(
            memory,
            model_id=info.id,
            weights_path=path,
            initial_states=self.initial_states,
            zero_state=self.lm.zero_state(),
            device=self.lm.device,
            options=opts,
            data_dir=data_dir,
            knowledge_dsn=str(state_dsn) if state_dsn else None,
        )
        self._build_paths(opts, info.id)
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
                "decode": self.decode_path,
                "prefill": self.prefill_path,
                "linear": self.linear_kernel,
                # Why the fla kernel gave way to the torch form (None: it did not).
                "prefill_fallback": self.wkv.fallback_reason,
                "max_batch_size": self.max_batch_size,
            },
        )
        log.info(
            "model %s: %s on %s, decode %s, prefill %s",
            info.id,
            self.lm.version,
            self.strategy,
            self.decode_path,
            self.prefill_path,
        )
        self.healthy = True
        self.last_error: str | None = None
        self.stats = {
            "prompt_tokens": 0,
            "prefill_tokens": 0,
            "generated_tokens": 0,
            "stalled_readers": 0,
            "deferred_for_fairness": 0,
            # Steps that advanced prefill, and the most tokens (decode rows and prompt
            # tokens) one step has processed: what step_token_budget bounds.
            "prefill_steps": 0,
            "max_step_tokens": 0,
        }
        self._masks: MaskWorker | None = None
        self._pending: deque[_Handle] = deque()
        self._prefill: list[_Prefill] = []
        self._batch: list[_Seq] = []
        self._cond = threading.Condition()
        self._stopping = False

    # -- set-up ----------------------------------------------------------------------------

    def _state_rows(self, capacity: int) -> dict[str, Any]:
        import torch

        return {
            f"s{j}": torch.zeros((capacity, *t.shape), dtype=t.dtype, device=t.device)
            for j, t in enumerate(self.lm.zero_state())
        }

    def _build_paths(self, opts: RWKVOptions, name: str) -> None:
        import torch

        device = self.lm.device
        self._parts = [f"s{j}" for j in range(3 * self.lm.n_layer)]
        kernel = opts.prefill_kernel
        self.wkv = Wkv(
            device,
            "torch" if kernel == "rwkv-cuda" else kernel,
            opts.wkv_chunk,
            fla_chunk=opts.fla_chunk,
            name=name,
        )
        self.wkv.on_fallback = self._wkv_fell_back
        self.wkv.probe(self.lm.version, self.lm.n_head, self.lm.head_size, self.lm.dtype, device)
        kind = choose_linear_kind(opts.linear_kernel, self.strategy, self._weight_bytes())
        self.linear_kernel = kind
        self.forward = Forward(self.lm, self.wkv, self.linear_kernel)
        self._package_prefill = kernel == "rwkv-cuda"
        if self._package_prefill and not opts.cuda_kernels:
            log.warning(
                "prefill_kernel rwkv-cuda needs cuda_kernels: true; using %s", self.wkv.backend
            )
            self._package_prefill = False
        self.prefill_path = "rwkv-cuda" if self._package_prefill else f"{self.wkv.backend}-chunked"
        rows = {
            **self._state_rows(opts.max_batch_size),
            **sampler.fields(opts.max_batch_size, self._vocab(), device),
            "last_token": torch.zeros((opts.max_batch_size, 1), dtype=torch.long, device=device),
        }
        self.decode_pool = RowPool(opts.max_batch_size, rows)
        self.decode_pool.on_move = lambda seq, row: setattr(seq, "row", row)
        self.prefill_pool = RowPool(
            opts.max_prefill_batch, self._state_rows(opts.max_prefill_batch)
        )
        self.prefill_pool.on_move = lambda p, row: setattr(p, "row", row)
        self.graphs: DecodeGraphs | None = None
        self.decode_path = "eager"
        if device.startswith("cuda") and opts.cuda_graphs:
            try:
                graphs = DecodeGraphs(
                    self._eager_decode,
                    opts.max_batch_size,
                    capture_error_mode=opts.cuda_graph_capture_mode,
                )
                graphs.capture()
            except RuntimeError as exc:  # capture unsupported here: eager decode it is
                log.warning("CUDA graph capture failed (%s); decoding eagerly", exc)
            else:
                self.graphs = graphs
                self.decode_path = "cuda-graphs"

    def _wkv_fell_back(self, reason: str) -> None:
        """The fla kernel failed: the model list says the torch form runs, and why."""
        self.prefill_path = f"{self.wkv.backend}-chunked"
        if hasattr(self, "info"):
            self.info.extra["prefill"] = self.prefill_path
            self.info.extra["prefill_fallback"] = reason

    def _weight_bytes(self) -> int:
        """Bytes of the weights the model holds (what a packed copy would add, at most)."""
        weights = self.lm.model.w if self.lm.version == "x060" else self.lm.model.z
        return sum(int(t.numel() * t.element_size()) for t in weights.values())

    def _vocab(self) -> int:
        head = self.lm.model.w if self.lm.version == "x060" else self.lm.model.z
        return int(head["head.weight"].shape[1])

    def _eager_decode(self, b: int) -> Any:
        pool = self.decode_pool
        st = [pool.tensors[name][:b] for name in self._parts]
        return self.forward(pool.tensors["last_token"][:b], st)

    # -- tokenizer -----------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self._bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def _bytes(self, token: int) -> bytes:
        # Ids the vocabulary leaves unassigned (the world vocabulary stops short of the
        # embedding size) decode to nothing rather than failing the whole batch.
        return bytes(self.tokenizer.idx2token.get(token, b"")) if token != 0 else b""

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
        if request.constraint is not None and not request.prepared:
            self.prepare(request.constraint, request.params.max_tokens)
        handle = _Handle(request, asyncio.get_running_loop(), asyncio.Queue())
        handle.open = set(range(request.n))
        with self._cond:
            if len(self._pending) >= self.max_queued:
                raise QueueFullError(
                    f"model {self.info.id!r} has {len(self._pending)} requests queued"
                )
            self._pending.append(handle)
            self._cond.notify()
        return handle

    def forget_states(self, state: str, keys: list[str]) -> None:
        self.cache.forget(state, keys)

    def prepare(self, constraint: Constraint, max_tokens: int) -> None:
        """A grammar llguidance can build, and a budget that holds its shortest output
        (work proportional to the schema: callers run it off the event loop)."""
        error = check_grammar(constraint.grammar)
        if error:
            raise InvalidRequestError(
                f"the output's grammar cannot be built: {error[:300]}", code="invalid_grammar"
            )
        closer = constraint.closer if constraint.kind != "auto" else None  # text is shorter
        shortest = closer.complete(b"") if closer is not None else None
        need = len(self.tokenizer.encodeBytes(shortest)) if shortest else 0
        if need > max_tokens:
            raise InvalidRequestError(
                f"max_tokens {max_tokens} cannot hold the shortest valid output ({need} tokens)",
                param="max_tokens",
            )

    async def events(self, handle: _Handle) -> AsyncIterator[TokenEvent | FinishEvent]:
        """The submitted request's events; closing this iterator cancels the request."""
        remaining = handle.request.n
        try:
            while remaining:
                event = await handle.queue.get()
                handle.last_read = time.monotonic()
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
        self.cache.close()
        if self._masks is not None:
            self._masks.close()

    def _mask_worker(self) -> MaskWorker:
        if self._masks is None:
            self._masks = MaskWorker(self._vocab())
        return self._masks

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
                running = len(self._batch)
                budget = max(1, self.options.step_token_budget - running)
                before = self.stats["prefill_tokens"]
                if self._prefill:
                    self._prefill_step(budget)
                prefilled = self.stats["prefill_tokens"] - before
                self.stats["prefill_steps"] += prefilled > 0
                step_tokens = prefilled + running
                self.stats["max_step_tokens"] = max(self.stats["max_step_tokens"], step_tokens)
                if self._batch:
                    self._decode_step()
                self.healthy = True
            except Exception as exc:  # a failed step fails its requests and is reported
                log.exception("rwkv step failed", extra={"model": self.info.id})
                self.healthy = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._fail_all()
        self._fail_all(reason="engine stopped")

    @contextlib.contextmanager
    def _unlocked(self) -> Iterator[None]:
        """Release the admission lock (held by ``_admit``) for a slow read: requests
        submitted meanwhile join ``_pending``, which ``_admit`` goes on reading."""
        self._cond.release()
        try:
            yield
        finally:
            self._cond.acquire()

    def _owner_load(self) -> dict[str | None, int]:
        load: dict[str | None, int] = {}
        for s in self._batch:
            load[s.handle.request.owner] = load.get(s.handle.request.owner, 0) + 1
        for p in self._prefill:
            key = p.handle.request.owner
            load[key] = load.get(key, 0) + p.handle.request.n
        return load

    def _admit(self) -> None:
        """Admit queued requests in order while there are slots; a key at its share of the
        batch lets the others' requests go first while they wait."""
        cap = max(1, int(self.options.max_share_per_key * self.max_batch_size))
        load = self._owner_load()
        kept: deque[_Handle] = deque()
        while self._pending:
            head = self._pending.popleft()
            if head.cancelled:
                continue
            n, owner = head.request.n, head.request.owner
            if self.active + n > self.max_batch_size or not self.prefill_pool.free:
                kept.append(head)
                kept.extend(self._pending)
                self._pending.clear()
                break
            others = any(h.request.owner != owner for h in (*kept, *self._pending))
            if owner is not None and others and load.get(owner, 0) + n > cap:
                self.stats["deferred_for_fairness"] += 1
                kept.append(head)
                continue
            self._prefill.append(self._start_prefill(head))
            load[owner] = load.get(owner, 0) + n
        self._pending = kept

    def _start_prefill(self, handle: _Handle) -> _Prefill:
        req = handle.request
        name = req.state or ""
        tokens = req.prompt_tokens
        self.stats["prompt_tokens"] += len(tokens)
        n, entry = self.cache.lookup(name, tokens, req.boundaries, self._unlocked)
        handle.cached = n
        state = entry.state if entry is not None else self.initial_states[name]
        bounds = {b for b in req.boundaries if 0 < b < len(tokens)}
        p = _Prefill(handle, name, n, entry.logits if entry is not None else None, bounds)
        p.row = self.prefill_pool.alloc(p)
        self.prefill_pool.write(p.row, dict(zip(self._parts, state, strict=True)))
        return p

    def _drop_cancelled(self) -> None:
        now = time.monotonic()
        for p in [p for p in self._prefill if p.handle.cancelled]:
            self._prefill.remove(p)
            self.prefill_pool.release(p.row)
        for seq in self._batch:
            h = seq.handle
            stalled = (
                not h.cancelled
                and h.queue.qsize() > self.options.stalled_reader_events
                and now - h.last_read > self.options.stalled_reader_timeout_s
            )
            if stalled:
                self.stats["stalled_readers"] += 1
                log.warning("a stream's reader stalled; its sequence is cancelled")
                self._fail_handle(h, EngineError("the client stopped reading the stream"))
            if h.cancelled:
                seq.finished = True
        self._compact()

    # -- prefill ---------------------------------------------------------------------------

    def _prefill_plan(self, budget: int) -> list[int]:
        """Tokens each prefilling prompt advances this step (every one at least one)."""
        share = max(1, budget // max(1, len(self._prefill)))
        plan = []
        for p in self._prefill:
            tokens = p.handle.request.prompt_tokens
            end = min(len(tokens), p.pos + min(self.max_prefill_chunk, share))
            inner = [b for b in p.boundaries if p.pos < b < end]
            plan.append((min(inner) if inner else end) - p.pos)
        return plan

    def _prefill_step(self, budget: int) -> None:
        if any(p.pos < len(p.handle.request.prompt_tokens) for p in self._prefill):
            if self._package_prefill:
                for p, n in zip(list(self._prefill), self._prefill_plan(budget), strict=True):
                    if n:
                        self._prefill_package(p, n)
            else:
                self._prefill_batched(budget)
        for p in list(self._prefill):
            tokens = p.handle.request.prompt_tokens
            if p.pos in p.boundaries or p.pos == len(tokens):
                state = self.prefill_pool.read(p.row, self._parts)
                req = p.handle.request
                key = self.cache.put(
                    p.state_name, tokens[: p.pos], state, p.logits, req.persist_states
                )
                if key:
                    req.state_keys.append(key)
            if p.pos == len(tokens):
                self._join(p)

    def _prefill_batched(self, budget: int) -> None:
        """One chunked forward for every prefilling prompt (rows of the prefill pool)."""
        import torch

        plan = self._prefill_plan(budget)
        P, T = len(self._prefill), max(plan)
        device = self.lm.device
        rows = torch.zeros((P, T), dtype=torch.long)
        by_row = sorted(zip(self._prefill, plan, strict=True), key=lambda item: item[0].row)
        for p, n in by_row:
            rows[p.row, :n] = torch.tensor(p.handle.request.prompt_tokens[p.pos : p.pos + n])
        lengths = torch.tensor([n for _, n in by_row], dtype=torch.long, device=device)
        st = [self.prefill_pool.view(name) for name in self._parts]
        logits = self.forward(rows.to(device), st, lengths)
        for p, n in by_row:
            p.pos += n
            p.logits = logits[p.row]
            self.stats["prefill_tokens"] += n

    def _prefill_package(self, p: _Prefill, n: int) -> None:
        """The rwkv package's own forward (its CUDA kernel), one prompt at a time."""
        tokens = p.handle.request.prompt_tokens[p.pos : p.pos + n]
        state = self.prefill_pool.read(p.row, self._parts)
        logits, new = self.lm.model.forward(tokens, state)
        self.prefill_pool.write(p.row, dict(zip(self._parts, new, strict=True)))
        p.logits = logits.float()
        p.pos += n
        self.stats["prefill_tokens"] += n

    def _join(self, p: _Prefill) -> None:
        """A prompt whose prefill ended: its choices take decode rows and their first
        token is sampled from the prompt's last logits."""
        self._prefill.remove(p)
        req = p.handle.request
        state = dict(zip(self._parts, self.prefill_pool.read(p.row, self._parts), strict=True))
        self.prefill_pool.release(p.row)
        new: list[_Seq] = []
        try:
            for i in range(req.n):
                seq = _Seq(p.handle, i)
                if req.constraint is not None:
                    seq.guided = Guided(
                        req.constraint, req.params.max_tokens, self.tokenizer.encodeBytes
                    )
                seq.row = self.decode_pool.alloc(seq)
                self._batch.append(seq)  # from here a failure is this request's alone
                new.append(seq)
                self.decode_pool.write(seq.row, state)
                sampler.set_row(self.decode_pool, seq.row, req.params, i)
            first, last = new[0].row, new[-1].row + 1
            logits = p.logits.view(1, -1).expand(req.n, -1)
            masks = self._start_masks(new, first, last)
            tokens, logprobs = self._sample(first, last, logits, new, masks)
        except Exception as exc:  # a request that cannot start fails; the batch goes on
            log.exception("a request failed to start", extra={"model": self.info.id})
            for seq in new:
                seq.finished = True
            self._fail_handle(p.handle, EngineError(f"the request failed to start: {exc}"))
            self._compact()
            return
        for j, seq in enumerate(new):
            if not seq.finished:
                self._emit_token(seq, tokens[j], logprobs[j])
        self._compact()

    # -- decode ----------------------------------------------------------------------------

    def _start_masks(self, seqs: list[_Seq], start: int, end: int) -> Any:
        """The constrained rows' masks, computed on the mask worker (None: no such rows)."""
        rows = [(s.guided.matcher, s.row - start) for s in seqs if s.guided is not None]
        if not rows:
            return None
        return self._mask_worker().start(rows, end - start)

    def _sample(
        self, start: int, end: int, logits: Any, seqs: list[_Seq], masks: Any = None
    ) -> tuple[list[int], list[_Logprob | None]]:
        """Sample rows ``[start, end)`` of the decode pool (``seqs`` are their owners);
        constrained rows sample within their grammar and may be overridden to close it."""
        pool = self.decode_pool
        if masks is not None:
            rows = [s.row - start for s in seqs if s.guided is not None]
            logits = self._mask_worker().apply(logits.to(self.lm.device), masks.result(), rows)
        params = [s.handle.request.params for s in seqs]
        penalised = any(p.presence_penalty or p.frequency_penalty for p in params)
        tokens, logprobs = sampler.sample(
            _Rows(pool, start, end),
            logits.to(self.lm.device),
            penalised=penalised,
            want_logprobs=any(p.logprobs for p in params),
            kinds=frozenset(sampler.kind(p) for p in params),
            max_top_k=max(p.top_k for p in params),
        )
        pool.tensors["last_token"][start:end, 0].copy_(tokens)
        picked = tokens.tolist()
        for s in seqs:
            if s.guided is not None and not s.finished:
                j = s.row - start
                try:
                    chosen = s.guided.choose(picked[j], self._bytes(picked[j]))
                    s.guided.consume(chosen, self._bytes(chosen))
                except Exception as exc:  # this sequence's grammar failed, not the batch
                    log.exception("a constrained sequence failed", extra={"model": self.info.id})
                    s.finished = True
                    self._fail_handle(s.handle, EngineError(f"constrained decoding failed: {exc}"))
                    continue
                if chosen != picked[j]:
                    picked[j] = chosen
                    pool.tensors["last_token"][s.row, 0] = chosen
        if logprobs is None:
            return picked, [None] * len(picked)
        return picked, self._logprobs(logprobs, picked, seqs, start)

    def _logprobs(
        self, logprobs: Any, picked: list[int], seqs: list[_Seq], start: int
    ) -> list[_Logprob | None]:
        """Each asking row's chosen log-probability and top alternatives, gathered for
        the whole batch on the device and brought to the host in one transfer."""
        import torch

        want = [(s.row - start, s.handle.request.params) for s in seqs]
        want = [(j, p) for j, p in want if p.logprobs]
        n = max(p.top_logprobs for _, p in want)
        chosen = torch.tensor(picked, device=logprobs.device)[:, None]
        parts = [logprobs.gather(1, chosen)]
        if n:
            values, ids = torch.topk(logprobs, n, dim=-1)
            parts += [values, ids.to(logprobs.dtype)]  # ids < 2**24: exact in fp32
        host = torch.cat(parts, dim=1).tolist()
        out: list[_Logprob | None] = [None] * len(picked)
        for j, p in want:
            row = host[j]
            alternatives = (
                (row[1 + i], self._bytes(int(row[1 + n + i]))) for i in range(p.top_logprobs)
            )
            tops = tuple(
                TopLogprob(b.decode("utf-8", errors="replace"), v, list(b)) for v, b in alternatives
            )
            out[j] = (row[0], tops)
        return out

    def _decode_step(self) -> None:
        B = len(self._batch)
        masks = self._start_masks(self._batch, 0, B)  # overlaps the forward
        logits = self.graphs(B) if self.graphs is not None else self._eager_decode(B)
        tokens, logprobs = self._sample(0, B, logits, self._batch, masks)
        for seq in list(self._batch):
            if not seq.finished:
                row = seq.row
                self._emit_token(seq, tokens[row], logprobs[row])
        self._compact()

    def _compact(self) -> None:
        done = [s for s in self._batch if s.finished]
        if not done:
            return
        for seq in sorted(done, key=lambda s: -s.row):
            self.decode_pool.release(seq.row)
        self._batch = [s for s in self._batch if not s.finished]

    # -- events ----------------------------------------------------------------------------

    def _emit_token(self, seq: _Seq, token: int, logprob: _Logprob | None) -> None:
        params = seq.handle.request.params
        seq.generated += 1
        self.stats["generated_tokens"] += 1
        seq.last_token = token
        raw = self._bytes(token)
        piece = raw.decode("utf-8", errors="replace")
        lp: float | None = None
        tops: tuple[TopLogprob, ...] = ()
        if params.logprobs and logprob is not None:
            lp, tops = logprob
        if token == 0:  # end of text
            self._finish(seq, "stop", flush=seq.guided is not None)
            return
        seq.text += seq.decoder.decode(raw)
        stop_at = _find_stop(seq.text, params.stop, seq.emitted)
        if stop_at is not None:
            seq.text = seq.text[:stop_at]
            self._send(
                seq, TokenEvent(seq.index, seq.text[seq.emitted :], token, piece, raw, lp, tops)
            )
            seq.emitted = len(seq.text)
            self._finish(seq, "stop")
            return
        safe = len(seq.text) - _holdback(seq.text, params.stop)
        delta = seq.text[seq.emitted : safe]
        seq.emitted = max(seq.emitted, safe)
        self._send(seq, TokenEvent(seq.index, delta, token, piece, raw, lp, tops))
        if seq.guided is not None and seq.guided.done:
            reason = "length" if seq.guided.closed_by_budget else "stop"
            self._finish(seq, reason, flush=True)
        elif seq.generated >= params.max_tokens:
            self._finish(seq, "length")

    def _finish(self, seq: _Seq, reason: str, flush: bool = False) -> None:
        """End a choice; text held back for a possible stop string goes out when the
        choice ends by length or by its grammar (``flush``)."""
        tail = seq.decoder.decode(b"", final=True)
        if reason == "length" or flush:
            seq.text += tail
        rest = seq.text[seq.emitted :] if reason == "length" or flush else ""
        seq.emitted = len(seq.text)
        seq.finished = True
        seq.handle.open.discard(seq.index)
        self._send(
            seq,
            FinishEvent(seq.index, reason, seq.generated, rest, cached_tokens=seq.handle.cached),
        )

    def _send(self, seq: _Seq, event: TokenEvent | FinishEvent) -> None:
        handle = seq.handle
        if handle.cancelled:
            return
        try:
            handle.loop.call_soon_threadsafe(handle.queue.put_nowait, event)
        except RuntimeError:  # the caller's loop is gone
            handle.cancelled = True

    def _fail_handle(self, handle: _Handle, error: EngineError) -> None:
        for i in sorted(handle.open):
            with contextlib.suppress(RuntimeError):
                handle.loop.call_soon_threadsafe(
                    handle.queue.put_nowait, FinishEvent(i, "error", 0, "", error)
                )
        handle.open.clear()
        handle.cancelled = True

    def _fail_all(self, reason: str | None = None) -> None:
        error = EngineError(f"model {self.info.id!r} failed: {reason or self.last_error}")
        handles = {id(s.handle): s.handle for s in self._batch}
        handles.update({id(p.handle): p.handle for p in self._prefill})
        with self._cond:
            while self._pending:
                h = self._pending.popleft()
                handles[id(h)] = h
        for handle in handles.values():
            self._fail_handle(handle, error)
        for seq in sorted(self._batch, key=lambda s: -s.row):
            self.decode_pool.release(seq.row)
        for p in sorted(self._prefill, key=lambda p: -p.row):
            self.prefill_pool.release(p.row)
        self._batch = []
        self._prefill = []


class _Rows:
    """A window of a pool's rows, as the sampler reads them."""

    def __init__(self, pool: RowPool, start: int, end: int) -> None:
        self.tensors = {name: t[start:end] for name, t in pool.tensors.items()}


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
