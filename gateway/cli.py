"""The `rwkv-rag` command: serve, make-tiny-models (and, from later layers, kb and mcp)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("gateway.cli")

_Command = Callable[[argparse.Namespace], int]


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("RWKV_RAG_CONFIG"),
        help="YAML settings file (env RWKV_RAG_CONFIG); env RWKV_RAG_* overrides it.",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.logging import configure_logging
    from gateway.settings import load_settings

    settings = load_settings(args.config, host=args.host, port=args.port)
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    log.info("serving", extra={"host": settings.host, "port": settings.port})
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    return 0


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from engines.tiny import make_tiny_models

    written = make_tiny_models(Path(args.dir), seed=args.seed)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rwkv-rag", description="OpenAI-compatible gateway for RWKV, BGE and a RAG KB."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP gateway")
    _add_config(serve)
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.set_defaults(func=_cmd_serve)

    tiny = sub.add_parser(
        "make-tiny-models", help="write tiny random checkpoints in the real formats (tests, demo)"
    )
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_make_tiny)

    for register in _extra_commands():
        register(sub, _add_config)
    return parser


def _extra_commands() -> list[Callable[..., None]]:
    from kb.cli import register as register_kb
    from mcp_server.cli import register as register_mcp

    return [register_kb, register_mcp]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: _Command = args.func
    try:
        return func(args)
    except FileNotFoundError as exc:
        print(f"rwkv-rag: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
