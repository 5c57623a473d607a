"""Small types shared across packages."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Tokenizer"]


class Tokenizer(Protocol):
    def count(self, texts: list[str]) -> list[int]:
        """Token count of each text (special tokens included, as the model sees it)."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` that fits ``max_tokens``."""
        ...
