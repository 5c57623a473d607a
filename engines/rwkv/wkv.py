"""The WKV recurrences of RWKV-7 and RWKV-6 for whole chunks of tokens, as matrix products.

Shapes: ``r, logw, k, a, b [B, T, H, N]``, ``v [B, T, H, N]``; states are fp32.

RWKV-7 (state ``S [B, H, N_v, N_k]``, value rows, as the rwkv package keeps it):
    S_t = S_{t-1} (diag(w_t) + a_t b_t^T) + v_t k_t^T,      o_t = S_t r_t
with ``a = -kk`` and ``b = kk * a`` in the model's terms. Within a chunk, ``u_t = S_{t-1}
a_t`` solves one unit lower-triangular T x T system, and outputs and the final state are
then sums of outer products; decays enter as ``exp(cumsum(log w))`` factored around the
chunk start (RWKV-7's decay per token is in ``(e^-0.61, 1)``, so a 16-token chunk spans at
most ``e^10``: safe in fp32).

RWKV-6 (state ``S [B, H, N_k, N_v]``, key rows):
    o_t = S_{t-1}^T r_t + (r_t . (u * k_t)) v_t,             S_t = diag(w_t) S_{t-1} + k_t v_t^T
RWKV-6 decays can be far stronger per token, so its pairwise decays are exponentiated as
differences (never above 0) rather than factored.

In the torch forms, masked (padding) positions carry ``logw = 0`` and zero ``k, v, a, b``,
which leaves the state unchanged: that is how prompts of different lengths prefill in one
batch. The fla kernels take the rows packed instead (see ``Wkv``).

On CUDA the same recurrences run in flash-linear-attention's Triton kernels when
``fla-core`` is installed (``chunk_rwkv7``, ``chunk_rwkv6``); ``Wkv`` picks the backend.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "Wkv",
    "wkv6_chunked",
    "wkv6_sequential",
    "wkv7_chunked",
    "wkv7_sequential",
]

log = logging.getLogger(__name__)


def wkv7_sequential(s0: Any, r: Any, logw: Any, k: Any, v: Any, a: Any, b: Any) -> tuple[Any, Any]:
    """Token by token, exactly as the rwkv package's one-token forward (the reference)."""
    import torch

    s = s0.float().clone()
    out = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    r, w, k, v, a, b = (t.float() for t in (r, logw.exp(), k, v, a, b))
    for t in range(r.shape[1]):
        sa = s @ a[:, t, :, :, None]  # [B, H, N_v, 1]
        s = (
            s * w[:, t, :, None, :]
            + sa @ b[:, t, :, None, :]
            + v[:, t, :, :, None] @ k[:, t, :, None, :]
        )
        out[:, t] = (s @ r[:, t, :, :, None]).squeeze(-1)
    return out, s


def wkv7_chunked(
    s0: Any, r: Any, logw: Any, k: Any, v: Any, a: Any, b: Any, chunk: int = 16
) -> tuple[Any, Any]:
    import torch

    B, T, H, N = r.shape
    s = s0.float()
    out = torch.empty((B, T, H, N), dtype=torch.float32, device=r.device)
    eye = torch.eye(chunk, dtype=torch.float32, device=r.device)
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        n = end - start
        # [B, H, n, N]
        rc, lw, kc, vc, ac, bc = (
            t[:, start:end].float().transpose(1, 2) for t in (r, logw, k, v, a, b)
        )
        lg = torch.cumsum(lw, dim=2)  # log decay from the chunk start through t
        lg_prev = lg - lw  # ... through t-1
        a_dec = ac * lg_prev.exp()
        r_dec = rc * lg.exp()
        b_inv = bc * (-lg).exp()
        k_inv = kc * (-lg).exp()
        strict = torch.tril(torch.ones(n, n, dtype=torch.bool, device=r.device), -1)
        incl = torch.tril(torch.ones(n, n, dtype=torch.bool, device=r.device))
        g = (a_dec @ b_inv.transpose(-1, -2)).masked_fill(~strict, 0.0)
        kc_mat = (a_dec @ k_inv.transpose(-1, -2)).masked_fill(~strict, 0.0)
        qb = (r_dec @ b_inv.transpose(-1, -2)).masked_fill(~incl, 0.0)
        qk = (r_dec @ k_inv.transpose(-1, -2)).masked_fill(~incl, 0.0)
        st = s.transpose(-1, -2)  # [B, H, N_k, N_v]
        rhs = a_dec @ st + kc_mat @ vc  # [B, H, n, N_v]
        u = torch.linalg.solve_triangular(eye[:n, :n] - g, rhs, upper=False, unitriangular=True)
        out[:, start:end] = (r_dec @ st + qb @ u + qk @ vc).transpose(1, 2)
        last = lg[:, :, -1:, :]  # [B, H, 1, N]
        tail = (last - lg).exp()
        s = s * last.exp() + u.transpose(-1, -2) @ (bc * tail) + vc.transpose(-1, -2) @ (kc * tail)
    return out, s


