"""What a constrained output costs at least, computed arithmetically from the schemas
before anything is built: a request whose shortest valid output cannot fit its budget
is refused at once, instead of building and tokenizing that output first.

Every figure is a lower bound in bytes of compact JSON; the token bound divides by the
longest token the vocabulary has, so nothing that could fit is refused.
"""

from __future__ import annotations

from chat.tools import OutputSpec
from engines.schema_size import shortest_call_bytes, shortest_json_bytes

__all__ = ["shortest_call_bytes", "shortest_json_bytes", "shortest_output_bytes"]


def shortest_output_bytes(spec: OutputSpec) -> int | None:
    """The least a constrained output of ``spec`` must write: the response format's
    document, or, when calls are required, the cheapest call. None when plain text may
    answer (``auto``, ``none``, no format)."""
    active = spec.tools if spec.choice in ("required", "named") else ()
    if spec.named is not None:
        active = tuple(t for t in spec.tools if t.name == spec.named)
    if active:
        return min(shortest_call_bytes(t.name, t.parameters) for t in active)
    if spec.schema is not None and (spec.choice == "none" or not spec.tools):
        return shortest_json_bytes(spec.schema)
    return None
