"""Counters and histograms for the request path: prometheus_client's API, a fraction of its cost.

Every served request updates four series (HTTP requests and latency, model invocations and
latency). prometheus_client's ``Counter.inc`` and ``Histogram.observe`` check observability,
take a lock per value and walk the buckets in Python (what that cost per W1 request is in
docs/benchmarks.md). These families keep a child's state in two slots under one lock and find the
bucket with :func:`bisect.bisect_left` (C), and render the same exposition through the
registry's custom-collector interface (same names, ``_total``/``_bucket``/``_count``/``_sum``
samples, ``le`` labels as prometheus_client writes them), so scrapes and dashboards cannot tell
the difference.

Example::

    registry = CollectorRegistry()
    requests = HotCounter("mlgate_http_requests", "HTTP requests", ("route",), registry=registry)
    requests.labels("/prod").inc()
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

__all__ = ["CounterChild", "HistogramChild", "HotCounter", "HotHistogram"]


class CounterChild:
    """One series of a :class:`HotCounter`."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        with self._lock:
            self.value += amount


class HistogramChild:
    """One series of a :class:`HotHistogram`."""

    __slots__ = ("_bounds", "_lock", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._lock = threading.Lock()
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        index = bisect_left(self._bounds, amount)  # the first bound >= amount: Prometheus' "le"
        with self._lock:
            self.counts[index] += 1
            self.sum += amount


class _Family:
    """Children by label values, created on first use (like prometheus_client's ``labels``)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], object] = {}

    def _child(self, values: tuple[object, ...]) -> object:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._make()
        return child

    def _make(self) -> object:
        raise NotImplementedError

    def _items(self) -> list[tuple[tuple[str, ...], object]]:
        with self._lock:
            return list(self._children.items())


class HotCounter(_Family):
    """A labelled counter exposed as ``<name>_total``."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], *, registry: CollectorRegistry
    ) -> None:
        super().__init__(name, documentation, labelnames)
        registry.register(self)

    def labels(self, *values: object) -> CounterChild:
        child = self._child(values)
        assert isinstance(child, CounterChild)
        return child

    def _make(self) -> object:
        return CounterChild()

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            assert isinstance(child, CounterChild)
            family.add_metric(list(values), child.value)
        yield family


class HotHistogram(_Family):
    """A labelled histogram, fixed buckets (``+Inf`` added): ``_bucket``/``_count``/``_sum`` samples."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self._le = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        registry.register(self)

    def labels(self, *values: object) -> HistogramChild:
        child = self._child(values)
        assert isinstance(child, HistogramChild)
        return child

    def _make(self) -> object:
        return HistogramChild(self.bounds)

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in self._items():
            assert isinstance(child, HistogramChild)
            with child._lock:
                counts = list(child.counts)
                total = child.sum
            cumulative = 0
            buckets = []
            for le, count in zip(self._le, counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, total)
        yield family
