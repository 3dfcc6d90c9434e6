"""Cross-cutting telemetry: Prometheus metrics and the structured access log."""

from __future__ import annotations

from mlgate.telemetry.access_log import AccessLog, AccessRecord
from mlgate.telemetry.metrics import Metrics, ModelMetrics

__all__ = ["AccessLog", "AccessRecord", "Metrics", "ModelMetrics"]
