"""The SQLite storage backend: SQLite is the source of truth, FAISS indexes are derived."""

from kb.store.backend import SqliteBackend

__all__ = ["SqliteBackend"]
