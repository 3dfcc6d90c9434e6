"""The dashboard's history: per-minute traffic and per-key usage, kept in the registry database.

:class:`StatsRecorder` counts in memory — per (minute, model, version, route): requests,
4xx (429s included), 5xx, throttled (429), a fixed latency histogram, the latency sum and
batches; per (minute, key, model): requests, units, throttled, errors — and a thread adds the
counts every ``flush_s`` to both resolutions of ``stats_traffic`` and ``stats_usage``
(``m``: epoch minute, ``h``: epoch hour) with ``INSERT … ON CONFLICT … DO UPDATE SET n = n +
excluded.n``, so every process (``--workers N``, replicas, restarts) adds its own counts into
the same rows. The request path pays one clock read, one ``bisect`` and a few dict operations
under an uncontended lock (:meth:`StatsRecorder.observe`). Memory is bounded: at most
``max_keys`` distinct rows per minute and table, the rest merged into an ``(other)`` row
(counted in :attr:`StatsRecorder.overflowed`). Rows older than ``retention_days`` are deleted
at most hourly per process.

The rows' layout is :mod:`mlgate.telemetry.stats_rows`; :mod:`mlgate.telemetry.stats_read`
answers the ``/v1/stats`` questions from them.

The module sits below the database layer, so the tables (``mlgate.db.tables``) and the write
transaction (``mlgate.db.engine.write_tx``) are handed in as a :class:`StatsTables`.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mlgate.telemetry.stats_read import WINDOWS, StatsReader
from mlgate.telemetry.stats_rows import (
    BATCHES,
    ITEMS,
    LAT,
    N_LAT,
    OTHER,
    SUM,
    TRAFFIC_COUNTERS,
    TRAFFIC_PK,
    TRAFFIC_WIDTH,
    USAGE_COUNTERS,
    USAGE_PK,
    StatsTables,
)
from mlgate.types import Caller

__all__ = ["Observed", "StatsRecorder"]

log = logging.getLogger(__name__)

_MODEL_MAX, _ROUTE_MAX, _KEY_MAX, _OWNER_MAX = 64, 255, 32, 128
_SWEEP_S = 3600.0


# -- what observe reads of a closed exchange (mlgate.http.exchange.Exchange) --------------------


class _Admission(Protocol):
    @property
    def caller(self) -> Caller: ...
    @property
    def metered_as(self) -> str | None: ...
    @property
    def cost(self) -> int: ...


class Observed(Protocol):
    @property
    def status(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def admission(self) -> _Admission | None: ...
    @property
    def unserved(self) -> int: ...


_TrafficKey = tuple[int, str, str, str]  # (minute, model, version as text, route)
_UsageKey = tuple[int, str, str]  # (minute, key id, model)


class StatsRecorder:
    """Per-minute aggregates in memory, added to the database by a thread every ``flush_s``."""

    def __init__(
        self,
        engine: Engine,
        tables: StatsTables,
        *,
        flush_s: float = 10.0,
        retention_days: float = 7.0,
        max_keys: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(tables.bounds) != N_LAT:
            raise ValueError(f"the stats tables have {N_LAT} latency buckets")
        self._engine = engine
        self._tables = tables
        self._bounds = tables.bounds
        self.flush_s = flush_s
        self.retention_days = retention_days
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()  # guards the pending counters (O(1) work under it)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._traffic: dict[_TrafficKey, list[float]] = {}
        self._usage: dict[_UsageKey, list[Any]] = {}  # [requests, units, throttled, errors, owner]
        # distinct keys per minute (the cap), for the minutes still being written
        self._seen_traffic: dict[int, set[_TrafficKey]] = {}
        self._seen_usage: dict[int, set[_UsageKey]] = {}
        #: requests merged into an ``(other)`` row because their minute had ``max_keys`` rows
        self.overflowed = 0
        #: rows written by flushes so far (both resolutions), and flushes that failed
        self.rows_written = 0
        self.flush_failures = 0
        self._owners: dict[str, str] = {}  # key id -> owner ("" none), for throttle-only rows
        self._last_sweep = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the reader ``/v1/stats`` answers with, warmed once an hour by the flush thread
        self.reader: StatsReader | None = None
        self._warmed_hour = -1

    # -- the request path ---------------------------------------------------------------------

    def observe(self, x: Observed, elapsed: float) -> None:
        """One closed exchange: its traffic row and, if metered or throttled, its key's usage row."""
        minute = int(self._clock() // 60)
        status = x.status
        model = x.model or ""
        slot = LAT + bisect.bisect_left(self._bounds, elapsed)
        tkey = (minute, model, x.version or "", x.label)
        admission = x.admission
        with self._lock:
            row = self._traffic.get(tkey)
            if row is None:
                row = self._traffic_row(tkey)
            row[0] += 1
            if status >= 400:
                if status >= 500:
                    row[2] += 1
                else:
                    row[1] += 1
                    if status == 429:
                        row[3] += 1
            row[slot] += 1
            row[SUM] += elapsed
            if admission is not None:
                key_id = admission.metered_as
                if key_id is None:
                    return
                ukey = (minute, key_id, model)
                urow = self._usage.get(ukey)
                if urow is None:
                    urow = self._usage_row(ukey, admission.caller.username or "")
                cost = admission.cost
                urow[0] += 1
                urow[1] += max(0, cost - (cost if status >= 500 else x.unserved))
                if status >= 400:
                    urow[3] += 1
            elif status == 429 and x.key_id is not None:  # refused by the gateway: its key is known
                ukey = (minute, x.key_id, model)
                urow = self._usage.get(ukey)
                if urow is None:
                    urow = self._usage_row(ukey, None)
                urow[2] += 1

    def batch_hook(self, model: str, version: int, then: Callable[[int], None]) -> Callable[[int], None]:
        """A batcher's ``on_batch``: ``then(n)`` (the metric), and the batch counted for the minute
        (on the model version's row with route ``""``)."""
        text = str(version)
        clock, lock = self._clock, self._lock

        def on_batch(n: int) -> None:
            then(n)
            tkey = (int(clock() // 60), model, text, "")
            with lock:
                row = self._traffic.get(tkey)
                if row is None:
                    row = self._traffic_row(tkey)
                row[ITEMS] += n
                row[BATCHES] += 1

        return on_batch

    def _traffic_row(self, tkey: _TrafficKey) -> list[float]:
        """A new pending row (the lock held): within the minute's cap, else its ``(other)`` row."""
        seen = self._seen_traffic.get(tkey[0])
        if seen is None:
            seen = self._seen_traffic[tkey[0]] = set()
        if tkey not in seen:
            if len(seen) >= self.max_keys:
                self.overflowed += 1
                tkey = (tkey[0], OTHER, "", OTHER)
                row = self._traffic.get(tkey)
                if row is not None:
                    return row
            else:
                seen.add(tkey)
        row = self._traffic[tkey] = [0] * TRAFFIC_WIDTH
        row[SUM] = 0.0
        return row

    def _usage_row(self, ukey: _UsageKey, owner: str | None) -> list[Any]:
        seen = self._seen_usage.get(ukey[0])
        if seen is None:
            seen = self._seen_usage[ukey[0]] = set()
        if ukey not in seen:
            if len(seen) >= self.max_keys:
                self.overflowed += 1
                ukey, owner = (ukey[0], OTHER, OTHER), ""
                row = self._usage.get(ukey)
                if row is not None:
                    return row
            else:
                seen.add(ukey)
        row = self._usage[ukey] = [0, 0, 0, 0, owner]
        return row

    # -- flushing -----------------------------------------------------------------------------

    def start(self) -> None:
        """Flush every ``flush_s`` from a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mlgate-stats", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and flush what is pending (blocking)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        try:
            self.flush()
        except Exception:
            log.warning("final stats flush failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:
                log.warning("stats flush failed; its counts are kept for the next one", exc_info=True)
            try:
                self.sweep_if_due()
            except Exception:
                log.warning("stats retention sweep failed", exc_info=True)
            try:
                self.warm_if_due()
            except Exception:
                log.warning("stats warm-up failed", exc_info=True)

    def warm_if_due(self) -> bool:
        """Once an hour (and at the first flush), in this thread: the week of per-key sums of
        settled hours and the model totals computed ahead, so that the first ``/v1/stats``
        answer after the hour turns (or after start) reads two hours of rows, not a week."""
        reader = self.reader
        hour = int(self._clock() // 3600)
        if reader is None or hour == self._warmed_hour:
            return False
        self._warmed_hour = hour
        reader.usage_series(WINDOWS["7d"], None)
        reader.model_totals(WINDOWS["1h"])
        return True

    def pending(self) -> int:
        """Rows waiting for the next flush."""
        with self._lock:
            return len(self._traffic) + len(self._usage)

    def flush(self) -> int:
        """Add every pending count to both resolutions in one transaction; the rows written.
        On failure the counts go back to pending (merged) and the error propagates."""
        with self._flush_lock:
            with self._lock:
                traffic, usage = self._traffic, self._usage
                self._traffic, self._usage = {}, {}
                current = int(self._clock() // 60)
                for seen in (self._seen_traffic, self._seen_usage):
                    for minute in [m for m in seen if m < current - 1]:
                        del seen[minute]
            if not traffic and not usage:
                return 0
            try:
                written = self._write(traffic, usage)
            except BaseException:
                self.flush_failures += 1
                with self._lock:
                    for tkey, counts in traffic.items():
                        row = self._traffic.setdefault(tkey, [0] * TRAFFIC_WIDTH)
                        for i in range(TRAFFIC_WIDTH):
                            row[i] += counts[i]
                    for ukey, ucounts in usage.items():
                        urow = self._usage.setdefault(ukey, [0, 0, 0, 0, ucounts[4]])
                        for i in range(4):
                            urow[i] += ucounts[i]
                raise
            self.rows_written += written
            return written

    def _write(self, traffic: dict[_TrafficKey, list[float]], usage: dict[_UsageKey, list[Any]]) -> int:
        t_rows: dict[tuple[str, int, str, int, str], list[float]] = {}
        for (minute, model, version, route), counts in traffic.items():
            model, route = model[:_MODEL_MAX], route[:_ROUTE_MAX]
            v = int(version) if version.isdigit() and len(version) < 10 else 0
            for tk in (("m", minute, model, v, route), ("h", minute // 60, model, v, route)):
                row = t_rows.get(tk)
                if row is None:
                    t_rows[tk] = list(counts)
                else:
                    for i in range(TRAFFIC_WIDTH):
                        row[i] += counts[i]
        unknown = {k for (_, k, _), c in usage.items() if c[4] is None and not k.startswith("user:")}
        owners = self._resolve_owners(unknown) if unknown else {}
        u_rows: dict[tuple[str, int, str, str], list[Any]] = {}
        for (minute, key_id, model), ucounts in usage.items():
            owner: str | None = ucounts[4]
            if owner is None:
                owner = owners.get(key_id, "")
            model = model[:_MODEL_MAX]
            for uk in (("m", minute, key_id, model), ("h", minute // 60, key_id, model)):
                urow = u_rows.get(uk)
                if urow is None:
                    u_rows[uk] = [*ucounts[:4], owner[:_OWNER_MAX]]
                else:
                    for i in range(4):
                        urow[i] += ucounts[i]
                    if owner:
                        urow[4] = owner[:_OWNER_MAX]
        traffic_params = [
            {
                "resolution": r,
                "bucket": b,
                "model": m,
                "version": v,
                "route": route,
                **{
                    c: (float(x) if c == "latency_sum" else int(x))
                    for c, x in zip(TRAFFIC_COUNTERS, row, strict=True)
                },
            }
            for (r, b, m, v, route), row in sorted(t_rows.items())
        ]
        usage_params = [
            {
                "resolution": r,
                "bucket": b,
                "key_id": k,
                "model": m,
                "owner": row[4],
                **dict(zip(USAGE_COUNTERS, (int(x) for x in row[:4]), strict=True)),
            }
            for (r, b, k, m), row in sorted(u_rows.items())
        ]
        tables = self._tables
        with tables.write_tx(self._engine) as conn:
            if traffic_params:
                conn.execute(_upsert_add(conn, tables.traffic, TRAFFIC_PK, TRAFFIC_COUNTERS), traffic_params)
            if usage_params:
                conn.execute(
                    _upsert_add(conn, tables.usage, USAGE_PK, USAGE_COUNTERS, keep="owner"), usage_params
                )
        return len(traffic_params) + len(usage_params)

    def _resolve_owners(self, key_ids: set[str]) -> dict[str, str]:
        """Owners of keys seen only refused (no admission named them): one query, cached."""
        missing = sorted(k for k in key_ids if k not in self._owners)
        if missing:
            keys = self._tables.keys
            with self._engine.connect() as conn:
                found = dict(
                    conn.execute(sa.select(keys.c.id, keys.c.owner).where(keys.c.id.in_(missing))).all()
                )
            if len(self._owners) > 65_536:
                self._owners.clear()
            for key_id in missing:
                self._owners[key_id] = found.get(key_id) or ""
        return {k: self._owners[k] for k in key_ids}

    def sweep_if_due(self) -> int:
        """Delete rows past ``retention_days`` (at most once an hour); the rows deleted."""
        now = self._clock()
        if self.retention_days <= 0 or now - self._last_sweep < _SWEEP_S:
            return 0
        self._last_sweep = now
        return self.sweep(now)

    def sweep(self, now: float) -> int:
        """Delete minute rows older than ``retention_days`` and hour rows whose hour ended before."""
        keep_s = self.retention_days * 86_400
        minute_floor = math.floor((now - keep_s) / 60)
        hour_floor = math.floor((now - keep_s) / 3600)
        deleted = 0
        with self._tables.write_tx(self._engine) as conn:
            for table in (self._tables.traffic, self._tables.usage):
                for res, floor in (("m", minute_floor), ("h", hour_floor)):
                    result = conn.execute(
                        sa.delete(table).where(table.c.resolution == res, table.c.bucket < floor)
                    )
                    deleted += int(result.rowcount or 0)
        return deleted


def _upsert_add(
    conn: Connection, table: sa.Table, pk: Sequence[str], counters: Sequence[str], keep: str | None = None
) -> sa.Executable:
    """``INSERT … ON CONFLICT (pk) DO UPDATE SET n = n + excluded.n`` (PostgreSQL, SQLite);
    ``keep``: a text column replaced by the new value unless that is empty."""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt: Any = pg_insert(table)
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    else:
        raise RuntimeError(f"stats recording does not support the {name!r} database")
    excluded = stmt.excluded
    values: dict[str, Any] = {c: table.c[c] + excluded[c] for c in counters}
    if keep is not None:
        values[keep] = sa.case((excluded[keep] != "", excluded[keep]), else_=table.c[keep])
    return stmt.on_conflict_do_update(index_elements=list(pk), set_=values)  # type: ignore[no-any-return]
