"""The ``/v1/stats`` answers, read from the rows :mod:`mlgate.telemetry.stats` writes.

:class:`StatsReader` answers per-model totals, one model's series per version and per-key usage
series. Windows: ``1h`` (minute rows, 60 s steps), ``24h`` (minute rows in 300 s steps), ``7d``
(hour rows, 3600 s steps); per-key usage reads hour rows for a day (:data:`KEY_WINDOWS`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlgate.telemetry.stats_rows import (
    BATCHES,
    ITEMS,
    LAT,
    SUM,
    TRAFFIC_COUNTERS,
    TRAFFIC_WIDTH,
    USAGE_COUNTERS,
    StatsTables,
)

__all__ = ["KEY_WINDOWS", "WINDOWS", "StatsReader", "Window", "histogram_quantile", "window_of"]


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
        cols = [sa.func.sum(t.c[c]).label(c) for c in TRAFFIC_COUNTERS]
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
                    acc = sums.setdefault(r[0], [0.0] * TRAFFIC_WIDTH)
                    for i in range(TRAFFIC_WIDTH):
                        acc[i] += float(r[i + 1] or 0)
        wanted = list(models) if models is not None else sorted(m for m in sums if m)
        return {m: self._totals(sums.get(m, [0.0] * TRAFFIC_WIDTH), window.seconds) for m in wanted}

    def _totals(self, row: Sequence[float], seconds: float) -> dict[str, Any]:
        bounds = self._tables.bounds
        requests = int(row[0])
        lat = row[LAT:SUM]
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
            "mean_s": _round(row[SUM] / requests) if requests else None,
            "batches": int(row[BATCHES]),
            "batch_size": _round(row[ITEMS] / row[BATCHES], 4) if row[BATCHES] else None,
        }

    def model_series(self, name: str, window: Window) -> dict[str, Any]:
        """One model's series per version over ``window`` (zero-filled; None where undefined)."""
        t = self._tables.traffic
        span = _span(window, self._clock())
        slot = _slot(t.c.bucket, span)
        query = (
            sa.select(t.c.version, slot.label("slot"), *[sa.func.sum(t.c[c]) for c in TRAFFIC_COUNTERS])
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
                points = per_version[int(r[0])] = [[0.0] * TRAFFIC_WIDTH for _ in range(span.points)]
            acc = points[i]
            for j in range(TRAFFIC_WIDTH):
                acc[j] += float(r[j + 2] or 0)
        step_s = span.step_b * span.bucket_s
        bounds = self._tables.bounds
        versions: dict[str, Any] = {}
        overall = [0.0] * TRAFFIC_WIDTH
        version_totals: dict[str, Any] = {}
        for version in sorted(per_version):
            points = per_version[version]
            total = [sum(p[j] for p in points) for j in range(TRAFFIC_WIDTH)]
            if not total[0] and not total[BATCHES]:
                continue
            for j in range(TRAFFIC_WIDTH):
                overall[j] += total[j]
            versions[str(version)] = {
                "requests": [int(p[0]) for p in points],
                "rps": [round(p[0] / step_s, 6) for p in points],
                "errors_4xx": [int(p[1]) for p in points],
                "errors_5xx": [int(p[2]) for p in points],
                "throttled": [int(p[3]) for p in points],
                "error_rate": [round(_ratio(p[2], p[0]), 6) for p in points],
                "p50_s": [_round(histogram_quantile(0.5, p[LAT:SUM], bounds)) for p in points],
                "p95_s": [_round(histogram_quantile(0.95, p[LAT:SUM], bounds)) for p in points],
                "p99_s": [_round(histogram_quantile(0.99, p[LAT:SUM], bounds)) for p in points],
                "batch_size": [_round(p[ITEMS] / p[BATCHES], 4) if p[BATCHES] else None for p in points],
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
            *[sa.func.sum(u.c[c]) for c in USAGE_COUNTERS],
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