def wkv6_sequential(s0: Any, r: Any, logw: Any, k: Any, v: Any, u: Any) -> tuple[Any, Any]:
    import torch

    s = s0.float().clone()
    out = torch.empty(v.shape, dtype=torch.float32, device=v.device)
    r, w, k, v = (t.float() for t in (r, logw.exp(), k, v))
    uf = u.float()
    for t in range(r.shape[1]):
        kv = k[:, t, :, :, None] @ v[:, t, :, None, :]  # [B, H, N_k, N_v]
        out[:, t] = (r[:, t, :, None, :] @ (uf[None, :, :, None] * kv + s)).squeeze(-2)
        s = kv + w[:, t, :, :, None] * s
    return out, s


def wkv6_chunked(
    s0: Any, r: Any, logw: Any, k: Any, v: Any, u: Any, chunk: int = 16
) -> tuple[Any, Any]:
    import torch

    B, T, H, N = r.shape
    s = s0.float()
    out = torch.empty((B, T, H, N), dtype=torch.float32, device=r.device)
    uf = u.float()
    for start in range(0, T, chunk):
        end = min(T, start + chunk)
        n = end - start
        rc, lw, kc, vc = (t[:, start:end].float().transpose(1, 2) for t in (r, logw, k, v))
        lg = torch.cumsum(lw, dim=2)
        lg_prev = lg - lw
        # att[t, tau] = sum_i r_t[i] k_tau[i] exp(lg_prev[t, i] - lg[tau, i]), tau < t.
        diff = lg_prev[:, :, :, None, :] - lg[:, :, None, :, :]  # [B, H, n, n, N]
        strict = torch.tril(torch.ones(n, n, dtype=torch.bool, device=r.device), -1)
        decay = diff.masked_fill(~strict[:, :, None], float("-inf")).exp()
        att = torch.einsum("bhti,bhsi,bhtsi->bhts", rc, kc, decay)
        bonus = (rc * uf[None, :, None, :] * kc).sum(-1, keepdim=True)  # [B, H, n, 1]
        o = (rc * lg_prev.exp()) @ s + att @ vc + bonus * vc
        out[:, start:end] = o.transpose(1, 2)
        tail = (lg[:, :, -1:, :] - lg).exp()  # [B, H, n, N_k]
        s = lg[:, :, -1, :, None].exp() * s + (kc * tail).transpose(-1, -2) @ vc
    return out, s


def _masked(lengths: Any | None, T: int, *tensors: Any) -> list[Any]:
    """Zero every position at or past each row's length (``[P, T, ...]`` tensors)."""
    import torch

    if lengths is None:
        return list(tensors)
    mask = (torch.arange(T, device=lengths.device)[None, :] < lengths[:, None])[..., None, None]
    return [t * mask for t in tensors]


# RWKV-7's log decay is -0.606531 * sigmoid(.), so it lies in [-0.6066, 0]; in fp16 or bf16
# it rounds to at most this, and the bound lets fla run 64-token chunks on tensor cores.
RWKV7_LOGW_BOUND = -0.61


_FALLBACK = "model %s: the fla WKV kernel failed (%s); prefill uses the torch chunked form"


