"""`rwkv-rag kb ...`: manage a local knowledge base without a running server.

The same settings file as `serve` (data_dir, models, knowledge); the embedding models are
loaded in-process. Ingestion shows progress bars (files, and chunks of the current file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from core.errors import APIError
from kb.chunking import ChunkingStrategy
from kb.retrieval import SearchQuery
from kb.service import KnowledgeBase
from kb.types import Attributes, PageRequest

__all__ = ["register"]


def _out(line: str) -> None:
    print(line)  # noqa: T201 - the command's own output


@contextlib.asynccontextmanager
async def open_kb(config: str | None, *, need_models: bool = True) -> AsyncIterator[KnowledgeBase]:
    from gateway.compose import local_context
    from gateway.settings import load_settings

    settings = load_settings(config)
    # Only what the KB needs: embedding and rerank models, never the chat engines.
    settings = settings.model_copy(
        update={
            "models": [m for m in settings.models if m.kind in ("embedding", "rerank")],
            "profiles": [],
        }
    )
    async with local_context(settings, load_models=need_models) as ctx:
        kb = ctx.kb
        yield kb


def _attrs(pairs: list[str]) -> Attributes:
    out: Attributes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--attr wants key=value, got {pair!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out[key] = parsed if isinstance(parsed, str | int | float | bool) else value
    return out


def _strategy(args: argparse.Namespace) -> ChunkingStrategy | None:
    if args.chunk_size is None:
        return None
    try:
        return ChunkingStrategy(args.chunk_size, args.overlap if args.overlap is not None else 0)
    except ValueError as exc:
        raise SystemExit(f"rwkv-rag kb: {exc}") from None


def _expand(paths: list[str], kb: KnowledgeBase) -> list[Path]:
    allowed = {e.lower() for e in kb.settings.allowed_extensions}
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(
                f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in allowed
            )
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    return out


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


async def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    async with open_kb(args.config) as kb:
        col = await kb.collection(args.store)
        files = _expand(args.paths, kb)
        known = await kb.completed_digests(col.id)
        attrs = _attrs(args.attr)
        failed = 0
        await kb.start()
        with tqdm(total=len(files), unit="file", desc="files", disable=args.quiet) as bar:
            chunk_bar = tqdm(unit="chunk", desc="chunks", leave=False, disable=args.quiet)

            def progress(_cid: str, _fid: str, done: int, total: int) -> None:
                chunk_bar.total = total
                chunk_bar.n = done
                chunk_bar.refresh()

            kb.progress = progress
            for path in files:
                digest = await asyncio.to_thread(_digest, path)
                if digest in known:
                    bar.write(f"unchanged, skipped: {path}")
                    bar.update(1)
                    continue
                record = await kb.add_file_path(path)
                await kb.attach(
                    col.id,
                    record.id,
                    attributes={"path": str(path)[:512], **attrs},
                    chunking_strategy=_strategy(args),
                )
                chunk_bar.reset()
                done = await kb.wait_file(col.id, record.id, timeout=24 * 3600)
                known.add(digest)
                if done.status != "completed":
                    failed += 1
                    reason = done.last_error.message if done.last_error else done.status
                    bar.write(f"failed: {path}: {reason}")
                bar.update(1)
            chunk_bar.close()
        _out(f"{len(files) - failed} file(s) in {col.name or col.id}; {failed} failed")
        return 1 if failed else 0


async def _ingest_url(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        col = await kb.collection(args.store)
        await kb.start()
        sf = await kb.ingest_url(col.id, args.url, attributes=_attrs(args.attr))
        done = await kb.wait_file(col.id, sf.file_id)
        err = (
            {"code": done.last_error.code, "message": done.last_error.message}
            if done.last_error
            else None
        )
        _out(json.dumps({"file_id": done.file_id, "status": done.status, "last_error": err}))
        return 0 if done.status == "completed" else 1


async def _create(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        view = await kb.create_store(args.name, args.model, chunking_strategy=_strategy(args))
        _out(view.id)
    return 0


async def _search(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        query = SearchQuery(
            (args.query,), args.k, mode=args.mode, rerank=False if args.no_rerank else None
        )
        outcome = await kb.search(args.store, query)
        if args.json:
            _out(
                json.dumps(
                    [
                        {
                            "chunk_id": h.chunk_id,
                            "file_id": h.file_id,
                            "filename": h.filename,
                            "score": round(h.score, 4),
                            "page": h.page,
                            "text": h.text,
                        }
                        for h in outcome.hits
                    ],
                    ensure_ascii=False,
                )
            )
            return 0
        for n, h in enumerate(outcome.hits, start=1):
            where = f" p.{h.page}" if h.page else (f" {h.sheet}!{h.row}" if h.sheet else "")
            snippet = " ".join(h.text.split())[:160]
            _out(f"{n:>2}. {h.score:.3f} {h.filename}{where} [chunk {h.chunk_id}]\n    {snippet}")
    return 0


async def _ls(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        if args.store is None:
            for col in await kb.all_stores():
                view = await kb.view(col)
                _out(
                    f"{col.id}  {col.name or '-':<20} files={view.stats.file_counts.total:<5} "
                    f"chunks={view.stats.chunk_count:<7} model={col.embedding_model}"
                )
            return 0
        page = await kb.store_files(args.store, PageRequest(limit=1_000_000, order="asc"))
        for sf in page.data:
            _out(f"{sf.file_id}  {sf.status:<11} {sf.filename or '?'}")
    return 0


async def _rm(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        if args.file_id:
            removed = await kb.detach(args.store, args.file_id)
            _out(f"removed {args.file_id} ({removed} chunks)")
        else:
            _out(f"deleted {await kb.delete_store(args.store)}")
    return 0


async def _rebuild(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        refs = [args.store] if args.store else [c.id for c in await kb.all_stores()]
        for ref in refs:
            n, kind = await kb.rebuild(ref)
            _out(f"{(await kb.collection(ref)).id}: {n} vectors ({kind})")
    return 0


async def _reembed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    async with open_kb(args.config) as kb:
        col = await kb.collection(args.store)
        job = await kb.reembed(col.id, args.model)
        with tqdm(total=job.total, unit="chunk", desc="re-embed", disable=args.quiet) as bar:
            while True:
                job = await kb.job(col.id, job.id)
                bar.total, bar.n = job.total, job.progress
                bar.refresh()
                if job.status != "in_progress":
                    break
                await asyncio.sleep(0.2)
        _out(f"{col.id}: {job.status}" + (f" ({job.error})" if job.error else ""))
        return 0 if job.status == "completed" else 1


async def _web_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    async with open_kb(args.config) as kb:
        col = await kb.collection(args.store)
        await kb.start()
        job = await kb.web_search(
            col.id, args.query, max_results=args.max_results, attributes=_attrs(args.attr)
        )
        with tqdm(total=job.total, unit="page", desc="web search", disable=args.quiet) as bar:
            while True:
                job = await kb.job(col.id, job.id)
                bar.total, bar.n = job.total, job.progress
                bar.refresh()
                if job.status != "in_progress":
                    break
                await asyncio.sleep(0.2)
        await kb.drain()
        p = job.params
        _out(
            json.dumps(
                {
                    "job": job.id,
                    "status": job.status,
                    "files": p.get("files"),
                    "failed": p.get("failed"),
                }
            )
        )
        return 0 if job.status == "completed" else 1


async def _migrate(args: argparse.Namespace) -> int:
    """Copy the configured SQLite knowledge base into PostgreSQL (resumable)."""
    from tqdm import tqdm

    from gateway.settings import load_settings
    from kb.pg import redact_dsn
    from kb.pg.migrate import migrate_sqlite

    settings = load_settings(args.config)
    source = settings.data_dir / "kb"
    if not (source / "kb.sqlite").exists():
        print(f"rwkv-rag kb migrate: no SQLite knowledge base at {source}", file=sys.stderr)  # noqa: T201
        return 2
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="row", disable=args.quiet)
        bar.total = total
        bar.n = done
        bar.refresh()

    report = await asyncio.to_thread(migrate_sqlite, source, args.dsn, settings.knowledge, progress)
    for bar in bars.values():
        bar.close()
    for table, (a, b) in report.counts.items():
        _out(f"{table:<20} sqlite {a:>9}  postgres {b:>9}{'' if a == b else '  MISMATCH'}")
    if not report.ok:
        print("rwkv-rag kb migrate: counts differ; run it again to resume", file=sys.stderr)  # noqa: T201
        return 1
    _out(
        f"migrated to {redact_dsn(args.dsn)}; serve with knowledge.backend: postgres "
        "and knowledge.postgres.dsn set to it"
    )
    return 0


def _runner(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from gateway.logging import configure_logging

        configure_logging("WARNING", False)
        try:
            return int(asyncio.run(fn(args)))
        except APIError as exc:
            print(f"rwkv-rag kb: {exc.message}", file=sys.stderr)  # noqa: T201
            return 2

    return run


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    kb = sub.add_parser("kb", help="manage the knowledge base locally (no server needed)")
    cmds = kb.add_subparsers(dest="kb_command", required=True)

    def cmd(name: str, help_: str, fn: Callable[[argparse.Namespace], Any]) -> Any:
        p = cmds.add_parser(name, help=help_)
        add_config(p)
        p.set_defaults(func=_runner(fn))
        return p

    def chunking(p: argparse.ArgumentParser) -> None:
        p.add_argument("--chunk-size", type=int, help="max tokens per chunk (100-4096)")
        p.add_argument("--overlap", type=int, help="overlap tokens (<= half the chunk size)")

    p = cmd("create", "create a vector store; prints its id", _create)
    p.add_argument("name")
    p.add_argument("--model", help="embedding model (default: knowledge.embedding_model)")
    chunking(p)

    p = cmd("ingest", "ingest files or directories into a store", _ingest)
    p.add_argument("store", help="store id or name")
    p.add_argument("paths", nargs="+")
    p.add_argument("--attr", action="append", default=[], help="attribute key=value")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    chunking(p)

    p = cmd("ingest-url", "fetch a web page into a store", _ingest_url)
    p.add_argument("store")
    p.add_argument("url")
    p.add_argument("--attr", action="append", default=[])

    p = cmd("web-search", "search the web and ingest the results into a store", _web_search)
    p.add_argument("store")
    p.add_argument("query")
    p.add_argument("--max-results", type=int, default=None)
    p.add_argument("--attr", action="append", default=[])
    p.add_argument("--quiet", action="store_true")

    p = cmd("search", "search a store", _search)
    p.add_argument("store")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", choices=["hybrid", "dense", "keyword", "sparse"], default="hybrid")
    p.add_argument("--no-rerank", action="store_true")
    p.add_argument("--json", action="store_true")

    p = cmd("ls", "list stores, or the files of one store", _ls)
    p.add_argument("store", nargs="?")

    p = cmd("rm", "delete a store, or one file from it", _rm)
    p.add_argument("store")
    p.add_argument("file_id", nargs="?")

    p = cmd("reembed", "re-embed a store with another embedding model (resumable)", _reembed)
    p.add_argument("store")
    p.add_argument("model")
    p.add_argument("--quiet", action="store_true")

    p = cmd("migrate", "copy this SQLite knowledge base into PostgreSQL (resumable)", _migrate)
    p.add_argument("--to", choices=["postgres"], required=True, help="the target backend")
    p.add_argument("dsn", help="postgresql://user:pass@host/db (pgvector installed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = cmd("rebuild", "rebuild the vector indexes from the stored vectors", _rebuild)
    p.add_argument("store", nargs="?")
