"""The stemmed word column (``stem_tsv``, migration 2) filled for chunks stored before it
existed: one replica (an advisory lock) updates them in id order, a batch per statement,
then builds the GIN index concurrently and marks the rebuild done. Searches read ``tsv``
until then, so they never wait for the rebuild and never miss a chunk."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kb.sql.rebuild import RebuildThread

__all__ = ["StemmedIndexMixin"]

log = logging.getLogger("kb.pg")

_NAME = "stem_tsv"
_LOCK = "SELECT pg_try_advisory_lock(hashtext('rwkv-rag-kb-stem')) AS got"
_UNLOCK = "SELECT pg_advisory_unlock(hashtext('rwkv-rag-kb-stem'))"
# How long a replica trusts "not done yet" before asking again (another replica may be
# the one rebuilding).
_RECHECK_S = 5.0


class StemmedIndexMixin(RebuildThread):
    pool: Any
    _timeout: float
    _stem_ready_flag = False
    _stem_checked = 0.0
    _stem_cursor = 0

    def stemmed_index_ready(self, conn: Any) -> bool:
        """Whether ``stem_tsv`` is filled and indexed (then it is the one searched)."""
        if self._stem_ready_flag:
            return True
        now = time.monotonic()
        if now - self._stem_checked < _RECHECK_S and self._stem_checked:
            return False
        row = conn.execute("SELECT done FROM keyword_rebuild WHERE name = %s", (_NAME,)).fetchone()
        self._stem_checked = now
        self._stem_ready_flag = row is None or bool(row["done"])
        return self._stem_ready_flag

    def stemmed_rebuild_step(self, batch: int) -> bool:
        """Fill the next ``batch`` rows (then, with none left, build the index and mark it
        done); True when the rebuild is complete. The caller holds no lock: a replica
        that loses the race to another replica's step only repeats idempotent work."""
        with self.pool.connection(timeout=self._timeout) as conn:
            row = conn.execute(
                "SELECT done FROM keyword_rebuild WHERE name = %s", (_NAME,)
            ).fetchone()
            if row is None or row["done"]:
                self._stem_ready_flag = True
                return True
            ids = conn.execute(
                "UPDATE chunks SET stem_tsv = to_tsvector('kb_stem', text), "
                "stem_tsv_len = tsv_len WHERE id IN (SELECT id FROM chunks WHERE id > %s "
                "AND stem_tsv IS NULL ORDER BY id LIMIT %s) RETURNING id",
                (self._stem_cursor, batch),
            ).fetchall()
            if ids:
                self._stem_cursor = max(int(r["id"]) for r in ids)
                return False
            # Building over a large table takes a while: no statement timeout for it.
            conn.execute("SET statement_timeout = 0")
            try:
                conn.execute(
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS chunks_stem_tsv "
                    "ON chunks USING gin(stem_tsv)"
                )
            finally:
                conn.execute("RESET statement_timeout")
            conn.execute("UPDATE keyword_rebuild SET done = true WHERE name = %s", (_NAME,))
            self._stem_ready_flag = True
            return True

    def start_stemmed_rebuild(self, batch: int) -> None:
        """Start the background rebuild on this replica unless it is done, already
        running here, or another replica holds the rebuild lock."""
        if self._stem_ready_flag or self.rebuild_running():
            return

        def run(stop: threading.Event) -> None:
            try:
                with self.pool.connection(timeout=self._timeout) as lock_conn:
                    if not lock_conn.execute(_LOCK).fetchone()["got"]:
                        return
                    try:
                        while not stop.is_set():
                            if self.stemmed_rebuild_step(batch):
                                log.info("stemmed keyword index rebuilt")
                                return
                    finally:
                        lock_conn.execute(_UNLOCK)
            except Exception:  # the database went away: the next start resumes
                log.exception("stemmed keyword index rebuild stopped")

        self.start_rebuild_thread(run)
