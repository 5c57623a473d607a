"""Collections (vector stores): the statements both backends run alike."""

from __future__ import annotations

from kb.rows import collection_from, dump_json, strategy_json
from kb.sql.paging import paged
from kb.sql.port import SqlPort, to_int
from kb.types import Collection, FileCounts, Page, PageRequest, StoreStats

__all__ = ["SqlCollections", "in_project"]

# The columns ``update_collection`` may write, and those of them holding JSON.
_UPDATABLE = {"name", "metadata", "expires_after", "last_active_at", "chunking_strategy"}
_JSON_COLUMNS = {"metadata", "expires_after", "chunking_strategy"}


def in_project(project: str | None) -> tuple[str, list[object]]:
    """The condition limiting rows to ``project`` (None: every project)."""
    return ("project = ?", [project]) if project is not None else ("1 = 1", [])


class SqlCollections(SqlPort):
    def create_collection(self, c: Collection) -> None:
        self.execute(
            "INSERT INTO collections (id, name, embedding_model, dimensions, metadata, "
            "created_at, expires_after, last_active_at, chunking_strategy, project) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                c.id,
                c.name,
                c.embedding_model,
                c.dimensions,
                dump_json(c.metadata),
                c.created_at,
                dump_json({"anchor": c.expires_after.anchor, "days": c.expires_after.days})
                if c.expires_after
                else None,
                c.last_active_at,
                dump_json(strategy_json(c.chunking_strategy)) if c.chunking_strategy else None,
                c.project,
            ],
        )

    def collection(self, cid: str) -> Collection | None:
        row = self.one("SELECT * FROM collections WHERE id = ?", [cid])
        return collection_from(row) if row else None

    def collections_named(self, name: str, project: str | None = None) -> list[Collection]:
        where, args = in_project(project)
        return [
            collection_from(r)
            for r in self.rows(
                f"SELECT * FROM collections WHERE name = ? AND {where} "
                f"ORDER BY created_at, {self.dialect.tie}",
                [name, *args],
            )
        ]

    def all_collections(self) -> list[Collection]:
        return [
            collection_from(r)
            for r in self.rows(f"SELECT * FROM collections ORDER BY created_at, {self.dialect.tie}")
        ]

    def list_collections(self, page: PageRequest, project: str | None = None) -> Page[Collection]:
        where, args = in_project(project)
        return paged(self, "collections", "id", where, args, page, collection_from)

    def update_collection(self, cid: str, fields: dict[str, object]) -> None:
        if not fields:
            return
        if not set(fields) <= _UPDATABLE:
            raise ValueError(f"unknown collection fields: {sorted(set(fields) - _UPDATABLE)}")
        encoded = {k: (dump_json(v) if k in _JSON_COLUMNS else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in encoded)
        self.execute(f"UPDATE collections SET {sets} WHERE id = ?", [*encoded.values(), cid])

    def delete_collection(self, cid: str) -> None:
        # Explicit deletes rather than cascades: one pass over each table, in one transaction.
        self.execute_all(
            [
                ("DELETE FROM chunk_sparse WHERE collection_id = ?", [cid]),
                ("DELETE FROM chunk_refs WHERE collection_id = ?", [cid]),
                ("DELETE FROM chunks WHERE collection_id = ?", [cid]),
                ("DELETE FROM collections WHERE id = ?", [cid]),
            ]
        )

    def file_counts(self, cid: str, batch_id: str | None = None) -> FileCounts:
        sql = "SELECT status, count(*) AS n FROM vector_store_files WHERE collection_id = ?"
        args: list[object] = [cid]
        if batch_id:
            sql += " AND batch_id = ?"
            args.append(batch_id)
        counts = {
            str(r["status"]): to_int(r["n"]) for r in self.rows(sql + " GROUP BY status", args)
        }
        return FileCounts(**{k: counts.get(k, 0) for k in FileCounts.__dataclass_fields__})

    def stats(self, cid: str) -> StoreStats:
        usage = self.integer(
            "SELECT coalesce(sum(usage_bytes), 0) FROM vector_store_files WHERE collection_id = ?",
            [cid],
        )
        chunks = self.integer("SELECT count(*) FROM chunks WHERE collection_id = ?", [cid])
        return StoreStats(self.file_counts(cid), usage, chunks)
