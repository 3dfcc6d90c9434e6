"""Limiter state in the registry database, shared by every server process that uses it.

Each take or count is one short write transaction: ``SELECT … FOR UPDATE`` on
PostgreSQL (the row lock serializes takes on one bucket, other buckets run in
parallel), ``BEGIN IMMEDIATE`` on SQLite (one writer at a time, waiting up to the busy
timeout instead of failing with "database is locked"). A bucket's first take inserts
its row with ``ON CONFLICT DO NOTHING`` and reads it again under the lock, so two
processes creating the same bucket never both start it full. The refill arithmetic is
:func:`mlgate.access.limiter_storage.take_tokens`, the same as in memory.

The blocking work runs in a worker thread (:func:`asyncio.to_thread`); the event loop
never waits on the database. A database that cannot be reached raises
:class:`mlgate.errors.LimiterUnavailable` (503).

Example::

    storage = SqlLimiterStorage(repository.engine)
    decision = await storage.take("bucket:abcd1234:*", rate=10, burst=10)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, delete, select, update
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


class SqlLimiterStorage:
    """Token buckets and quota counters in the ``limiter_buckets`` / ``limiter_counters`` tables."""

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"the database limiter supports SQLite and PostgreSQL, not {dialect}")
        self._engine = engine
        self._lock_rows = dialect == "postgresql"
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def take(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        return await asyncio.to_thread(self._take, key, rate, burst, cost, t)

    async def count(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        return await asyncio.to_thread(self._count, key, limit, window_end, cost, t)

    async def reset(self, key: str) -> None:
        await asyncio.to_thread(self._reset, key)

    async def close(self) -> None:
        """Nothing to release: the engine belongs to whoever created it."""

    # -- blocking work, in a worker thread -------------------------------------------------

    def _take(self, key: str, rate: float, burst: int, cost: int, now: float) -> Decision:
        table = limiter_buckets
        try:
            with write_tx(self._engine) as conn:
                row = self._locked_row(conn, table, key, tokens=float(burst), updated_at=now)
                allowed, tokens, stamp, retry_after = take_tokens(
                    float(row.tokens), float(row.updated_at), now=now, rate=rate, burst=burst, cost=cost
                )
                if allowed:
                    conn.execute(
                        update(table).where(table.c.key == key).values(tokens=tokens, updated_at=stamp)
                    )
        except sa_exc.OperationalError as exc:
            raise _unavailable(exc) from exc
        return Decision(allowed, burst, whole_tokens(tokens), retry_after)

    def _count(self, key: str, limit: int, window_end: float, cost: int, now: float) -> QuotaDecision:
        table = limiter_counters
        try:
            with write_tx(self._engine) as conn:
                row = self._locked_row(conn, table, key, count=0, expires_at=window_end)
                stored_end = float(row.expires_at)
                if stored_end <= now or stored_end < window_end:
                    used, ends = 0, window_end  # the stored window is over
                else:
                    used, ends = int(row._mapping["count"]), stored_end
                allowed = used + cost <= limit
                if allowed:
                    used += cost
                    conn.execute(update(table).where(table.c.key == key).values(count=used, expires_at=ends))
        except sa_exc.OperationalError as exc:
            raise _unavailable(exc) from exc
        return QuotaDecision(allowed, limit, limit - used, ends)

    def _reset(self, key: str) -> None:
        try:
            with write_tx(self._engine) as conn:
                conn.execute(delete(limiter_buckets).where(limiter_buckets.c.key == key))
                conn.execute(delete(limiter_counters).where(limiter_counters.c.key == key))
        except sa_exc.OperationalError as exc:
            raise _unavailable(exc) from exc

    def _locked_row(self, conn: Connection, table: Table, key: str, **initial: Any) -> Row[Any]:
        """The row of ``key``, locked until the transaction ends; created from ``initial`` if missing."""
        query = select(table).where(table.c.key == key)
        if self._lock_rows:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            # Another transaction may insert the same key first: then this insert waits for
            # it to commit, does nothing, and the second read returns its row, locked.
            conn.execute(self._insert(table).values(key=key, **initial).on_conflict_do_nothing())
            row = conn.execute(query).one()
        return row


def _unavailable(exc: sa_exc.OperationalError) -> LimiterUnavailable:
    return LimiterUnavailable(
        "the limiter database is unavailable", details={"reason": type(exc.orig).__name__}
    )
