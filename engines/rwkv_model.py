"""RWKV x060 / x070 through the `rwkv` package, plus a batched one-token decode step.

The package has no batch dimension. ``BatchedStep`` runs one decode step for B sequences
at once over the weights the package already loaded (``model.w`` for x060, ``model.z``
for x070), with the same maths as the package's ``forward`` (tests check both agree).

Loading notes (rwkv 0.8.32): the x070 class exists only when ``RWKV_V7_ON=1`` is set
before import, and importing that way rebinds ``rwkv.model.RWKV`` to it. To serve x060 and
x070 side by side we import the module twice: once as ``rwkv.model`` with V7 off (x060),
once as a private copy with V7 on (x070).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["BatchedStep", "LoadedRWKV", "detect_version", "load_rwkv", "load_state_file"]

log = logging.getLogger(__name__)
_IMPORT_LOCK = threading.Lock()
_MODULES: dict[str, ModuleType] = {}


def _set_switches(v7: bool, jit: bool, cuda: bool) -> None:
    os.environ["RWKV_V7_ON"] = "1" if v7 else "0"
    os.environ["RWKV_JIT_ON"] = "1" if jit else "0"
    os.environ["RWKV_CUDA_ON"] = "1" if cuda else "0"


def _rwkv_module(v7: bool, jit: bool, cuda: bool) -> ModuleType:
    """The package's model module with the switches set just before its import.

    The package reads its switches once, at import: the first model of each version
    decides ``jit``/``cuda_kernels`` for every later model of that version in the process.
    """
    key = "x070" if v7 else "x060"
    # The package prints banners to stdout; stdout may be an MCP stdio channel.
    with _IMPORT_LOCK, contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        # The package scripts its kernels with torch.jit, which torch now deprecates.
        warnings.simplefilter("ignore", DeprecationWarning)
        if key in _MODULES:
            return _MODULES[key]
        _set_switches(v7, jit, cuda)
        if not v7:
            if "rwkv.model" in sys.modules and sys.modules["rwkv.model"].RWKV.__name__ != "RWKV":
                raise RuntimeError("rwkv.model was imported with RWKV_V7_ON=1 elsewhere")
            module = importlib.import_module("rwkv.model")
        else:
            spec = importlib.util.find_spec("rwkv.model")
            if spec is None or spec.origin is None:
                raise ImportError("the rwkv package's model module is missing")
            copy_spec = importlib.util.spec_from_file_location("rwkv._model_x070", spec.origin)
            if copy_spec is None or copy_spec.loader is None:
                raise ImportError("cannot load a copy of rwkv.model")
            module = importlib.util.module_from_spec(copy_spec)
            sys.modules["rwkv._model_x070"] = module
            copy_spec.loader.exec_module(module)
        _MODULES[key] = module
        return module


def detect_version(path: Path) -> str:
    """``x070`` when ``blocks.0.att.r_k`` is present, ``x060`` for ``att.time_maa_x``."""
    import torch

    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    keys = set(sd.keys())
    if "blocks.0.att.r_k" in keys:
        return "x070"
    if "blocks.0.att.time_maa_x" in keys:
        return "x060"
    raise ValueError(f"{path}: not an RWKV x060 or x070 checkpoint")


@dataclass
class LoadedRWKV:
    model: Any
    version: str
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    device: str
    dtype: Any  # torch dtype of activations
    rescale_layer: int

    def zero_state(self) -> list[Any]:
        import torch

        state: list[Any] = []
        for _ in range(self.n_layer):
            state.append(torch.zeros(self.n_embd, dtype=self.dtype, device=self.device))
            state.append(
                torch.zeros(
                    (self.n_head, self.head_size, self.head_size),
                    dtype=torch.float32,
                    device=self.device,
                )
            )
            state.append(torch.zeros(self.n_embd, dtype=self.dtype, device=self.device))
        return state

    def forward(self, tokens: list[int], state: list[Any]) -> tuple[Any, list[Any]]:
        """The package's own forward on a copy of ``state`` (x060 overwrites its input)."""
        import torch

        with torch.inference_mode():
            logits, new_state = self.model.forward(tokens, [s.clone() for s in state])
        return logits.float(), new_state


