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

:class:`StatsReader` answers the ``/v1/stats`` questions from those rows: per-model totals,
one model's series per version, per-key usage series. Windows: ``1h`` (minute rows, 60 s
steps), ``24h`` (minute rows in 300 s steps), ``7d`` (hour rows, 3600 s steps).

The module sits below the database layer, so the tables (``mlgate.db.tables``) and the write
transaction (``mlgate.db.engine.write_tx``) are handed in as a :class:`StatsTables`.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mlgate.types import Caller

__all__ = [
    "KEY_WINDOWS",
    "OTHER",
    "WINDOWS",
    "StatsReader",
    "StatsRecorder",
    "StatsTables",
    "Window",
    "histogram_quantile",
    "window_of",
]

log = logging.getLogger(__name__)

#: The model, route and key of rows merged once a minute has ``max_keys`` distinct ones.
OTHER = "(other)"
_LAT = 4  # index of lat_0 in a traffic row
_N_LAT = 12
_SUM = _LAT + _N_LAT  # latency_sum
_ITEMS = _SUM + 1  # batch_items
_BATCHES = _SUM + 2  # batches
_TRAFFIC_WIDTH = _BATCHES + 1
_TRAFFIC_COUNTERS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "throttled",
    *[f"lat_{i}" for i in range(_N_LAT)],
    "latency_sum",
    "batch_items",
    "batches",
)
_USAGE_COUNTERS = ("requests", "units", "throttled", "errors")
_TRAFFIC_PK = ("resolution", "bucket", "model", "version", "route")
_USAGE_PK = ("resolution", "bucket", "key_id", "model")
_MODEL_MAX, _ROUTE_MAX, _KEY_MAX, _OWNER_MAX = 64, 255, 32, 128
_SWEEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class StatsTables:
    """What the recorder and the reader need from the database layer (built by the server)."""

    traffic: sa.Table  # stats_traffic
    usage: sa.Table  # stats_usage
    keys: sa.Table  # api_keys: the owner of a key seen only throttled
    #: upper bounds of ``lat_0`` … ``lat_11`` (seconds; the last is +inf)
    bounds: tuple[float, ...]
    #: a writing transaction (``BEGIN IMMEDIATE`` on SQLite)
    write_tx: Callable[[Engine], AbstractContextManager[Connection]]


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
        if len(tables.bounds) != _N_LAT:
            raise ValueError(f"the stats tables have {_N_LAT} latency buckets")
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
        slot = _LAT + bisect.bisect_left(self._bounds, elapsed)
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
            row[_SUM] += elapsed
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
                row[_ITEMS] += n
                row[_BATCHES] += 1

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
        row = self._traffic[tkey] = [0] * _TRAFFIC_WIDTH
        row[_SUM] = 0.0
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
                        row = self._traffic.setdefault(tkey, [0] * _TRAFFIC_WIDTH)
                        for i in range(_TRAFFIC_WIDTH):
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
                    for i in range(_TRAFFIC_WIDTH):
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
                    for c, x in zip(_TRAFFIC_COUNTERS, row, strict=True)
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
                **dict(zip(_USAGE_COUNTERS, (int(x) for x in row[:4]), strict=True)),
            }
            for (r, b, k, m), row in sorted(u_rows.items())
        ]
        tables = self._tables
        with tables.write_tx(self._engine) as conn:
            if traffic_params:
                conn.execute(
                    _upsert_add(conn, tables.traffic, _TRAFFIC_PK, _TRAFFIC_COUNTERS), traffic_params
                )
            if usage_params:
                conn.execute(
                    _upsert_add(conn, tables.usage, _USAGE_PK, _USAGE_COUNTERS, keep="owner"), usage_params
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


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """A ``/v1/stats`` window: its name, length, step and the resolution its rows come from."""

    name: str
    seconds: int
    step_s: int
    resolution: str  # "m" | "h"


WINDOWS = {
    "1h": Window("1h", 3600, 60, "m"),
    "24h": Window("24h", 86_400, 300, "m"),
    "7d": Window("7d", 7 * 86_400, 3600, "h"),
}
#: Per-key usage reads coarser steps for a day (hour rows: a day of 200 keys' minute rows is
#: ~100,000 rows, too many to group in 100 ms on SQLite).
KEY_WINDOWS = {
    "1h": WINDOWS["1h"],
    "24h": Window("24h", 86_400, 3600, "h"),
    "7d": WINDOWS["7d"],
}


def window_of(name: str | None) -> Window | None:
    return WINDOWS.get(name or "1h")


def histogram_quantile(q: float, counts: Sequence[float], bounds: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram (per-bucket counts, upper ``bounds``, the last +inf), as
    Prometheus' ``histogram_quantile``: linear inside the bucket the rank falls in (from 0 for the
    first), the highest finite bound when it falls in the +inf bucket; None without observations."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    for i, count in enumerate(counts):
        if cumulative + count >= rank and count > 0:
            upper = bounds[i]
            if math.isinf(upper):
                return float(bounds[i - 1]) if i > 0 else 0.0
            lower = bounds[i - 1] if i > 0 else 0.0
            return float(lower + (upper - lower) * (rank - cumulative) / count)
        cumulative += count
    return float(bounds[-2])


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, slots=True)
class _Span:
    """The buckets a window reads: ``first``..``last`` at ``resolution`` (inclusive), and the
    points: ``points`` steps of ``step_b`` buckets from ``first``."""

    resolution: str
    first: int
    last: int
    step_b: int
    points: int
    bucket_s: int

    def starts(self) -> list[int]:
        return [(self.first + i * self.step_b) * self.bucket_s for i in range(self.points)]


