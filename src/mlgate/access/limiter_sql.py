"""Limiter state in the registry database, shared by every server process that uses it.

Writes are short transactions: ``SELECT … FOR UPDATE`` on PostgreSQL (the row lock
serializes takes on one bucket, other buckets run in parallel), ``BEGIN IMMEDIATE`` on
SQLite (one writer at a time, waiting up to the busy timeout instead of failing with
"database is locked"). A bucket's first take inserts its row with ``ON CONFLICT DO
NOTHING`` and reads it again under the lock, so two processes creating the same bucket
never both start it full. The refill arithmetic is
:func:`mlgate.access.limiter_storage.take_tokens`, the same as in memory.

**Group commit.** Takes and counts that arrive while a transaction is running wait for it
and then run together in the next one, in arrival order (and :meth:`SqlLimiterStorage.take_then_count`
meters a request's bucket and quota in one operation): each row they touch is read (and
locked) once, every operation is applied to it in order exactly as separate transactions
would have applied them — no other process can interleave, the row is locked — and the row
is written once. Under load one thread hop and one transaction serve many requests (in a
W1 profile with ``--workers 2`` each request had paid two transactions and two thread hops,
~3 ms of CPU); a lone request still runs at once. If a transaction fails, every operation in
it fails the same way (none of its writes is kept).

The blocking work runs in a worker thread (:func:`asyncio.to_thread`); the event loop
never waits on the database. A database that cannot be reached raises
:class:`mlgate.errors.LimiterUnavailable` (503).

Example::

    storage = SqlLimiterStorage(repository.engine)
    decision = await storage.take("bucket:abcd1234:*", rate=10, burst=10)
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from mlgate.access.limiter_storage import (
    Decision,
    QuotaDecision,
    check_bucket_args,
    check_quota_args,
    take_tokens,
    whole_tokens,
)
from mlgate.db.engine import write_tx
from mlgate.db.tables import limiter_buckets, limiter_counters
from mlgate.errors import ConfigurationError, LimiterUnavailable

__all__ = ["SqlLimiterStorage"]


@dataclass(slots=True)
class _Take:
    key: str
    rate: float
    burst: int
    cost: int
    now: float


@dataclass(slots=True)
class _Count:
    key: str
    limit: int
    window_end: float
    cost: int
    now: float


@dataclass(slots=True)
class _TakeThenCount:
    """A request's whole metering: the bucket, then (only if it allowed) the quota."""

    take: _Take
    count: _Count


@dataclass(slots=True)
class _Refund:
    """Give back what an unserved request took (see LimiterStorage.refund)."""

    bucket_key: str | None
    quota_key: str | None
    rate: float
    burst: int
    window_end: float
    cost: int


_Op = _Take | _Count | _TakeThenCount | _Refund
_Result = Decision | QuotaDecision | tuple[Decision, QuotaDecision | None] | None