def load_rwkv(
    path: Path, strategy: str, *, jit: bool = True, cuda_kernels: bool = False
) -> LoadedRWKV:
    import torch

    version = detect_version(path)
    module = _rwkv_module(version == "x070", jit, cuda_kernels)
    dev, _, precision = strategy.partition(" ")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
        precision.split()[0] if precision else "fp32"
    )
    if dtype is None:
        raise ValueError(f"unsupported strategy {strategy!r}: use '<cpu|cuda> <fp32|fp16|bf16>'")
    # Both loaders append .pth to the name they are given.
    stem = str(path)[: -len(".pth")] if str(path).endswith(".pth") else str(path)
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = (
            module.RWKV_x070(stem, strategy)
            if version == "x070"
            else module.RWKV(stem, strategy, verbose=False)
        )
    if version == "x070":
        n_layer, n_embd = model.n_layer, model.n_embd
        n_head, head_size = model.n_head, model.head_size
        rescale = 0
    else:
        n_layer, n_embd = model.args.n_layer, model.args.n_embd
        n_head = model.args.n_head
        head_size = model.args.n_att // n_head
        rescale = int(model.RESCALE_LAYER)
    return LoadedRWKV(
        model=model,
        version=version,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        head_size=head_size,
        device=dev,
        dtype=dtype,
        rescale_layer=rescale,
    )


def load_state_file(path: Path, lm: LoadedRWKV) -> list[Any]:
    """An RWKV-PEFT State (``blocks.N.att.time_state``, ``[H, N, N]``) as an initial state.

    The x060 state slot takes it transposed, x070 as is. Shape mismatches raise.
    """
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    state = lm.zero_state()
    expected = (lm.n_head, lm.head_size, lm.head_size)
    for i in range(lm.n_layer):
        key = f"blocks.{i}.att.time_state"
        if key not in sd:
            raise ValueError(f"state file {path} lacks {key}")
        t = sd[key]
        if tuple(t.shape) != expected:
            raise ValueError(
                f"state file {path}: {key} has shape {tuple(t.shape)}, model needs {expected}"
            )
        if lm.version == "x060":
            t = t.transpose(1, 2)
        state[i * 3 + 1] = t.to(dtype=torch.float32, device=lm.device).contiguous()
    extra = [k for k in sd if not k.endswith("att.time_state")]
    if extra or len(sd) != lm.n_layer:
        raise ValueError(f"state file {path} has {len(sd)} tensors for {lm.n_layer} layers")
    return state


