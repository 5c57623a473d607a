"""Routing and the breaker, without I/O: consistent hashing with bounded load, least
outstanding requests, ejection and rejoining."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engines.remote.config import RemoteOptions, safe_url
from engines.remote.pool import UpstreamPool

URLS = [f"http://10.0.0.{i}:8000/v1" for i in range(1, 5)]


def _pool(**options: object) -> UpstreamPool:
    return UpstreamPool("m", RemoteOptions.model_validate({"upstreams": URLS, **options}))


def test_a_key_keeps_its_worker_and_losing_one_moves_only_its_keys() -> None:
    pool = _pool()
    keys = [f"conversation-{i}" for i in range(400)]
    homes = {k: pool.pick(k).upstream.url for k in keys}  # type: ignore[union-attr]
    assert {k: pool.pick(k).upstream.url for k in keys} == homes  # type: ignore[union-attr]
    spread = Counter(homes.values())
    assert len(spread) == 4 and min(spread.values()) > 60  # about 100 each
    gone = pool.upstreams[1]
    pool.eject(gone, "down")
    moved = {k for k in keys if pool.pick(k).upstream.url != homes[k]}  # type: ignore[union-attr]
    assert moved == {k for k, h in homes.items() if h == gone.url}


def test_weights_shift_keys_and_least_outstanding_traffic() -> None:
    pool = UpstreamPool(
        "m",
        RemoteOptions.model_validate(
            {"upstreams": [{"url": URLS[0], "weight": 3}, {"url": URLS[1], "weight": 1}]}
        ),
    )
    homes = Counter(pool.pick(f"k{i}").upstream.url for i in range(2000))  # type: ignore[union-attr]
    assert 0.65 < homes[URLS[0]] / 2000 < 0.85
    heavy, light = pool.upstreams
    heavy.in_flight, light.in_flight = 2, 1
    assert pool.pick().upstream is heavy  # type: ignore[union-attr] # 2/3 < 1/1


def test_bounded_load_spills_a_hot_key_and_counts_it() -> None:
    pool = _pool(load_factor=1.5)
    key = "system prompt shared by everyone"
    home = pool.pick(key).upstream  # type: ignore[union-attr]
    home.in_flight = 10  # far above the mean of the others (0)
    other = pool.pick(key)
    assert other is not None and other.upstream is not home and other.affinity == "spill"
    home.in_flight = 1
    back = pool.pick(key)
    assert back is not None and back.upstream is home and back.affinity == "hit"
    assert pool.affinity_hits == 2 and pool.affinity_spills == 1


def test_failures_eject_with_backoff_and_a_passing_check_rejoins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _pool(eject_after=3, eject_base_s=2, eject_max_s=5)
    up = pool.upstreams[0]
    pool.failed(up, "reset")
    pool.failed(up, "reset")
    assert up.routable(time.monotonic())
    pool.succeeded(up)  # a success in between: the count starts again
    for _ in range(3):
        pool.failed(up, "reset")
    now = time.monotonic()
    assert not up.routable(now) and up.backoff_s == 2
    assert up not in pool.candidates()
    pool.checked(up, ok=True)  # too early: still ejected
    assert not up.routable(time.monotonic())
    assert 1 <= pool.retry_after() <= 2
    clock = now + 3
    monkeypatch.setattr(time, "monotonic", lambda: clock)
    assert pool.due_for_check(up)
    pool.checked(up, ok=False, reason="refused")  # the probe fails: the period doubles
    assert up.backoff_s == 4 and not up.routable(clock)
    clock += 5
    pool.checked(up, ok=False, reason="refused")
    assert up.backoff_s == 5  # capped at eject_max_s
    clock += 6
    pool.checked(up, ok=True)
    assert up.routable(clock) and up.failures == 0
    assert up.backoff_s == 5  # kept: it has yet to answer a request
    pool.succeeded(up)
    assert up.backoff_s == 0


def test_a_passing_health_check_does_not_forgive_failed_requests() -> None:
    pool = _pool(eject_after=2)
    up = pool.upstreams[0]
    pool.failed(up, "answered 500")
    pool.checked(up, ok=True)  # /v1/models answers; the requests do not
    pool.failed(up, "answered 500")
    assert not up.routable(time.monotonic())


def test_extras_route_only_to_upstreams_that_take_them() -> None:
    pool = _pool()
    pool.upstreams[2].extras = True
    for i in range(20):
        assert pool.pick(f"k{i}", extras=True).upstream is pool.upstreams[2]  # type: ignore[union-attr]
    pool.eject(pool.upstreams[2], "down")
    assert pool.pick("k", extras=True) is None


def test_urls_are_shown_without_credentials_and_refused_with_them() -> None:
    assert safe_url("https://10.0.0.1:8443/v1/?token=abc#x") == "https://10.0.0.1:8443/v1"
    with pytest.raises(ValueError, match="api_key"):
        RemoteOptions.model_validate({"upstreams": ["http://user:secret@10.0.0.1/v1"]})
    with pytest.raises(ValueError, match="http"):
        RemoteOptions.model_validate({"upstreams": ["ftp://10.0.0.1/v1"]})
    opts = RemoteOptions.model_validate({"upstreams": [{"url": URLS[0], "api_key": "sk-1"}]})
    assert "sk-1" not in repr(opts)


def test_the_affinity_key_follows_the_conversation() -> None:
    from chat.remote import affinity_key

    opts = RemoteOptions.model_validate({"upstreams": URLS, "affinity_system_chars": 40})
    short = {"role": "system", "content": "Be brief."}
    long_ = {"role": "system", "content": "You answer questions about the pump manual. " * 2}
    turn1 = [short, {"role": "user", "content": "How do I reset it?"}]
    turn3 = [
        *turn1,
        {"role": "assistant", "content": "Hold it."},
        {"role": "user", "content": "And then?"},
    ]
    other = [short, {"role": "user", "content": "Something else"}]
    key = affinity_key(opts, None, None, turn1)
    assert key == affinity_key(opts, None, None, turn3)  # later turns repeat the first one
    assert key != affinity_key(opts, None, None, other)
    # A long system prompt is shared state by itself: its conversations go together.
    a = affinity_key(opts, None, None, [long_, {"role": "user", "content": "one"}])
    assert a == affinity_key(opts, None, None, [long_, {"role": "user", "content": "two"}])
    # X-Session-Id wins; `user` mode uses the user; `off` routes by load alone.
    assert affinity_key(opts, "s-1", "u", turn1) == "session:s-1"
    by_user = opts.model_copy(update={"affinity": "user"})
    assert affinity_key(by_user, None, "alice", turn1) == "user:alice"
    assert affinity_key(by_user, None, None, turn1) is None
    assert affinity_key(opts.model_copy(update={"affinity": "off"}), "s-1", "u", turn1) is None


def test_a_rerank_model_whose_upstreams_speak_two_apis_is_refused() -> None:
    from engines.base import ModelInfo
    from engines.remote.engine import RemoteReranker

    mixed = {"upstreams": [URLS[0], {"url": URLS[1], "api": "tei"}]}
    with pytest.raises(ValueError, match="one API"):
        RemoteReranker(ModelInfo(id="r", kind="rerank", engine="remote"), mixed)
