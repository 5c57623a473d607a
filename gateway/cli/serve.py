"""`rwkv-rag serve` and `rwkv-rag make-tiny-models`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["register"]

log = logging.getLogger("gateway.cli")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.logging import configure_logging
    from gateway.settings import load_settings

    settings = load_settings(args.config, host=args.host, port=args.port, role=args.role)
    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    log.info(
        "serving (%s role) on %s:%s, data in %s",
        settings.role,
        settings.host,
        settings.port,
        settings.data_dir,
        extra={
            "role": settings.role,
            "host": settings.host,
            "port": settings.port,
            "data_dir": str(settings.data_dir),
        },
    )
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


def _make_tiny(args: argparse.Namespace) -> int:
    from engines.tiny import make_tiny_models

    written = make_tiny_models(Path(args.dir), seed=args.seed)
    for name, path in written.items():
        print(f"{name}: {path}")  # noqa: T201 - the command's own output
    return 0


def register(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    serve = sub.add_parser("serve", help="run the HTTP gateway")
    add_config(serve)
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument(
        "--role",
        choices=["all", "engine"],
        help="all: the whole gateway (default); engine: the model APIs only (a worker)",
    )
    serve.set_defaults(func=_serve)

    tiny = sub.add_parser(
        "make-tiny-models", help="write tiny random checkpoints in the real formats (tests, demo)"
    )
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_make_tiny)
