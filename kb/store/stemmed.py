"""The stemmed word index (``chunks_stem``, migration 5) filled for chunks stored before it
existed: a background thread copies them in, in id order, a batch per write transaction,
so ingestion waits at most one batch and searches (WAL readers) never wait. Until the
copy reaches the last of those chunks, keyword search reads the unstemmed index, which
holds every chunk."""

from __future__ import annotations

import logging
import threading

from kb.sql.rebuild import RebuildThread
from kb.store.db import Database

__all__ = ["StemmedIndexMixin"]

log = logging.getLogger("kb.store")

_NAME = "chunks_stem"


class StemmedIndexMixin(RebuildThread, Database):
    _stem_ready_flag = False

    def stemmed_index_ready(self) -> bool:
        """Whether ``chunks_stem`` holds every chunk (then it is the one searched)."""
        if not self._stem_ready_flag:
            row = self.one("SELECT upto, high FROM keyword_rebuild WHERE name = ?", [_NAME])
            self._stem_ready_flag = row is None or int(str(row["upto"])) >= int(str(row["high"]))
        return self._stem_ready_flag

    def stemmed_rebuild_step(self, batch: int) -> bool:
        """Copy the next ``batch`` chunks into the stemmed index; True when it is complete."""
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT upto, high FROM keyword_rebuild WHERE name = ?", (_NAME,)
            ).fetchone()
            if row is None or row[0] >= row[1]:
                return True
            upto, high = int(row[0]), int(row[1])
            last = conn.execute(
                "SELECT max(id) FROM (SELECT id FROM chunks WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?)",
                (upto, high, batch),
            ).fetchone()[0]
            new_upto = high if last is None else int(last)
            conn.execute(
                f"INSERT INTO {_NAME}(rowid, text) SELECT id, text FROM chunks "
                "WHERE id > ? AND id <= ?",
                (upto, new_upto),
            )
            conn.execute("UPDATE keyword_rebuild SET upto = ? WHERE name = ?", (new_upto, _NAME))
            return new_upto >= high

    def start_stemmed_rebuild(self, batch: int) -> None:
        """Start the background copy (a no-op when the index is complete or it runs)."""
        if self.stemmed_index_ready() or self.rebuild_running():
            return

        def run(stop: threading.Event) -> None:
            try:
                while not stop.is_set():
                    if self.stemmed_rebuild_step(batch):
                        self._stem_ready_flag = True
                        log.info("stemmed keyword index rebuilt")
                        return
            except Exception:  # a closed store or a full disk: the next start resumes
                log.exception("stemmed keyword index rebuild stopped")

        self.start_rebuild_thread(run)
