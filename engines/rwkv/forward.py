"""RWKV x060 / x070 forward for ``P`` sequences of ``T`` tokens over the package's weights.

One implementation serves both phases: decode (``T = 1``, every running sequence, one
step) and prefill (``T`` tokens of several prompts, their lengths padded; the WKV
backend keeps each row's state at its own length).
States are pool views (``[P, ...]`` per part) updated in place, so a decode step reads and
writes the same memory every time (what a CUDA graph needs). For ``T > 1`` the WKV
recurrence runs chunked (``engines.rwkv.wkv``): the work is matrix-matrix.

State layout per layer ``i``: ``att_x [P, C]``, ``kv [P, H, N, N]`` (fp32), ``ffn_x [P, C]``,
as the rwkv package orders them (``3 * i + 0/1/2``).
"""

from __future__ import annotations

from typing import Any

from engines.rwkv.linear import LinearKind, Linears
from engines.rwkv.model import LoadedRWKV
from engines.rwkv.wkv import Wkv

__all__ = ["Forward"]


# The products worth packing: every row's per-layer projections and the head.
_X070_LINEARS = (
    "att.receptance.weight",
    "att.key.weight",
    "att.value.weight",
    "att.output.weight",
    "ffn.key.weight",
    "ffn.value.weight",
)
_X060_LINEARS = (*_X070_LINEARS, "att.gate.weight", "ffn.receptance.weight")


