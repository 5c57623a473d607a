"""A JSON body's nesting depth, measured without parsing (a deeply nested body would
otherwise reach the decoder's recursion limit)."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["json_depth"]

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in ``body`` (strings ignored)."""
    stripped = _STRING.sub(b'""', body)
    if not stripped:
        return 0
    steps = _OPEN[np.frombuffer(stripped, dtype=np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))
