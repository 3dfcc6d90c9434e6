"""The gate without HTTP: keys, plans and limiter storages give the same admissions and refusals
whether the storage answers synchronously (memory, this machine's file) or over I/O (SQLite), and
changes made through the stores apply at once despite the per-(key, scope) cache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlgate.access.gate import Admission, Gate
from mlgate.access.keys import KeyStore
from mlgate.access.limiter import LimiterStorage, MemoryLimiterStorage, MmapLimiterStorage, SqlLimiterStorage
from mlgate.access.plans import PlanStore
from mlgate.access.tokens import TokenIssuer
from mlgate.access.usage import UsageRecorder
from mlgate.access.users import UserStore
from mlgate.errors import Forbidden, QuotaExceeded, Throttled
from mlgate.repository import Repository
from mlgate.settings import AuthSettings

NOW = 1_750_000_000.0


class World:
    def __init__(self, tmp_path: Path, storage: Callable[[Repository], LimiterStorage]) -> None:
        self.repo = Repository.open(f"sqlite:///{tmp_path / 'gate.db'}")
        engine = self.repo.engine
        self.keys = KeyStore(engine)
        self.plans = PlanStore(engine)
        self.usage = UsageRecorder(engine)
        self.limiter = storage(self.repo)
        self.gate = Gate(
            settings=AuthSettings(),
            keys=self.keys,
            plans=self.plans,
            limiter=self.limiter,
            usage=self.usage,
            users=UserStore(engine),
            tokens=TokenIssuer("g" * 40),
        )

    def admit(self, secret: str, *, scope: str = "temperatura", now: float = NOW) -> Admission:
        return asyncio.run(self.gate.admit(mode="key", api_key=secret, bearer=None, scope=scope, now=now))

    def close(self) -> None:
        asyncio.run(self.limiter.close())
        self.usage.close()
        self.repo.close()


@pytest.fixture(params=["memory", "local", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    storages: dict[str, Callable[[Repository], LimiterStorage]] = {
        "memory": lambda _: MemoryLimiterStorage(),
        "local": lambda _: MmapLimiterStorage(tmp_path / "limiter.state"),
        "sqlite": lambda repo: SqlLimiterStorage(repo.engine),
    }
    w = World(tmp_path, storages[request.param])
    yield w
    w.close()


def test_a_full_plan_throttles_past_the_burst_then_counts_the_quota(world: World) -> None:
    world.plans.create("p", rate=0.001, burst=3, quota_limit=2, quota_period="MONTH")
    key = world.keys.create(name="k")
    world.plans.attach(key.key.id, "p")
    first = world.admit(key.secret)
    assert first.caller.id == key.key.id
    assert first.metered_as == key.key.id
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert (first.headers["X-Quota-Limit"], first.headers["X-Quota-Remaining"]) == ("2", "1")
    assert int(first.headers["X-Quota-Reset"]) > NOW
    assert world.admit(key.secret).headers["X-Quota-Remaining"] == "0"
    with pytest.raises(QuotaExceeded) as quota:
        world.admit(key.secret)  # the bucket still had a token: the quota refuses
    assert quota.value.headers["X-Quota-Remaining"] == "0"
    with pytest.raises(Throttled) as throttled:
        world.admit(key.secret)  # the bucket is empty now
    assert throttled.value.retry_after is not None and throttled.value.retry_after > 0


@pytest.mark.parametrize(
    ("plan", "headers"),
    [
        ({"rate": 0.001, "burst": 1}, {"X-RateLimit-Limit", "X-RateLimit-Remaining"}),
        ({"quota_limit": 1, "quota_period": "DAY"}, {"X-Quota-Limit", "X-Quota-Remaining", "X-Quota-Reset"}),
    ],
)
def test_a_partial_plan_meters_only_what_it_has(
    world: World, plan: dict[str, object], headers: set[str]
) -> None:
    world.plans.create("partial", **plan)  # type: ignore[arg-type]
    key = world.keys.create(name="k")
    world.plans.attach(key.key.id, "partial")
    assert set(world.admit(key.secret).headers) == headers
    with pytest.raises(Throttled if "rate" in plan else QuotaExceeded):
        world.admit(key.secret)


def test_no_plan_admits_without_headers_and_a_bad_key_is_forbidden(world: World) -> None:
    key = world.keys.create(name="k")
    assert world.admit(key.secret).headers == {}
    with pytest.raises(Forbidden):
        world.admit("mlg_00000000_" + "x" * 40)


def test_changes_through_the_stores_apply_at_once(world: World) -> None:
    world.plans.create("small", rate=0.001, burst=1)
    world.plans.create("large", rate=0.001, burst=100)
    key = world.keys.create(name="k")
    world.plans.attach(key.key.id, "small")
    world.admit(key.secret)
    with pytest.raises(Throttled):
        world.admit(key.secret)
    world.plans.attach(key.key.id, "large")  # a new plan, at once — on the budget already spent
    with pytest.raises(Throttled) as refused:
        world.admit(key.secret)
    assert refused.value.headers["X-RateLimit-Limit"] == "100"
    assert world.admit(key.secret, now=NOW + 1000).headers["X-RateLimit-Limit"] == "100"
    world.keys.set_disabled(key.key.id, True)
    with pytest.raises(Forbidden):
        world.admit(key.secret)


def test_a_users_keys_share_one_budget(world: World) -> None:
    world.plans.create("p", rate=0.001, burst=2)
    first = world.keys.create(name="a", owner="ana")
    second = world.keys.create(name="b", owner="ana")
    for key in (first, second):
        world.plans.attach(key.key.id, "p")
    world.admit(first.secret)
    world.admit(second.secret)
    with pytest.raises(Throttled):
        world.admit(first.secret)  # the owner's budget is spent, whichever key asks
