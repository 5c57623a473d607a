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

from engines.errors import APIError

__all__ = ["register"]


@contextlib.asynccontextmanager
async def open_kb(config: str | None, *, need_models: bool = True) -> AsyncIterator[Any]:
    from gateway.services.knowledge import local_knowledge_base
    from gateway.settings import load_settings

    settings = load_settings(config)
    # Only what the KB needs: embedding and rerank models, never the chat engines.
    settings = settings.model_copy(
        update={"models": [m for m in settings.models if m.kind in ("embedding", "rerank")]}
    )
    async with local_knowledge_base(settings, load_models=need_models) as (kb, _):
        yield kb


def _attrs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--attr wants key=value, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _strategy(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.chunk_size is None:
        return None
    return {
        "type": "static",
        "static": {
            "max_chunk_size_tokens": args.chunk_size,
            "chunk_overlap_tokens": args.overlap if args.overlap is not None else 0,
        },
    }


def _expand(paths: list[str], kb: Any) -> list[Path]:
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


async def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    async with open_kb(args.config) as kb:
        col = kb.collection_by_name(args.store)
        cid = col["id"]
        files = _expand(args.paths, kb)
        known = {
            (kb.store.file(r["file_id"]) or {}).get("sha256"): r
            for r in kb.store.store_files(cid, status="completed")
        }
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
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest in known:
                    bar.write(f"unchanged, skipped: {path}")
                    bar.update(1)
                    continue
                row = kb.add_file_path(path)
                kb.attach(
                    cid,
                    row["id"],
                    attributes={"path": str(path), **attrs},
                    chunking_strategy=_strategy(args),
                )
                chunk_bar.reset()
                done = await kb.wait_file(cid, row["id"], timeout=24 * 3600)
                known[digest] = done
                if done["status"] != "completed":
                    failed += 1
                    err = done.get("last_error") or {}
                    bar.write(f"failed: {path}: {err.get('message')}")
                bar.update(1)
            chunk_bar.close()
        print(f"{len(files) - failed} file(s) in {col['name'] or cid}; {failed} failed")
        return 1 if failed else 0


async def _ingest_url(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        cid = kb.collection_by_name(args.store)["id"]
        await kb.start()
        row = await kb.ingest_url(cid, args.url, attributes=_attrs(args.attr))
        done = await kb.wait_file(cid, row["file_id"])
        print(json.dumps({k: done[k] for k in ("file_id", "status", "last_error")}))
        return 0 if done["status"] == "completed" else 1


async def _create(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        cid = kb.create_collection(args.name, args.model, chunking_strategy=_strategy(args))
        print(cid)
    return 0


async def _search(args: argparse.Namespace) -> int:
    async with open_kb(args.config) as kb:
        cid = kb.collection_by_name(args.store)["id"]
        outcome = await kb.search(
            cid, args.query, args.k, mode=args.mode, rerank=False if args.no_rerank else None
        )
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "chunk_id": r.chunk_id,
                            "file_id": r.file_id,
                            "filename": r.filename,
                            "score": round(r.score, 4),
                            "page": r.page,
                            "text": r.text,
                        }
                        for r in outcome.results
                    ],
                    ensure_ascii=False,
                )
            )
        else:
            for n, r in enumerate(outcome.results, start=1):
                where = f" p.{r.page}" if r.page else (f" {r.sheet}!{r.row}" if r.sheet else "")
                snippet = " ".join(r.text.split())[:160]
                print(
                    f"{n:>2}. {r.score:.3f} {r.filename}{where} [chunk {r.chunk_id}]\n    {snippet}"
                )
    return 0


async def _ls(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        if args.store is None:
            for c in kb.collections():
                counts = kb.store.file_counts(c["id"])
                print(
                    f"{c['id']}  {c['name'] or '-':<20} files={counts['total']:<5} "
                    f"chunks={kb.store.count(c['id']):<7} model={c['embedding_model']}"
                )
        else:
            cid = kb.collection_by_name(args.store)["id"]
            for r in kb.store.store_files(cid):
                f = kb.store.file(r["file_id"]) or {}
                print(f"{r['file_id']}  {r['status']:<11} {f.get('filename', '?')}")
    return 0


async def _rm(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        cid = kb.collection_by_name(args.store)["id"]
        if args.file_id:
            removed = await kb.detach(cid, args.file_id)
            print(f"removed {args.file_id} ({removed} chunks)")
        else:
            kb.delete_collection(cid)
            print(f"deleted {cid}")
    return 0


async def _rebuild(args: argparse.Namespace) -> int:
    async with open_kb(args.config, need_models=False) as kb:
        stores = [kb.collection_by_name(args.store)] if args.store else kb.collections()
        for c in stores:
            n = await asyncio.to_thread(kb.rebuild, c["id"])
            print(f"{c['id']}: {n} vectors ({kb.index(c['id']).kind})")
    return 0


async def _reembed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    async with open_kb(args.config) as kb:
        cid = kb.collection_by_name(args.store)["id"]
        job = kb.reembed(cid, args.model)
        with tqdm(total=job["total"], unit="chunk", desc="re-embed", disable=args.quiet) as bar:
            while True:
                job = kb.job(cid, job["id"])
                bar.total = job["total"]
                bar.n = job["progress"]
                bar.refresh()
                if job["status"] != "in_progress":
                    break
                await asyncio.sleep(0.2)
        print(f"{cid}: {job['status']}" + (f" ({job['error']})" if job["error"] else ""))
        return 0 if job["status"] == "completed" else 1


def _runner(fn: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from gateway.logging import configure_logging

        configure_logging("WARNING", False)
        try:
            return int(asyncio.run(fn(args)))
        except APIError as exc:
            print(f"rwkv-rag kb: {exc.message}", file=sys.stderr)
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

    p = cmd("search", "search a store", _search)
    p.add_argument("store")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
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

    p = cmd("rebuild", "rebuild FAISS indexes from SQLite", _rebuild)
    p.add_argument("store", nargs="?")
