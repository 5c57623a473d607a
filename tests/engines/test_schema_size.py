"""The arithmetic size of a schema's shortest valid document is a lower bound: it never
exceeds the length of a valid document the closer actually builds, so a request that
could fit its budget is never refused for it (random schemas, seeded)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings

from engines.constraint import check_schema, minimal_value
from engines.schema_size import CEILING, shortest_json_bytes
from tests.chat.constrained_cases import schemas


@settings(max_examples=300, derandomize=True, deadline=None)
@given(schemas())
def test_the_size_bound_never_exceeds_a_valid_documents_size(schema: dict[str, Any]) -> None:
    check_schema(schema)
    built = minimal_value(schema, schema).encode()
    assert shortest_json_bytes(schema) <= len(built)


def test_products_saturate_instead_of_growing() -> None:
    grid: dict[str, Any] = {"type": "array", "minItems": 10**9, "items": {"minItems": 10**9}}
    grid["items"]["type"] = "array"
    assert shortest_json_bytes(grid) == CEILING
    assert shortest_json_bytes({"type": "string", "minLength": 50_000_000}) == 50_000_002
