"""Citations on the wire: the typed citations of an answer as the top-level
``citations`` list, chat ``url_citation`` and Responses ``file_citation`` annotations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from rag.service import Citation

__all__ = ["citation_dicts", "file_annotations", "source_url", "url_annotations"]

_MARKER = re.compile(r"\[(\d+)\]")


def citation_dicts(citations: Sequence[Citation] | None) -> list[dict[str, Any]] | None:
    return None if citations is None else [c.to_dict() for c in citations]


def _cited(content: str, citations: Sequence[Citation]) -> list[tuple[re.Match[str], Citation]]:
    by_index = {c.index: c for c in citations}
    return [
        (m, by_index[int(m.group(1))])
        for m in _MARKER.finditer(content)
        if int(m.group(1)) in by_index
    ]


def source_url(c: Citation) -> str:
    return f"/v1/vector_stores/{c.hit.vector_store_id}/files/{c.hit.file_id}/content"


def url_annotations(content: str, citations: Sequence[Citation]) -> list[dict[str, object]]:
    """Chat ``message.annotations``: a ``url_citation`` on each ``[n]`` marker that names
    a source (the title is its file name, the URL its stored content)."""
    return [
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": m.start(),
                "end_index": m.end(),
                "title": str(c.hit.filename or c.hit.file_id),
                "url": source_url(c),
            },
        }
        for m, c in _cited(content, citations)
    ]


def file_annotations(content: str, citations: Sequence[Citation]) -> list[dict[str, object]]:
    """Responses ``file_citation`` annotations: one per ``[n]`` marker naming a source."""
    return [
        {
            "type": "file_citation",
            "file_id": str(c.hit.file_id),
            "filename": str(c.hit.filename or ""),
            "index": m.end(),
        }
        for m, c in _cited(content, citations)
    ]
