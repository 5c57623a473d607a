"""A knowledge base made before projects existed opens with its stores and files in the
admin project, on both backends; scoping then applies to them like to any other row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import NotFoundError
from core.tenancy import ADMIN_PROJECT, LOCAL_ADMIN, Principal
from kb.service import KnowledgeBase
from kb.types import PageRequest
from tests.conftest import open_test_kb

pytestmark = pytest.mark.usefixtures("kb_backend")

# What the schema was before projects: the migration that adds them undone by hand.
_BEFORE_PROJECTS = {
    "sqlite": (
        6,
        [
            "DROP INDEX collections_project",
            "DROP INDEX files_project",
            "ALTER TABLE collections DROP COLUMN project",
            "ALTER TABLE files DROP COLUMN project",
        ],
    ),
    "postgres": (
        3,
        [
            "ALTER TABLE collections DROP COLUMN project",
            "ALTER TABLE files DROP COLUMN project",
        ],
    ),
}


class SizeOnly:
    """An embedding provider that only knows its size (nothing here is embedded)."""

    async def embed(self, model: str, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        raise AssertionError("nothing is embedded in these tests")

    def tokenizer(self, model: str) -> object:
        raise AssertionError("nothing is chunked in these tests")

    def dimensions(self, model: str) -> int:
        return 8

    def max_tokens(self, model: str) -> int:
        return 256


def _open(tmp_path: Path) -> KnowledgeBase:
    return open_test_kb(tmp_path, SizeOnly(), default_model="size-only")  # type: ignore[no-any-return]


async def test_rows_from_before_projects_belong_to_the_admin_project(
    tmp_path: Path, kb_backend: str
) -> None:
    old = _open(tmp_path)
    store = (await old.create_store("legacy")).id
    file_id = (await old.add_file_bytes(b"old bytes", "old.txt")).id
    number, undo = _BEFORE_PROJECTS[kb_backend]
    old.backend.execute_all(  # type: ignore[attr-defined]
        [*((sql, []) for sql in undo), ("DELETE FROM _migrations WHERE id = ?", [number])]
    )
    columns = {
        str(r["name"])
        for r in old.backend.rows(  # type: ignore[attr-defined]
            "SELECT name FROM pragma_table_info('collections')"
            if kb_backend == "sqlite"
            else "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_name = 'collections'"
        )
    }
    assert "project" not in columns
    old.close()

    kb = _open(tmp_path)
    try:
        col = await kb.collection(store)
        assert col.project == ADMIN_PROJECT
        assert (await kb.file(file_id)).project == ADMIN_PROJECT
        member = Principal(project=ADMIN_PROJECT, role="member")
        outsider = Principal(project="team-a", role="member")
        assert [c.id for c in await kb.all_stores(who=member)] == [store]
        assert [s.id for s in (await kb.stores(PageRequest(), who=member)).data] == [store]
        assert [f.id for f in (await kb.list_files(None, PageRequest(), who=member)).data] == [
            file_id
        ]
        assert await kb.all_stores(who=outsider) == []
        assert (await kb.list_files(None, PageRequest(), who=outsider)).data == []
        with pytest.raises(NotFoundError):
            await kb.collection("legacy", who=outsider)
        with pytest.raises(NotFoundError):
            await kb.file(file_id, who=outsider)
        # New rows go to the caller's project beside the migrated ones.
        made = await kb.create_store("fresh", who=outsider)
        assert made.collection.project == "team-a"
        assert {c.id for c in await kb.all_stores(who=LOCAL_ADMIN)} == {store, made.id}
    finally:
        kb.close()
