"""Real English text for benchmarks without downloads: paragraphs of the docstrings of the
Python standard library and the installed packages (cached in .data/bench-corpus.json)."""

from __future__ import annotations

import ast
import json
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".data" / "bench-corpus.json"


def paragraphs(n: int) -> list[str]:
    """``n`` distinct paragraphs (80-1200 characters), deterministic."""
    if CACHE.exists():
        cached: list[str] = json.loads(CACHE.read_text())
        if len(cached) >= n:
            return cached[:n]
    out: list[str] = []
    seen: set[str] = set()
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(errors="ignore"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for para in doc.split("\n\n"):
                    text = " ".join(para.split())
                    if 80 <= len(text) <= 1200 and text not in seen and ">>>" not in text:
                        seen.add(text)
                        out.append(text)
            if len(out) >= n:
                break
        if len(out) >= n:
            break
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    CACHE.write_text(json.dumps(out))
    return out[:n]
