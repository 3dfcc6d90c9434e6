"""The request path's counters and histograms expose exactly what prometheus_client's would."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlgate.telemetry.hot import HotCounter, HotHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.01, 1.0, 10.0, 60.0)


def test_the_exposition_is_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    hot_count = HotCounter("t_requests", "requests", ("route", "status"), registry=ours)
    hot_hist = HotHistogram("t_latency_seconds", "latency", ("route",), buckets=BUCKETS, registry=ours)
    count = Counter("t_requests", "requests", ("route", "status"), registry=theirs)
    hist = Histogram("t_latency_seconds", "latency", ("route",), buckets=BUCKETS, registry=theirs)
    rng = random.Random(7)
    for _ in range(2000):
        route, status = rng.choice(["/a", "/b"]), rng.choice([200, 404])
        value = rng.choice([0.0005, 0.001, 10.0, 100.0, rng.random()])  # bounds are inclusive ("le")
        hot_count.labels(route, status).inc()
        count.labels(route, str(status)).inc()
        hot_hist.labels(route).observe(value)
        hist.labels(route).observe(value)

    def samples(registry: CollectorRegistry) -> dict[str, float]:
        text = generate_latest(registry).decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                if "_created" not in name:  # mlgate's registry disables these series
                    out[name] = float(value)
        return out

    mine, reference = samples(ours), samples(theirs)
    assert mine.keys() == reference.keys()
    for name, value in reference.items():
        assert mine[name] == pytest.approx(value, rel=1e-12), name  # sums may differ in the last bit

    def comments(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if line.startswith("#") and "_created" not in line)

    assert comments(ours) == comments(theirs)  # HELP and TYPE lines too


def test_series_exist_from_labels_on_and_counters_only_go_up() -> None:
    registry = CollectorRegistry()
    counter = HotCounter("t_calls", "calls", ("model",), registry=registry)
    counter.labels("m")
    assert registry.get_sample_value("t_calls_total", {"model": "m"}) == 0
    counter.labels("m").inc(2)
    assert registry.get_sample_value("t_calls_total", {"model": "m"}) == 2
    with pytest.raises(ValueError, match="non-negative"):
        counter.labels("m").inc(-1)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels("m", "extra")
