"""The RWKV World tokenizer that ships in the ``rwkv`` package, shared by the engine and
the grammar layer (loaded once per process)."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["world_tokenizer"]


@functools.lru_cache(maxsize=1)
def world_tokenizer() -> Any:
    """The RWKV World tokenizer (its vocabulary file is part of the package)."""
    from importlib.resources import files

    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(files("rwkv") / "rwkv_vocab_v20230424.txt"))
