"""Projects never see each other's data, whatever the order of operations: random
sequences of creations, reads, lists and deletes by two members and an admin (seeded),
checked against a model of who owns what."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import NotFoundError
from core.tenancy import LOCAL_ADMIN, Principal
from kb.types import PageRequest
from tests.conftest import open_test_kb
from tests.kb.test_projects_migration import SizeOnly

WHO = {
    "a": Principal(project="team-a", role="member"),
    "b": Principal(project="team-b", role="member"),
    "admin": LOCAL_ADMIN,
}
OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "admin"]),
        st.sampled_from(["store", "file", "get", "delete", "list"]),
        st.integers(0, 20),  # which object a read or delete aims at (any project's)
    ),
    max_size=25,
)


async def _play(ops: list[tuple[str, str, int]], directory: Path) -> None:
    kb = open_test_kb(directory, SizeOnly(), default_model="size-only")
    owned: dict[str, tuple[str, str]] = {}  # id -> (kind, project)
    order: list[str] = []
    try:
        for actor, op, aim in ops:
            who = WHO[actor]
            if op == "store":
                view = await kb.create_store(f"s{len(order)}", who=who)
                owned[view.id] = ("store", who.project)
                order.append(view.id)
            elif op == "file":
                rec = await kb.add_file_bytes(b"x", "f.txt", who=who)
                owned[rec.id] = ("file", who.project)
                order.append(rec.id)
            elif op == "list":
                page = PageRequest(limit=100)
                stores = {s.id for s in (await kb.stores(page, who=who)).data}
                files = {f.id for f in (await kb.list_files(None, page, who=who)).data}
                for oid, (kind, project) in owned.items():
                    seen = oid in (stores if kind == "store" else files)
                    assert seen == who.sees(project), (actor, oid, project)
                assert stores | files <= set(owned)
            elif order:
                oid = order[aim % len(order)]
                kind, project = owned.get(oid, ("gone", ""))
                if op == "delete":
                    act = kb.delete_store if kind == "store" else kb.delete_file
                else:
                    act = kb.store if kind == "store" else kb.file
                reach = act(oid, who=who)
                if kind == "gone" or not who.sees(project):
                    with pytest.raises(NotFoundError):
                        await reach
                    if kind != "gone":  # still there for its owner
                        get = kb.store if kind == "store" else kb.file
                        await get(oid, who=Principal(project=project, role="member"))
                else:
                    await reach
                    if op == "delete":
                        owned.pop(oid)
    finally:
        kb.close()


@settings(max_examples=40, derandomize=True, deadline=None)
@given(OPS)
def test_no_sequence_of_operations_lets_a_project_reach_anothers_data(
    ops: list[tuple[str, str, int]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_play(ops, Path(tmp)))
