"""Alert instances: one rule's alert for one label set in Prometheus' states, and its changes.

:class:`AlertInstance` (with Alertmanager's :func:`fingerprint` of its labels), its stored form
(``alert_states`` rows: :func:`instance_of_row`) and the :class:`Transition` records an
evaluation of :class:`mlgate.monitoring.alerts.AlertEngine` produces — stored in
``alert_events`` and turned into notifications by :mod:`mlgate.monitoring.notify`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from mlgate.monitoring.rules import go_float

__all__ = [
    "AlertInstance",
    "State",
    "Transition",
    "fingerprint",
    "instance_of_row",
    "iso",
    "json_value",
    "loads_str_map",
]

State = Literal["pending", "firing", "resolved"]


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted names and values)."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h ^= byte
                h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
            h ^= 0xFF
            h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


@dataclass
class AlertInstance:
    """One rule's alert for one label set, in Prometheus' states."""

    fingerprint: str
    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: State
    value: float | None
    active_at: float | None
    fired_at: float | None = None
    resolved_at: float | None = None
    last_seen_at: float | None = None
    last_notified_at: float | None = None
    #: in memory (the evaluator): when it started being kept firing, last push to Alertmanager
    keep_firing_since: float | None = None
    last_sent_at: float | None = None

    def json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "alertname": self.rule,
            "state": self.state,
            "labels": self.labels,
            "annotations": self.annotations,
            "value": json_value(self.value),
            "activeAt": iso(self.active_at),
            "firedAt": iso(self.fired_at),
            "resolvedAt": iso(self.resolved_at),
            "lastNotifiedAt": iso(self.last_notified_at),
        }


def json_value(value: float | None) -> float | str | None:
    if value is None:
        return None
    return value if math.isfinite(value) else go_float(value)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def loads_str_map(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def instance_of_row(row: Any) -> AlertInstance:
    return AlertInstance(
        fingerprint=row.fingerprint,
        rule=row.rule,
        labels=loads_str_map(row.labels),
        annotations=loads_str_map(row.annotations),
        state=row.state,
        value=row.value,
        active_at=row.active_at,
        fired_at=row.fired_at,
        resolved_at=row.resolved_at,
        last_seen_at=row.last_seen_at,
        last_notified_at=row.last_notified_at,
    )


@dataclass(frozen=True)
class Transition:
    alert: AlertInstance
    state: str  # pending | firing | resolved | inactive (a pending alert that went away)
    at: float
