"""Usage plans, key management and usage recording, run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

import mlgate.access.usage as usage_module
from mlgate.access.keys import KeyStore
from mlgate.access.plans import REFERENCE_PLAN, Plan, PlanStore, ensure_reference_plan
from mlgate.access.usage import UsageRecorder
from mlgate.db import create_engine_for
from mlgate.db.engine import write_tx
from mlgate.db.tables import key_plans, usage_daily
from mlgate.errors import ConfigurationError, Conflict, InvalidInput, NotFound
from mlgate.repository import Repository

# 2026-03-04 12:00:00 UTC and the next day
T0 = datetime(2026, 3, 4, 12, tzinfo=UTC).timestamp()
DAY = 86_400.0


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    yield repository
    repository.close()


@pytest.fixture
def engine(repo: Repository) -> sa.Engine:
    return repo.engine


@pytest.fixture
def keys(engine: sa.Engine) -> KeyStore:
    return KeyStore(engine)


@pytest.fixture
def plans(engine: sa.Engine) -> PlanStore:
    return PlanStore(engine)


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)

    def start(i: int) -> Any:
        barrier.wait(timeout=30)
        return target(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [future.result() for future in [pool.submit(start, i) for i in range(count)]]


# -- plans --------------------------------------------------------------------------------


def test_plan_crud(plans: PlanStore) -> None:
    gold = plans.create("gold", rate=50, burst=100, quota_limit=10_000, quota_period="WEEK", quota_offset=1)
    assert gold == Plan("gold", 50.0, 100, 10_000, "WEEK", 1, "")
    assert plans.get("gold") == gold
    silver = plans.create("silver", quota_limit=10, quota_period="DAY", description="small")
    assert (silver.rate, silver.burst) == (None, None)
    assert [p.name for p in plans.list()] == ["gold", "silver"]
    updated = plans.update("gold", rate=20.5, description="cheaper")
    assert (updated.rate, updated.burst, updated.description) == (20.5, 100, "cheaper")
    assert plans.get("gold") == updated
    plans.delete("silver")
    with pytest.raises(NotFound):
        plans.get("silver")
    assert [p.name for p in plans.list()] == ["gold"]
    assert gold.to_dict() == {
        "name": "gold",
        "rate": 50.0,
        "burst": 100,
        "quota_limit": 10_000,
        "quota_period": "WEEK",
        "quota_offset": 1,
        "description": "",
    }


def test_create_twice_conflicts(plans: PlanStore) -> None:
    plans.create("gold", rate=1)
    with pytest.raises(Conflict):
        plans.create("gold", rate=2)


def test_concurrent_creates_one_wins(plans: PlanStore) -> None:
    def create(_i: int) -> str:
        try:
            plans.create("race", rate=1)
            return "created"
        except Conflict:
            return "conflict"

    assert sorted(run_threads(8, create)) == ["conflict"] * 7 + ["created"]


def test_burst_defaults_to_ceil_rate(plans: PlanStore) -> None:
    assert plans.create("a", rate=2.5).burst == 3
    assert plans.create("b", rate=10).burst == 10


@pytest.mark.parametrize(
    "fields",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": float("nan")},
        {"rate": float("inf")},
        {"burst": 5},  # burst without a rate
        {"rate": 1, "burst": 0},
        {"rate": 1, "burst": 2.5},
        {"quota_limit": 10},  # no period
        {"quota_limit": 0, "quota_period": "DAY"},
        {"quota_period": "DAY"},  # no limit
        {"quota_limit": 10, "quota_period": "YEAR"},
        {"quota_limit": 10, "quota_period": "DAY", "quota_offset": 1},
        {"quota_limit": 10, "quota_period": "WEEK", "quota_offset": 7},
        {"quota_limit": 10, "quota_period": "MONTH", "quota_offset": 28},
        {"quota_limit": 10, "quota_period": "MONTH", "quota_offset": -1},
        {"quota_offset": 1},  # no quota
    ],
)
def test_invalid_plans_refused(plans: PlanStore, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        plans.create("bad", **fields)
    assert plans.list() == []


def test_edge_offsets_accepted(plans: PlanStore) -> None:
    assert plans.create("w", quota_limit=1, quota_period="WEEK", quota_offset=6).quota_offset == 6
    assert plans.create("m", quota_limit=1, quota_period="MONTH", quota_offset=27).quota_offset == 27


def test_update_validates_and_missing_plan(plans: PlanStore) -> None:
    plans.create("gold", rate=10, quota_limit=100, quota_period="MONTH", quota_offset=3)
    with pytest.raises(InvalidInput):
        plans.update("gold", quota_period="DAY")  # offset 3 is invalid for a DAY
    with pytest.raises(InvalidInput):
        plans.update("gold", colour="red")
    assert plans.get("gold").quota_period == "MONTH"
    cleared = plans.update("gold", rate=None, quota_limit=None)
    assert cleared == Plan("gold", None, None, None, None, 0, "")
    with pytest.raises(NotFound):
        plans.update("nope", rate=1)


def test_attach_and_plan_for_precedence(keys: KeyStore, plans: PlanStore) -> None:
    key = keys.create(name="svc").key
    other = keys.create(name="other").key
    plans.create("global", rate=1)
    plans.create("model", rate=2)
    plans.create("route", rate=3)
    assert plans.plan_for(key.id, "temperatura") is None  # no plan, no default: unlimited
    plans.attach(key.id, "global")
    plans.attach(key.id, "model", scope="temperatura")
    plans.attach(key.id, "route", scope="/prod")
    assert plans.attachments(key.id) == {"*": "global", "temperatura": "model", "/prod": "route"}
    assert plans.plan_for(key.id, "temperatura") == plans.get("model")
    assert plans.plan_for(key.id, "/prod") == plans.get("route")
    assert plans.plan_for(key.id, "intrusos") == plans.get("global")
    assert plans.governing(key.id, "temperatura") == (plans.get("model"), "temperatura")
    assert plans.governing(key.id, "intrusos") == (plans.get("global"), "*")
    assert plans.plan_for(other.id, "temperatura") is None
    plans.attach(key.id, "route", scope="temperatura")  # upsert
    assert plans.plan_for(key.id, "temperatura") == plans.get("route")
    plans.detach(key.id, scope="temperatura")
    assert plans.plan_for(key.id, "temperatura") == plans.get("global")
    plans.detach(key.id)
    assert plans.plan_for(key.id, "temperatura") is None
    with pytest.raises(NotFound):
        plans.detach(key.id)
    assert plans.attachments(key.id) == {"/prod": "route"}


def test_attach_unknown_key_or_plan_or_bad_scope(keys: KeyStore, plans: PlanStore) -> None:
    key = keys.create(name="svc").key
    plans.create("p", rate=1)
    with pytest.raises(NotFound):
        plans.attach("deadbeef", "p")
    with pytest.raises(NotFound):
        plans.attach(key.id, "nope")
    for scope in ("", "Bad Scope", "with space", "/x\n"):
        with pytest.raises(InvalidInput):
            plans.attach(key.id, "p", scope=scope)
    assert plans.attachments(key.id) == {}


def test_concurrent_attach_is_an_upsert(keys: KeyStore, plans: PlanStore) -> None:
    key = keys.create(name="svc").key
    names = [plans.create(f"p{i}", rate=i + 1).name for i in range(8)]
    run_threads(8, lambda i: plans.attach(key.id, names[i], scope="temperatura"))
    attached = plans.attachments(key.id)
    assert list(attached) == ["temperatura"]
    assert attached["temperatura"] in names


def test_default_plan(engine: sa.Engine, keys: KeyStore) -> None:
    store = PlanStore(engine, default_plan=REFERENCE_PLAN)
    key = keys.create(name="svc").key
    with pytest.raises(ConfigurationError):  # a default that does not exist fails closed
        store.plan_for(key.id, "temperatura")
    reference = ensure_reference_plan(store)
    assert reference == Plan(REFERENCE_PLAN, 10.0, 10, 1000, "MONTH", 0, reference.description)
    assert ensure_reference_plan(store) == reference  # idempotent
    assert store.plan_for(key.id, "temperatura") == reference
    assert store.governing(key.id, "temperatura") == (reference, "*")
    store.create("gold", rate=100)
    store.attach(key.id, "gold", scope="temperatura")
    assert store.plan_for(key.id, "temperatura") == store.get("gold")
    assert store.plan_for(key.id, "intrusos") == reference
    with pytest.raises(Conflict):
        store.delete(REFERENCE_PLAN)  # the default plan


def test_delete_while_attached_conflicts(keys: KeyStore, plans: PlanStore) -> None:
    key = keys.create(name="svc").key
    plans.create("gold", rate=1)
    plans.attach(key.id, "gold", scope="temperatura")
    with pytest.raises(Conflict):
        plans.delete("gold")
    plans.detach(key.id, scope="temperatura")
    plans.delete("gold")
    with pytest.raises(NotFound):
        plans.delete("gold")


# -- keys ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 4, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_list_and_get_keys(keys: KeyStore) -> None:
    a = keys.create(name="a", owner="alice").key
    b = keys.create(name="b", owner="bob").key
    c = keys.create(name="c", role="admin").key
    assert {k.id for k in keys.list()} == {a.id, b.id, c.id}
    assert [k.id for k in keys.list(owner="alice")] == [a.id]
    assert keys.list(owner="nobody") == []
    got = keys.get(b.id)
    assert (got.id, got.name, got.role, got.owner, got.disabled) == (b.id, "b", "user", "bob", False)
    with pytest.raises(NotFound):
        keys.get("deadbeef")


def test_create_validates(keys: KeyStore) -> None:
    for owner in ("", " alice", "a\nb", "x" * 65):
        with pytest.raises(InvalidInput):
            keys.create(name="k", owner=owner)
    with pytest.raises(InvalidInput):
        keys.create(name="")
    with pytest.raises(InvalidInput):
        keys.create(name="k", expires_at=datetime(2030, 1, 1))  # naive
    assert keys.list() == []


def test_disable_and_enable(keys: KeyStore) -> None:
    new = keys.create(name="svc")
    assert keys.verify_cached(new.secret) is not None  # now cached
    disabled = keys.set_disabled(new.key.id, True)
    assert disabled.disabled
    assert keys.verify(new.secret) is None
    assert keys.verify_cached(new.secret) is None  # invalidated at once in this process
    keys.set_disabled(new.key.id, False)
    assert keys.verify_cached(new.secret) is not None
    with pytest.raises(NotFound):
        keys.set_disabled("deadbeef", True)


def test_set_expiry(keys: KeyStore) -> None:
    new = keys.create(name="svc")
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert keys.set_expiry(new.key.id, past).expires_at == past
    assert keys.verify(new.secret) is None
    assert keys.verify_cached(new.secret) is None
    assert keys.set_expiry(new.key.id, None).expires_at is None
    assert keys.verify_cached(new.secret) is not None
    with pytest.raises(NotFound):
        keys.set_expiry("deadbeef", None)


def test_rotate(keys: KeyStore, plans: PlanStore) -> None:
    old = keys.create(name="svc", role="user", owner="alice")
    plans.create("gold", rate=5)
    plans.create("silver", rate=1)
    plans.attach(old.key.id, "gold")
    plans.attach(old.key.id, "silver", scope="temperatura")
    assert keys.verify_cached(old.secret) is not None
    new = keys.rotate(old.key.id)
    assert new.key.id != old.key.id
    assert new.secret != old.secret
    assert (new.key.name, new.key.role, new.key.owner) == ("svc", "user", "alice")
    assert keys.verify(old.secret) is None
    assert keys.verify_cached(old.secret) is None
    verified = keys.verify(new.secret)
    assert verified is not None
    assert verified.id == new.key.id
    assert plans.attachments(new.key.id) == {"*": "gold", "temperatura": "silver"}
    assert plans.plan_for(new.key.id, "temperatura") == plans.get("silver")
    assert keys.get(old.key.id).disabled
    with pytest.raises(Conflict):  # a disabled key is not rotated again
        keys.rotate(old.key.id)
    with pytest.raises(NotFound):
        keys.rotate("deadbeef")


def test_rotate_with_grace(engine: sa.Engine) -> None:
    clock = FakeClock()
    keys = KeyStore(engine, clock=clock)
    old = keys.create(name="svc")
    new = keys.rotate(old.key.id, grace_seconds=60)
    assert keys.verify_cached(old.secret) is not None  # still within the grace period
    assert keys.verify(new.secret) is not None
    assert keys.get(old.key.id).expires_at == clock.now + timedelta(seconds=60)
    clock.now += timedelta(seconds=59)
    assert keys.verify(old.secret) is not None
    clock.now += timedelta(seconds=1)
    assert keys.verify(old.secret) is None
    assert keys.verify_cached(old.secret) is None  # expiry is checked on every cached call
    assert keys.verify(new.secret) is not None
    with pytest.raises(InvalidInput):
        keys.rotate(new.key.id, grace_seconds=-1)


def test_rotate_keeps_an_earlier_expiry(engine: sa.Engine) -> None:
    clock = FakeClock()
    keys = KeyStore(engine, clock=clock)
    soon = clock.now + timedelta(seconds=10)
    old = keys.create(name="svc", expires_at=soon)
    new = keys.rotate(old.key.id, grace_seconds=3600)
    assert keys.get(old.key.id).expires_at == soon  # grace never extends a key
    assert new.key.expires_at == soon  # nor does rotation


# -- usage --------------------------------------------------------------------------------


def usage_rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.select(usage_daily).order_by(usage_daily.c.key_id, usage_daily.c.day))
        ]


def test_record_flush_report(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    for _ in range(3):
        usage.record("k1", "temperatura", outcome="ok", when=T0)
    usage.record("k1", "temperatura", outcome="error", when=T0)
    usage.record("k1", "temperatura", outcome="throttled", when=T0)
    usage.record("k1", "temperatura", outcome="ok", when=T0 + DAY)
    usage.record("k2", "/prod", outcome="ok", when=T0)
    assert usage.pending() == 7
    assert usage.flush() == 3
    assert usage.pending() == 0
    assert usage.flush() == 0
    expected = [
        {
            "key_id": "k1",
            "day": "2026-03-04",
            "scope": "temperatura",
            "requests": 4,
            "throttled": 1,
            "errors": 1,
            "units": 4,
        },
        {
            "key_id": "k1",
            "day": "2026-03-05",
            "scope": "temperatura",
            "requests": 1,
            "throttled": 0,
            "errors": 0,
            "units": 1,
        },
        {
            "key_id": "k2",
            "day": "2026-03-04",
            "scope": "/prod",
            "requests": 1,
            "throttled": 0,
            "errors": 0,
            "units": 1,
        },
    ]
    assert usage.report() == expected
    assert UsageRecorder(engine).report() == expected  # from the database alone
    assert usage.report(key_ids=["k2"]) == expected[2:]
    assert usage.report(key_ids=[]) == []
    assert usage.report(since=date(2026, 3, 5)) == expected[1:2]
    assert usage.report(until=date(2026, 3, 4)) == [expected[0], expected[2]]
    # a second flush adds to the existing rows
    usage.record("k1", "temperatura", outcome="ok", when=T0)
    usage.flush()
    assert usage.report(key_ids=["k1"], until=date(2026, 3, 4))[0]["requests"] == 5


def test_concurrent_records_are_exact(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)

    def work(i: int) -> None:
        for n in range(1000):
            usage.record(f"k{i % 2}", "m", outcome="error" if n % 10 == 0 else "ok", when=T0)
            if n % 250 == 0:
                usage.flush()  # flushes racing records

    run_threads(8, work)
    usage.flush()
    report = UsageRecorder(engine).report()
    assert [(r["key_id"], r["requests"], r["errors"]) for r in report] == [
        ("k0", 4000, 400),
        ("k1", 4000, 400),
    ]


def test_two_processes_add_up(database_url: str, repo: Repository) -> None:
    engines = [create_engine_for(database_url) for _ in range(2)]
    try:
        recorders = [UsageRecorder(e) for e in engines]

        def work(i: int) -> None:
            recorder = recorders[i % 2]
            for _ in range(10):
                for _ in range(50):
                    recorder.record("shared", "m", outcome="ok", when=T0)
                    recorder.record(f"own{i}", "m", outcome="throttled", when=T0)
                recorder.flush()

        run_threads(4, work)
        for recorder in recorders:
            recorder.close()
        report = {r["key_id"]: r for r in UsageRecorder(repo.engine).report()}
        assert report["shared"]["requests"] == 4 * 10 * 50
        for i in range(4):
            assert report[f"own{i}"]["throttled"] == 10 * 50
    finally:
        for e in engines:
            e.dispose()


def test_failed_flush_keeps_deltas(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = UsageRecorder(engine)
    usage.record("k1", "m", outcome="ok", when=T0)
    usage.record("k2", "m", outcome="ok", when=T0)
    usage.flush()
    for _ in range(3):
        usage.record("k1", "m", outcome="ok", when=T0)
    usage.record("k3", "m", outcome="error", when=T0)

    @contextmanager
    def failing_tx(eng: sa.Engine) -> Iterator[sa.Connection]:
        with write_tx(eng) as conn:
            yield conn  # the upserts run ...
            raise sa_exc.OperationalError("COMMIT", None, Exception("connection lost"))  # ... and roll back

    monkeypatch.setattr(usage_module, "write_tx", failing_tx)
    with pytest.raises(sa_exc.OperationalError):
        usage.flush()
    assert usage.pending() == 4
    usage.record("k1", "m", outcome="ok", when=T0)  # recorded while the database is down
    assert [(r["key_id"], r["requests"]) for r in usage.report()] == [("k1", 5), ("k2", 1), ("k3", 1)]
    assert [(r[0], r[3]) for r in usage_rows(engine)] == [("k1", 1), ("k2", 1)]  # nothing half-written
    monkeypatch.undo()
    assert usage.flush() == 2
    assert usage.pending() == 0
    assert usage.flush() == 0
    assert [(r[0], r[3], r[5]) for r in usage_rows(engine)] == [("k1", 5, 0), ("k2", 1, 0), ("k3", 1, 1)]


def test_usage_survives_key_plan_tables(engine: sa.Engine) -> None:
    # usage rows are independent of the key tables: a rotated or unknown key id still counts
    usage = UsageRecorder(engine)
    usage.record("user:alice", "*", outcome="ok", when=T0)
    usage.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(key_plans)).scalar_one() == 0
    assert usage.report()[0]["key_id"] == "user:alice"
