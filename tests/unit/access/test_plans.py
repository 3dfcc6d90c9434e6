"""PlanStore rules independent of the backend: the hot-path cache and validation messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlgate.access.keys import KeyStore
from mlgate.access.plans import Plan, PlanStore
from mlgate.errors import InvalidInput
from mlgate.repository import Repository


class Ticker:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class QueryCounter:
    """Counts the statements an engine executes."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_args: Any) -> None:
        self.count += 1


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'p.db'}")
    yield repo.engine
    repo.close()


@pytest.fixture
def key_id(engine: sa.Engine) -> str:
    return KeyStore(engine).create(name="svc").key.id


def test_plan_for_is_cached_and_own_writes_invalidate(engine: sa.Engine, key_id: str) -> None:
    ticker = Ticker()
    here = PlanStore(engine, monotonic=ticker)
    here.create("gold", rate=5)
    here.create("silver", rate=1)
    here.attach(key_id, "gold")
    assert here.plan_for(key_id, "m") == here.get("gold")
    queries = QueryCounter(engine)
    for _ in range(100):
        here.plan_for(key_id, "m")
    assert queries.count == 0  # the hot path does not touch the database
    here.attach(key_id, "silver")  # a write here invalidates at once
    assert here.plan_for(key_id, "m") == here.get("silver")


def test_other_process_changes_seen_within_ttl(engine: sa.Engine, key_id: str) -> None:
    ticker = Ticker()
    here = PlanStore(engine, monotonic=ticker, cache_ttl=5.0)
    elsewhere = PlanStore(engine)
    elsewhere.create("gold", rate=5)
    elsewhere.create("silver", rate=1)
    elsewhere.attach(key_id, "gold")
    assert here.plan_for(key_id, "m") == elsewhere.get("gold")
    elsewhere.attach(key_id, "silver")
    elsewhere.update("gold", rate=50)
    ticker.now += 4.9
    # still the cached attachment and plan
    assert here.plan_for(key_id, "m") == Plan("gold", 5.0, 5, None, None, 0, "")
    ticker.now += 0.2
    assert here.plan_for(key_id, "m") == elsewhere.get("silver")


def test_plan_created_elsewhere_is_found_despite_a_fresh_plan_cache(engine: sa.Engine, key_id: str) -> None:
    ticker = Ticker()
    here = PlanStore(engine, monotonic=ticker)
    elsewhere = PlanStore(engine)
    elsewhere.create("gold", rate=5)
    elsewhere.attach(key_id, "gold")
    assert here.plan_for(key_id, "m") is not None  # plans cached now
    other_key = KeyStore(engine).create(name="other").key.id
    elsewhere.create("new", rate=2)
    elsewhere.attach(other_key, "new")
    ticker.now += 1
    assert here.plan_for(other_key, "m") == elsewhere.get("new")


def test_zero_ttl_disables_the_cache(engine: sa.Engine, key_id: str) -> None:
    here = PlanStore(engine, cache_ttl=0)
    elsewhere = PlanStore(engine)
    elsewhere.create("gold", rate=5)
    assert here.plan_for(key_id, "m") is None
    elsewhere.attach(key_id, "gold")
    assert here.plan_for(key_id, "m") == elsewhere.get("gold")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rate": 0}, "rate must be > 0"),
        ({"rate": True}, "rate must be a finite number"),
        ({"burst": 3}, "burst needs a rate"),
        ({"rate": 1, "burst": 0}, "burst must be an integer between 1"),
        ({"quota_limit": 5}, "quota_limit needs a quota_period"),
        ({"quota_period": "WEEK"}, "quota_period needs a quota_limit"),
        ({"quota_limit": 5, "quota_period": "FORTNIGHT"}, "quota_period must be one of DAY, WEEK, MONTH"),
        (
            {"quota_limit": 5, "quota_period": "DAY", "quota_offset": 1},
            "for a DAY period must be between 0 and 0",
        ),
        (
            {"quota_limit": 5, "quota_period": "WEEK", "quota_offset": 7},
            "for a WEEK period must be between 0 and 6",
        ),
        (
            {"quota_limit": 5, "quota_period": "MONTH", "quota_offset": 28},
            "for a MONTH period must be between 0 and 27",
        ),
        ({"quota_offset": 2}, "quota_offset needs a quota_period"),
        ({"description": "x" * 2000}, "description must be a string of at most"),
    ],
)
def test_validation_messages(engine: sa.Engine, fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        PlanStore(engine).create("p", **fields)


def test_names_and_scopes(engine: sa.Engine, key_id: str) -> None:
    store = PlanStore(engine)
    for bad in ("", "has space", "-dash-first", "x" * 65, "gold\n"):
        with pytest.raises(InvalidInput, match="plan name"):
            store.create(bad)
    store.create("Gold.v2_b-1", quota_limit=1, quota_period="month")  # period is case-insensitive
    assert store.get("Gold.v2_b-1").quota_period == "MONTH"
    for scope in ("*", "temperatura", "/prod", "/v1/models/{name}/predict"):
        store.attach(key_id, "Gold.v2_b-1", scope=scope)
    with pytest.raises(InvalidInput, match="scope must be"):
        store.attach(key_id, "Gold.v2_b-1", scope="Temperatura")
    assert len(store.attachments(key_id)) == 4


def test_update_rate_rules(engine: sa.Engine) -> None:
    store = PlanStore(engine)
    store.create("q", quota_limit=5, quota_period="DAY")
    assert store.update("q", rate=2.5).burst == 3  # a first rate gets ceil(rate)
    assert store.update("q", burst=7).burst == 7
    assert store.update("q", rate=9).burst == 7  # a new rate keeps the burst
    assert store.update("q", rate=None).burst is None


def test_the_default_plan_keeps_a_limit(engine: sa.Engine) -> None:
    store = PlanStore(engine, default_plan="base")
    store.create("base", rate=5)
    store.create("other", rate=5)
    with pytest.raises(InvalidInput, match="default plan"):
        store.update("base", rate=None)
    assert store.get("base").rate == 5.0
    assert store.update("base", rate=None, quota_limit=10, quota_period="DAY").rate is None
    assert not store.update("other", rate=None).metered  # no key uses it: it may lose its limits