class _Statements:
    """Statements built once (building them per call cost more than running them on SQLite)."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        lock = dialect == "postgresql"
        self.select: dict[str, Any] = {}
        self.insert: dict[str, Any] = {}
        for table in (limiter_buckets, limiter_counters):
            query = select(table).where(table.c.key == bindparam("k"))
            self.select[table.name] = query.with_for_update() if lock else query
            self.insert[table.name] = insert(table).on_conflict_do_nothing()
        b, c = limiter_buckets, limiter_counters
        self.update_bucket = (
            update(b)
            .where(b.c.key == bindparam("k"))
            .values(tokens=bindparam("t"), updated_at=bindparam("u"))
        )
        self.update_counter = (
            update(c).where(c.c.key == bindparam("k")).values(count=bindparam("n"), expires_at=bindparam("e"))
        )


class SqlLimiterStorage:
    """Token buckets and quota counters in the ``limiter_buckets`` / ``limiter_counters`` tables."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"the database limiter supports SQLite and PostgreSQL, not {dialect}")
        self._engine = engine
        self._sql = _Statements(dialect)
        self._lock_file = _lock_file_for(engine)
        self._waiting: list[tuple[_Op, asyncio.Future[_Result]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        result = await self._submit(_Take(key, rate, burst, cost, t))
        assert isinstance(result, Decision)
        return result

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        result = await self._submit(_Count(key, limit, window_end, cost, t))
        assert isinstance(result, QuotaDecision)
        return result

    async def take_then_count(
        self,
        bucket_key: str,
        quota_key: str,
        *,
        rate: float,
        burst: int,
        limit: int,
        window_end: float,
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, QuotaDecision | None]:
        """:meth:`take`, then :meth:`count` only if the bucket allowed it: one transaction, not two.

        The gate's metering of one request (what it would otherwise do in two round trips).
        """
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        op = _TakeThenCount(
            _Take(bucket_key, rate, burst, cost, t), _Count(quota_key, limit, window_end, cost, t)
        )
        result = await self._submit(op)
        assert isinstance(result, tuple)
        return result

    async def refund(
        self,
        bucket_key: str | None,
        quota_key: str | None,
        *,
        rate: float,
        burst: int,
        window_end: float,
        cost: int,
    ) -> None:
        await self._submit(_Refund(bucket_key, quota_key, rate, burst, window_end, cost))

    async def reset(self, key: str) -> None:
        await asyncio.to_thread(self._reset, key)

    async def close(self) -> None:
        """Nothing to release: the engine belongs to whoever created it."""

    # -- group commit ----------------------------------------------------------------------

    async def _submit(self, op: _Op) -> _Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result] = loop.create_future()
        self._waiting.append((op, future))
        committer = self._committer
        if committer is None or committer.done() or committer.get_loop() is not loop:
            self._committer = loop.create_task(self._commit_waiting(), name="mlgate-limiter-sql")
        return await future

    async def _commit_waiting(self) -> None:
        # A task of its own, so a caller that goes away never strands the others' answers.
        while self._waiting:
            batch, self._waiting = self._waiting, []
            batch = [(op, f) for op, f in batch if not f.done()]  # callers already gone
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._apply, [op for op, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    # -- blocking work, in a worker thread -------------------------------------------------

    def _apply(self, ops: list[_Op]) -> list[_Result]:
        """Every op in order, in one transaction: each row read (locked) once, written once."""
        rows: dict[tuple[str, str], list[Any]] = {}  # (table, key) -> [tokens or count, stamp or end]
        dirty: set[tuple[str, str]] = set()
        out: list[_Result] = []
        try:
            with _turn(self._lock_file), write_tx(self._engine) as conn:
                for op in ops:
                    if isinstance(op, _Take):
                        out.append(self._take_in(conn, op, rows, dirty))
                    elif isinstance(op, _Count):
                        out.append(self._count_in(conn, op, rows, dirty))
                    elif isinstance(op, _Refund):
                        self._refund_in(conn, op, rows, dirty)
                        out.append(None)
                    else:
                        decision = self._take_in(conn, op.take, rows, dirty)
                        quota = self._count_in(conn, op.count, rows, dirty) if decision.allowed else None
                        out.append((decision, quota))
                for ref in dirty:
                    value, stamp = rows[ref]
                    if ref[0] == "b":
                        conn.execute(self._sql.update_bucket, {"k": ref[1], "t": value, "u": stamp})
                    else:
                        conn.execute(self._sql.update_counter, {"k": ref[1], "n": int(value), "e": stamp})
        except sa_exc.OperationalError as exc:
            raise _unavailable(exc) from exc
        return out

    def _take_in(
        self, conn: Connection, op: _Take, rows: dict[tuple[str, str], list[Any]], dirty: set[tuple[str, str]]
    ) -> Decision:
        ref = ("b", op.key)
        row = rows.get(ref)
        if row is None:
            row = rows[ref] = self._locked(conn, limiter_buckets, op.key, float(op.burst), op.now)
        allowed, tokens, stamp, retry_after = take_tokens(
            row[0], row[1], now=op.now, rate=op.rate, burst=op.burst, cost=op.cost
        )
        if allowed:
            row[0], row[1] = tokens, stamp
            dirty.add(ref)
        return Decision(allowed, op.burst, whole_tokens(tokens), retry_after)

    def _count_in(
        self,
        conn: Connection,
        op: _Count,
        rows: dict[tuple[str, str], list[Any]],
        dirty: set[tuple[str, str]],
    ) -> QuotaDecision:
        ref = ("c", op.key)
        row = rows.get(ref)
        if row is None:
            row = rows[ref] = self._locked(conn, limiter_counters, op.key, 0, op.window_end)
        stored_end = float(row[1])
        if stored_end <= op.now or stored_end < op.window_end:
            used, ends = 0, op.window_end  # the stored window is over
        else:
            used, ends = int(row[0]), stored_end
        allowed = used + op.cost <= op.limit
        if allowed:
            used += op.cost
            row[0], row[1] = used, ends
            dirty.add(ref)
        return QuotaDecision(allowed, op.limit, op.limit - used, ends)

    def _refund_in(
        self,
        conn: Connection,
        op: _Refund,
        rows: dict[tuple[str, str], list[Any]],
        dirty: set[tuple[str, str]],
    ) -> None:
        if op.bucket_key is not None:
            ref = ("b", op.bucket_key)
            row = rows.get(ref)
            if row is None:
                row = rows[ref] = self._locked(conn, limiter_buckets, op.bucket_key, float(op.burst), 0.0)
            row[0] = min(float(op.burst), row[0] + op.cost)
            dirty.add(ref)
        if op.quota_key is not None:
            ref = ("c", op.quota_key)
            row = rows.get(ref)
            if row is None:
                row = rows[ref] = self._locked(conn, limiter_counters, op.quota_key, 0, op.window_end)
            if float(row[1]) == op.window_end:
                row[0] = max(0, int(row[0]) - op.cost)
                dirty.add(ref)

    def _locked(self, conn: Connection, table: Table, key: str, value: float, stamp: float) -> list[Any]:
        """``[value, stamp]`` of ``key``, locked until the transaction ends; created if missing."""
        query = self._sql.select[table.name]
        row = conn.execute(query, {"k": key}).first()
        if row is None:
            # Another transaction may insert the same key first: then this insert waits for
            # it to commit, does nothing, and the second read returns its row, locked.
            if table is limiter_buckets:
                initial = {"key": key, "tokens": value, "updated_at": stamp}
            else:
                initial = {"key": key, "count": int(value), "expires_at": stamp}
            conn.execute(self._sql.insert[table.name], initial)
            row = conn.execute(query, {"k": key}).one()
        m = row._mapping
        if table is limiter_buckets:
            return [float(m["tokens"]), float(m["updated_at"])]
        return [int(m["count"]), float(m["expires_at"])]

    def _reset(self, key: str) -> None:
        try:
            with write_tx(self._engine) as conn:
                conn.execute(delete(limiter_buckets).where(limiter_buckets.c.key == key))
                conn.execute(delete(limiter_counters).where(limiter_counters.c.key == key))
        except sa_exc.OperationalError as exc:
            raise _unavailable(exc) from exc


def _lock_file_for(engine: Engine) -> Path | None:
    """SQLite on a file: a lock file beside it, taken around each limiter transaction.

    Processes then queue for the write lock in the kernel (woken the moment it is free)
    instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms between retries: with
    ``--workers 2`` those sleeps, not the CPU, bounded W1 throughput.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().with_name(Path(database).name + ".limiter-lock")


@contextmanager
def _turn(lock_file: Path | None) -> Iterator[None]:
    if lock_file is None:
        yield
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _unavailable(exc: sa_exc.OperationalError) -> LimiterUnavailable:
    return LimiterUnavailable(
        "the limiter database is unavailable", details={"reason": type(exc.orig).__name__}
    )