class Forward:
    def __init__(self, lm: LoadedRWKV, wkv: Wkv, linear: LinearKind = "dense") -> None:
        self.lm = lm
        self.wkv = wkv
        if lm.version == "x060":
            self.w = lm.model.w
            if any(str(v.dtype) == "torch.uint8" for v in self.w.values()):
                raise ValueError("batched decode needs a float strategy (no i8)")
        else:
            self.w = lm.model.z
        # The package keeps x060's embedding on the CPU (its forward looks up one token at
        # a time by a host index); the batched step looks up device tensors of tokens, so
        # the table lives where the step computes, in its dtype (for x070 this is no copy).
        self.emb = self.w["emb.weight"].to(device=lm.device, dtype=lm.dtype)
        suffixes = _X060_LINEARS if lm.version == "x060" else _X070_LINEARS
        names = [f"blocks.{i}.{s}" for i in range(lm.n_layer) for s in suffixes]
        self.mm = Linears(self.w, [*names, "head.weight"], linear)

    def embed(self, tokens: Any) -> Any:
        """``[P, T, C]`` rows of the embedding, on the computing device."""
        return self.emb[tokens.to(self.emb.device)]

    def __call__(self, tokens: Any, st: list[Any], lengths: Any | None = None) -> Any:
        """Logits ``[P, V]`` after each row's last real token (``lengths`` [P], device
        long tensor; None: every row is ``T`` long). ``st`` is updated in place."""
        import torch

        with torch.inference_mode():
            if self.lm.version == "x060":
                return self._x060(tokens, st, lengths)
            return self._x070(tokens, st, lengths)

    # -- shared ----------------------------------------------------------------------------

    @staticmethod
    def _shifted(prev: Any, xx: Any) -> Any:
        import torch

        if xx.shape[1] == 1:  # decode: the previous token is the state
            return prev[:, None, :].to(xx.dtype)
        return torch.cat([prev[:, None, :].to(xx.dtype), xx[:, :-1]], dim=1)

    @staticmethod
    def _last(x: Any, lengths: Any | None) -> Any:
        import torch

        if lengths is None:
            return x[:, -1]
        return x[torch.arange(x.shape[0], device=x.device), lengths - 1]

    # -- x070 ------------------------------------------------------------------------------

    def _x070(self, tokens: Any, st: list[Any], lengths: Any | None) -> Any:
        import torch
        import torch.nn.functional as F

        z, lm, mm = self.w, self.lm, self.mm
        P, T = tokens.shape
        C, H, N = lm.n_embd, lm.n_head, lm.head_size
        x = self.embed(tokens)
        v_first = x
        for i in range(lm.n_layer):
            b, a_, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            xx = F.layer_norm(x, (C,), weight=z[b + "ln1.weight"], bias=z[b + "ln1.bias"])
            dx = self._shifted(st[i * 3], xx) - xx
            xr, xw = xx + dx * z[a_ + "x_r"], xx + dx * z[a_ + "x_w"]
            xk, xv = xx + dx * z[a_ + "x_k"], xx + dx * z[a_ + "x_v"]
            xa, xg = xx + dx * z[a_ + "x_a"], xx + dx * z[a_ + "x_g"]
            r = mm(xr, a_ + "receptance.weight")
            ww = torch.tanh(xw @ z[a_ + "w1"]) @ z[a_ + "w2"]
            k = mm(xk, a_ + "key.weight")
            v = mm(xv, a_ + "value.weight")
            aa = torch.sigmoid(z[a_ + "a0"] + (xa @ z[a_ + "a1"]) @ z[a_ + "a2"])
            g = torch.sigmoid(xg @ z[a_ + "g1"]) @ z[a_ + "g2"]
            kk = F.normalize((k * z[a_ + "k_k"]).view(P, T, H, N), dim=-1, p=2.0).view(P, T, C)
            k = k * (1 + (aa - 1) * z[a_ + "k_a"])
            if i == 0:
                v_first = v
            else:
                v = v + (v_first - v) * torch.sigmoid(
                    z[a_ + "v0"] + (xv @ z[a_ + "v1"]) @ z[a_ + "v2"]
                )
            logw = -0.606531 * torch.sigmoid((z[a_ + "w0"] + ww).float())
            o = self._wkv7(st, i, r, logw, k, v, kk, aa, lengths, (P, T, H, N))
            st[i * 3].copy_(self._last(xx, lengths))
            out = F.group_norm(
                o.to(dtype=x.dtype).reshape(P * T, C),
                num_groups=H,
                weight=z[a_ + "ln_x.weight"],
                bias=z[a_ + "ln_x.bias"],
                eps=64e-5,
            ).view(P, T, C)
            bonus = (r * k * z[a_ + "r_k"]).view(P, T, H, N).sum(dim=-1, keepdim=True)
            out = out + (bonus * v.view(P, T, H, N)).view(P, T, C)
            x = x + mm(out * g, a_ + "output.weight")

            xx = F.layer_norm(x, (C,), weight=z[b + "ln2.weight"], bias=z[b + "ln2.bias"])
            kx = xx + (self._shifted(st[i * 3 + 2], xx) - xx) * z[f + "x_k"]
            x = x + mm(torch.relu(mm(kx, f + "key.weight")) ** 2, f + "value.weight")
            st[i * 3 + 2].copy_(self._last(xx, lengths))
        x = F.layer_norm(
            self._last(x, lengths), (C,), weight=z["ln_out.weight"], bias=z["ln_out.bias"]
        )
        return mm(x, "head.weight").float()

    def _wkv7(
        self,
        st: list[Any],
        i: int,
        r: Any,
        logw: Any,
        k: Any,
        v: Any,
        kk: Any,
        aa: Any,
        lengths: Any | None,
        shape: tuple[int, int, int, int],
    ) -> Any:
        """The WKV output ``[P, T, H, N]`` (fp32); the layer's state updated in place."""
        import torch

        P, T, H, N = shape
        s = st[i * 3 + 1]
        if T == 1 and s.device.type == "cpu" and r.dtype == torch.float32:
            # S @ (a b^T) is (S a) b^T: a matrix-vector product and an outer product
            # instead of a product of N x N matrices (N times fewer operations; what a
            # CPU step spends most of its WKV time on). In place, as below.
            sa = s @ (-kk).view(P, H, N, 1)
            s.mul_(logw.exp().view(P, H, 1, N))
            s.addcmul_(sa, (kk * aa).view(P, H, 1, N))
            s.addcmul_(v.view(P, H, N, 1), k.view(P, H, 1, N))
            return (s @ r.view(P, H, N, 1)).view(P, 1, H, N)
        if T == 1:
            # In place: the state is pool memory, and a temporary copy of it per layer
            # per step would cost as much as the update itself. The package's order of
            # operations, so that 16-bit steps stay bit-identical to its forward.
            w = logw.exp().view(P, H, 1, N)
            vk = v.view(P, H, N, 1) @ k.view(P, H, 1, N)
            ab = (-kk).view(P, H, N, 1) @ (kk * aa).view(P, H, 1, N)
            sab = s @ ab.float()
            s.mul_(w).add_(sab).add_(vk.float())
            return (s.to(dtype=r.dtype) @ r.view(P, H, N, 1)).view(P, 1, H, N).float()
        rq, wq, kq, vq, aq, bq = (t.reshape(P, T, H, N) for t in (r, logw, k, v, -kk, kk * aa))
        o, new = self.wkv.rwkv7(s, rq, wq, kq, vq, aq, bq, lengths)
        s.copy_(new)
        return o

    # -- x060 ------------------------------------------------------------------------------

    def _x060(self, tokens: Any, st: list[Any], lengths: Any | None) -> Any:
        import torch
        import torch.nn.functional as F

        w, lm, mm = self.w, self.lm, self.mm
        P, T = tokens.shape
        C, H = lm.n_embd, lm.n_head
        N = C // H
        x = self.embed(tokens)
        for i in range(lm.n_layer):
            b, a_, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            xx = F.layer_norm(x, (C,), weight=w[b + "ln1.weight"], bias=w[b + "ln1.bias"])
            sx = self._shifted(st[i * 3], xx) - xx
            xxx = xx + sx * w[a_ + "time_maa_x"]
            xxx = torch.tanh(xxx @ w[a_ + "time_maa_w1"]).view(P * T, 5, -1).transpose(0, 1)
            xxx = torch.bmm(xxx, w[a_ + "time_maa_w2"]).view(5, P, T, C)
            mw, mk, mv, mr, mg = xxx.unbind(dim=0)
            wx = xx + sx * (w[a_ + "time_maa_w"] + mw)
            kx = xx + sx * (w[a_ + "time_maa_k"] + mk)
            vx = xx + sx * (w[a_ + "time_maa_v"] + mv)
            rx = xx + sx * (w[a_ + "time_maa_r"] + mr)
            gx = xx + sx * (w[a_ + "time_maa_g"] + mg)
            r = mm(rx, a_ + "receptance.weight").float()
            k = mm(kx, a_ + "key.weight").float()
            v = mm(vx, a_ + "value.weight").float()
            g = F.silu(mm(gx, a_ + "gate.weight"))
            td = torch.tanh(wx @ w[a_ + "time_decay_w1"]) @ w[a_ + "time_decay_w2"]
            logw = -torch.exp(w[a_ + "time_decay"].view(C) + td.float())
            o = self._wkv6(st, i, r, logw, k, v, w[a_ + "time_first"], lengths, (P, T, H, N))
            st[i * 3].copy_(self._last(xx, lengths))
            out = F.group_norm(
                o.reshape(P * T, C),
                num_groups=H,
                weight=w[a_ + "ln_x.weight"],
                bias=w[a_ + "ln_x.bias"],
                eps=64e-5,
            ).view(P, T, C)
            x = x + mm(out.to(dtype=x.dtype) * g, a_ + "output.weight")

            xx = F.layer_norm(x, (C,), weight=w[b + "ln2.weight"], bias=w[b + "ln2.bias"])
            sx = self._shifted(st[i * 3 + 2], xx) - xx
            kx = xx + sx * w[f + "time_maa_k"]
            rx = xx + sx * w[f + "time_maa_r"]
            rr = torch.sigmoid(mm(rx, f + "receptance.weight"))
            vx = torch.relu(mm(kx, f + "key.weight")) ** 2
            x = x + rr * mm(vx, f + "value.weight")
            st[i * 3 + 2].copy_(self._last(xx, lengths))
            if lm.rescale_layer > 0 and (i + 1) % lm.rescale_layer == 0:
                x = x / 2
        x = F.layer_norm(
            self._last(x, lengths), (C,), weight=w["ln_out.weight"], bias=w["ln_out.bias"]
        )
        return mm(x, "head.weight").float()

    def _wkv6(
        self,
        st: list[Any],
        i: int,
        r: Any,
        logw: Any,
        k: Any,
        v: Any,
        time_first: Any,
        lengths: Any | None,
        shape: tuple[int, int, int, int],
    ) -> Any:
        P, T, H, N = shape
        s = st[i * 3 + 1]
        if T == 1:
            kv = k.view(P, H, N, 1) @ v.view(P, H, 1, N)
            out = r.view(P, H, 1, N) @ (time_first * kv + s)
            s.mul_(logw.exp().view(P, H, N, 1)).add_(kv)
            return out.view(P, 1, H, N)
        rq, wq, kq, vq = (t.reshape(P, T, H, N) for t in (r, logw, k, v))
        o, new = self.wkv.rwkv6(s, rq, wq, kq, vq, time_first.reshape(H, N), lengths)
        s.copy_(new)
        return o
