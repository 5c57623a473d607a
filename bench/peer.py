"""The engine's server beside a peer RWKV server on the same weights, driven interleaved.

The peer is `rwkvserve` (an OpenAI-compatible RWKV server with continuous batching),
run from a virtual environment the caller made (``--peer-venv``; nothing is installed
here). It reads a model directory: ``config.json`` (written from the checkpoint's shapes),
``model.pth`` (the same released-format checkpoint, linked) and the World vocabulary.

Both servers take the same text prompts (the same World tokenizer gives both the same
token count) at 1, 4, 8, 16 concurrent streams, non-streamed, ``max_tokens`` each, and
the output tokens/s comes from each response's ``usage.completion_tokens``. Rounds
alternate between the two servers so that load drift on a shared machine falls on both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["PeerServer", "compare", "peer_model_dir", "text_of_tokens"]


def peer_model_dir(checkpoint: Path, out: Path) -> Path:
    """A directory rwkvserve loads: its config from the checkpoint's shapes (x070)."""
    import torch

    sd = torch.load(str(checkpoint), map_location="cpu", mmap=True, weights_only=True)
    if "blocks.0.att.r_k" not in sd:
        raise ValueError("the peer serves RWKV-7 (x070) checkpoints only")
    n_layer = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    vocab, n_embd = (int(d) for d in sd["emb.weight"].shape)
    head_size = int(sd["blocks.0.att.r_k"].shape[1])
    config = {
        "model_type": "rwkv7",
        "architectures": ["RWKV7Model"],
        "n_layer": n_layer,
        "n_embd": n_embd,
        "vocab_size": vocab,
        "head_size_a": head_size,
        "dim_att": n_embd,
        "dim_ffn": int(sd["blocks.0.ffn.key.weight"].shape[0]),
        "dim_att_lora": int(sd["blocks.0.att.w1"].shape[1]),
        "dim_gate_lora": int(sd["blocks.0.att.g1"].shape[1]),
        "dim_mv_lora": int(sd["blocks.1.att.v1"].shape[1]) if n_layer > 1 else 32,
        "ctx_len": 8192,
        # Token 0 ends text in the World vocabulary (the engine stops on it too).
        "eos_token_id": 0,
        "pad_token_id": 0,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model = out / "model.pth"
    if not model.exists():
        model.symlink_to(checkpoint.resolve())
    import rwkv

    vocab_file = Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"
    shutil.copyfile(vocab_file, out / "rwkv_vocab_v20230424.txt")
    return out


def text_of_tokens(n: int, salt: int) -> str:
    """A text of exactly ``n`` World tokens (checked with the engine's tokenizer)."""
    from engines.rwkv.tokenizer import world_tokenizer

    tok = world_tokenizer()
    words = ["river", "market", "city", "trader", "stone", "bridge", "harbour", "lantern"]
    parts = [f" {words[(salt + i * 3) % len(words)]}" for i in range(n)]
    while parts and len(tok.encode("".join(parts))) > n:
        parts.pop()
    for filler in (" a", " x", ".", ",", " the"):
        while len(tok.encode("".join(parts))) < n:
            parts.append(filler)
        if len(tok.encode("".join(parts))) == n:
            return "".join(parts)
        parts.pop()
    raise ValueError(f"cannot build a text of exactly {n} tokens")


class PeerServer:
    """``rwkvserve`` from ``venv`` on ``model_dir``, CPU fp32, ``threads`` torch threads."""

    def __init__(
        self, venv: Path, model_dir: Path, max_batch: int, threads: int, port: int, log: Path
    ) -> None:
        exe = venv / "bin" / "rwkvserve"
        if not exe.exists():
            raise FileNotFoundError(f"{exe} is missing: install rwkvserve into {venv} first")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "--model-path",
                    str(model_dir),
                    "--model-name",
                    "bench",
                    "--device",
                    "cpu",
                    "--dtype",
                    "fp32",
                    "--max-batch-size",
                    str(max_batch),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--cache-level",
                    "none",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.base = f"http://127.0.0.1:{port}"

    def wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the peer exited with {self.proc.returncode}:\n" + self.log.read_text()[-3000:]
                )
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError("the peer was not healthy in time:\n" + self.log.read_text()[-3000:])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _burst(
    base: str, streams: int, prompt_len: int, max_tokens: int
) -> tuple[float, list[float]]:
    """Output tokens/s of ``streams`` concurrent streamed chat completions against ``base``
    (the peer streams chat as SSE; its completions stream is not SSE), and every gap
    between two text events of one stream (a text event per token on both servers; one
    carrying several tokens makes its gap count once, against the server sending it)."""
    import json

    import httpx

    gaps: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=900) as client:

        async def one(i: int) -> int:
            text = text_of_tokens(prompt_len, 31 * i + streams)
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "top_p": 0.85,
                "stream": True,
            }
            events = 0
            last: float | None = None
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data:") or line.strip() == "data: [DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    parts = [
                        (c.get("delta") or {}).get("content") for c in chunk.get("choices") or []
                    ]
                    if not any(parts):
                        continue
                    now = time.perf_counter()
                    if last is not None:
                        gaps.append(now - last)
                    last = now
                    events += 1
            return events

        started = time.perf_counter()
        done = await asyncio.gather(*(one(i) for i in range(streams)))
        return sum(done) / (time.perf_counter() - started), gaps


async def compare(
    ours: str, peer: str, streams: list[int], prompt_len: int, max_tokens: int, rounds: int
) -> dict[str, Any]:
    """Per stream count: each server's median tok/s over ``rounds`` alternating rounds."""
    await _burst(ours, 1, prompt_len, 8)  # warm-up: first-call costs stay out of the rounds
    await _burst(peer, 1, prompt_len, 8)
    out: dict[str, Any] = {}
    for s in streams:
        runs: dict[str, list[float]] = {"ours": [], "peer": []}
        gaps: dict[str, list[float]] = {"ours": [], "peer": []}
        for r in range(rounds):
            order = [("ours", ours), ("peer", peer)]
            for name, base in order if r % 2 == 0 else order[::-1]:
                tok_s, seen = await _burst(base, s, prompt_len, max_tokens)
                runs[name].append(tok_s)
                gaps[name].extend(seen)
        ours_tok_s, peer_tok_s = (statistics.median(runs[k]) for k in ("ours", "peer"))
        ours_itl, peer_itl = (
            statistics.median(gaps[k]) * 1000 if gaps[k] else float("nan") for k in ("ours", "peer")
        )
        out[str(s)] = {
            "ours_tok_s": ours_tok_s,
            "peer_tok_s": peer_tok_s,
            "ratio": ours_tok_s / peer_tok_s,
            "ours_itl_p50_ms": ours_itl,
            "peer_itl_p50_ms": peer_itl,
            "itl_ratio": ours_itl / peer_itl,
            "runs": runs,
        }
        print(
            f"{s:>3} streams: ours {ours_tok_s:8.1f} tok/s, peer {peer_tok_s:8.1f} tok/s, "
            f"ratio {ours_tok_s / peer_tok_s:5.2f}; median inter-token ours {ours_itl:7.1f} ms, "
            f"peer {peer_itl:7.1f} ms, ratio {ours_itl / peer_itl:5.2f}",
            flush=True,
        )
    return out
