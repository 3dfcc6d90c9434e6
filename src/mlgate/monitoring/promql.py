"""The PromQL subset alert rules may use: evaluation over samples (and the subset's public names).

The subset is parsed by :mod:`mlgate.monitoring.promql_parse` into the tree of
:mod:`mlgate.monitoring.promql_ast`; this module evaluates it — instant and range selectors,
``rate``/``increase`` (Prometheus' extrapolation, counter resets), aggregations,
``histogram_quantile``, binary operators with one-to-one matching — and re-exports the names
callers use (``parse``, the node types, ``PromQLError``, durations), so ``promql`` is the one
import.

Supported: instant selectors with matchers (``=``, ``!=``, ``=~``, ``!~``), range selectors
(``[5m]``) inside ``rate``/``increase``, ``histogram_quantile``, ``sum``/``max``/``min``/
``avg``/``count`` with ``by (...)``/``without (...)``, ``+ - * /`` between vectors (one-to-one,
``on(...)``/``ignoring(...)``) and scalars, comparison filters ``> < >= <= == !=``, and
``and``/``or``/``unless``.

Example::

    expr = parse('sum by (route) (rate(mlgate_http_requests_total{status=~"5.."}[5m])) > 1')
    vector = evaluate(expr, source, now=time.time())   # {labels: value}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Protocol

from mlgate.monitoring.promql_ast import (
    COMPARISON,
    SET_OPERATORS,
    Aggregate,
    Binary,
    Call,
    Expr,
    Labels,
    Matcher,
    Number,
    PromQLError,
    Selector,
    labels_of,
    metric_names,
)
from mlgate.monitoring.promql_parse import format_duration, parse, parse_duration

__all__ = [
    "Aggregate",
    "Binary",
    "Call",
    "Expr",
    "Labels",
    "Matcher",
    "Number",
    "PromQLError",
    "Selector",
    "SeriesSource",
    "Vector",
    "evaluate",
    "format_duration",
    "histogram_quantile",
    "labels_of",
    "metric_names",
    "parse",
    "parse_duration",
]

#: an instant vector: {labels: value}
Vector = dict[Labels, float]

LOOKBACK_S = 300.0  # Prometheus' default lookback for instant selectors


# --------------------------------------------------------------------------- evaluation


class SeriesSource(Protocol):
    """What an evaluation reads: raw series by name, per process, with their samples."""

    def series(self, name: str | None) -> Iterable[tuple[Labels, bool, list[tuple[float, float]]]]:
        """``(labels with __name__, cumulative?, samples oldest first)`` for every series (per
        process: a counter of two processes is two entries with the same labels)."""
        ...


def _selected(
    sel: Selector, source: SeriesSource
) -> Iterable[tuple[Labels, bool, list[tuple[float, float]]]]:
    for labels, cumulative, samples in source.series(sel.name):
        values = dict(labels)
        if sel.name is not None and values.get("__name__") != sel.name:
            continue
        if all(m.matches(values.get(m.name, "")) for m in sel.matchers):
            yield labels, cumulative, samples


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != "__name__")


def _instant(sel: Selector, source: SeriesSource, now: float) -> Vector:
    out: Vector = {}
    for labels, _cumulative, samples in _selected(sel, source):
        for t, v in reversed(samples):
            if t <= now:
                if t > now - LOOKBACK_S and not math.isnan(v):  # NaN: the series went stale
                    out[labels] = out.get(labels, 0.0) + v  # one process's series, summed over processes
                break
    return out


def _extrapolated(
    samples: list[tuple[float, float]], start: float, end: float, *, rate: bool, counter: bool
) -> float | None:
    """Prometheus' ``extrapolatedRate`` for one series' samples in ``(start, end]``."""
    window = [s for s in samples if start < s[0] <= end and not math.isnan(s[1])]
    if len(window) < 2:
        return None
    first_t, first_v = window[0]
    last_t, last_v = window[-1]
    result = last_v - first_v
    previous = first_v
    for _, v in window[1:]:
        if v < previous:  # a counter reset
            result += previous
        previous = v
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    to_start = first_t - start
    to_end = end - last_t
    average = sampled / (len(window) - 1)
    if counter and result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    if rate:
        result /= end - start
    return result


def _range_function(func: str, sel: Selector, source: SeriesSource, now: float) -> Vector:
    assert sel.range_s is not None
    out: Vector = {}
    for labels, cumulative, samples in _selected(sel, source):
        value = _extrapolated(samples, now - sel.range_s, now, rate=func == "rate", counter=cumulative)
        if value is None:
            continue
        key = _drop_name(labels)
        out[key] = out.get(key, 0.0) + value  # computed per process, summed (reset-safe)
    return out


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' ``bucketQuantile``: ``buckets`` are ``(upper bound, cumulative count)``."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets = sorted(buckets)
    if not buckets or not math.isinf(buckets[-1][0]):
        return math.nan
    fixed: list[tuple[float, float]] = []  # merge duplicate bounds, then make the counts monotonic
    for bound, count in buckets:
        if fixed and fixed[-1][0] == bound:
            fixed[-1] = (bound, fixed[-1][1] + count)
        else:
            fixed.append((bound, count))
    highest = -math.inf
    for i, (bound, count) in enumerate(fixed):
        if count < highest:
            fixed[i] = (bound, highest)
        else:
            highest = count
    if len(fixed) < 2:
        return math.nan
    observations = fixed[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    return start + (end - start) * (rank / count)


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _signature(labels: Labels, b: Binary) -> Labels:
    if b.on is not None:
        return tuple(p for p in labels if p[0] in b.on)
    ignored = set(b.ignoring or ())
    ignored.add("__name__")
    return tuple(p for p in labels if p[0] not in ignored)


def _aggregate(agg: Aggregate, vector: Vector) -> Vector:
    groups: dict[Labels, list[float]] = {}
    for labels, value in vector.items():
        if agg.without:
            dropped = {*agg.grouping, "__name__"}
            key = tuple(p for p in labels if p[0] not in dropped)
        else:
            key = tuple(p for p in labels if p[0] in agg.grouping)
        groups.setdefault(key, []).append(value)
    out: Vector = {}
    for key, values in groups.items():
        if agg.op == "sum":
            out[key] = math.fsum(values)
        elif agg.op == "max":
            real = [v for v in values if not math.isnan(v)]
            out[key] = max(real) if real else math.nan
        elif agg.op == "min":
            real = [v for v in values if not math.isnan(v)]
            out[key] = min(real) if real else math.nan
        elif agg.op == "avg":
            out[key] = math.fsum(values) / len(values)
        else:
            out[key] = float(len(values))
    return out


def evaluate(expr: Expr, source: SeriesSource, now: float) -> Vector | float:
    """The value of ``expr`` at ``now``: a vector ``{labels: value}`` or a scalar."""
    if isinstance(expr, Number):
        return expr.value
    if isinstance(expr, Selector):
        return _instant(expr, source, now)
    if isinstance(expr, Call):
        if expr.func in ("rate", "increase"):
            arg = expr.args[0]
            assert isinstance(arg, Selector)
            return _range_function(expr.func, arg, source, now)
        q = expr.args[0]
        assert isinstance(q, Number)
        inner = _as_vector(evaluate(expr.args[1], source, now), "histogram_quantile()")
        by: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in inner.items():
            le = dict(labels).get("le")
            if le is None:
                continue
            try:
                bound = float(le)
            except ValueError:
                continue
            key = tuple(p for p in labels if p[0] not in ("le", "__name__"))
            by.setdefault(key, []).append((bound, value))
        return {key: histogram_quantile(q.value, b) for key, b in by.items()}
    if isinstance(expr, Aggregate):
        return _aggregate(expr, _as_vector(evaluate(expr.expr, source, now), f"{expr.op}()"))
    return _binary(expr, evaluate(expr.lhs, source, now), evaluate(expr.rhs, source, now))


def _as_vector(value: Vector | float, where: str) -> Vector:
    if not isinstance(value, dict):
        raise PromQLError(f"{where} needs a vector")
    return value


def _binary(b: Binary, lhs: Vector | float, rhs: Vector | float) -> Vector | float:
    op = b.op
    if not isinstance(lhs, dict) and not isinstance(rhs, dict):
        return _arith(op, lhs, rhs)  # the parser allows only arithmetic between scalars
    if op in SET_OPERATORS:
        assert isinstance(lhs, dict) and isinstance(rhs, dict)
        right = {_signature(k, b) for k in rhs}
        if op == "and":
            return {k: v for k, v in lhs.items() if _signature(k, b) in right}
        if op == "unless":
            return {k: v for k, v in lhs.items() if _signature(k, b) not in right}
        left = {_signature(k, b) for k in lhs}
        out = dict(lhs)
        out.update({k: v for k, v in rhs.items() if _signature(k, b) not in left})
        return out
    if isinstance(lhs, dict) and isinstance(rhs, dict):
        return _vector_vector(b, lhs, rhs)
    if isinstance(lhs, dict):
        assert not isinstance(rhs, dict)
        if op in COMPARISON:
            return {k: v for k, v in lhs.items() if _COMPARE[op](v, rhs)}
        return {_drop_name(k): _arith(op, v, rhs) for k, v in lhs.items()}
    assert isinstance(rhs, dict)
    if op in COMPARISON:
        return {k: v for k, v in rhs.items() if _COMPARE[op](lhs, v)}
    return {_drop_name(k): _arith(op, lhs, v) for k, v in rhs.items()}


def _vector_vector(b: Binary, lhs: Vector, rhs: Vector) -> Vector:
    right: dict[Labels, tuple[Labels, float]] = {}
    for k, v in rhs.items():
        sig = _signature(k, b)
        if sig in right:
            raise PromQLError(
                f"many-to-many matching: several series on the right of '{b.op}' have the labels {dict(sig)}"
            )
        right[sig] = (k, v)
    seen: set[Labels] = set()
    out: Vector = {}
    for k, v in lhs.items():
        sig = _signature(k, b)
        match = right.get(sig)
        if match is None:
            continue
        if sig in seen:
            raise PromQLError(
                f"many-to-many matching: several series on the left of '{b.op}' have the labels {dict(sig)}"
            )
        seen.add(sig)
        compare = b.op in COMPARISON
        if compare and not _COMPARE[b.op](v, match[1]):
            continue
        # Prometheus' resultMetric: arithmetic drops the name; on() keeps only its labels,
        # ignoring() drops its labels.
        if b.on is not None:
            result = tuple(p for p in k if p[0] in b.on)
        else:
            dropped = set(b.ignoring or ())
            if not compare:
                dropped.add("__name__")
            result = tuple(p for p in k if p[0] not in dropped)
        out[result] = v if compare else _arith(b.op, v, match[1])
    return out
