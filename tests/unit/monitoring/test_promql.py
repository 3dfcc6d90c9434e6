"""The PromQL subset: parsing, refusals, and evaluation against hand-built samples."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlgate.monitoring import promql
from mlgate.monitoring.alerts import SampleHistory
from mlgate.monitoring.promql import PromQLError, histogram_quantile, parse

T0 = 1_000_000.0


def L(**labels: str) -> promql.Labels:
    return promql.labels_of(labels)


def evaluate(expr: promql.Expr, source: promql.SeriesSource, now: float) -> Any:
    return promql.evaluate(expr, source, now)


def history(*, keep: float = 3600.0) -> SampleHistory:
    return SampleHistory(keep_s=keep)


def counter_series(
    h: SampleHistory,
    name: str,
    labels: dict[str, str],
    values: list[float],
    *,
    process: str = "p1",
    step: float = 10.0,
    start: float = T0,
) -> None:
    for i, v in enumerate(values):
        h.add(process, name, labels, start + i * step, v, cumulative=True)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "text",
    [
        'up{job="a"}',
        'm{a="1",b!="2",c=~"x.*",d!~"y"}',
        "rate(m_total[5m])",
        "increase(m_total[1h30m])",
        "sum by (route) (rate(m_total[5m]))",
        "sum(rate(m_total[5m])) by (route)",
        "max without (instance) (g)",
        "count(g) > 2",
        "avg(g)",
        "min by (a, b) (g)",
        "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))",
        "a / b",
        "a / on(x) b",
        "a + ignoring(y) b",
        "a * 2 - 1",
        "2 * a",
        "a > 0.5 and b < 3 or c == 1 unless d != 2",
        "a >= 1e3",
        '{__name__="m", job="x"}',
        "-1 + a",
    ],
)
def test_parses_the_subset(text: str) -> None:
    parse(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("abs(m)", "function abs()"),
        ("topk(3, m)", "aggregation topk()"),
        ("m % 2", "operator '%'"),
        ("m ^ 2", "operator '^'"),
        ("m > bool 1", "'bool'"),
        ("m offset 5m", "'offset'"),
        ("a / on(x) group_left b", "group_left"),
        ("rate(m[5m:1m])", "subquer"),
        ("m[5m]", "range selector is only allowed inside rate() or increase()"),
        ("sum(m[5m])", "range selector"),
        ("rate(m)", "rate() takes one range selector"),
        ('{a=""}', "needs a metric name"),
        ("1 > 2", "comparison between two scalars"),
        ("m and 1", "'and' is only allowed between two vectors"),
        ('m{a=~"("}', "invalid regular expression"),
        ("sum(", "expected"),
        ("max_over_time(m[5m])", "function max_over_time()"),
    ],
)
def test_refuses_what_is_outside_with_a_clear_message(text: str, named: str) -> None:
    with pytest.raises(PromQLError) as info:
        parse(text)
    assert named in str(info.value)


def test_durations() -> None:
    assert promql.parse_duration("5m") == 300
    assert promql.parse_duration("1h30m") == 5400
    assert promql.parse_duration("250ms") == 0.25
    assert promql.format_duration(5400) == "1h30m"
    assert promql.format_duration(0) == "0s"
    with pytest.raises(PromQLError):
        promql.parse_duration("5 minutes")


def test_metric_names() -> None:
    assert promql.metric_names(parse("sum(rate(a_total[5m])) / b")) == {"a_total", "b"}
    assert promql.metric_names(parse('{job="x"}')) is None


# --------------------------------------------------------------------------- evaluation


def test_instant_selector_matchers_and_lookback() -> None:
    h = history()
    h.add("p1", "g", {"route": "/a", "status": "200"}, T0, 1.0, cumulative=False)
    h.add("p1", "g", {"route": "/b", "status": "500"}, T0, 2.0, cumulative=False)
    h.add("p1", "g", {"route": "/c", "status": "503"}, T0 - 400, 3.0, cumulative=False)  # stale
    out = evaluate(parse('g{status=~"5.."}'), h, T0 + 1)
    assert out == {L(__name__="g", instance="p1", route="/b", status="500"): 2.0}
    assert len(evaluate(parse('g{route!="/a"}'), h, T0 + 1)) == 1
    assert len(evaluate(parse('g{status!~"2.*"}'), h, T0 + 1)) == 1
    assert evaluate(parse('g{missing=""}'), h, T0 + 1) == evaluate(parse("g"), h, T0 + 1)


def test_counters_are_summed_over_processes_gauges_kept_per_instance() -> None:
    h = history()
    h.add("p1", "c_total", {"route": "/a"}, T0, 5.0, cumulative=True)
    h.add("p2", "c_total", {"route": "/a"}, T0, 7.0, cumulative=True)
    h.add("p1", "g", {}, T0, 1.0, cumulative=False)
    h.add("p2", "g", {}, T0, 2.0, cumulative=False)
    assert evaluate(parse("c_total"), h, T0) == {L(__name__="c_total", route="/a"): 12.0}
    assert evaluate(parse("g"), h, T0) == {
        L(__name__="g", instance="p1"): 1.0,
        L(__name__="g", instance="p2"): 2.0,
    }


def test_rate_and_increase_match_prometheus_extrapolation() -> None:
    h = history()
    # one sample every 10 s, +10 each: exactly 1/s; a window of 60 s ending on a sample
    counter_series(h, "c_total", {"r": "x"}, [float(10 * i) for i in range(13)])
    now = T0 + 120
    rate = evaluate(parse("rate(c_total[1m])"), h, now)
    assert rate == {L(r="x"): pytest.approx(1.0)}
    inc = evaluate(parse("increase(c_total[1m])"), h, now)
    assert inc == {L(r="x"): pytest.approx(60.0)}


def test_rate_handles_counter_resets_per_process() -> None:
    h = history()
    counter_series(h, "c_total", {}, [100.0, 110.0, 120.0, 5.0, 15.0, 25.0, 35.0], process="p1")
    counter_series(h, "c_total", {}, [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0], process="p2")
    now = T0 + 60
    out = evaluate(parse("increase(c_total[1m])"), h, now)
    # The window is (T0, T0+60]: p1 reads 110, 120, (reset) 5 … 35 = 45 over 50 s, extrapolated
    # by 60/50 (the first sample is one interval from the start); p2 10 … 60 = 50, also 60/50.
    assert out == {(): pytest.approx(45 * 1.2 + 50 * 1.2)}


def test_rate_needs_two_samples() -> None:
    h = history()
    h.add("p1", "c_total", {}, T0, 5.0, cumulative=True)
    assert evaluate(parse("rate(c_total[5m])"), h, T0 + 1) == {}


def test_histogram_quantile_against_known_buckets() -> None:
    # 100 observations: 50 ≤ 0.1, 40 in (0.1, 0.5], 10 in (0.5, 1]
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.9, buckets) == pytest.approx(0.5)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * (20 / 40))
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.5 + 0.5 * (9 / 10))
    # everything in +Inf: the highest finite bound
    assert histogram_quantile(0.99, [(1.0, 0.0), (math.inf, 5.0)]) == 1.0
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(1.0, 3.0)]))  # no +Inf bucket
    assert histogram_quantile(1.5, buckets) == math.inf


def test_histogram_quantile_over_rates_by_route() -> None:
    h = history()
    for i in range(7):
        t = T0 + 10 * i
        for route, slow in (("/a", 0), ("/b", 1)):
            fast = 10.0 * i
            h.add(
                "p1", "d_bucket", {"route": route, "le": "0.1"}, t, fast if not slow else 0.0, cumulative=True
            )
            h.add("p1", "d_bucket", {"route": route, "le": "20.0"}, t, fast, cumulative=True)
            h.add("p1", "d_bucket", {"route": route, "le": "+Inf"}, t, fast, cumulative=True)
    expr = parse("histogram_quantile(0.99, sum by (le, route) (rate(d_bucket[1m]))) > 10")
    out = evaluate(expr, h, T0 + 60)
    assert out == {L(route="/b"): pytest.approx(0.1 + 19.9 * 0.99)}


def test_aggregations_by_and_without() -> None:
    h = history()
    for proc, v in (("p1", 1.0), ("p2", 4.0), ("p3", 7.0)):
        h.add(proc, "g", {"model": "m", "feature": "f"}, T0, v, cumulative=False)
    h.add("p1", "g", {"model": "n", "feature": "f"}, T0, 10.0, cumulative=False)
    g = parse
    assert evaluate(g("sum by (model) (g)"), h, T0) == {L(model="m"): 12.0, L(model="n"): 10.0}
    assert evaluate(g("max by (model) (g)"), h, T0) == {L(model="m"): 7.0, L(model="n"): 10.0}
    assert evaluate(g("min(g)"), h, T0) == {(): 1.0}
    assert evaluate(g("avg by (model) (g)"), h, T0) == {L(model="m"): 4.0, L(model="n"): 10.0}
    assert evaluate(g("count without (instance) (g)"), h, T0) == {
        L(feature="f", model="m"): 3.0,
        L(feature="f", model="n"): 1.0,
    }
    assert evaluate(g("sum(g) by (feature)"), h, T0) == {L(feature="f"): 22.0}


def test_vector_matching_and_arithmetic() -> None:
    h = history()
    h.add("p1", "used", {"k": "a"}, T0, 90.0, cumulative=False)
    h.add("p1", "limit", {"k": "a"}, T0, 100.0, cumulative=False)
    h.add("p2", "used", {"k": "a"}, T0, 10.0, cumulative=False)
    h.add("p2", "limit", {"k": "a"}, T0, 100.0, cumulative=False)
    out = evaluate(parse("used / limit > 0.5"), h, T0)
    assert out == {L(instance="p1", k="a"): pytest.approx(0.9)}
    # ignoring / on
    h.add("p1", "other", {"k": "a", "x": "1"}, T0, 2.0, cumulative=False)
    assert evaluate(parse('used{instance="p1"} * ignoring(x) other'), h, T0) == {
        L(instance="p1", k="a"): 180.0
    }
    assert evaluate(parse('used{instance="p1"} - on(k) other'), h, T0) == {L(k="a"): 88.0}
    # scalars on either side; division by zero is +Inf like Prometheus
    assert evaluate(parse('2 * used{instance="p2"}'), h, T0) == {L(instance="p2", k="a"): 20.0}
    assert evaluate(parse('used{instance="p2"} / 0'), h, T0) == {L(instance="p2", k="a"): math.inf}
    assert evaluate(parse("1 + 2 * 3"), h, T0) == 7.0
    # a filter keeps the metric name; arithmetic drops it
    assert evaluate(parse("used > 50"), h, T0) == {L(__name__="used", instance="p1", k="a"): 90.0}
    assert evaluate(parse("50 < used"), h, T0) == {L(__name__="used", instance="p1", k="a"): 90.0}


def test_many_to_many_is_an_evaluation_error() -> None:
    h = history()
    h.add("p1", "a", {"k": "1", "x": "1"}, T0, 1.0, cumulative=False)
    h.add("p1", "a", {"k": "1", "x": "2"}, T0, 1.0, cumulative=False)
    h.add("p1", "b", {"k": "1"}, T0, 1.0, cumulative=False)
    with pytest.raises(PromQLError, match="many-to-many"):
        evaluate(parse("a / on(k) b"), h, T0)


def test_set_operators() -> None:
    h = history()
    for k, v in (("1", 1.0), ("2", 2.0), ("3", 3.0)):
        h.add("p1", "a", {"k": k}, T0, v, cumulative=False)
    h.add("p1", "b", {"k": "2"}, T0, 0.0, cumulative=False)
    h.add("p1", "b", {"k": "9"}, T0, 0.0, cumulative=False)

    def keys(v: dict[promql.Labels, float]) -> list[str]:
        return sorted(dict(k).get("k", "") for k in v)

    assert keys(evaluate(parse("a and b"), h, T0)) == ["2"]
    assert keys(evaluate(parse("a unless b"), h, T0)) == ["1", "3"]
    assert keys(evaluate(parse("a or b"), h, T0)) == ["1", "2", "3", "9"]
    assert keys(evaluate(parse("a > 1 and on(k) b"), h, T0)) == ["2"]


def test_error_rate_rule_with_minimum_traffic() -> None:
    expr = parse(
        'sum by (route) (rate(r_total{status=~"5.."}[1m])) / sum by (route) (rate(r_total[1m])) > 0.05'
        " and sum by (route) (rate(r_total[1m])) > 0.1"
    )
    h = history()
    # /busy: 10 ok + 1 error per 10 s; /idle: 1 error in a minute (ratio 1, too little traffic)
    for i in range(7):
        t = T0 + 10 * i
        h.add("p1", "r_total", {"route": "/busy", "status": "200"}, t, 10.0 * i, cumulative=True)
        h.add("p1", "r_total", {"route": "/busy", "status": "500"}, t, 1.0 * i, cumulative=True)
        h.add(
            "p1", "r_total", {"route": "/idle", "status": "500"}, t, 1.0 if i >= 3 else 0.0, cumulative=True
        )
    out = evaluate(expr, h, T0 + 60)
    assert out == {L(route="/busy"): pytest.approx(1 / 11)}


def test_stale_series_disappear() -> None:
    from mlgate.monitoring.share import Snapshot

    h = history()
    h.ingest([Snapshot("p1", T0, T0, [("g", {"k": "a"}, 1.0, False), ("g", {"k": "b"}, 1.0, False)])], T0)
    h.ingest([Snapshot("p1", T0, T0 + 5, [("g", {"k": "a"}, 1.0, False)])], T0 + 5)
    assert list(evaluate(parse("g"), h, T0 + 6)) == [L(__name__="g", instance="p1", k="a")]
