"""Structured logging: JSON lines with the record's extras and the request id, set up
through Litestar's logging config so the app and the CLI log alike."""

from __future__ import annotations

import json
import logging
import logging.config
from typing import Any

from litestar.logging.config import LoggingConfig

from core.context import request_id

__all__ = [
    "JsonFormatter",
    "RequestIdFilter",
    "configure_logging",
    "logging_config",
    "request_id",
]

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            rid = request_id.get()
            if rid is not None:
                record.request_id = rid
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                out[key] = (
                    value
                    if isinstance(value, int | float | str | bool | type(None))
                    else str(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _dict_config(level: str, json_lines: bool) -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json" if json_lines else "plain",
                "filters": ["request_id"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # Litestar's own logger goes through the same handler (via the root).
            "litestar": {"level": level.upper(), "handlers": [], "propagate": True},
            # One line per request comes from our access log, not the HTTP client's.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def logging_config(level: str = "INFO", json_lines: bool = True) -> LoggingConfig:
    """Litestar's logging config for our handler and formatter (Litestar would otherwise
    replace the root handlers with its own plain-text ones)."""
    cfg = _dict_config(level, json_lines)
    return LoggingConfig(
        filters=cfg["filters"],
        formatters=cfg["formatters"],
        handlers=cfg["handlers"],
        root=cfg["root"],
        loggers=cfg["loggers"],
        log_exceptions="never",  # the error renderer logs unexpected errors itself
    )


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """The same configuration outside the app (CLI commands)."""
    logging.config.dictConfig(_dict_config(level, json_lines))
