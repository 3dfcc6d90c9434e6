"""One contract for every limiter storage: memory, this machine's file, SQLite, PostgreSQL and Redis.

Time is simulated by passing ``now``; steps are binary fractions of a second (1/8, 1/4)
so the expected token counts are exact in floating point on every backend.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from mlgate.access.limiter import (
    LimiterStorage,
    MemoryLimiterStorage,
    MmapLimiterStorage,
    SqlLimiterStorage,
)
from mlgate.access.limiter_redis import RedisLimiterStorage
from mlgate.access.limiter_storage import take_tokens, whole_tokens
from mlgate.errors import InvalidInput
from mlgate.repository import Repository
from tests.contract.conftest import _postgres_schema_url
from tests.services import REDIS_URL, missing_service

T0 = 1_750_000_000.0  # a realistic epoch: the arithmetic must stay exact at this magnitude

Opener = Callable[[], LimiterStorage]
Body = Callable[[LimiterStorage], Awaitable[None]]


def _sql_opener(url: str) -> Iterator[Opener]:
    repo = Repository.open(url)  # migrations create limiter_buckets / limiter_counters
    try:
        yield lambda: SqlLimiterStorage(repo.engine)
    finally:
        repo.close()


def _redis_opener() -> Iterator[Opener]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        missing_service(f"Redis unreachable at {REDIS_URL}: {exc}")
        return
    prefix = f"mlgate-test:{uuid.uuid4().hex}:"
    try:
        yield lambda: RedisLimiterStorage(REDIS_URL, prefix=prefix, socket_timeout=5)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "local", "sqlite", "postgresql", "redis"])
def open_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens a fresh, empty storage of each backend (inside the test's event loop)."""
    if request.param == "memory":
        yield MemoryLimiterStorage
    elif request.param == "local":
        yield lambda: MmapLimiterStorage(tmp_path / "limiter.state")
    elif request.param == "sqlite":
        yield from _sql_opener(f"sqlite:///{tmp_path / 'limiter.db'}")
    elif request.param == "postgresql":
        for url in _postgres_schema_url():  # a fresh schema, dropped afterwards
            yield from _sql_opener(url)
    else:
        yield from _redis_opener()


def run(open_storage: Opener, body: Body) -> None:
    async def main() -> None:
        storage = open_storage()
        try:
            await body(storage)
        finally:
            await storage.close()

    asyncio.run(asyncio.wait_for(main(), 60))


# -- token bucket ----------------------------------------------------------------------------


