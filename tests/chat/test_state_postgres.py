"""RWKV states in PostgreSQL (``state_store: postgres``): a second replica over the same
database continues a conversation from the state the first one saved, with the same text as
re-reading it; a damaged row is refused by its checksum and re-read; a budget evicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.settings import Settings
from tests.chat.conftest import chat_models
from tests.chat.test_state_tiers import NO_CACHE, TURN_1, _chat, _chat_and_metrics, _metric, _turn_2
from tests.conftest import new_database


def _replica(tiny: Path, data: Path, dsn: str, model: str, **options: Any) -> Settings:
    """One replica: its own data directory, the shared database for knowledge and states."""
    (entry,) = [m for m in chat_models(tiny, **options) if m["id"] == model]
    entry = {**entry, "id": "m", "options": {**entry["options"], "state_store": "postgres"}}
    return Settings(
        models=[entry],
        load_in_background=False,
        log_json=False,
        data_dir=data,
        knowledge={"backend": "postgres", "postgres": {"dsn": dsn}},
    )


def _rows(dsn: str) -> list[tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT key, bytes FROM rwkv_states ORDER BY key").fetchall()


# Both architectures, and a State, in two runs (the directory tier's tests take all four).
@pytest.mark.parametrize(("model", "state"), [("rwkv6-tiny", None), ("rwkv7-tiny", "tuned")])
async def test_a_second_replica_continues_from_the_state_in_postgresql_with_the_same_text(
    tiny_dir: Path, tmp_path: Path, pg_server: Any, model: str, state: str | None
) -> None:
    dsn = new_database(pg_server)
    [(answer, prompt_1, _)] = await _chat(
        _replica(tiny_dir, tmp_path / "a", dsn, model), [TURN_1], state
    )
    assert _rows(dsn)
    assert not (tmp_path / "a" / "states").exists()
    [(text, _, cached)] = await _chat(
        _replica(tiny_dir, tmp_path / "b", dsn, model), [_turn_2(answer)], state
    )
    [(scratch, _, none)] = await _chat(
        _replica(tiny_dir, tmp_path / "ref", new_database(pg_server), model, **NO_CACHE),
        [_turn_2(answer)],
        state,
    )
    assert none == 0
    assert 0 < cached < prompt_1 and prompt_1 - cached <= 4
    assert text == scratch


async def test_a_damaged_state_row_is_refused_and_re_read(
    tiny_dir: Path, tmp_path: Path, pg_server: Any
) -> None:
    dsn = new_database(pg_server)
    [(answer, _, _)] = await _chat(
        _replica(tiny_dir, tmp_path / "a", dsn, "rwkv7-tiny"), [TURN_1], None
    )
    with psycopg.connect(dsn) as conn:
        # Flip the last byte of every stored state (the payload's checksum no longer holds).
        conn.execute(
            "UPDATE rwkv_states SET data = overlay(data PLACING "
            "set_byte(substring(data from length(data)), 0, "
            "get_byte(substring(data from length(data)), 0) # 255) FROM length(data))"
        )
    settings = _replica(tiny_dir, tmp_path / "b", dsn, "rwkv7-tiny")
    [(text, _, cached)], metrics = await _chat_and_metrics(settings, [_turn_2(answer)], None)
    [(scratch, _, _)] = await _chat(
        _replica(tiny_dir, tmp_path / "ref", new_database(pg_server), "rwkv7-tiny", **NO_CACHE),
        [_turn_2(answer)],
        None,
    )
    assert cached == 0 and text == scratch
    assert _metric(metrics, 'rwkv_rag_state_disk_events_total{event="refused",model="m"}') > 0


def test_a_full_budget_in_postgresql_drops_the_least_recently_used_state(
    pg_server: Any,
) -> None:
    import time

    import torch

    from engines.rwkv.blobs import PostgresBlobs
    from engines.rwkv.states import DiskStates, StateIdentity, StateWrite, prefix_digests

    dsn = new_database(pg_server)
    ident = StateIdentity(model="m", weights="w" * 64, states={"": "z" * 64})
    blobs = PostgresBlobs(dsn)
    store = DiskStates(blobs, ident, 2**30, 0.0)
    state, logits = [torch.ones(256)], torch.ones(2)
    digests = [prefix_digests([i], [1])[1] for i in range(3)]
    for d in digests[:2]:
        store.save(StateWrite("", d, 1, [*state, logits]))
    one = max(size for _, size in _rows(dsn))
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE rwkv_states SET used_at = %s WHERE key = %s",
            (time.time() - 100, store.key("", digests[1])),
        )
    assert store.load("", digests[0], 1, [torch.zeros(256)], "cpu") is not None  # now recent
    store.max_bytes = 2 * one + 64  # room for two states, not three
    store.save(StateWrite("", digests[2], 1, [*state, logits]))
    kept = {key for key, _ in _rows(dsn)}
    assert kept == {store.key("", digests[0]), store.key("", digests[2])}
    assert store.stats.evicted == 1
    blobs.close()


def test_the_postgres_store_needs_a_database() -> None:
    with pytest.raises(ValueError, match="state_store: postgres"):
        from engines.rwkv.options import RWKVOptions
        from engines.rwkv.states import build_state_tiers

        build_state_tiers(
            None,  # type: ignore[arg-type]
            model_id="m",
            weights_path=Path("/nonexistent"),
            initial_states={},
            zero_state=[],
            device="cpu",
            options=RWKVOptions(state_store="postgres"),
            data_dir=None,
        )