def _span(window: Window, now: float) -> _Span:
    if window.resolution == "h":
        last = int(now // 3600)
        points = window.seconds // 3600
        return _Span("h", last - points + 1, last, 1, points, 3600)
    last = int(now // 60)
    step_b = window.step_s // 60
    points = window.seconds // window.step_s
    # the last point ends with the current minute
    first = last - points * step_b + 1
    return _Span("m", first, last, step_b, points, 60)


def _slot(bucket: sa.Column[int], span: _Span) -> sa.ColumnElement[int]:
    """The point a row falls in: ``(bucket - first) // step`` (integer division on both backends)."""
    offset = bucket - span.first
    return offset if span.step_b == 1 else offset // span.step_b


class StatsReader:
    """The ``/v1/stats`` answers computed from the stats tables (blocking: run in a thread)."""

    def __init__(
        self, engine: Engine, tables: StatsTables, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self._tables = tables
        self._clock = clock
        # per-key sums of settled hours, by (window, first hour, keys asked): see usage_series
        self._cache_lock = threading.Lock()
        self._settled: dict[tuple[str, int, tuple[str, ...] | None], dict[str, dict[str, Any]]] = {}

    def model_totals(self, window: Window, models: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """``{model: totals}`` over ``window``; ``models``: only these (zeros for those without rows)."""
        t = self._tables.traffic
        now = self._clock()
        cols = [sa.func.sum(t.c[c]).label(c) for c in _TRAFFIC_COUNTERS]
        parts: list[tuple[str, int, int]] = []
        if window.resolution == "h":
            span = _span(window, now)
            parts.append(("h", span.first, span.last))
        else:
            last = int(now // 60)
            first = last - window.seconds // 60 + 1
            if window.seconds > 3 * 3600:  # minute rows up to the first whole hour, then hour rows
                hour = -(-first // 60)
                parts += [("m", first, hour * 60 - 1), ("h", hour, last // 60)]
            else:
                parts.append(("m", first, last))
        sums: dict[str, list[float]] = {}
        with self._engine.connect() as conn:
            for res, low, high in parts:
                if low > high:
                    continue
                query = (
                    sa.select(t.c.model, *cols)
                    .where(t.c.resolution == res, t.c.bucket >= low, t.c.bucket <= high)
                    .group_by(t.c.model)
                )
                for r in conn.execute(query):
                    acc = sums.setdefault(r[0], [0.0] * _TRAFFIC_WIDTH)
                    for i in range(_TRAFFIC_WIDTH):
                        acc[i] += float(r[i + 1] or 0)
        wanted = list(models) if models is not None else sorted(m for m in sums if m)
        return {m: self._totals(sums.get(m, [0.0] * _TRAFFIC_WIDTH), window.seconds) for m in wanted}

    def _totals(self, row: Sequence[float], seconds: float) -> dict[str, Any]:
        bounds = self._tables.bounds
        requests = int(row[0])
        lat = row[_LAT:_SUM]
        return {
            "requests": requests,
            "rps": round(requests / seconds, 6),
            "errors_4xx": int(row[1]),
            "errors_5xx": int(row[2]),
            "error_rate": round(_ratio(row[2], requests), 6),
            "throttled": int(row[3]),
            "p50_s": _round(histogram_quantile(0.5, lat, bounds)),
            "p95_s": _round(histogram_quantile(0.95, lat, bounds)),
            "p99_s": _round(histogram_quantile(0.99, lat, bounds)),
            "mean_s": _round(row[_SUM] / requests) if requests else None,
            "batches": int(row[_BATCHES]),
            "batch_size": _round(row[_ITEMS] / row[_BATCHES], 4) if row[_BATCHES] else None,
        }

    def model_series(self, name: str, window: Window) -> dict[str, Any]:
        """One model's series per version over ``window`` (zero-filled; None where undefined)."""
        t = self._tables.traffic
        span = _span(window, self._clock())
        slot = _slot(t.c.bucket, span)
        query = (
            sa.select(t.c.version, slot.label("slot"), *[sa.func.sum(t.c[c]) for c in _TRAFFIC_COUNTERS])
            .where(
                t.c.resolution == span.resolution,
                t.c.model == name,
                t.c.bucket >= span.first,
                t.c.bucket <= span.last,
            )
            .group_by(t.c.version, sa.literal_column("slot"))
        )
        per_version: dict[int, list[list[float]]] = {}
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        for r in rows:
            i = int(r[1])
            if not 0 <= i < span.points:
                continue
            points = per_version.get(int(r[0]))
            if points is None:
                points = per_version[int(r[0])] = [[0.0] * _TRAFFIC_WIDTH for _ in range(span.points)]
            acc = points[i]
            for j in range(_TRAFFIC_WIDTH):
                acc[j] += float(r[j + 2] or 0)
        step_s = span.step_b * span.bucket_s
        bounds = self._tables.bounds
        versions: dict[str, Any] = {}
        overall = [0.0] * _TRAFFIC_WIDTH
        version_totals: dict[str, Any] = {}
        for version in sorted(per_version):
            points = per_version[version]
            total = [sum(p[j] for p in points) for j in range(_TRAFFIC_WIDTH)]
            if not total[0] and not total[_BATCHES]:
                continue
            for j in range(_TRAFFIC_WIDTH):
                overall[j] += total[j]
            versions[str(version)] = {
                "requests": [int(p[0]) for p in points],
                "rps": [round(p[0] / step_s, 6) for p in points],
                "errors_4xx": [int(p[1]) for p in points],
                "errors_5xx": [int(p[2]) for p in points],
                "throttled": [int(p[3]) for p in points],
                "error_rate": [round(_ratio(p[2], p[0]), 6) for p in points],
                "p50_s": [_round(histogram_quantile(0.5, p[_LAT:_SUM], bounds)) for p in points],
                "p95_s": [_round(histogram_quantile(0.95, p[_LAT:_SUM], bounds)) for p in points],
                "p99_s": [_round(histogram_quantile(0.99, p[_LAT:_SUM], bounds)) for p in points],
                "batch_size": [_round(p[_ITEMS] / p[_BATCHES], 4) if p[_BATCHES] else None for p in points],
            }
            version_totals[str(version)] = self._totals(total, window.seconds)
        return {
            "model": name,
            "window": window.name,
            "step_s": step_s,
            "t": span.starts(),
            "versions": versions,
            "totals": {**self._totals(overall, window.seconds), "versions": version_totals},
        }

    def usage_series(self, window: Window, key_ids: Iterable[str] | None) -> dict[str, Any]:
        """Per key: ``requests``/``units``/``throttled`` series, totals (``errors`` too) and its
        owner as recorded; ``key_ids`` None: every key with rows in the window. Steps are those of
        :data:`KEY_WINDOWS` (``24h``: hours).

        Hour rows of hours that ended over an hour ago no longer change (flushes add to the
        current minute's hour), so their per-key sums are kept (a few answers, for the hour) and
        each call reads only the last two hours' rows: a week of 200 keys is ~50,000 rows."""
        window = KEY_WINDOWS[window.name]
        span = _span(window, self._clock())
        ids = None if key_ids is None else tuple(sorted(set(key_ids)))
        answer: dict[str, Any] = {
            "window": window.name,
            "step_s": span.step_b * span.bucket_s,
            "t": span.starts(),
            "keys": {},
        }
        if ids is not None and not ids:
            return answer
        keys: dict[str, dict[str, Any]] = {}
        low = span.first
        if span.resolution == "h" and span.points > 2:
            closed_to = span.last - 2  # hours first..closed_to are settled
            cache_key = (window.name, span.first, ids)
            with self._cache_lock:
                settled = self._settled.get(cache_key)
            if settled is None:
                settled = {}
                self._add_usage(settled, span, span.first, closed_to, ids)
                with self._cache_lock:
                    if len(self._settled) >= 16:
                        self._settled.clear()
                    self._settled[cache_key] = settled
            for key_id, entry in settled.items():
                keys[key_id] = {
                    "owner": entry["owner"],
                    "requests": list(entry["requests"]),
                    "units": list(entry["units"]),
                    "throttled": list(entry["throttled"]),
                    "errors": entry["errors"],
                }
            low = closed_to + 1
        self._add_usage(keys, span, low, span.last, ids)
        answer["keys"] = keys
        return answer

    def _add_usage(
        self, keys: dict[str, dict[str, Any]], span: _Span, low: int, high: int, ids: tuple[str, ...] | None
    ) -> None:
        """Add the usage rows of buckets ``low``..``high`` into ``keys`` (per key, per point)."""
        u = self._tables.usage
        slot = _slot(u.c.bucket, span)
        query = sa.select(
            u.c.key_id,
            slot.label("slot"),
            sa.func.max(u.c.owner),
            *[sa.func.sum(u.c[c]) for c in _USAGE_COUNTERS],
        ).where(u.c.resolution == span.resolution, u.c.bucket >= low, u.c.bucket <= high)
        if ids is not None:
            query = query.where(u.c.key_id.in_(ids))
        query = query.group_by(u.c.key_id, sa.literal_column("slot"))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        n = span.points
        for r in rows:
            i = int(r[1])
            if not 0 <= i < n:
                continue
            entry = keys.get(r[0])
            if entry is None:
                entry = keys[r[0]] = {
                    "owner": "",
                    "requests": [0] * n,
                    "units": [0] * n,
                    "throttled": [0] * n,
                    "errors": 0,
                }
            if r[2]:
                entry["owner"] = r[2]
            entry["requests"][i] += int(r[3] or 0)
            entry["units"][i] += int(r[4] or 0)
            entry["throttled"][i] += int(r[5] or 0)
            entry["errors"] += int(r[6] or 0)
