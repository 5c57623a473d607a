"""Long conversations: time to first token per turn, with the state tiers and without.

A conversation of T turns (about 200 tokens a user turn) runs through
- ``chat``: /v1/chat/completions, the client re-sending the whole history each turn;
- ``responses``: /v1/responses, each turn naming the previous one (``previous_response_id``);
- ``conversation``: /v1/responses, each turn naming one conversation (the Conversations API);
each in three modes:
- ``warm``: one app, the prefix-state cache on (the state is in memory);
- ``restart``: the app is restarted (a new process state over the same data dir) before
  some turns, so those turns find the conversation's state on the disk tier only;
- ``reread``: the prefix cache and the disk tier off, so every turn re-reads the history.

TTFT is the latency of a one-token answer (prefill plus one decode step), measured through
the ASGI app in process. Prints a table and writes ``bench/results/sessions-<device>.json``.

    python bench/sessions.py                 # CPU, a small random x070, 50 turns
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The repository root, not bench/ (whose mcp.py would shadow the mcp package).
sys.path[0] = str(ROOT)

TEXT = (
    "the river city kept its records in a long hall where clerks wrote down every boat "
    "that came in with grain salt timber or cloth and the names of the families who owned "
    "them so that a quarrel over a cargo could be settled by reading what was written"
)


def user_turn(i: int, words: int) -> str:
    """A distinct user message of about ``words`` words (a random model reads anything)."""
    vocab = TEXT.split()
    body = [vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words)]
    return f"Turn {i}: " + " ".join(body) + "?"


def settings(model: Path, data: Path, cached: bool) -> Any:
    from gateway.settings import Settings

    options: dict[str, Any] = {"context_length": 32768, "max_prefill_chunk": 512}
    if not cached:
        options.update(prefix_cache_bytes=0, state_disk_bytes=0)
    return Settings(
        models=[
            {"id": "m", "kind": "chat", "engine": "rwkv", "path": str(model), "options": options}
        ],
        load_in_background=False,
        log_json=False,
        log_level="WARNING",
        data_dir=data,
    )


class App:
    """The ASGI app over a data dir, restartable (its lifespan ends and a new one starts)."""

    def __init__(self, model: Path, data: Path, cached: bool) -> None:
        self.model, self.data, self.cached = model, data, cached
        self._ctx: Any = None
        self.http: Any = None

    async def start(self) -> None:
        from gateway.app import create_app
        from tests.conftest import asgi_client

        self._ctx = asgi_client(create_app(settings(self.model, self.data, self.cached)))
        self.http = await self._ctx.__aenter__()

    async def stop(self) -> None:
        await self._ctx.__aexit__(None, None, None)


async def timed(http: Any, path: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    r = await http.post(path, json=body)
    elapsed = time.perf_counter() - started
    r.raise_for_status()
    return elapsed, r.json()


async def run_chat(app: App, turns: int, words: int, restart_at: set[int]) -> list[dict[str, Any]]:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You answer briefly."}]
    rows = []
    for t in range(1, turns + 1):
        if t in restart_at:
            await app.stop()
            await app.start()
        messages.append({"role": "user", "content": user_turn(t, words)})
        body = {"model": "m", "messages": messages, "max_tokens": 1, "temperature": 0}
        s, got = await timed(app.http, "/v1/chat/completions", body)
        usage = got["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        rows.append({"turn": t, "ttft_s": s, "prompt": usage["prompt_tokens"], "cached": cached})
        reply = got["choices"][0]["message"]["content"] or "ok"
        messages.append({"role": "assistant", "content": reply})
    return rows


async def run_responses(
    app: App, turns: int, words: int, restart_at: set[int], *, conversation: bool = False
) -> list[dict[str, Any]]:
    """Each turn names the previous response, or (``conversation``) one conversation."""
    system = {"type": "message", "role": "system", "content": "You answer briefly."}
    conv: str | None = None
    if conversation:
        conv = (await app.http.post("/v1/conversations", json={"items": [system]})).json()["id"]
    previous: str | None = None
    rows = []
    for t in range(1, turns + 1):
        if t in restart_at:
            await app.stop()
            await app.start()
        body: dict[str, Any] = {
            "model": "m",
            "input": user_turn(t, words),
            "max_output_tokens": 1,
            "temperature": 0,
        }
        if conv is not None:
            body["conversation"] = conv
        elif previous is None:
            body["input"] = [system, {"role": "user", "content": user_turn(t, words)}]
        else:
            body["previous_response_id"] = previous
        s, got = await timed(app.http, "/v1/responses", body)
        previous = got["id"]
        usage = got["usage"]
        cached = usage["input_tokens_details"]["cached_tokens"]
        rows.append({"turn": t, "ttft_s": s, "prompt": usage["input_tokens"], "cached": cached})
    return rows


async def run_conversation(
    app: App, turns: int, words: int, restart_at: set[int]
) -> list[dict[str, Any]]:
    return await run_responses(app, turns, words, restart_at, conversation=True)


async def measure(args: argparse.Namespace, model: Path, tmp: Path) -> dict[str, Any]:
    restarts = {t for t in (1, args.turns // 5, args.turns // 2, args.turns) if t > 1}
    out: dict[str, Any] = {}
    apis = (("chat", run_chat), ("responses", run_responses), ("conversation", run_conversation))
    for api, run in apis:
        for mode in ("warm", "restart", "reread"):
            app = App(model, tmp / f"{api}-{mode}", cached=mode != "reread")
            await app.start()
            started = time.perf_counter()
            rows = await run(app, args.turns, args.words, restarts if mode == "restart" else set())
            await app.stop()
            first, last = rows[0], rows[-1]
            out[f"{api}/{mode}"] = {
                "turns": rows,
                "ttft_turn_1_ms": first["ttft_s"] * 1000,
                "ttft_last_ms": last["ttft_s"] * 1000,
                "last_over_first": last["ttft_s"] / first["ttft_s"],
                "last_prompt_tokens": last["prompt"],
                "last_cached_tokens": last["cached"],
                "restarted_before": sorted(restarts) if mode == "restart" else [],
                "wall_s": time.perf_counter() - started,
            }
            print(
                f"{api:12s} {mode:8s} turn 1 {first['ttft_s'] * 1000:8.1f} ms   "
                f"turn {args.turns} {last['ttft_s'] * 1000:8.1f} ms   "
                f"prompt {last['prompt']:6d} cached {last['cached']:6d}",
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=50)
    ap.add_argument("--words", type=int, default=150, help="words per user turn (~200 tokens)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sessions-cpu.json"))
    args = ap.parse_args()

    import logging

    import torch

    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    from engines.rwkv_tiny import write_rwkv_checkpoint

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        model = tmp / f"sessions-x070-{args.layers}x{args.embd}.pth"
        write_rwkv_checkpoint(model, "x070", n_layer=args.layers, n_embd=args.embd)
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
            "shape": f"x070 {args.layers} x {args.embd} (random weights), cpu fp32",
            "threads": args.threads,
            "turns": args.turns,
            "words_per_turn": args.words,
            "ttft": "latency of a one-token answer, in process over ASGI",
        }
        result.update(asyncio.run(measure(args, model, tmp)))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| API | mode | TTFT turn 1 (ms) | TTFT turn {args.turns} (ms) | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    for key, r in result.items():
        if isinstance(r, dict) and "ttft_last_ms" in r:
            api, mode = key.split("/")
            print(
                f"| {api} | {mode} | {r['ttft_turn_1_ms']:.1f} | {r['ttft_last_ms']:.1f} "
                f"| {r['last_over_first']:.2f} |"
            )


if __name__ == "__main__":
    main()
