"""UsageRecorder rules independent of the backend: no I/O on record, merging, the flush loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlgate.access.usage import UsageRecorder, user_subject
from mlgate.repository import Repository

MIDNIGHT = datetime(2026, 3, 5, tzinfo=UTC).timestamp()


class QueryCounter:
    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_args: Any) -> None:
        self.count += 1


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'u.db'}")
    yield repo.engine
    repo.close()


def counts(report: list[dict[str, Any]]) -> list[tuple[str, str, str, int, int, int]]:
    return [(r["key_id"], r["day"], r["scope"], r["requests"], r["throttled"], r["errors"]) for r in report]


def test_record_does_no_io(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    queries = QueryCounter(engine)
    for _ in range(1000):
        usage.record("k", "m", outcome="ok")
    assert queries.count == 0
    assert usage.pending() == 1000


def test_day_is_the_utc_date_of_when(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine, clock=lambda: MIDNIGHT + 10)
    usage.record("k", "m", outcome="ok", when=MIDNIGHT - 0.001)
    usage.record("k", "m", outcome="ok", when=MIDNIGHT)
    usage.record("k", "m", outcome="ok")  # the clock's day
    assert counts(usage.report()) == [("k", "2026-03-04", "m", 1, 0, 0), ("k", "2026-03-05", "m", 2, 0, 0)]


def test_outcomes_count_into_their_columns(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    for outcome in ("ok", "ok", "error", "throttled", "throttled", "throttled"):
        usage.record("k", "m", outcome=outcome, when=MIDNIGHT)
    # requests = admitted (ok + error); errors ⊆ requests; throttled = refused by the limiter
    assert counts(usage.report()) == [("k", "2026-03-05", "m", 3, 3, 1)]


def test_invalid_records_are_refused_before_they_can_poison_a_flush(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    with pytest.raises(ValueError, match="outcome"):
        usage.record("k", "m", outcome="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_id"):
        usage.record("k" * 33, "m", outcome="ok")
    with pytest.raises(ValueError, match="key_id"):
        usage.record("", "m", outcome="ok")
    with pytest.raises(ValueError, match="scope"):
        usage.record("k", "/" + "x" * 128, outcome="ok")
    assert usage.pending() == 0


def test_report_merges_unflushed_deltas(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    usage.record("a", "m", outcome="ok", when=MIDNIGHT)
    usage.record("b", "m", outcome="ok", when=MIDNIGHT)
    usage.flush()
    usage.record("a", "m", outcome="ok", when=MIDNIGHT)  # adds to a flushed row
    usage.record("a", "n", outcome="error", when=MIDNIGHT)  # a row only in memory
    usage.record("c", "m", outcome="ok", when=MIDNIGHT - 86_400)  # another day
    assert counts(usage.report()) == [
        ("a", "2026-03-05", "m", 2, 0, 0),
        ("a", "2026-03-05", "n", 1, 0, 1),
        ("b", "2026-03-05", "m", 1, 0, 0),
        ("c", "2026-03-04", "m", 1, 0, 0),
    ]
    assert counts(usage.report(key_ids={"a"}, since=date(2026, 3, 5), until=date(2026, 3, 5))) == [
        ("a", "2026-03-05", "m", 2, 0, 0),
        ("a", "2026-03-05", "n", 1, 0, 1),
    ]
    assert counts(usage.report(key_ids=["c", "zzz"], until=date(2026, 3, 4))) == [
        ("c", "2026-03-04", "m", 1, 0, 0)
    ]
    assert usage.report(since=date(2026, 3, 6)) == []
    assert counts(UsageRecorder(engine).report()) == [  # another process sees only flushed rows
        ("a", "2026-03-05", "m", 1, 0, 0),
        ("b", "2026-03-05", "m", 1, 0, 0),
    ]


def test_run_flushes_periodically_and_on_cancel(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine, flush_interval=0.02)
    reader = UsageRecorder(engine)

    async def scenario() -> None:
        task = asyncio.create_task(usage.run())
        usage.record("k", "m", outcome="ok", when=MIDNIGHT)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if reader.report():
                break
        assert counts(reader.report()) == [("k", "2026-03-05", "m", 1, 0, 0)]
        usage.record("k", "m", outcome="ok", when=MIDNIGHT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert usage.pending() == 0
    assert counts(reader.report()) == [("k", "2026-03-05", "m", 2, 0, 0)]


def test_run_survives_a_failing_flush(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    usage = UsageRecorder(engine, flush_interval=0.01)
    real_write = usage._write
    failures = {"left": 2}

    def flaky(batch: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise sa.exc.OperationalError("INSERT", None, Exception("database is down"))
        real_write(batch)

    monkeypatch.setattr(usage, "_write", flaky)

    async def scenario() -> None:
        task = asyncio.create_task(usage.run())
        usage.record("k", "m", outcome="ok", when=MIDNIGHT)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if usage.pending() == 0:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="mlgate.access.usage"):
        asyncio.run(scenario())
    assert failures["left"] == 0
    assert "usage flush failed" in caplog.text
    assert counts(UsageRecorder(engine).report()) == [("k", "2026-03-05", "m", 1, 0, 0)]


def test_wait_flushed_makes_recorded_calls_durable(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine, flush_interval=60)
    reader = UsageRecorder(engine)

    async def scenario() -> None:
        for _ in range(5):
            usage.record("k", "m", outcome="ok", when=MIDNIGHT)
        await asyncio.gather(*(usage.wait_flushed() for _ in range(10)))
        assert counts(reader.report()) == [("k", "2026-03-05", "m", 5, 0, 0)]
        await usage.wait_flushed()  # nothing new: returns at once

    asyncio.run(scenario())
    assert usage.pending() == 0


def test_close_flushes(engine: sa.Engine) -> None:
    usage = UsageRecorder(engine)
    usage.record("k", "m", outcome="throttled", when=MIDNIGHT)
    usage.close()
    assert usage.pending() == 0
    assert counts(UsageRecorder(engine).report()) == [("k", "2026-03-05", "m", 0, 1, 0)]


def test_flush_interval_must_be_positive(engine: sa.Engine) -> None:
    with pytest.raises(ValueError, match="flush_interval"):
        UsageRecorder(engine, flush_interval=0)


def test_user_subject_fits_the_column() -> None:
    assert user_subject("alice") == "user:alice"
    long = user_subject("a" * 64)
    assert len(long) == 32
    assert long.startswith("user:")
    assert long == user_subject("a" * 64)
    assert long != user_subject("a" * 63 + "b")
