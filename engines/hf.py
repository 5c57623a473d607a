"""Helpers shared by the Hugging Face based engines (imports torch; load lazily)."""

from __future__ import annotations

import copy
import os
import threading
from typing import Any

__all__ = ["HFTokenizer", "max_input_tokens", "offline_env", "pick_device", "place"]


def offline_env() -> None:
    # Every model is a local path: make any accidental hub lookup fail fast instead of hanging.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def pick_device(requested: str | None) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def place(model: Any, device: str) -> Any:
    """Move a loaded model to ``device`` for inference (fp32 on CPU)."""
    if device == "cpu":
        model.float()
    model.to(device)
    model.eval()
    return model


def max_input_tokens(config: Any, max_length: int | None) -> int:
    """The model's usable positions (RoBERTa reserves two), capped by ``max_length``."""
    positions = int(getattr(config, "max_position_embeddings", 512))
    if getattr(config, "model_type", "") in ("xlm-roberta", "roberta"):
        positions -= 2  # position ids start after the padding index
    return min(max_length or positions, positions)


class HFTokenizer:
    """Counts and truncates with the model's own tokenizer (special tokens included).

    A fast tokenizer is not safe to call from two threads at once ("Already borrowed"),
    and the engine's batch thread uses its own; this keeps a private copy behind a lock.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self._tok = copy.deepcopy(tokenizer)
        self._lock = threading.Lock()
        self.max_length = max_length

    def count(self, texts: list[str]) -> list[int]:
        with self._lock:
            enc = self._tok(list(texts), add_special_tokens=True, truncation=False)
        return [len(ids) for ids in enc["input_ids"]]

    def truncate(self, text: str, max_tokens: int) -> str:
        with self._lock:
            return self._truncate(text, max_tokens)

    def _truncate(self, text: str, max_tokens: int) -> str:
        enc = self._tok(
            text,
            add_special_tokens=True,
            truncation=True,
            max_length=max_tokens,
            return_offsets_mapping=True,
        )
        ends = [end for start, end in enc["offset_mapping"] if end > start]
        return text[: ends[-1]] if ends else ""
