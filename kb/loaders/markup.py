"""HTML (main text via trafilatura, lxml as a fallback) and JSON.

Markup nested past ``max_html_depth`` is flattened (its tags dropped, its text kept) so a
pathologically deep page loses no text to the parser's depth limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from kb.loaders.base import Budget, LoaderError, Section

__all__ = ["html_depth", "iter_html", "iter_json"]

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)[^>]*?(/?)>")
_VOID = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)
_DROP = re.compile(r"<(script|style|noscript|template)\b[^>]*>.*?</\1\s*>|<!--.*?-->", re.S | re.I)


def html_depth(html: str) -> int:
    depth = best = 0
    for m in _TAG.finditer(html):
        closing, name, self_closing = m.group(1), m.group(2).lower(), m.group(3)
        if name in _VOID or self_closing:
            continue
        depth = max(0, depth - 1) if closing else depth + 1
        best = max(best, depth)
    return best


def _flatten(html: str) -> tuple[str, str | None]:
    """Text of markup too deep to parse: scripts and styles dropped, tags become breaks."""
    import html as html_lib

    title = re.search(r"<title[^>]*>(.*?)</title>", html, re.S | re.I)
    body = _DROP.sub(" ", html)
    body = re.sub(r"<(br|p|div|li|tr|h[1-6])\b[^>]*>", "\n", body, flags=re.I)
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", body))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
    return text, (html_lib.unescape(title.group(1)).strip() if title else None)


def _trafilatura(html: str) -> tuple[str | None, str | None]:
    import trafilatura

    try:
        result = trafilatura.bare_extraction(
            html, output_format="python", with_metadata=True, include_tables=True, as_dict=True
        )
    except Exception:  # noqa: BLE001 - trafilatura raises anything on odd markup; lxml follows
        return None, None
    if not isinstance(result, dict):
        return None, None
    return result.get("text") or None, result.get("title") or None


def _lxml(html: str) -> tuple[str, str | None]:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # noqa: BLE001 - lxml raises anything on odd markup; such a page is flattened
        return "", None
    for bad in root.xpath(
        "//script|//style|//noscript|//template|//nav|//header|//footer|//aside|//form"
    ):
        bad.drop_tree()
    titles = root.xpath("//title/text()")
    body = root.find("body")
    text = (body if body is not None else root).text_content()
    return re.sub(r"\n\s*\n+", "\n\n", text).strip(), (titles[0].strip() if titles else None)


def iter_html(html: str, budget: Budget) -> Iterator[Section]:
    title: str | None = None
    text: str | None = None
    if html_depth(html) > budget.limits.max_html_depth:
        text, title = _flatten(html)
    else:
        text, title = _trafilatura(html)
        if not text:
            # Short pages fall below trafilatura's content heuristics: take the body text.
            text, title2 = _lxml(html)
            title = title or title2
        if not text:
            text, title3 = _flatten(html)
            title = title or title3
    if text and text.strip():
        yield budget.section(Section(text.strip(), prefix=title or ""))


def iter_json(text: str, budget: Budget) -> Iterator[Section]:
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise LoaderError("the JSON nests too deep to read") from None
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        try:
            body = json.dumps(item, ensure_ascii=False, indent=1)
        except RecursionError:
            raise LoaderError("the JSON nests too deep to read") from None
        yield budget.section(Section(body, row=i + 1 if isinstance(data, list) else None))