def test_a_new_bucket_admits_its_burst_then_refuses(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        remaining = []
        for _ in range(5):
            d = await s.take("k", rate=1, burst=5, now=T0)
            assert d.allowed
            assert d.limit == 5
            assert d.retry_after == 0.0
            remaining.append(d.remaining)
        assert remaining == [4, 3, 2, 1, 0]
        refused = await s.take("k", rate=1, burst=5, now=T0)
        assert not refused.allowed
        assert (refused.limit, refused.remaining) == (5, 0)
        assert refused.retry_after > 0

    run(open_storage, body)


def test_tokens_refill_at_the_rate_up_to_the_burst(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        for _ in range(3):
            assert (await s.take("k", rate=4, burst=3, now=T0)).allowed
        assert not (await s.take("k", rate=4, burst=3, now=T0 + 0.125)).allowed  # half a token
        assert (await s.take("k", rate=4, burst=3, now=T0 + 0.25)).allowed  # one token
        assert not (await s.take("k", rate=4, burst=3, now=T0 + 0.25)).allowed
        # a long idle time refills to the burst, never beyond
        later = T0 + 3600
        admitted = [(await s.take("k", rate=4, burst=3, now=later)).allowed for _ in range(5)]
        assert admitted == [True, True, True, False, False]

    run(open_storage, body)


def test_retry_after_is_the_exact_time_until_the_next_token(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        for _ in range(2):
            await s.take("k", rate=4, burst=2, now=T0)
        empty = await s.take("k", rate=4, burst=2, now=T0)
        assert empty.retry_after == pytest.approx(0.25, abs=1e-9)
        half = await s.take("k", rate=4, burst=2, now=T0 + 0.125)
        assert not half.allowed
        assert half.retry_after == pytest.approx(0.125, abs=1e-9)
        # waiting exactly retry_after is enough
        assert (await s.take("k", rate=4, burst=2, now=T0 + 0.125 + half.retry_after)).allowed

    run(open_storage, body)


def test_remaining_is_the_floor_of_the_fractional_tokens(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        for _ in range(5):
            await s.take("k", rate=4, burst=5, now=T0)
        d = await s.take("k", rate=4, burst=5, now=T0 + 0.5)  # 2 tokens, take 1
        assert (d.allowed, d.remaining) == (True, 1)
        d = await s.take("k", rate=4, burst=5, now=T0 + 0.625)  # 1.5 tokens, take 1
        assert (d.allowed, d.remaining) == (True, 0)  # 0.5 left
        d = await s.take("k", rate=4, burst=5, now=T0 + 0.625)
        assert (d.allowed, d.remaining) == (False, 0)
        assert d.retry_after == pytest.approx(0.125, abs=1e-9)

    run(open_storage, body)


def test_a_take_may_cost_several_tokens(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        assert (await s.take("k", rate=2, burst=10, cost=4, now=T0)).remaining == 6
        assert (await s.take("k", rate=2, burst=10, cost=4, now=T0)).remaining == 2
        refused = await s.take("k", rate=2, burst=10, cost=4, now=T0)
        assert (refused.allowed, refused.remaining) == (False, 2)  # a refusal spends nothing
        assert refused.retry_after == pytest.approx(1.0, abs=1e-9)  # (4 - 2) / 2
        assert (await s.take("k", rate=2, burst=10, cost=2, now=T0)).allowed
        # more than the burst could never pass: the request is refused as invalid, not throttled
        with pytest.raises(InvalidInput, match="burst"):
            await s.take("k", rate=2, burst=10, cost=11, now=T0)

    run(open_storage, body)


def test_a_clock_going_backwards_never_mints_tokens_or_goes_negative(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        late = T0 + 10
        for _ in range(2):
            assert (await s.take("k", rate=4, burst=2, now=late)).allowed
        # another process whose clock lags by 10 s: nothing refills, and it waits out the lag
        behind = await s.take("k", rate=4, burst=2, now=T0)
        assert not behind.allowed
        assert behind.remaining == 0
        assert behind.retry_after == pytest.approx(10.25, abs=1e-9)
        assert not (await s.take("k", rate=4, burst=2, now=T0 + 9.75)).allowed
        # the bucket kept the later stamp: exactly one token 0.25 s after it
        assert not (await s.take("k", rate=4, burst=2, now=late + 0.125)).allowed
        d = await s.take("k", rate=4, burst=2, now=late + 0.25)
        assert (d.allowed, d.remaining) == (True, 0)
        assert not (await s.take("k", rate=4, burst=2, now=late + 0.25)).allowed

    run(open_storage, body)


def test_buckets_are_independent_per_key(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        assert (await s.take("bucket:a:*", rate=1, burst=1, now=T0)).allowed
        assert not (await s.take("bucket:a:*", rate=1, burst=1, now=T0)).allowed
        assert (await s.take("bucket:b:*", rate=1, burst=1, now=T0)).allowed

    run(open_storage, body)


def test_concurrent_takes_on_one_key_admit_exactly_the_burst(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        decisions = await asyncio.gather(*(s.take("hot", rate=10, burst=10, now=T0) for _ in range(50)))
        assert sum(d.allowed for d in decisions) == 10
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))

    run(open_storage, body)


def test_a_random_trace_matches_the_reference_arithmetic(open_storage: Opener) -> None:
    """Every backend answers exactly like :func:`take_tokens`, skewed clocks included."""
    rng = random.Random(7)
    trace = []
    now = T0
    for _ in range(120):
        now += rng.choice([0.0, 1 / 64, 1 / 8, 0.3, 1.0, -0.25])  # some steps go backwards
        trace.append((now, rng.randint(1, 3)))

    async def body(s: LimiterStorage) -> None:
        tokens, stamp = 4.0, trace[0][0]
        for at, cost in trace:
            allowed, after, new_stamp, retry_after = take_tokens(
                tokens, stamp, now=at, rate=3.0, burst=4, cost=cost
            )
            if allowed:
                tokens, stamp = after, new_stamp
            d = await s.take("k", rate=3.0, burst=4, cost=cost, now=at)
            assert (d.allowed, d.remaining) == (allowed, whole_tokens(after)), (at, cost)
            assert d.retry_after == pytest.approx(retry_after, rel=1e-12, abs=1e-12)

    run(open_storage, body)


# -- quota -----------------------------------------------------------------------------------


def test_quota_counts_exactly_the_limit_then_refuses(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        ends = T0 + 100
        results = [await s.count("q", limit=3, window_end=ends, now=T0 + i) for i in range(5)]
        assert [r.allowed for r in results] == [True, True, True, False, False]
        assert [r.remaining for r in results] == [2, 1, 0, 0, 0]
        assert all(r.limit == 3 and r.resets_at == ends for r in results)

    run(open_storage, body)


def test_refused_requests_do_not_use_quota(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        ends = T0 + 100
        assert (await s.count("q", limit=5, window_end=ends, cost=3, now=T0)).remaining == 2
        for _ in range(10):
            refused = await s.count("q", limit=5, window_end=ends, cost=3, now=T0)
            assert (refused.allowed, refused.remaining) == (False, 2)
        last = await s.count("q", limit=5, window_end=ends, cost=2, now=T0)
        assert (last.allowed, last.remaining) == (True, 0)

    run(open_storage, body)


def test_quota_starts_again_when_the_window_ends(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        first_end, second_end = T0 + 100, T0 + 200
        for _ in range(2):
            await s.count("q", limit=2, window_end=first_end, now=T0)
        assert not (await s.count("q", limit=2, window_end=first_end, now=first_end - 0.001)).allowed
        fresh = await s.count("q", limit=2, window_end=second_end, now=first_end)
        assert (fresh.allowed, fresh.remaining, fresh.resets_at) == (True, 1, second_end)
        # a process whose clock still shows the old window counts against the new one
        lagging = await s.count("q", limit=2, window_end=first_end, now=first_end - 0.5)
        assert (lagging.allowed, lagging.remaining, lagging.resets_at) == (True, 0, second_end)
        assert not (await s.count("q", limit=2, window_end=second_end, now=first_end + 1)).allowed

    run(open_storage, body)


def test_concurrent_counts_on_one_key_admit_exactly_the_limit(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        results = await asyncio.gather(
            *(s.count("q", limit=7, window_end=T0 + 60, now=T0) for _ in range(50))
        )
        assert sum(r.allowed for r in results) == 7
        assert sorted(r.remaining for r in results if r.allowed) == list(range(7))

    run(open_storage, body)


def test_a_bucket_and_a_counter_may_share_a_key(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        assert (await s.take("k", rate=1, burst=1, now=T0)).allowed
        assert (await s.count("k", limit=1, window_end=T0 + 60, now=T0)).allowed
        assert not (await s.take("k", rate=1, burst=1, now=T0)).allowed
        assert not (await s.count("k", limit=1, window_end=T0 + 60, now=T0)).allowed

    run(open_storage, body)


# -- reset -----------------------------------------------------------------------------------


def test_reset_forgets_the_bucket_and_the_counter(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        await s.take("k", rate=1, burst=1, now=T0)
        await s.count("k", limit=1, window_end=T0 + 60, now=T0)
        await s.take("other", rate=1, burst=1, now=T0)
        await s.reset("k")
        await s.reset("never-used")
        assert (await s.take("k", rate=1, burst=1, now=T0)).allowed
        assert (await s.count("k", limit=1, window_end=T0 + 60, now=T0)).allowed
        assert not (await s.take("other", rate=1, burst=1, now=T0)).allowed

    run(open_storage, body)


def test_now_defaults_to_the_wall_clock(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        d = await s.take("k", rate=0.001, burst=2)
        assert (d.allowed, d.remaining) == (True, 1)
        q = await s.count("q", limit=2, window_end=T0 * 2)
        assert (q.allowed, q.remaining) == (True, 1)

    run(open_storage, body)


def test_take_then_count_decides_as_take_followed_by_count(open_storage: Opener) -> None:
    """The gate's one-round-trip metering, where a storage offers it: the quota is counted only
    when the bucket allowed the call, and both answers are what two separate calls give."""

    async def body(storage: LimiterStorage) -> None:
        both = getattr(storage, "take_then_count", None)
        if both is None:
            pytest.skip("this storage meters in two calls")
        end = T0 + 3600
        answers = []
        for i in range(5):  # burst 3, quota 2: allowed, allowed, quota refused, bucket refused...
            answers.append(
                await both(
                    "bucket:ttc", "quota:ttc", rate=0.001, burst=3, limit=2, window_end=end, now=T0 + i
                )
            )
        allowed = [(d.allowed, q.allowed if q is not None else None) for d, q in answers]
        assert allowed == [(True, True), (True, True), (True, False), (False, None), (False, None)]
        assert [q.remaining for _, q in answers[:3] if q is not None] == [1, 0, 0]
        # the same arithmetic as the separate calls
        assert (await storage.count("quota:ttc", limit=2, window_end=end, now=T0 + 9)).allowed is False
        assert (await storage.take("bucket:ttc", rate=0.001, burst=3, now=T0 + 9)).allowed is False

    run(open_storage, body)


# -- refunds (charged = served) ------------------------------------------------------------------


def test_a_refund_gives_back_tokens_and_quota_units_within_the_same_window(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        ends = T0 + 100
        d, q = await s.take_then_count("b", "q", rate=1, burst=10, limit=20, window_end=ends, cost=8, now=T0)
        assert d.allowed and q is not None and (d.remaining, q.remaining) == (2, 12)
        await s.refund("b", "q", rate=1, burst=10, window_end=ends, cost=5)
        d, q = await s.take_then_count("b", "q", rate=1, burst=10, limit=20, window_end=ends, cost=1, now=T0)
        assert d.allowed and q is not None and (d.remaining, q.remaining) == (6, 16)
        # never above the burst, never below zero
        await s.refund("b", "q", rate=1, burst=10, window_end=ends, cost=100)
        d, q = await s.take_then_count("b", "q", rate=1, burst=10, limit=20, window_end=ends, cost=1, now=T0)
        assert d.allowed and q is not None and (d.remaining, q.remaining) == (9, 19)

    run(open_storage, body)


def test_a_refund_never_touches_another_window_or_a_missing_state(open_storage: Opener) -> None:
    async def body(s: LimiterStorage) -> None:
        ends = T0 + 100
        assert (await s.count("q", limit=3, window_end=ends, cost=3, now=T0)).remaining == 0
        await s.refund(None, "q", rate=1, burst=1, window_end=ends + 100, cost=3)  # another window
        assert not (await s.count("q", limit=3, window_end=ends, now=T0)).allowed
        await s.refund(None, "q", rate=1, burst=1, window_end=ends, cost=1)  # bucket key None
        assert (await s.count("q", limit=3, window_end=ends, now=T0)).allowed
        await s.refund("nothing-here", "nor-here", rate=1, burst=5, window_end=ends, cost=2)
        d = await s.take("nothing-here", rate=1, burst=5, now=T0)
        assert (d.allowed, d.remaining) == (True, 4)  # a new bucket still starts at its burst

    run(open_storage, body)
