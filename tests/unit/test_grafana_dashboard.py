"""The shipped Grafana dashboard (docs/grafana/mlgate.json, issue 17) is valid JSON, every panel
query parses in mlgate's PromQL subset, and every metric it names is one mlgate exports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlgate.monitoring.promql_ast import Expr
from mlgate.monitoring.promql_parse import parse
from mlgate.telemetry.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "mlgate.json"


def _exported_names() -> set[str]:
    """Every series name ``GET /metrics`` can show: counters' ``_total``, histograms' parts."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def _selectors(node: Any) -> Iterator[str]:
    """The metric names a parsed expression selects."""
    if type(node).__name__ == "Selector":
        yield node.name
    if isinstance(node, tuple):
        for item in node:
            yield from _selectors(item)
    elif hasattr(node, "__dataclass_fields__"):
        for field in node.__dataclass_fields__:
            yield from _selectors(getattr(node, field))


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found.append((inner["title"], target["expr"]))
    return found


def test_dashboard_is_json_and_every_expression_parses_and_names_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "mlgate" and dashboard["uid"]
    targets = _targets(dashboard)
    assert len(targets) >= 15
    exported = _exported_names()
    used: set[str] = set()
    for title, expr in targets:
        tree: Expr = parse(expr)  # raises, naming the construct, outside the subset
        names = set(_selectors(tree))
        assert names, (title, expr)
        assert names <= exported, (title, names - exported)
        used |= names
    # what the issue asks for is on it
    for wanted in (
        "mlgate_model_invocations_total",
        "mlgate_model_latency_seconds_bucket",
        "mlgate_model_errors_total",
        "mlgate_model_batch_size_sum",
        "mlgate_model_queue_depth",
        "mlgate_drift_psi",
        "mlgate_capture_dropped_total",
        "mlgate_canary_rollbacks_total",
        "mlgate_shadow_agreement_ratio",
    ):
        assert wanted in used, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"model"}
