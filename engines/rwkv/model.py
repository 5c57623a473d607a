"""RWKV x060 / x070 checkpoints loaded through the `rwkv` package, and State files.

The package gives us the weights in its own layout (``model.w`` for x060, ``model.z`` for
x070) and its one-sequence forward, which the batched step and the chunked prefill are
checked against.

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

__all__ = ["LoadedRWKV", "detect_version", "load_rwkv", "load_state_file"]

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