class Wkv:
    """The WKV backend of one model: flash-linear-attention on CUDA when installed (and
    asked for), else the chunked torch form above.

    A kernel that fails (Triton cannot compile it here, or it raises) falls back to the
    torch form for the rest of the model's life, with one log line; ``on_fallback`` (the
    engine's) is told, so the model list says which path runs. Rows of different lengths
    go to fla packed (its ``cu_seqlens``), never padded: a padded position would need a log
    decay of 0, outside the bound that licenses its 64-token chunks."""

    def __init__(
        self,
        device: str,
        kernel: str = "auto",
        chunk: int = 16,
        *,
        fla_chunk: int = 64,
        name: str = "",
        kernels: tuple[Callable[..., Any], Callable[..., Any]] | None = None,
    ) -> None:
        """``kernels``: the (``chunk_rwkv7``, ``chunk_rwkv6``) pair to use instead of
        fla's own (same signatures); the default loads fla's."""
        self.chunk = chunk
        self.fla_chunk = fla_chunk
        self.name = name
        self.backend = "torch"
        self.fallback_reason: str | None = None
        self.on_fallback: Callable[[str], None] | None = None
        self._fla7: Any = None
        self._fla6: Any = None
        self._packing: tuple[Any, int, Any, Any, Any] | None = None
        # The Triton interpreter runs fla's kernels on CPU tensors (the kernels' CI lane).
        usable = device.startswith("cuda") or (
            kernel == "fla" and os.environ.get("TRITON_INTERPRET") == "1"
        )
        if kernels is not None:
            self._fla7, self._fla6 = kernels
            self.backend = "fla"
        elif kernel in ("auto", "fla") and usable:
            try:
                from fla.ops.rwkv6 import chunk_rwkv6
                from fla.ops.rwkv7 import chunk_rwkv7
            except ImportError as exc:
                log.warning(
                    "fla-core is not available (%s); prefill uses the torch chunked form", exc
                )
            else:
                self._fla7, self._fla6 = chunk_rwkv7, chunk_rwkv6
                self.backend = "fla"
        elif kernel == "fla":
            log.warning("prefill_kernel fla needs CUDA; using the torch chunked form")

    def _fall_back(self, exc: BaseException) -> None:
        self._fla7 = self._fla6 = None
        self.backend = "torch"
        self.fallback_reason = f"{type(exc).__name__}: {exc}"[:300]
        if self.on_fallback is not None:
            self.on_fallback(self.fallback_reason)

    def probe(self, version: str, H: int, N: int, dtype: Any, device: str) -> None:
        """Run the kernel once at load on a small padded batch of the model's head shape
        and compare it with the torch form: a kernel that cannot compile here, or computes
        something else, falls back before the first request (and /v1/models says so)."""
        import torch

        if self.backend != "fla":
            return
        g = torch.Generator(device="cpu").manual_seed(0)
        P, T = 2, 24

        def rand(*shape: int) -> Any:
            return torch.randn(*shape, generator=g).to(device)

        r, k, v = rand(P, T, H, N), rand(P, T, H, N), rand(P, T, H, N)
        lengths = torch.tensor([T, T // 3], device=device)
        s0 = 0.1 * rand(P, H, N, N)
        if version == "x070":
            logw = -0.606531 * torch.sigmoid(rand(P, T, H, N))
            kk = torch.nn.functional.normalize(rand(P, T, H, N), dim=-1)
            a, b = -kk, kk * torch.sigmoid(rand(P, T, H, N))
            r, logw, k, v, a, b = (t.to(dtype) for t in (r, logw, k, v, a, b))
            o, s = self.rwkv7(s0, r, logw, k, v, a, b, lengths)
            mw, mk, mv, ma, mb = _masked(lengths, T, logw, k, v, a, b)
            ref_o, ref_s = wkv7_chunked(s0, r, mw, mk, mv, ma, mb, self.chunk)
        else:
            logw = -torch.exp(rand(P, T, H, N).clamp(max=1.0))
            u = rand(H, N).to(dtype)
            r, logw, k, v = (t.to(dtype) for t in (r, logw, k, v))
            o, s = self.rwkv6(s0, r, logw, k, v, u, lengths)
            mw, mk, mv = _masked(lengths, T, logw, k, v)
            ref_o, ref_s = wkv6_chunked(s0, r, mw, mk, mv, u, self.chunk)
        if self.backend != "fla":  # the kernel raised: the fallback has happened
            return
        valid = torch.arange(T, device=device)[None, :] < lengths[:, None]
        scale = 1.0 + float(ref_o[valid].abs().max())
        err = max(float((o[valid] - ref_o[valid]).abs().max()), float((s - ref_s).abs().max()))
        # fp16/bf16 inputs through two different orders of summation: a loose bound that
        # still tells a working kernel from a wrong one.
        if err > 0.05 * scale:
            log.warning(_FALLBACK, self.name or "?", f"differs from the torch form by {err:.3g}")
            self._fall_back(ValueError(f"the kernel differs from the torch form by {err:.3g}"))

    def rwkv7(
        self,
        s0: Any,
        r: Any,
        logw: Any,
        k: Any,
        v: Any,
        a: Any,
        b: Any,
        lengths: Any | None = None,
    ) -> tuple[Any, Any]:
        """Outputs ``[P, T, H, N]`` and final states; row ``i`` stops at ``lengths[i]``
        (its state is the one after its last real token; outputs past it are zero or
        meaningless)."""
        if self._fla7 is not None:
            try:
                return self._packed(self._fla7_call, s0, lengths, r, logw, k, v, a, b)
            except Exception as exc:  # any kernel failure: the torch form is exact
                log.warning(_FALLBACK, self.name or "?", exc, exc_info=True)
                self._fall_back(exc)
        T = r.shape[1]
        logw, k, v, a, b = _masked(lengths, T, logw, k, v, a, b)
        return wkv7_chunked(s0, r, logw, k, v, a, b, self.chunk)

    def rwkv6(
        self, s0: Any, r: Any, logw: Any, k: Any, v: Any, u: Any, lengths: Any | None = None
    ) -> tuple[Any, Any]:
        if self._fla6 is not None:
            try:
                return self._packed(
                    functools.partial(self._fla6_call, u), s0, lengths, r, logw, k, v
                )
            except Exception as exc:  # any kernel failure: the torch form is exact
                log.warning(_FALLBACK, self.name or "?", exc, exc_info=True)
                self._fall_back(exc)
        logw, k, v = _masked(lengths, r.shape[1], logw, k, v)
        return wkv6_chunked(s0, r, logw, k, v, u, self.chunk)

    def _fla7_call(self, s0: Any, cu: Any, cu_cpu: Any, r: Any, logw: Any, *rest: Any) -> Any:
        k, v, a, b = rest
        o, s = self._fla7(
            r,
            logw.to(r.dtype),
            k,
            v,
            a,
            b,
            scale=1.0,
            # fla keeps key rows, the package value rows.
            initial_state=s0.transpose(-1, -2).contiguous(),
            output_final_state=True,
            cu_seqlens=cu,
            cu_seqlens_cpu=cu_cpu,
            chunk_size=self.fla_chunk,
            lower_bound=RWKV7_LOGW_BOUND,
        )
        return o, s.transpose(-1, -2)

    def _fla6_call(self, u: Any, s0: Any, cu: Any, cu_cpu: Any, *rest: Any) -> Any:
        r, logw, k, v = rest
        return self._fla6(
            r,
            k,
            v,
            logw.to(r.dtype),
            u,
            scale=1.0,
            initial_state=s0.contiguous(),
            output_final_state=True,
            cu_seqlens=cu,
            cu_seqlens_cpu=cu_cpu,
        )

    def _packed(
        self,
        call: Callable[..., Any],
        s0: Any,
        lengths: Any | None,
        r: Any,
        logw: Any,
        *rest: Any,
    ) -> tuple[Any, Any]:
        """One kernel call over rows of their own lengths: the real positions of every
        row packed into one sequence with boundaries (``cu_seqlens``)."""
        import torch
        import torch.nn.functional as F

        P, T, H, N = r.shape
        if lengths is None:
            o, s = call(s0, None, None, r, logw, *rest)
            return o.float(), s.float()
        if self._packing is None or self._packing[0] is not lengths or self._packing[1] != T:
            # Every layer of one forward gets the same lengths tensor: the boundaries (and
            # the one host copy fla plans its chunks with) are made once per forward.
            cu = F.pad(lengths.to(torch.long).cumsum(0), (1, 0))
            valid = torch.arange(T, device=r.device)[None, :] < lengths[:, None]
            self._packing = (lengths, T, cu, cu.cpu(), valid)
        _, _, cu, cu_cpu, valid = self._packing
        packed = [t[valid][None] for t in (r, logw, *rest)]
        o, s = call(s0, cu, cu_cpu, *packed)
        out = torch.zeros((P, T, H, N), dtype=torch.float32, device=r.device)
        out[valid] = o[0].float()
        return out, s.float()
