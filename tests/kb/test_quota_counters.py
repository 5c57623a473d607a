"""The quota counters table on both backends: concurrent increments are atomic (every
adder sees its own total, none is lost), windows and projects are counted apart, and old
windows are pruned."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.compose import compose
from kb.quotas import quota_counters
from kb.sql.quotas import SqlQuotaCounters
from tests.conftest import fake_settings

pytestmark = pytest.mark.usefixtures("kb_backend")


@pytest.fixture
def counters(tmp_path: Path) -> Iterator[SqlQuotaCounters]:
    ctx = compose(fake_settings(data_dir=str(tmp_path)))
    found = quota_counters(ctx.kb)
    assert found is not None
    yield found
    ctx.kb.close()
    ctx.responses.store.close()


def test_concurrent_increments_are_atomic_and_none_is_lost(counters: SqlQuotaCounters) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        totals = list(pool.map(lambda _: counters.add("team-a", "requests", 600, 1), range(200)))
    assert sorted(totals) == list(range(1, 201))
    assert counters.get("team-a", "requests", 600) == 200


def test_projects_kinds_and_windows_are_counted_apart_and_old_windows_pruned(
    counters: SqlQuotaCounters,
) -> None:
    assert counters.add("team-a", "tokens", 600, 40) == 40
    assert counters.add("team-a", "tokens", 600, 2) == 42
    assert counters.add("team-b", "tokens", 600, 5) == 5
    assert counters.add("team-a", "requests", 600, 1) == 1
    assert counters.add("team-a", "tokens", 660, 7) == 7
    assert counters.get("team-a", "tokens", 600) == 42
    assert counters.get("team-c", "tokens", 600) == 0
    assert counters.prune(before=660) == 3
    assert counters.get("team-a", "tokens", 600) == 0
    assert counters.get("team-a", "tokens", 660) == 7