class BatchedStep:
    """One decode step for B sequences: tokens ``[B]`` + stacked states -> logits ``[B, V]``.

    Stacked state layout per layer ``i``: ``att_x[i] [B, C]``, ``kv[i] [B, H, N, N]`` (fp32),
    ``ffn_x[i] [B, C]``.
    """

    def __init__(self, lm: LoadedRWKV) -> None:
        self.lm = lm
        if lm.version == "x060":
            self.w = lm.model.w
            if any(str(v.dtype) == "torch.uint8" for v in self.w.values()):
                raise ValueError("batched decode needs a float strategy (no i8)")
        else:
            self.w = lm.model.z

    # -- state packing -------------------------------------------------------------------

    def stack(self, states: list[list[Any]]) -> list[Any]:
        import torch

        return [torch.stack([s[j] for s in states]) for j in range(len(states[0]))]

    # -- the step ------------------------------------------------------------------------

    def __call__(self, tokens: list[int], stacked: list[Any]) -> Any:
        import torch

        with torch.inference_mode():
            if self.lm.version == "x060":
                return self._x060(tokens, stacked)
            return self._x070(tokens, stacked)

    def _x060(self, tokens: list[int], st: list[Any]) -> Any:
        import torch
        import torch.nn.functional as F

        w, lm = self.w, self.lm
        B, C, H = len(tokens), lm.n_embd, lm.n_head
        N = C // H
        x = w["emb.weight"][tokens].to(dtype=lm.dtype, device=lm.device)
        for i in range(lm.n_layer):
            b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            xx = F.layer_norm(x, (C,), weight=w[b + "ln1.weight"], bias=w[b + "ln1.bias"])
            sx = st[i * 3] - xx
            xxx = xx + sx * w[a + "time_maa_x"]
            xxx = torch.tanh(xxx @ w[a + "time_maa_w1"]).view(B, 5, -1).transpose(0, 1)
            xxx = torch.bmm(xxx, w[a + "time_maa_w2"])
            mw, mk, mv, mr, mg = xxx.unbind(dim=0)
            wx = xx + sx * (w[a + "time_maa_w"] + mw)
            kx = xx + sx * (w[a + "time_maa_k"] + mk)
            vx = xx + sx * (w[a + "time_maa_v"] + mv)
            rx = xx + sx * (w[a + "time_maa_r"] + mr)
            gx = xx + sx * (w[a + "time_maa_g"] + mg)
            r = (rx @ w[a + "receptance.weight"]).float().view(B, H, 1, N)
            k = (kx @ w[a + "key.weight"]).float().view(B, H, N, 1)
            v = (vx @ w[a + "value.weight"]).float().view(B, H, 1, N)
            g = F.silu(gx @ w[a + "gate.weight"])
            td = torch.tanh(wx @ w[a + "time_decay_w1"]) @ w[a + "time_decay_w2"]
            decay = w[a + "time_decay"] + td.float().view(B, H, N, 1)
            decay = torch.exp(-torch.exp(decay))
            s = st[i * 3 + 1]
            kv = k @ v
            out = r @ (w[a + "time_first"] * kv + s)
            st[i * 3 + 1] = kv + decay * s
            out = F.group_norm(
                out.view(B, H * N),
                num_groups=H,
                weight=w[a + "ln_x.weight"],
                bias=w[a + "ln_x.bias"],
                eps=64e-5,
            )
            out = out.to(dtype=x.dtype) * g
            x = x + out @ w[a + "output.weight"]
            st[i * 3] = xx

            xx = F.layer_norm(x, (C,), weight=w[b + "ln2.weight"], bias=w[b + "ln2.bias"])
            sx = st[i * 3 + 2] - xx
            kx = xx + sx * w[f + "time_maa_k"]
            rx = xx + sx * w[f + "time_maa_r"]
            rr = torch.sigmoid(rx @ w[f + "receptance.weight"])
            vx = torch.relu(kx @ w[f + "key.weight"]) ** 2
            x = x + rr * (vx @ w[f + "value.weight"])
            st[i * 3 + 2] = xx
            if lm.rescale_layer > 0 and (i + 1) % lm.rescale_layer == 0:
                x = x / 2
        x = F.layer_norm(x, (C,), weight=w["ln_out.weight"], bias=w["ln_out.bias"])
        return (x @ w["head.weight"]).float()

    def _x070(self, tokens: list[int], st: list[Any]) -> Any:
        import torch
        import torch.nn.functional as F

        z, lm = self.w, self.lm
        B, C, H, N = len(tokens), lm.n_embd, lm.n_head, lm.head_size
        x = z["emb.weight"][tokens]
        v_first = x
        for i in range(lm.n_layer):
            b, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
            xx = F.layer_norm(x, (C,), weight=z[b + "ln1.weight"], bias=z[b + "ln1.bias"])
            dx = st[i * 3] - xx
            xr, xw = xx + dx * z[a + "x_r"], xx + dx * z[a + "x_w"]
            xk, xv = xx + dx * z[a + "x_k"], xx + dx * z[a + "x_v"]
            xa, xg = xx + dx * z[a + "x_a"], xx + dx * z[a + "x_g"]
            r = xr @ z[a + "receptance.weight"]
            ww = torch.tanh(xw @ z[a + "w1"]) @ z[a + "w2"]
            k = xk @ z[a + "key.weight"]
            v = xv @ z[a + "value.weight"]
            aa = torch.sigmoid(z[a + "a0"] + (xa @ z[a + "a1"]) @ z[a + "a2"])
            g = torch.sigmoid(xg @ z[a + "g1"]) @ z[a + "g2"]
            kk = F.normalize((k * z[a + "k_k"]).view(B, H, N), dim=-1, p=2.0).view(B, C)
            k = k * (1 + (aa - 1) * z[a + "k_a"])
            if i == 0:
                v_first = v
            else:
                v = v + (v_first - v) * torch.sigmoid(
                    z[a + "v0"] + (xv @ z[a + "v1"]) @ z[a + "v2"]
                )
            ww = torch.exp(-0.606531 * torch.sigmoid((z[a + "w0"] + ww).float()))
            vk = v.view(B, H, N, 1) @ k.view(B, H, 1, N)
            ab = (-kk).view(B, H, N, 1) @ (kk * aa).view(B, H, 1, N)
            s = st[i * 3 + 1]
            s = s * ww.view(B, H, 1, N) + s @ ab.float() + vk.float()
            st[i * 3 + 1] = s
            out = (s.to(dtype=x.dtype) @ r.view(B, H, N, 1)).view(B, C)
            out = F.group_norm(
                out,
                num_groups=H,
                weight=z[a + "ln_x.weight"],
                bias=z[a + "ln_x.bias"],
                eps=64e-5,
            )
            out = out + (
                (r * k * z[a + "r_k"]).view(B, H, N).sum(dim=-1, keepdim=True) * v.view(B, H, N)
            ).view(B, C)
            x = x + (out * g) @ z[a + "output.weight"]
            st[i * 3] = xx

            xx = F.layer_norm(x, (C,), weight=z[b + "ln2.weight"], bias=z[b + "ln2.bias"])
            dx = st[i * 3 + 2] - xx
            kx = xx + dx * z[f + "x_k"]
            kf = torch.relu(kx @ z[f + "key.weight"]) ** 2
            x = x + kf @ z[f + "value.weight"]
            st[i * 3 + 2] = xx
        x = F.layer_norm(x, (C,), weight=z["ln_out.weight"], bias=z["ln_out.bias"])
        return (x @ z["head.weight"]).float()
