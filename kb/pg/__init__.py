"""The PostgreSQL + pgvector storage backend, shared by several gateway replicas."""

from kb.pg.backend import PostgresBackend, redact_dsn

__all__ = ["PostgresBackend", "redact_dsn"]
