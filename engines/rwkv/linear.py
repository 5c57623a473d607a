"""The large matrix products of the CPU step (attention r/k/v/output, channel-mix key/value,
the head), each weight kept in the form its kernel reads fastest.

The rwkv package keeps weights as ``[in, out]`` and the step multiplies ``x @ W``. On a CPU
that is fast for one row (a matrix-vector product that streams the weight once), but for
2-16 rows the generic GEMM repacks the whole weight at every call: a 65,536-wide head
then costs several times its reading. Pre-packing it once for oneDNN (``mkldnn``) removes
that. Kinds:

- ``dense``: ``x @ W`` as the package keeps it (the reference);
- ``onednn``: weights packed once for oneDNN's inner product, for every row count (one
  row too: 5-8 % faster per step than the package's ``x @ W`` with the weights streaming
  from memory); the package keeps its own copy, so fp32 weights are held twice;
- ``int8``: dynamically quantized (per-output-channel int8 weights, activations quantized
  per call) through torch's quantized linear; a quarter of the weight bytes, approximate.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Literal

__all__ = ["LinearKind", "Linears", "choose_linear_kind"]

log = logging.getLogger(__name__)

LinearKind = Literal["dense", "onednn", "int8"]


class Linears:
    def __init__(self, weights: dict[str, Any], names: list[str], kind: LinearKind) -> None:
        """``weights[name]``: ``[in, out]`` fp32 tensors; ``names``: the ones to pack."""
        import torch

        self.kind = kind
        self.dense = weights
        self.packed: dict[str, Any] = {}
        if kind == "dense":
            return
        for name in names:
            w = weights[name]
            if w.dtype != torch.float32 or w.device.type != "cpu":
                raise ValueError(f"{kind} linears need cpu fp32 weights ({name} is {w.dtype})")
            wt = w.t().contiguous()  # [out, in], as linear kernels take it
            if kind == "onednn":
                self.packed[name] = wt.to_mkldnn()
            else:
                self.packed[name] = _quantized(wt)

    def __call__(self, x: Any, name: str) -> Any:
        packed = self.packed.get(name)
        if packed is None:
            return x @ self.dense[name]
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if self.kind == "onednn":
            import torch

            out = torch._C._nn.mkldnn_linear(flat.to_mkldnn(), packed, None).to_dense()
        else:
            out = packed(flat)
        return out.view(*shape[:-1], out.shape[-1])


def _quantized(wt: Any) -> Any:
    """A dynamically quantized linear over ``wt`` ([out, in], fp32)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    with warnings.catch_warnings():
        # Eager quantization is deprecated in favour of torchao; it still ships and works.
        warnings.simplefilter("ignore")
        scales = wt.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        q = torch.quantize_per_channel(
            wt, scales.double(), torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8
        )
        layer = DynamicLinear(  # type: ignore[no-untyped-call]
            wt.shape[1], wt.shape[0], bias_=False, dtype=torch.qint8
        )
        layer.set_weight_bias(q, None)
    return layer


def choose_linear_kind(option: str, strategy: str, weight_bytes: int) -> LinearKind:
    """The option's kind of linear; packed and quantized kinds need ``cpu fp32``. ``auto``
    packs for oneDNN only while the second copy of the weights (``weight_bytes``) stays
    within a quarter of the machine's memory."""
    import os

    import torch

    cpu_fp32 = strategy.split() == ["cpu", "fp32"]
    if option == "auto":
        onednn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        try:
            memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # no sysconf here: memory unknown
            memory = 4 * weight_bytes
        if onednn and cpu_fp32 and weight_bytes > memory // 4:
            log.info("linear_kernel auto: dense (a packed copy would take %d bytes)", weight_bytes)
            return "dense"
        return "onednn" if onednn and cpu_fp32 else "dense"
    if option != "dense" and not cpu_fp32:
        raise ValueError(f"linear_kernel {option} needs strategy 'cpu fp32', not {strategy!r}")
    return "onednn" if option == "onednn" else "int8" if option == "int8" else "dense"
