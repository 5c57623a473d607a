"""Tiny random RWKV x060 / x070 checkpoints in the exact released (BlinkDL .pth) format.

Key names, shapes and dtype (bf16) follow the released RWKV-6 "x060" and RWKV-7 "x070"
World checkpoints; the vocabulary is the World tokenizer's 65536. A matching RWKV-PEFT
State file (``blocks.N.att.time_state``, ``[H, N, N]``) is written beside each.
The same writers make larger shapes for the benchmarks (``n_layer``, ``n_embd``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

__all__ = ["write_rwkv_checkpoint", "write_state_file"]

VOCAB = 65536
HEAD_SIZE = 64


def _samplers(g: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Seeded normal (``std``) and uniform (``lo``..``hi``) tensor makers."""
    import torch

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    def uni(*shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        return torch.rand(*shape, generator=g) * (hi - lo) + lo

    return rnd, uni


Sampler = Callable[..., Any]


def _norm(sd: dict[str, Any], prefix: str, C: int, rnd: Sampler) -> None:
    sd[prefix + ".weight"] = 1.0 + rnd(C, std=0.1)
    sd[prefix + ".bias"] = rnd(C, std=0.1)


def _checkpoint(
    n_layer: int,
    n_embd: int,
    vocab: int,
    gen: Any,
    block: Callable[[dict[str, Any], str, str, Sampler, Sampler], None],
) -> dict[str, object]:
    """The layout both versions share (embedding, ln0, per-block ln1/ln2, ln_out, head);
    ``block`` adds one block's time-mix and channel-mix tensors."""
    rnd, uni = _samplers(gen)
    C = n_embd
    sd: dict[str, Any] = {"emb.weight": rnd(vocab, C, std=0.5)}
    _norm(sd, "blocks.0.ln0", C, rnd)
    for i in range(n_layer):
        _norm(sd, f"blocks.{i}.ln1", C, rnd)
        _norm(sd, f"blocks.{i}.ln2", C, rnd)
        block(sd, f"blocks.{i}.att.", f"blocks.{i}.ffn.", rnd, uni)
    _norm(sd, "ln_out", C, rnd)
    sd["head.weight"] = rnd(vocab, C, std=C**-0.5 * 4)
    return sd


def _x060(n_layer: int, n_embd: int, vocab: int, gen: Any) -> dict[str, object]:
    C, H, N = n_embd, n_embd // HEAD_SIZE, HEAD_SIZE
    F = int(C * 3.5) // 32 * 32
    D_mix, D_decay = 32, 64

    def block(sd: dict[str, Any], a: str, f: str, rnd: Sampler, uni: Sampler) -> None:
        for name in ("x", "w", "k", "v", "r", "g"):
            sd[a + f"time_maa_{name}"] = uni(1, 1, C)
        sd[a + "time_maa_w1"] = rnd(C, 5 * D_mix, std=0.1)
        sd[a + "time_maa_w2"] = rnd(5, D_mix, C, std=0.1)
        sd[a + "time_decay"] = uni(1, 1, C, lo=-6.0, hi=-0.5)
        sd[a + "time_decay_w1"] = rnd(C, D_decay, std=0.1)
        sd[a + "time_decay_w2"] = rnd(D_decay, C, std=0.1)
        sd[a + "time_faaaa"] = uni(H, N, lo=-0.5, hi=0.5)
        for name in ("receptance", "key", "value", "gate"):
            sd[a + f"{name}.weight"] = rnd(C, C, std=C**-0.5)
        sd[a + "output.weight"] = rnd(C, C, std=C**-0.5 / 2)
        _norm(sd, a + "ln_x", C, rnd)
        sd[f + "time_maa_k"] = uni(1, 1, C)
        sd[f + "time_maa_r"] = uni(1, 1, C)
        sd[f + "key.weight"] = rnd(F, C, std=C**-0.5)
        sd[f + "receptance.weight"] = rnd(C, C, std=C**-0.5)
        sd[f + "value.weight"] = rnd(C, F, std=F**-0.5 / 2)

    return _checkpoint(n_layer, n_embd, vocab, gen, block)


def _x070(n_layer: int, n_embd: int, vocab: int, gen: Any) -> dict[str, object]:
    C, H, N = n_embd, n_embd // HEAD_SIZE, HEAD_SIZE
    D_w, D_a, D_v, D_g = 64, 64, 32, 128

    def block(sd: dict[str, Any], a: str, f: str, rnd: Sampler, uni: Sampler) -> None:
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            sd[a + name] = uni(1, 1, C)
        sd[a + "w0"] = uni(1, 1, C, lo=-4.0, hi=1.0)
        sd[a + "w1"] = rnd(C, D_w, std=0.1)
        sd[a + "w2"] = rnd(D_w, C, std=0.1)
        sd[a + "a0"] = rnd(1, 1, C, std=0.5)
        sd[a + "a1"] = rnd(C, D_a, std=0.1)
        sd[a + "a2"] = rnd(D_a, C, std=0.1)
        sd[a + "v0"] = rnd(1, 1, C, std=0.5)
        sd[a + "v1"] = rnd(C, D_v, std=0.1)
        sd[a + "v2"] = rnd(D_v, C, std=0.1)
        sd[a + "g1"] = rnd(C, D_g, std=0.1)
        sd[a + "g2"] = rnd(D_g, C, std=0.1)
        sd[a + "k_k"] = uni(1, 1, C, lo=0.5, hi=1.0)
        sd[a + "k_a"] = uni(1, 1, C, lo=0.5, hi=1.5)
        sd[a + "r_k"] = rnd(H, N, std=0.1)
        for name in ("receptance", "key", "value"):
            sd[a + f"{name}.weight"] = rnd(C, C, std=C**-0.5)
        sd[a + "output.weight"] = rnd(C, C, std=C**-0.5 / 2)
        _norm(sd, a + "ln_x", C, rnd)
        sd[f + "x_k"] = uni(1, 1, C)
        sd[f + "key.weight"] = rnd(4 * C, C, std=C**-0.5)
        sd[f + "value.weight"] = rnd(C, 4 * C, std=(4 * C) ** -0.5 / 2)

    return _checkpoint(n_layer, n_embd, vocab, gen, block)


def write_rwkv_checkpoint(
    path: Path,
    version: str,
    *,
    n_layer: int = 2,
    n_embd: int = 128,
    vocab: int = VOCAB,
    seed: int = 0,
    end_bias: float = 0.0,
) -> Path:
    """Write a random ``x060`` or ``x070`` checkpoint (bf16, released key layout).

    ``end_bias`` > 0 points the head's row of token 0 (end of text) along the output
    norm's bias, so every hidden state scores it about ``end_bias`` times that bias's
    length: random text then ends by itself within a few dozen tokens, greedy or
    sampled, while every other weight stays random."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    build = {"x060": _x060, "x070": _x070}[version]
    sd = build(n_layer, n_embd, vocab, gen)
    if end_bias > 0:
        bias, head = cast(torch.Tensor, sd["ln_out.bias"]), cast(torch.Tensor, sd["head.weight"])
        head[0] = bias / bias.norm() * end_bias
    out = {k: v.to(torch.bfloat16).contiguous() for k, v in sd.items()}  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, str(path))
    return path


def write_state_file(
    path: Path, *, n_layer: int = 2, n_embd: int = 128, seed: int = 1, scale: float = 1.0
) -> Path:
    """An RWKV-PEFT State file: ``blocks.N.att.time_state`` of shape ``[H, N, N]``."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    H = n_embd // HEAD_SIZE
    sd = {
        f"blocks.{i}.att.time_state": (
            torch.randn(H, HEAD_SIZE, HEAD_SIZE, generator=gen) * scale
        ).to(torch.bfloat16)
        for i in range(n_layer)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, str(path))
    return path
