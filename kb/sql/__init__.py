"""What the SQLite and PostgreSQL backends share: the statements of every section that
reads and writes alike (collections, files and store files, batches, jobs, chunk reads,
paging), written once with ``?`` placeholders over a small port each backend provides
(``SqlPort``), and the dialect object naming what the two engines spell differently."""

from kb.sql.chunks import SqlChunks, content_hash
from kb.sql.collections import SqlCollections
from kb.sql.dialect import POSTGRES, SQLITE, Dialect
from kb.sql.files import SqlFiles
from kb.sql.jobs import SqlJobs
from kb.sql.port import Row, SqlArgs, SqlPort

__all__ = [
    "POSTGRES",
    "SQLITE",
    "Dialect",
    "Row",
    "SqlArgs",
    "SqlChunks",
    "SqlCollections",
    "SqlFiles",
    "SqlJobs",
    "SqlPort",
    "content_hash",
]
