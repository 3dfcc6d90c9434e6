"""Quota windows, the fail-open wrapper, Redis failing closed, and the memory bucket under threads."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine

from mlgate.access.limiter import (
    WARN_EVERY_S,
    Decision,
    FailOpenStorage,
    MemoryLimiterStorage,
    QuotaDecision,
    SqlLimiterStorage,
    open_limiter_storage,
    quota_window,
)
from mlgate.access.limiter_redis import RedisLimiterStorage
from mlgate.errors import ConfigurationError, InvalidInput, LimiterUnavailable

T0 = 1_750_000_000.0


def _d(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return _d(year, month, day, hour, minute, second).timestamp()


def _window(period: str, now: float, offset: int = 0) -> tuple[datetime, datetime]:
    start, end = quota_window(period, offset_days=offset, now=now)
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


# -- quota_window ------------------------------------------------------------------------------


def test_day_window_runs_from_utc_midnight_to_midnight() -> None:
    assert _window("DAY", _ts(2024, 3, 15, 13, 45)) == (_d(2024, 3, 15), _d(2024, 3, 16))
    assert _window("DAY", _ts(2024, 3, 15)) == (_d(2024, 3, 15), _d(2024, 3, 16))  # midnight starts one
    assert _window("DAY", _ts(2024, 12, 31, 23, 59, 59)) == (_d(2024, 12, 31), _d(2025, 1, 1))
    assert _window("day", _ts(2024, 3, 15, 1)) == (_d(2024, 3, 15), _d(2024, 3, 16))


def test_week_window_starts_on_monday_shifted_by_the_offset() -> None:
    friday = _ts(2024, 3, 15, 10)
    assert _window("WEEK", friday) == (_d(2024, 3, 11), _d(2024, 3, 18))
    assert _window("WEEK", friday, offset=2) == (_d(2024, 3, 13), _d(2024, 3, 20))  # Wednesdays
    assert _window("WEEK", friday, offset=4) == (_d(2024, 3, 15), _d(2024, 3, 22))  # Friday 00:00 starts one
    assert _window("WEEK", friday, offset=5) == (_d(2024, 3, 9), _d(2024, 3, 16))  # from last Saturday
    assert _window("WEEK", friday, offset=6) == (_d(2024, 3, 10), _d(2024, 3, 17))
    new_year = _ts(2025, 1, 1, 12)  # a Wednesday: the week began in the old year
    assert _window("WEEK", new_year) == (_d(2024, 12, 30), _d(2025, 1, 6))


def test_month_window_runs_from_the_first_shifted_by_the_offset() -> None:
    assert _window("MONTH", _ts(2024, 3, 15, 10)) == (_d(2024, 3, 1), _d(2024, 4, 1))
    assert _window("MONTH", _ts(2024, 12, 31, 23, 59, 59)) == (_d(2024, 12, 1), _d(2025, 1, 1))
    assert _window("MONTH", _ts(2024, 1, 31, 23)) == (_d(2024, 1, 1), _d(2024, 2, 1))
    assert _window("MONTH", _ts(2024, 4, 30, 23)) == (_d(2024, 4, 1), _d(2024, 5, 1))
    # offset 14: resets on the 15th
    assert _window("MONTH", _ts(2024, 3, 10), offset=14) == (_d(2024, 2, 15), _d(2024, 3, 15))
    assert _window("MONTH", _ts(2024, 3, 15), offset=14) == (_d(2024, 3, 15), _d(2024, 4, 15))
    assert _window("MONTH", _ts(2025, 1, 5), offset=10) == (_d(2024, 12, 11), _d(2025, 1, 11))
    assert _window("MONTH", _ts(2024, 12, 20), offset=10) == (_d(2024, 12, 11), _d(2025, 1, 11))


def test_month_windows_across_february_in_leap_and_common_years() -> None:
    assert _window("MONTH", _ts(2024, 2, 29, 12)) == (_d(2024, 2, 1), _d(2024, 3, 1))
    assert _window("MONTH", _ts(2023, 2, 28, 12)) == (_d(2023, 2, 1), _d(2023, 3, 1))
    # the largest offset (27: the 28th) exists in every February
    assert _window("MONTH", _ts(2024, 2, 29), offset=27) == (_d(2024, 2, 28), _d(2024, 3, 28))
    assert _window("MONTH", _ts(2023, 2, 27), offset=27) == (_d(2023, 1, 28), _d(2023, 2, 28))
    assert _window("MONTH", _ts(2023, 3, 1), offset=27) == (_d(2023, 2, 28), _d(2023, 3, 28))
    assert _window("MONTH", _ts(2100, 2, 28, 12)) == (_d(2100, 2, 1), _d(2100, 3, 1))  # not a leap year


@pytest.mark.parametrize(
    ("period", "offset"),
    [("DAY", 1), ("WEEK", 7), ("MONTH", 28), ("MONTH", 31), ("WEEK", -1), ("DAY", -1), ("YEAR", 0)],
)
def test_offsets_not_shorter_than_the_period_and_unknown_periods_are_refused(
    period: str, offset: int
) -> None:
    with pytest.raises(InvalidInput):
        quota_window(period, offset_days=offset, now=T0)


@pytest.mark.parametrize(("period", "max_offset"), [("DAY", 0), ("WEEK", 6), ("MONTH", 27)])
def test_every_window_contains_now_and_spans_one_period(period: str, max_offset: int) -> None:
    rng = random.Random(4)
    for _ in range(2000):
        now = rng.uniform(_ts(1999, 1, 1), _ts(2101, 1, 1))
        offset = rng.randint(0, max_offset)
        start, end = quota_window(period, offset_days=offset, now=now)
        assert start <= now < end
        days = (end - start) / 86_400
        assert days in {"DAY": (1,), "WEEK": (7,), "MONTH": (28, 29, 30, 31)}[period]
        begins = datetime.fromtimestamp(start, UTC)
        assert (begins.hour, begins.minute, begins.second) == (0, 0, 0)
        if period == "WEEK":
            assert begins.weekday() == offset
        if period == "MONTH":
            assert begins.day == offset + 1


# -- FailOpenStorage -----------------------------------------------------------------------------


class _Down:
    """A storage whose shared state is unreachable."""

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        self.calls += 1
        raise LimiterUnavailable("down", details={"reason": "ConnectionError"})

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        self.calls += 1
        raise LimiterUnavailable("down", details={"reason": "ConnectionError"})

    async def reset(self, key: str) -> None:
        raise LimiterUnavailable("down")

    async def close(self) -> None:
        self.closed = True


class _Clock:
    def __init__(self, value: float = 100.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mlgate.access.limiter" and r.levelno == logging.WARNING]


def test_fail_open_answers_from_the_per_process_fallback_and_warns_at_most_every_10_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inner, fallback, clock = _Down(), MemoryLimiterStorage(), _Clock()
    storage = FailOpenStorage(inner, fallback, clock=clock)

    async def main() -> None:
        # the plan still holds within this process: burst 2 admits 2
        takes = [await storage.take("k", rate=1, burst=2, now=T0) for _ in range(3)]
        assert [d.allowed for d in takes] == [True, True, False]
        counts = [await storage.count("q", limit=1, window_end=T0 + 60, now=T0) for _ in range(2)]
        assert [q.allowed for q in counts] == [True, False]
        assert len(_warnings(caplog)) == 1
        clock.value += WARN_EVERY_S - 0.001
        await storage.take("k", rate=1, burst=2, now=T0)
        assert len(_warnings(caplog)) == 1
        clock.value += 0.001
        await storage.take("k", rate=1, burst=2, now=T0)
        assert len(_warnings(caplog)) == 2
        await storage.reset("k")  # resets the fallback even though the inner is down
        assert (await fallback.take("k", rate=1, burst=2, now=T0)).allowed
        await storage.close()

    with caplog.at_level(logging.WARNING, logger="mlgate.access.limiter"):
        asyncio.run(main())
    assert inner.calls == 7
    assert inner.closed
    assert "ConnectionError" in _warnings(caplog)[0].getMessage()


def test_fail_open_uses_the_shared_state_while_it_answers() -> None:
    inner, fallback = MemoryLimiterStorage(), MemoryLimiterStorage()
    storage = FailOpenStorage(inner, fallback)

    async def main() -> None:
        assert (await storage.take("k", rate=1, burst=1, now=T0)).allowed
        assert (await storage.count("q", limit=1, window_end=T0 + 1, now=T0)).allowed
        assert not (await inner.take("k", rate=1, burst=1, now=T0)).allowed
        assert len(fallback) == 0
        with pytest.raises(ValueError, match="burst"):  # other errors are not swallowed
            await storage.take("k", rate=1, burst=0, now=T0)

    asyncio.run(main())


# -- Redis: fail closed, quickly ------------------------------------------------------------------


def test_redis_on_a_closed_port_raises_limiter_unavailable_quickly() -> None:
    storage = RedisLimiterStorage("redis://127.0.0.1:1/0", socket_timeout=0.2)

    async def main() -> None:
        started = time.perf_counter()
        with pytest.raises(LimiterUnavailable) as caught:
            await storage.take("k", rate=10, burst=10)
        with pytest.raises(LimiterUnavailable):
            await storage.count("q", limit=10, window_end=time.time() + 60)
        with pytest.raises(LimiterUnavailable):
            await storage.reset("k")
        assert time.perf_counter() - started < 2
        assert caught.value.status == 503
        await storage.close()

    asyncio.run(main())


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung Redis)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def test_redis_that_hangs_times_out_then_fails_fast_until_the_next_probe(silent_server: int) -> None:
    storage = RedisLimiterStorage(f"redis://127.0.0.1:{silent_server}/0", socket_timeout=0.2, down_for=0.5)

    async def timed_take() -> tuple[float, LimiterUnavailable]:
        started = time.perf_counter()
        with pytest.raises(LimiterUnavailable) as caught:
            await storage.take("k", rate=10, burst=10)
        return time.perf_counter() - started, caught.value

    async def main() -> None:
        waited, _ = await timed_take()
        assert 0.2 <= waited < 2  # the socket timeout, one retry at most
        for _ in range(100):  # then every call fails at once: no request waits on a dead Redis
            waited, error = await timed_take()
            assert waited < 0.05
            assert error.details["reason"] == "recently unreachable"
        await asyncio.sleep(0.5)
        waited, _ = await timed_take()  # probing again
        assert waited >= 0.2
        await storage.close()

    asyncio.run(main())


def test_fail_open_over_an_unreachable_redis_keeps_per_process_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = open_limiter_storage("redis://127.0.0.1:1/0", redis_down="open")
    assert isinstance(storage, FailOpenStorage)

    async def main() -> None:
        admitted = [(await storage.take("k", rate=1, burst=3, now=T0)).allowed for _ in range(5)]
        assert admitted == [True, True, True, False, False]
        await storage.close()

    with caplog.at_level(logging.WARNING, logger="mlgate.access.limiter"):
        asyncio.run(main())
    assert len(_warnings(caplog)) == 1


# -- open_limiter_storage ------------------------------------------------------------------------


def test_open_limiter_storage_picks_the_backend_by_url() -> None:
    assert isinstance(open_limiter_storage("memory://"), MemoryLimiterStorage)
    engine = create_engine("sqlite://")
    try:
        assert isinstance(open_limiter_storage("database", engine=engine), SqlLimiterStorage)
    finally:
        engine.dispose()
    closed = open_limiter_storage("redis://127.0.0.1:6379/0")
    opened = open_limiter_storage("redis://127.0.0.1:6379/0", redis_down="open")
    assert isinstance(closed, RedisLimiterStorage)
    assert isinstance(opened, FailOpenStorage)
    assert isinstance(opened.inner, RedisLimiterStorage)
    asyncio.run(closed.close())
    asyncio.run(opened.close())


@pytest.mark.parametrize(
    ("url", "redis_down"),
    [
        ("database", "closed"),
        ("mongodb://x", "closed"),
        ("memory://", "maybe"),
        ("redis://h:notaport", "open"),
    ],
)
def test_open_limiter_storage_refuses_what_it_cannot_build(url: str, redis_down: str) -> None:
    with pytest.raises(ConfigurationError):
        open_limiter_storage(url, redis_down=redis_down)


# -- the memory storage --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0, "burst": 1},
        {"rate": -1, "burst": 1},
        {"rate": math.inf, "burst": 1},
        {"rate": math.nan, "burst": 1},
        {"rate": 1, "burst": 0},
        {"rate": 1, "burst": 1, "cost": 0},
    ],
)
def test_impossible_bucket_arguments_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MemoryLimiterStorage().take_sync("k", now=T0, **kwargs)  # type: ignore[arg-type]


def test_a_request_costing_more_than_the_burst_is_invalid_input_not_a_server_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        MemoryLimiterStorage().take_sync("k", rate=10, burst=10, cost=11, now=T0)
    assert caught.value.status == 400
    assert caught.value.details == {"cost": 11, "burst": 10}


def test_impossible_quota_arguments_are_refused() -> None:
    storage = MemoryLimiterStorage()
    with pytest.raises(ValueError, match="limit"):
        storage.count_sync("q", limit=-1, window_end=T0 + 1, now=T0)
    with pytest.raises(ValueError, match="cost"):
        storage.count_sync("q", limit=1, window_end=T0 + 1, cost=0, now=T0)
    with pytest.raises(ValueError, match="window_end"):
        storage.count_sync("q", limit=1, window_end=T0, now=T0)


def test_a_zero_quota_refuses_everything() -> None:
    q = MemoryLimiterStorage().count_sync("q", limit=0, window_end=T0 + 1, now=T0)
    assert (q.allowed, q.remaining) == (False, 0)


def test_full_buckets_and_ended_windows_are_swept_away() -> None:
    storage = MemoryLimiterStorage()
    for i in range(3000):
        storage.take_sync(f"bucket:{i}", rate=1, burst=2, now=T0)  # full again at T0 + 1
        storage.count_sync(f"quota:{i}", limit=5, window_end=T0 + 10, now=T0)
    assert len(storage) == 6000
    storage.take_sync("busy", rate=1, burst=1, now=T0 + 5)  # empty until T0 + 6
    storage.count_sync("live", limit=5, window_end=T0 + 100, now=T0 + 5)
    for _ in range(6000):
        storage.take_sync("hot", rate=1000, burst=1, now=T0 + 5.5)
    # the 3000 refilled buckets went; the counters' window has not ended yet
    assert len(storage) == 3000 + 3
    for _ in range(6000):
        storage.take_sync("hot", rate=1000, burst=1, now=T0 + 11)
    assert len(storage) == 2  # "hot" (just drained) and "live"
    # a swept bucket is a full one
    assert storage.take_sync("bucket:7", rate=1, burst=2, now=T0 + 11).remaining == 1


def test_tokens_taken_by_racing_threads_equal_the_tokens_issued_by_a_fake_clock() -> None:
    """Token conservation: burst + rate * elapsed tokens are issued, and exactly those are taken.

    Worker threads take as fast as they can while another thread advances a fake clock in
    1/64 s steps (binary fractions: the arithmetic is exact). The clock only advances while
    the bucket has room for the step's refill, so no token overflows the burst and the
    total is predictable to the token. Every admitted take is checked against the
    tokens issued up to that moment: never more.
    """
    rate, burst, step, steps = 8.0, 5, 1 / 64, 2400
    storage = MemoryLimiterStorage()
    guard = threading.Lock()
    clock = [T0]
    taken = [0]
    overdraft: list[str] = []
    stop = threading.Event()

    def issued(now: float) -> float:
        return burst + rate * (now - T0)

    def worker() -> None:
        while not stop.is_set():
            d = storage.take_sync("k", rate=rate, burst=burst, now=clock[0])
            if d.allowed:
                with guard:
                    taken[0] += 1
                    if taken[0] > math.floor(issued(clock[0])):
                        overdraft.append(f"{taken[0]} taken, {issued(clock[0])} issued")
            else:
                time.sleep(0)

    def advance() -> None:
        deadline = time.monotonic() + 60
        for _ in range(steps):
            while issued(clock[0] + step) - taken[0] > burst:  # wait for room in the bucket
                assert time.monotonic() < deadline, "workers stopped taking"
                time.sleep(0)
            clock[0] += step

    storage.take_sync("k", rate=rate, burst=burst, now=T0)  # the bucket starts full at T0
    taken[0] = 1
    threads = [threading.Thread(target=worker) for _ in range(4)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as finely as the GIL allows
    try:
        for t in threads:
            t.start()
        advance()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        sys.setswitchinterval(switch_interval)
    by_workers = taken[0] - 1
    while storage.take_sync("k", rate=rate, burst=burst, now=clock[0]).allowed:
        taken[0] += 1
    elapsed = clock[0] - T0
    assert elapsed == steps * step
    assert not overdraft
    assert by_workers >= 300 - burst  # the racing threads, not the final drain, took the refill
    assert taken[0] == math.floor(burst + rate * elapsed) == 5 + 300
