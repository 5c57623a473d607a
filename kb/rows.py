"""Rows of the knowledge-base schema <-> read models, shared by the storage backends.

Both backends name their columns alike; JSON columns arrive as text (SQLite) or already
decoded (PostgreSQL jsonb), and both are accepted here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

from core.tenancy import ADMIN_PROJECT
from kb.chunking import ChunkingStrategy
from kb.types import (
    Attributes,
    Batch,
    ChunkView,
    Collection,
    Expiry,
    FileRecord,
    FileStatus,
    IngestOptions,
    Job,
    JobStatus,
    LastError,
    StoreFile,
)

__all__ = [
    "batch_from",
    "chunk_from",
    "collection_from",
    "dump_json",
    "file_from",
    "file_state_fields",
    "job_fields",
    "job_from",
    "json_object",
    "load_json",
    "options_json",
    "store_file_from",
    "strategy_from_json",
    "strategy_json",
]

Row = Mapping[str, object]


def load_json(value: object) -> object:
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes | bytearray):
        return json.loads(value)
    return value


def dump_json(value: object) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def json_object(value: object) -> dict[str, object]:
    loaded = load_json(value)
    return dict(loaded) if isinstance(loaded, dict) else {}


def _int(value: object) -> int:
    return int(cast(int, value)) if value is not None else 0


def _opt_int(value: object) -> int | None:
    return None if value is None else int(cast(int, value))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def strategy_json(s: ChunkingStrategy) -> dict[str, object]:
    return {
        "type": "static",
        "static": {
            "max_chunk_size_tokens": s.max_chunk_size_tokens,
            "chunk_overlap_tokens": s.chunk_overlap_tokens,
        },
    }


def strategy_from_json(value: object) -> ChunkingStrategy | None:
    spec = json_object(value)
    static = spec.get("static")
    if not isinstance(static, dict):
        return None
    return ChunkingStrategy(
        int(static.get("max_chunk_size_tokens", 800)),
        int(static.get("chunk_overlap_tokens", 400)),
    )


def collection_from(row: Row) -> Collection:
    expires = json_object(row.get("expires_after"))
    return Collection(
        id=str(row["id"]),
        name=_opt_str(row.get("name")),
        embedding_model=str(row["embedding_model"]),
        dimensions=_int(row["dimensions"]),
        metadata={str(k): str(v) for k, v in json_object(row.get("metadata")).items()},
        created_at=_int(row["created_at"]),
        expires_after=Expiry("last_active_at", int(cast(int, expires["days"])))
        if expires.get("days") is not None
        else None,
        last_active_at=_opt_int(row.get("last_active_at")),
        chunking_strategy=strategy_from_json(row.get("chunking_strategy")),
        project=_opt_str(row.get("project")) or ADMIN_PROJECT,
    )


def file_from(row: Row) -> FileRecord:
    return FileRecord(
        id=str(row["id"]),
        filename=str(row["filename"]),
        bytes=_int(row["bytes"]),
        purpose=str(row["purpose"]),
        sha256=str(row["sha256"]),
        created_at=_int(row["created_at"]),
        source_url=_opt_str(row.get("source_url")),
        project=_opt_str(row.get("project")) or ADMIN_PROJECT,
    )


def options_json(options: IngestOptions) -> dict[str, str]:
    raw = {
        "content_type": options.content_type,
        "password": options.password,
        "ocr_languages": options.ocr_languages,
        "fetch_url": options.fetch_url,
    }
    return {k: v for k, v in raw.items() if v is not None}


def store_file_from(row: Row) -> StoreFile:
    err = json_object(row.get("last_error"))
    opts = json_object(row.get("options"))
    warnings = load_json(row.get("warnings")) or []
    return StoreFile(
        collection_id=str(row["collection_id"]),
        file_id=str(row["file_id"]),
        status=cast(FileStatus, row["status"]),
        last_error=LastError(str(err["code"]), str(err["message"])) if err else None,
        attributes=cast(Attributes, json_object(row.get("attributes"))),
        chunking_strategy=strategy_from_json(row.get("chunking_strategy")) or ChunkingStrategy(),
        usage_bytes=_int(row.get("usage_bytes")),
        created_at=_int(row["created_at"]),
        updated_at=_int(row.get("updated_at") or row["created_at"]),
        batch_id=_opt_str(row.get("batch_id")),
        options=IngestOptions(
            content_type=_opt_str(opts.get("content_type")),
            password=_opt_str(opts.get("password")),
            ocr_languages=_opt_str(opts.get("ocr_languages")),
            fetch_url=_opt_str(opts.get("fetch_url")),
        ),
        attempts=_int(row.get("attempts")),
        filename=_opt_str(row.get("filename")),
        bytes=_opt_int(row.get("bytes")),
        chunk_count=_opt_int(row.get("chunk_count")),
        warnings=tuple(str(w) for w in cast(list[object], warnings)),
    )


def batch_from(row: Row) -> Batch:
    return Batch(
        id=str(row["id"]),
        collection_id=str(row["collection_id"]),
        status=cast(JobStatus, row["status"]),
        created_at=_int(row["created_at"]),
    )


def job_from(row: Row) -> Job:
    return Job(
        id=str(row["id"]),
        kind=str(row["kind"]),
        collection_id=str(row["collection_id"]),
        status=cast(JobStatus, row["status"]),
        params=json_object(row.get("params")),
        progress=_int(row.get("progress")),
        total=_int(row.get("total")),
        error=_opt_str(row.get("error")),
        created_at=_int(row["created_at"]),
        updated_at=_int(row.get("updated_at") or row["created_at"]),
    )


def chunk_from(row: Row) -> ChunkView:
    return ChunkView(
        id=_int(row["id"]),
        collection_id=str(row["collection_id"]),
        file_id=str(row["file_id"]),
        position=_int(row["position"]),
        text=str(row["text"]),
        token_count=_int(row["token_count"]),
        page=_opt_int(row.get("page")),
        sheet=_opt_str(row.get("sheet")),
        row=_opt_int(row.get("row")),
        heading=_opt_str(row.get("heading")),
    )


def file_state_fields(
    status: str,
    last_error: LastError | None,
    usage_bytes: int | None,
    warnings: list[str] | None,
) -> dict[str, object]:
    """The columns ``set_file_state`` writes (both backends); the lease is released."""
    import time

    fields: dict[str, object] = {
        "status": status,
        "last_error": dump_json({"code": last_error.code, "message": last_error.message})
        if last_error
        else None,
        "updated_at": int(time.time()),
        "lease_owner": None,
        "lease_until": None,
    }
    if usage_bytes is not None:
        fields["usage_bytes"] = usage_bytes
    if warnings is not None:
        fields["warnings"] = dump_json(warnings)
    return fields


def job_fields(
    status: str | None,
    progress: int | None,
    total: int | None,
    error: str | None,
    params: dict[str, object] | None,
) -> dict[str, object]:
    """The columns ``update_job`` writes (both backends): only those given."""
    import time

    fields: dict[str, object] = {"updated_at": int(time.time())}
    for key, value in (
        ("status", status),
        ("progress", progress),
        ("total", total),
        ("error", error),
    ):
        if value is not None:
            fields[key] = value
    if params is not None:
        fields["params"] = dump_json(params)
    return fields
