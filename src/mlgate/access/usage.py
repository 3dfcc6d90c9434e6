"""Durable usage per key, UTC day and scope, batched so a request costs no database write.

:meth:`UsageRecorder.record` only adds to in-memory counters; :meth:`UsageRecorder.flush`
(every ``flush_interval`` seconds from :meth:`UsageRecorder.run`, and on shutdown) adds
them to ``usage_daily`` in one write transaction with ``INSERT … ON CONFLICT DO UPDATE``,
so any number of processes can flush into the same rows and the totals add up exactly.

Example::

    usage = UsageRecorder(engine, flush_interval=settings.limiter.usage_flush_s)
    task = asyncio.create_task(usage.run())     # cancel it on shutdown: it flushes last
    usage.record(key.id, "temperatura", outcome="ok")
    usage.report(key_ids=[key.id], since=date(2026, 1, 1))
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlgate.db.engine import write_tx
from mlgate.db.tables import usage_daily
from mlgate.errors import ConfigurationError

__all__ = ["Outcome", "UsageRecorder", "user_subject"]

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "throttled", "error"]
#: What one call adds to (requests, throttled, errors).
_DELTAS: dict[str, tuple[int, int, int]] = {"ok": (1, 0, 0), "error": (1, 0, 1), "throttled": (0, 1, 0)}
_COUNTERS = ("requests", "throttled", "errors", "units")
# usage_daily's column widths: refuse at record time what a flush could never write.
_KEY_MAX = 32
_SCOPE_MAX = 128
_DAY_S = 86_400

_Row = tuple[str, str, str]  # (key_id, day, scope)


def user_subject(username: str) -> str:
    """The usage ``key_id`` of calls a user makes with a token: ``user:<name>`` (≤ 32 chars).

    Usernames too long for the column become ``user:`` + 27 hex digits of their sha256,
    so the same user always maps to the same row.
    """
    subject = f"user:{username}"
    if len(subject) <= _KEY_MAX:
        return subject
    return "user:" + hashlib.sha256(username.encode()).hexdigest()[: _KEY_MAX - 5]


class UsageRecorder:
    """Counts calls per ``(key_id, UTC day, scope)`` in memory and flushes them in batches.

    Counters: ``requests`` are admitted calls (outcome ``ok`` or ``error``), ``throttled``
    are calls the limiter refused (429: rate or quota), ``errors`` are admitted calls that
    failed (a subset of ``requests``), ``units`` the items served — what the quota is
    charged: a batch answering N items is N units, an item or call the server failed to
    serve (5xx) is none.

    **Crash window**: a ``kill -9`` loses what was recorded since the last flush, i.e. at
    most ``flush_interval`` seconds of acknowledged calls are missing from usage (plus a
    flush that was in flight). Quota *enforcement* is not affected: it lives in the
    limiter's own state. A gateway that must not acknowledge a call before its usage is
    durable awaits :meth:`wait_flushed` (group commit: concurrent callers share one write)
    or calls :meth:`flush` when :meth:`pending` grows.

    A failed flush keeps its deltas for the next one, so nothing is lost or counted twice;
    the one ambiguous case is a connection lost *while committing*, which is retried and
    may then count that batch twice (usage errs on the side of ≥ acknowledged calls).
    Reports merge this process's unflushed counts; other processes' unflushed counts show
    up after their next flush.
    """

    def __init__(
        self, engine: Engine, *, flush_interval: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        if not flush_interval > 0:
            raise ValueError("flush_interval must be > 0")
        self._engine = engine
        self._interval = flush_interval
        self._clock = clock
        self._lock = threading.Lock()  # guards the pending counters (held for O(1) work only)
        self._flush_lock = threading.Lock()  # one flush (or report) at a time
        self._pending: dict[_Row, list[int]] = {}
        self._pending_events = 0
        self._inflight_events = 0
        self._recorded_seq = 0  # events recorded so far
        self._flushed_seq = 0  # every event up to this one is in the database
        self._days: dict[int, str] = {}

    @property
    def flush_interval(self) -> float:
        return self._interval

    # -- the hot path ---------------------------------------------------------------------

    def record(
        self,
        key_id: str,
        scope: str,
        *,
        outcome: Outcome,
        units: int | None = None,
        when: float | None = None,
    ) -> None:
        """Count one call and the ``units`` it served (default: 1 if admitted); O(1), no I/O,
        thread-safe. ``when`` (epoch seconds) picks the UTC day."""
        deltas = _DELTAS.get(outcome)
        if deltas is None:
            raise ValueError(f"outcome must be one of {', '.join(_DELTAS)}, not {outcome!r}")
        if not key_id or len(key_id) > _KEY_MAX:
            raise ValueError(f"usage key_id must be 1-{_KEY_MAX} characters")
        if len(scope) > _SCOPE_MAX:
            raise ValueError(f"usage scope must be at most {_SCOPE_MAX} characters")
        row = (key_id, self._day(self._clock() if when is None else when), scope)
        requests, throttled, errors = deltas
        served = requests if units is None else units
        with self._lock:
            counts = self._pending.get(row)
            if counts is None:
                self._pending[row] = [requests, throttled, errors, served]
            else:
                counts[0] += requests
                counts[1] += throttled
                counts[2] += errors
                counts[3] += served
            self._pending_events += 1
            self._recorded_seq += 1

    def pending(self) -> int:
        """Recorded calls not yet durable (pending, or in a flush that has not committed)."""
        with self._lock:
            return self._pending_events + self._inflight_events

    # -- flushing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Add every pending count to the database in one transaction; return the rows written.

        On failure the counts go back to pending (merged with anything recorded meanwhile)
        and the error propagates; the next flush writes them once.
        """
        with self._flush_lock:
            with self._lock:
                batch, events, seq = self._pending, self._pending_events, self._recorded_seq
                self._pending, self._pending_events = {}, 0
                self._inflight_events = events
            if not batch:
                with self._lock:
                    self._inflight_events = 0
                    self._flushed_seq = max(self._flushed_seq, seq)
                return 0
            try:
                self._write(batch)
            except BaseException:
                with self._lock:
                    for row, counts in batch.items():
                        current = self._pending.setdefault(row, [0, 0, 0, 0])
                        for i in range(4):
                            current[i] += counts[i]
                    self._pending_events += events
                    self._inflight_events = 0
                raise
            with self._lock:
                self._inflight_events = 0
                self._flushed_seq = seq
            return len(batch)

    async def wait_flushed(self) -> None:
        """Return once every call recorded before this one is in the database.

        Flushes in a worker thread if needed; concurrent waiters share the flush. Raises
        what the flush raised (the counts stay pending).
        """
        with self._lock:
            target = self._recorded_seq
        while True:
            with self._lock:
                if self._flushed_seq >= target:
                    return
            await asyncio.to_thread(self.flush)

    async def run(self) -> None:
        """Flush every ``flush_interval`` seconds until cancelled, then flush a last time.

        A failed periodic flush is logged and retried on the next tick.
        """
        try:
            while True:
                await asyncio.sleep(self._interval)
                try:
                    await asyncio.to_thread(self.flush)
                except Exception:
                    logger.warning(
                        "usage flush failed; %d calls kept for the next one", self.pending(), exc_info=True
                    )
        finally:
            try:
                await asyncio.shield(asyncio.to_thread(self.flush))
            except Exception:
                logger.error("final usage flush failed; %d calls not written", self.pending(), exc_info=True)

    def close(self) -> None:
        """Flush what is pending (call on shutdown when :meth:`run` is not used)."""
        self.flush()

    # -- reading --------------------------------------------------------------------------

    def report(
        self,
        *,
        key_ids: Collection[str] | None = None,
        since: date | None = None,
        until: date | None = None,
    ) -> list[dict[str, Any]]:
        """Usage rows ``{"key_id", "day", "scope", "requests", "throttled", "errors", "units"}``.

        Flushed rows plus this process's unflushed counts, sorted by key, day and scope;
        ``key_ids`` None means every key; ``since``/``until`` are inclusive UTC days.
        """
        if key_ids is not None:
            key_ids = set(key_ids)
            if not key_ids:
                return []
        low = since.isoformat() if since is not None else None
        high = until.isoformat() if until is not None else None
        query = sa.select(usage_daily)
        if key_ids is not None:
            query = query.where(usage_daily.c.key_id.in_(sorted(key_ids)))
        if low is not None:
            query = query.where(usage_daily.c.day >= low)
        if high is not None:
            query = query.where(usage_daily.c.day <= high)
        totals: dict[_Row, list[int]] = {}
        # Holding the flush lock, no batch is between "taken from pending" and "committed".
        with self._flush_lock:
            with self._engine.connect() as conn:
                for r in conn.execute(query):
                    totals[(r.key_id, r.day, r.scope)] = [
                        int(r.requests),
                        int(r.throttled),
                        int(r.errors),
                        int(r.units),
                    ]
            with self._lock:
                pending = [(row, list(counts)) for row, counts in self._pending.items()]
        for row, counts in pending:
            key_id, day, _scope = row
            if key_ids is not None and key_id not in key_ids:
                continue
            if (low is not None and day < low) or (high is not None and day > high):
                continue
            current = totals.setdefault(row, [0, 0, 0, 0])
            for i in range(4):
                current[i] += counts[i]
        return [
            {"key_id": key_id, "day": day, "scope": scope, **dict(zip(_COUNTERS, counts, strict=True))}
            for (key_id, day, scope), counts in sorted(totals.items())
        ]

    # -- internals ------------------------------------------------------------------------

    def _day(self, when: float) -> str:
        index = math.floor(when / _DAY_S)
        day = self._days.get(index)
        if day is None:
            day = datetime.fromtimestamp(index * _DAY_S, UTC).date().isoformat()
            if len(self._days) > 64:
                self._days.clear()
            self._days[index] = day
        return day

    def _write(self, batch: dict[_Row, list[int]]) -> None:
        # Sorted, so two processes flushing overlapping rows lock them in the same order.
        rows = [
            {
                "key_id": k,
                "day": d,
                "scope": s,
                "requests": c[0],
                "throttled": c[1],
                "errors": c[2],
                "units": c[3],
            }
            for (k, d, s), c in sorted(batch.items())
        ]
        with write_tx(self._engine) as conn:
            conn.execute(_upsert(conn), rows)


def _upsert(conn: sa.Connection) -> sa.Executable:
    """``INSERT … ON CONFLICT (key_id, day, scope) DO UPDATE SET n = n + excluded.n``."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(usage_daily)
        return pg.on_conflict_do_update(
            index_elements=["key_id", "day", "scope"],
            set_={c: usage_daily.c[c] + pg.excluded[c] for c in _COUNTERS},
        )
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(usage_daily)
        return lite.on_conflict_do_update(
            index_elements=["key_id", "day", "scope"],
            set_={c: usage_daily.c[c] + lite.excluded[c] for c in _COUNTERS},
        )
    raise ConfigurationError(f"usage recording does not support the {name!r} database")
