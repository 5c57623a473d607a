"""The `rwkv-rag` command: serve, make-tiny-models, kb (the knowledge base without a
server), mcp (the knowledge tools over stdio) and models (fetch and list models)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

__all__ = ["add_config", "build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=os.environ.get("RWKV_RAG_CONFIG"),
        help="YAML settings file (env RWKV_RAG_CONFIG); env RWKV_RAG_* overrides it.",
    )


def build_parser() -> argparse.ArgumentParser:
    from gateway.cli import kb, mcp, models, serve

    parser = argparse.ArgumentParser(
        prog="rwkv-rag", description="OpenAI-compatible gateway for RWKV, BGE and a RAG KB."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (serve, kb, mcp, models):
        module.register(sub, add_config)
    return parser


def settings_error(exc: ValidationError) -> str:
    """A settings error in words: each bad field with what is wrong with it."""
    lines = [
        f"  {'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
        for err in exc.errors()
    ]
    return "rwkv-rag: invalid settings:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except FileNotFoundError as exc:
        print(f"rwkv-rag: {exc}", file=sys.stderr)  # noqa: T201 - the command's own output
        return 2
    except ValidationError as exc:
        print(settings_error(exc), file=sys.stderr)  # noqa: T201
        return 2
