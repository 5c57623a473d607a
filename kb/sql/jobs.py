"""Store jobs (re-embedding, web-search ingestion): the statements both backends run alike."""

from __future__ import annotations

from kb.rows import dump_json, job_fields, job_from
from kb.sql.port import SqlPort
from kb.types import Job, JobStatus

__all__ = ["SqlJobs"]


class SqlJobs(SqlPort):
    def add_job(self, job: Job) -> None:
        self.execute(
            "INSERT INTO jobs (id, kind, collection_id, status, params, progress, total, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                job.id,
                job.kind,
                job.collection_id,
                job.status,
                dump_json(job.params),
                job.progress,
                job.total,
                job.created_at,
                job.updated_at,
            ],
        )

    def job(self, job_id: str) -> Job | None:
        row = self.one("SELECT * FROM jobs WHERE id = ?", [job_id])
        return job_from(row) if row else None

    def jobs(self, status: JobStatus | None = None, collection_id: str | None = None) -> list[Job]:
        conds, args = ["1 = 1"], list[object]()
        if status:
            conds.append("status = ?")
            args.append(status)
        if collection_id:
            conds.append("collection_id = ?")
            args.append(collection_id)
        return [
            job_from(r)
            for r in self.rows(
                f"SELECT * FROM jobs WHERE {' AND '.join(conds)} ORDER BY {self.dialect.tie}",
                args,
            )
        ]

    def update_job(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        total: int | None = None,
        error: str | None = None,
        params: dict[str, object] | None = None,
    ) -> None:
        fields = job_fields(status, progress, total, error, params)
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.execute(f"UPDATE jobs SET {sets} WHERE id = ?", [*fields.values(), job_id])
