"""The dashboard's stats (issue 17): in-memory aggregation, upsert-add flushes from several
recorders into one database, retention, the memory bound, quantiles and the readers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlgate.access.gate import Admission
from mlgate.db.tables import STATS_LATENCY_BOUNDS, api_keys, stats_traffic, stats_usage
from mlgate.repository import Repository
from mlgate.server import stats_tables
from mlgate.telemetry.stats import StatsRecorder
from mlgate.telemetry.stats_read import WINDOWS, StatsReader, histogram_quantile
from mlgate.telemetry.stats_rows import OTHER
from mlgate.types import Caller

T0 = 1_800_000_000.0  # a minute boundary (30,000,000 minutes)
assert T0 % 3600 == 0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class X:
    """What Lifecycle.observe hands over: a closed exchange."""

    status: int = 200
    label: str = "/v1/models/{name}/predict"
    model: str | None = "temperatura"
    version: str | None = "1"
    key_id: str | None = None
    admission: Admission | None = None
    unserved: int = 0


def admitted(key_id: str, owner: str | None = None, cost: int = 1) -> Admission:
    caller = Caller(kind="key", id=key_id, username=owner, role="user")
    return Admission(caller=caller, scope="temperatura", metered_as=key_id, cost=cost)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 's.db'}")
    yield repo.engine
    repo.close()


def _recorder(engine: sa.Engine, clock: Clock, **kw: Any) -> StatsRecorder:
    return StatsRecorder(engine, stats_tables(), clock=clock, **kw)


def _traffic(engine: sa.Engine, resolution: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    t = stats_traffic
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.resolution == resolution)).mappings().all()
    return {(r["bucket"], r["model"], r["version"], r["route"]): dict(r) for r in rows}


def _usage(engine: sa.Engine, resolution: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    u = stats_usage
    with engine.connect() as conn:
        rows = conn.execute(sa.select(u).where(u.c.resolution == resolution)).mappings().all()
    return {(r["bucket"], r["key_id"], r["model"]): dict(r) for r in rows}


# -- quantiles ----------------------------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    bounds = STATS_LATENCY_BOUNDS
    counts = [0.0] * 12
    counts[2] = 10  # (0.0025, 0.005]
    assert histogram_quantile(0.5, counts, bounds) == pytest.approx(0.00375)
    counts[0] = 10  # [0, 0.001]: half of everything
    assert histogram_quantile(0.25, counts, bounds) == pytest.approx(0.0005)
    assert histogram_quantile(0.5, counts, bounds) == pytest.approx(0.001)
    assert histogram_quantile(0.75, counts, bounds) == pytest.approx(0.00375)
    slow = [0.0] * 11 + [4.0]  # all in +inf: the highest finite bound
    assert histogram_quantile(0.99, slow, bounds) == 2.5
    assert histogram_quantile(0.5, [0.0] * 12, bounds) is None


# -- aggregation and flushing -------------------------------------------------------------------


def test_observe_aggregates_per_minute_and_flush_adds_both_resolutions(engine: sa.Engine) -> None:
    clock = Clock(T0 + 5)
    rec = _recorder(engine, clock)
    rec.observe(X(admission=admitted("k1", "ana")), 0.002)  # lat_1
    rec.observe(X(admission=admitted("k1", "ana", cost=3)), 0.02)  # lat_4, 3 units
    rec.observe(X(status=500, admission=admitted("k1", "ana", cost=2)), 0.3)  # lat_8, no unit
    rec.observe(X(status=404, model=None, version=None, label="unmatched"), 0.0001)
    rec.observe(X(status=429, key_id="k2", version=None), 0.0005)  # refused: throttled, no admission
    rec.observe(X(status=400, admission=admitted("k1", "ana")), 0.0005)  # admitted, then 4xx
    batch = rec.batch_hook("temperatura", 1, lambda n: None)
    batch(4)
    batch(2)
    clock.now = T0 + 65  # the next minute
    rec.observe(X(admission=admitted("k1", "ana")), 5.0)  # +inf bucket
    with engine.begin() as conn:  # k2's owner is found in api_keys at flush time
        conn.execute(
            sa.insert(api_keys).values(
                id="k2", prefix="p2", key_hash="h", name="two", role="user", owner="beto", lineage="k2"
            )
        )
    assert rec.flush() == 2 * (4 + 3)  # traffic: 3 rows in minute 0, 1 in minute 1; usage: 3 (x2)
    m0 = T0 // 60
    minute = _traffic(engine, "m")
    row = minute[(m0, "temperatura", 1, "/v1/models/{name}/predict")]
    assert (row["requests"], row["errors_4xx"], row["errors_5xx"], row["throttled"]) == (4, 1, 1, 0)
    assert [row[f"lat_{i}"] for i in range(12)] == [1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    assert row["latency_sum"] == pytest.approx(0.3225)
    throttled = minute[(m0, "temperatura", 0, "/v1/models/{name}/predict")]
    assert (throttled["requests"], throttled["errors_4xx"], throttled["throttled"]) == (1, 1, 1)
    assert minute[(m0, "", 0, "unmatched")]["errors_4xx"] == 1
    batches = minute[(m0, "temperatura", 1, "")]
    assert (batches["requests"], batches["batch_items"], batches["batches"]) == (0, 6, 2)
    assert minute[(m0 + 1, "temperatura", 1, "/v1/models/{name}/predict")]["lat_11"] == 1
    hour = _traffic(engine, "h")[(T0 // 3600, "temperatura", 1, "/v1/models/{name}/predict")]
    assert (hour["requests"], hour["errors_5xx"], hour["lat_11"]) == (5, 1, 1)
    usage = _usage(engine, "m")
    k1 = usage[(m0, "k1", "temperatura")]
    assert (k1["requests"], k1["units"], k1["throttled"], k1["errors"], k1["owner"]) == (4, 5, 0, 2, "ana")
    k2 = usage[(m0, "k2", "temperatura")]
    assert (k2["requests"], k2["throttled"], k2["owner"]) == (0, 1, "beto")
    k1h = _usage(engine, "h")[(T0 // 3600, "k1", "temperatura")]
    assert (k1h["requests"], k1h["units"]) == (5, 6)
    assert rec.flush() == 0  # nothing pending


def _two_recorders_add_up(engine: sa.Engine) -> None:
    clock = Clock(T0 + 1)
    a, b = _recorder(engine, clock), _recorder(engine, clock)
    for rec, n in ((a, 3), (b, 4)):
        for _ in range(n):
            rec.observe(X(admission=admitted("k1", "ana", cost=2)), 0.004)
    a.flush()
    b.flush()
    a.observe(X(status=503, admission=admitted("k1", "ana")), 0.004)
    a.flush()
    m0 = T0 // 60
    row = _traffic(engine, "m")[(m0, "temperatura", 1, "/v1/models/{name}/predict")]
    assert (row["requests"], row["errors_5xx"], row["lat_2"]) == (8, 1, 8)
    assert row["latency_sum"] == pytest.approx(0.032)
    assert _traffic(engine, "h")[(T0 // 3600, "temperatura", 1, "/v1/models/{name}/predict")]["requests"] == 8
    usage = _usage(engine, "m")[(m0, "k1", "temperatura")]
    assert (usage["requests"], usage["units"], usage["errors"]) == (8, 14, 1)


def test_two_recorders_add_into_one_sqlite_database(engine: sa.Engine) -> None:
    _two_recorders_add_up(engine)


def test_two_recorders_add_into_one_postgresql_database() -> None:
    from tests.services import postgres_schema

    with postgres_schema("stats") as (url, _):
        repo = Repository.open(url)
        try:
            _two_recorders_add_up(repo.engine)
        finally:
            repo.close()


def test_a_failed_flush_keeps_its_counts(engine: sa.Engine) -> None:
    clock = Clock(T0)
    fail = {"once": True}
    tables = stats_tables()

    @contextmanager
    def flaky(e: sa.Engine) -> Iterator[sa.Connection]:
        if fail.pop("once", False):
            raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))
        with tables.write_tx(e) as conn:
            yield conn

    def write_tx(e: sa.Engine) -> AbstractContextManager[sa.Connection]:
        return flaky(e)

    rec = StatsRecorder(engine, replace(tables, write_tx=write_tx), clock=clock)
    rec.observe(X(admission=admitted("k1")), 0.001)
    with pytest.raises(sa.exc.OperationalError):
        rec.flush()
    assert rec.flush_failures == 1
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.flush()
    assert _traffic(engine, "m")[(T0 // 60, "temperatura", 1, "/v1/models/{name}/predict")]["requests"] == 2
    assert _usage(engine, "m")[(T0 // 60, "k1", "temperatura")]["requests"] == 2


def test_memory_is_bounded_per_minute(engine: sa.Engine) -> None:
    clock = Clock(T0)
    rec = _recorder(engine, clock, max_keys=10)
    for i in range(15):
        rec.observe(X(label=f"/r{i}", admission=admitted(f"k{i}")), 0.001)
    rec.flush()
    for i in range(3):  # same minute, after a flush: still capped (the minute's keys are kept)
        rec.observe(X(label=f"/s{i}", admission=admitted(f"j{i}")), 0.001)
    rec.observe(X(label="/r0", admission=admitted("k0")), 0.001)  # a known row is not capped
    rec.flush()
    assert rec.overflowed == 2 * (5 + 3)
    minute = _traffic(engine, "m")
    assert len(minute) == 11
    assert minute[(T0 // 60, OTHER, 0, OTHER)]["requests"] == 8
    assert minute[(T0 // 60, "temperatura", 1, "/r0")]["requests"] == 2
    usage = _usage(engine, "m")
    assert len(usage) == 11
    assert usage[(T0 // 60, OTHER, OTHER)]["requests"] == 8
    clock.now = T0 + 180  # a later minute starts afresh
    rec.observe(X(label="/new", admission=admitted("new")), 0.001)
    rec.flush()
    assert (T0 // 60 + 3, "temperatura", 1, "/new") in _traffic(engine, "m")


def test_retention_deletes_old_minute_and_hour_rows(engine: sa.Engine) -> None:
    clock = Clock(T0)
    rec = _recorder(engine, clock, retention_days=1)
    rec.observe(X(admission=admitted("k1")), 0.001)
    clock.now = T0 + 3 * 3600
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.flush()
    clock.now = T0 + 86_400 + 2 * 3600  # the first hour is past a day old, the later one is not
    assert rec.sweep_if_due() == 4  # a minute row and an hour row in both tables
    assert rec.sweep_if_due() == 0  # at most hourly
    assert sorted(k[0] for k in _traffic(engine, "m")) == [T0 // 60 + 180]
    assert sorted(k[0] for k in _traffic(engine, "h")) == [T0 // 3600 + 3]
    assert len(_usage(engine, "m")) == len(_usage(engine, "h")) == 1


# -- reading ------------------------------------------------------------------------------------


def test_reader_totals_and_series_over_the_three_windows(engine: sa.Engine) -> None:
    clock = Clock(T0 - 167 * 3600 + 30)
    rec = _recorder(engine, clock)
    # 167 hours ago (the oldest hour of the 7d window, not in 24h): 10 requests of v1
    for _ in range(10):
        rec.observe(X(), 0.004)
    # 2 hours ago: 6 requests of v2, 2 of them 5xx
    clock.now = T0 - 2 * 3600 + 10
    for i in range(6):
        rec.observe(X(version="2", status=500 if i < 2 else 200), 0.04)
    # 5 minutes ago and now: v1
    clock.now = T0 - 300 + 5
    for _ in range(3):
        rec.observe(X(), 0.004)
    rec.batch_hook("temperatura", 1, lambda n: None)(3)
    clock.now = T0 + 20
    rec.observe(X(status=429, key_id=None, version=None), 0.0001)
    rec.flush()
    reader = StatsReader(engine, stats_tables(), clock=clock)

    hour = reader.model_totals(WINDOWS["1h"], ["temperatura", "idle"])
    assert hour["temperatura"]["requests"] == 4
    assert hour["temperatura"]["throttled"] == 1
    assert hour["temperatura"]["errors_4xx"] == 1
    assert hour["temperatura"]["rps"] == pytest.approx(4 / 3600, abs=1e-6)
    assert hour["temperatura"]["batch_size"] == 3.0
    assert hour["idle"]["requests"] == 0 and hour["idle"]["p50_s"] is None
    day = reader.model_totals(WINDOWS["24h"])["temperatura"]
    assert (day["requests"], day["errors_5xx"]) == (10, 2)
    assert day["error_rate"] == pytest.approx(0.2)
    week = reader.model_totals(WINDOWS["7d"])["temperatura"]
    assert week["requests"] == 20
    # p50 of 13 at 0.004 ((0.0025, 0.005]), 6 at 0.04 ((0.025, 0.05]) and one 0.0001: rank 10
    assert week["p50_s"] == pytest.approx(0.0025 + 0.0025 * (10 - 1) / 13, abs=1e-6)

    series = reader.model_series("temperatura", WINDOWS["1h"])
    assert series["step_s"] == 60 and len(series["t"]) == 60
    assert series["t"][-1] == T0 and series["t"][0] == T0 - 59 * 60
    v1 = series["versions"]["1"]
    assert v1["requests"][-6] == 3 and sum(v1["requests"]) == 3
    assert v1["batch_size"][-6] == 3.0 and v1["batch_size"][-1] is None
    assert v1["p50_s"][-6] == pytest.approx(0.00375) and v1["p50_s"][0] is None
    assert series["versions"]["0"]["requests"][-1] == 1  # the throttled one: no version
    assert series["totals"]["requests"] == 4

    day_series = reader.model_series("temperatura", WINDOWS["24h"])
    assert day_series["step_s"] == 300 and len(day_series["t"]) == 288
    assert day_series["t"][-1] == T0 - 240  # the last step holds the current minute
    v2 = day_series["versions"]["2"]
    at = day_series["t"].index(T0 - 2 * 3600 - 240)  # the step holding T0 - 2h
    assert v2["requests"][at] == 6 and v2["errors_5xx"][at] == 2
    assert v2["error_rate"][at] == pytest.approx(1 / 3, abs=1e-6)
    assert v2["rps"][at] == pytest.approx(6 / 300)

    week_series = reader.model_series("temperatura", WINDOWS["7d"])
    assert week_series["step_s"] == 3600 and len(week_series["t"]) == 168
    assert week_series["t"][-1] == T0
    assert week_series["versions"]["1"]["requests"][0] == 10  # the oldest hour of the week
    assert week_series["totals"]["requests"] == 20


def test_reader_usage_series_per_key(engine: sa.Engine) -> None:
    clock = Clock(T0 - 120)
    rec = _recorder(engine, clock)
    for _ in range(3):
        rec.observe(X(admission=admitted("k1", "ana", cost=2)), 0.001)
    rec.observe(X(status=429, key_id="k1"), 0.001)
    clock.now = T0
    rec.observe(X(admission=admitted("k2")), 0.001)
    rec.flush()
    reader = StatsReader(engine, stats_tables(), clock=clock)
    every = reader.usage_series(WINDOWS["1h"], None)
    assert sorted(every["keys"]) == ["k1", "k2"]
    k1 = every["keys"]["k1"]
    assert (k1["requests"][-3], k1["units"][-3], k1["throttled"][-3], k1["owner"]) == (3, 6, 1, "ana")
    assert sum(k1["requests"]) == 3
    only = reader.usage_series(WINDOWS["24h"], ["k2", "nobody"])
    assert list(only["keys"]) == ["k2"] and only["keys"]["k2"]["requests"][-1] == 1
    assert reader.usage_series(WINDOWS["7d"], [])["keys"] == {}
    assert only["step_s"] == 3600 and len(only["t"]) == 24  # a day of keys: hour steps


def test_reader_keeps_settled_hours_and_rereads_the_last_two(engine: sa.Engine) -> None:
    clock = Clock(T0 - 5 * 3600)
    rec = _recorder(engine, clock)
    rec.observe(X(admission=admitted("k1")), 0.001)
    clock.now = T0
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.flush()
    reader = StatsReader(engine, stats_tables(), clock=clock)
    week = reader.usage_series(WINDOWS["7d"], None)["keys"]["k1"]["requests"]
    assert (week[-6], week[-1], sum(week)) == (1, 1, 2)
    rec.observe(X(admission=admitted("k1")), 0.001)  # the current hour: read again
    clock.now = T0 - 3600 + 5  # the previous hour: read again too
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.flush()
    clock.now = T0
    week = reader.usage_series(WINDOWS["7d"], None)["keys"]["k1"]["requests"]
    assert (week[-6], week[-2], week[-1], sum(week)) == (1, 1, 2, 4)


def test_the_flush_thread_warms_the_reader_once_an_hour(engine: sa.Engine) -> None:
    clock = Clock(T0 + 10)
    rec = _recorder(engine, clock)
    assert not rec.warm_if_due()  # no reader: nothing to warm
    rec.reader = StatsReader(engine, stats_tables(), clock=clock)
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.flush()
    assert rec.warm_if_due()  # the first time
    assert rec.reader._settled  # the week's settled hours are summed ahead of any request
    clock.now = T0 + 1800
    assert not rec.warm_if_due()  # the same hour
    clock.now = T0 + 3600
    assert rec.warm_if_due()  # the next one


def test_recorder_thread_flushes_and_stop_writes_the_rest(engine: sa.Engine) -> None:
    rec = _recorder(engine, Clock(T0), flush_s=3600)  # the thread never ticks during the test
    rec.start()
    rec.observe(X(admission=admitted("k1")), 0.001)
    rec.stop()
    assert _traffic(engine, "m")[(T0 // 60, "temperatura", 1, "/v1/models/{name}/predict")]["requests"] == 1
