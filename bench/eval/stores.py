"""Knowledge bases of the evaluation sets, built once and kept beside the sets
(``bench/eval/generated/kb-<set>-<digest>``) so tuning and evaluating do not re-embed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from kb.config import KnowledgeSettings
from kb.service import KnowledgeBase

SETS = Path(__file__).resolve().parent / "generated"


def load_set(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SETS / f"{name}.json").read_text())
    return data


def set_names() -> list[str]:
    return sorted(p.stem for p in SETS.glob("*.json"))


async def open_store(
    name: str,
    data: dict[str, Any],
    provider: Any,
    settings: KnowledgeSettings,
    root: Path = SETS,
    tag: str = "minilm",
    **kw: Any,
) -> tuple[KnowledgeBase, str, dict[str, str]]:
    """(knowledge base, store id, file id -> document id), built on first use."""
    digest = hashlib.sha1(
        json.dumps(data["docs"], sort_keys=True).encode(), usedforsecurity=False
    ).hexdigest()[:12]
    where = root / (f"kb-{name}-{digest}" if tag == "minilm" else f"kb-{name}-{tag}-{digest}")
    done = where / "done.json"
    cached = settings.backend == "sqlite"  # postgres: a fresh database each run
    if cached and done.exists():
        meta = json.loads(done.read_text())
        kb = KnowledgeBase.open_backend(where, provider, settings, **kw)
        # A store kept from an older release: finish its migrations' background work
        # (the stemmed keyword index) before it is measured.
        await asyncio.to_thread(kb.backend.startup)
        await asyncio.to_thread(kb.backend.wait_maintenance)
        return kb, meta["store"], meta["files"]
    if cached:
        shutil.rmtree(where, ignore_errors=True)
    kb = KnowledgeBase.open_backend(where, provider, settings, **kw)
    cid = (await kb.create_store(name, "minilm")).id
    files: dict[str, str] = {}
    for doc_id, text in data["docs"].items():
        row = await kb.add_text(cid, text, title=f"{doc_id}.txt")
        files[row.file_id] = doc_id
    if cached:
        done.write_text(json.dumps({"store": cid, "files": files}))
    return kb, cid, files
