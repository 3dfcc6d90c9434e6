"""Prometheus metrics, one registry per server instance (no global state, so tests can build many apps).

Names follow ``mlgate_<subsystem>_<name>_<unit>``. Per-model children are resolved once
per loaded version (:class:`ModelMetrics`) so the hot path does no label lookups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from mlgate.telemetry.hot import CounterChild, HistogramChild, HotCounter, HotHistogram

__all__ = ["CONTENT_TYPE", "Metrics", "ModelMetrics", "QuotaUsage"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_WORKFLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """Pre-bound metric children for one model version."""

    invocations: CounterChild
    latency: HistogramChild
    batch_size: HistogramChild
    cold_starts: Counter
    load_seconds: Gauge
    model: str
    version: str
    _errors: Counter

    def error(self, code: str) -> None:
        self._errors.labels(self.model, self.version, code).inc()


class QuotaUsage:
    """``mlgate_quota_used_ratio{owner,plan}``: the share of its quota a budget has used, for
    budgets at 50 % or more — at most 1,000 series, each gone once its quota window ends.

    The gate calls :meth:`observe` with every quota count: below 50 % that is two integer
    operations (no lock, no allocation); owner labels are derived from the limiter's quota
    key (``quota:<user:name | key:lineage>:<scope>:<period>``) only when scraped.
    """

    MAX_SERIES = 1000

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self._ratios: dict[str, tuple[float, str, float]] = {}
        registry.register(self)

    def observe(self, quota_key: str, plan: str, used: int, limit: int, resets_at: float) -> None:
        if used * 2 < limit or limit <= 0:
            return
        ratios = self._ratios
        if len(ratios) >= self.MAX_SERIES and quota_key not in ratios:
            return
        ratios[quota_key] = (used / limit, plan, resets_at)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "mlgate_quota_used_ratio",
            "share of its quota a budget has used this period (budgets at 50 % or more)",
            labels=("owner", "plan"),
        )

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        best: dict[tuple[str, str], float] = {}
        for key, (ratio, plan, resets_at) in list(self._ratios.items()):
            if resets_at <= now:
                self._ratios.pop(key, None)
                continue
            parts = key.split(":")
            owner = ":".join(parts[1:3]) if len(parts) > 3 else key
            if ratio > best.get((owner, plan), -1.0):
                best[(owner, plan)] = ratio
        family = self._family()
        for (owner, plan), ratio in best.items():
            family.add_metric([owner, plan], ratio)
        yield family


class Metrics:
    """All of a server's metrics in their own registry."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series are scrape noise
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("model", "version")
        # The four families every served request updates are hot.py's (same exposition, cheaper).
        self.http_requests = HotCounter(
            "mlgate_http_requests", "HTTP requests answered", ("route", "method", "status"), registry=r
        )
        self.http_latency = HotHistogram(
            "mlgate_http_request_duration_seconds",
            "HTTP request duration",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_inflight = Gauge(
            "mlgate_http_requests_in_flight",
            "requests being served by this process (load shedding's count)",
            registry=r,
        )
        self.http_connections = Gauge(
            "mlgate_http_connections", "open HTTP connections of this process (mlgate serve)", registry=r
        )
        self.http_closed = Counter(
            "mlgate_http_connections_closed",
            "connections the server closed on its own, by reason (idle, header_timeout, body_timeout, "
            "too_many_connections, header_too_large, bad_request…)",
            ("reason",),
            registry=r,
        )
        self.invocations = HotCounter(
            "mlgate_model_invocations", "model predictions served", labels, registry=r
        )
        self.errors = Counter("mlgate_model_errors", "failed model requests", (*labels, "code"), registry=r)
        self.latency = HotHistogram(
            "mlgate_model_latency_seconds",
            "time from accepting a decoded input to its output",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = HotHistogram(
            "mlgate_model_batch_size", "items per executed batch", labels, buckets=_BATCH_BUCKETS, registry=r
        )
        self.cold_starts = Counter("mlgate_model_cold_starts", "model version loads", labels, registry=r)
        self.load_failures = Counter(
            "mlgate_model_load_failures",
            "version loads that failed (at start, on demand, or a push's trial load: version 'push')",
            labels,
            registry=r,
        )
        self.load_seconds = Gauge(
            "mlgate_model_load_seconds", "seconds the last load took", labels, registry=r
        )
        self.queue_depth = Gauge(
            "mlgate_model_queue_depth", "requests waiting for a batch", labels, registry=r
        )
        self.canary_rollbacks = Counter(
            "mlgate_canary_rollbacks",
            "canary versions the rollout guard took to weight 0 (this process decided)",
            ("model", "alias", "version"),
            registry=r,
        )
        self.canary_rolled_back = Gauge(
            "mlgate_canary_rolled_back",
            "1 for 15 minutes after this process's guard rolled a canary back (what the alert reads)",
            ("model", "alias", "version"),
            registry=r,
        )
        self.gateway_rejections = Counter(
            "mlgate_gateway_rejections",
            "calls refused by the gateway (auth, throttle, quota)",
            ("reason",),
            registry=r,
        )
        self.startup_seconds = Gauge(
            "mlgate_server_startup_seconds", "process start to ready (cold start)", registry=r
        )
        # Workflows: every ended execution by status and error (THRESHOLD_CONFIDENCE_NOT_MET counts
        # the vehicle workflow's low-confidence results), its duration, and those running now.
        self.workflow_executions = Counter(
            "mlgate_workflow_executions",
            "workflow executions ended, by status and error ('' when none)",
            ("workflow", "status", "error"),
            registry=r,
        )
        self.workflow_duration = Histogram(
            "mlgate_workflow_execution_duration_seconds",
            "workflow execution duration, start to end",
            ("workflow", "status"),
            buckets=_WORKFLOW_BUCKETS,
            registry=r,
        )
        self.workflow_running = Gauge(
            "mlgate_workflow_executions_running", "workflow executions running in this process", registry=r
        )
        # Drift (monitoring/monitor.py): the latest evaluation's figures, read from drift_latest
        # by every process so any worker's /metrics shows them.
        drift_labels = ("model", "version", "feature")
        self.drift_psi = Gauge(
            "mlgate_drift_psi", "population stability index vs the baseline", drift_labels, registry=r
        )
        self.drift_ks = Gauge(
            "mlgate_drift_ks", "two-sample KS statistic vs the baseline", drift_labels, registry=r
        )
        # Alert rules (monitoring/alerts.py): process memory against its limit (set by the alert
        # engine: /proc, cgroup), quota use per budget, notifications sent and failed.
        self.process_resident_memory = Gauge(
            "mlgate_process_resident_memory_bytes", "resident memory of this process", registry=r
        )
        self.process_memory_limit = Gauge(
            "mlgate_process_memory_limit_bytes",
            "memory this process may use (setting, else cgroup limit, else RAM)",
            registry=r,
        )
        # Series that name who is calling (user names, key lineages) are not on the public
        # /metrics: their own registry, shared with the alert evaluator (monitoring/share.py)
        # and served to admins by GET /v1/alerts/metrics.
        self.private = CollectorRegistry(auto_describe=True)
        self.quota_used = QuotaUsage(registry=self.private)
        self.alert_notifications = Counter(
            "mlgate_alert_notifications",
            "alert notifications by target (log, webhook, alertmanager) and outcome (sent, failed, dropped)",
            ("target", "outcome"),
            registry=r,
        )
        self.alert_evaluation_failures = Counter(
            "mlgate_alert_evaluation_failures", "alert rule evaluations that failed", ("rule",), registry=r
        )
        # Data capture (monitoring/capture.py): records written, and samples not captured, by why
        # (queue_full, queue_bytes, too_large, write_failed).
        self.capture_records = Counter(
            "mlgate_capture_records", "captured records written to the store", ("model",), registry=r
        )
        self.capture_dropped = Counter(
            "mlgate_capture_dropped", "captured records dropped, by reason", ("model", "reason"), registry=r
        )
        # Shadow versions (lifecycle/shadow.py): calls by outcome (ok, error, timeout, busy = skipped
        # over the cap), and this process's comparison figures, set at each flush (≤ 16 paths each).
        shadow_labels = ("model", "alias", "shadow_version")
        self.shadow_requests = Counter(
            "mlgate_shadow_requests",
            "shadow calls by outcome (ok, error, timeout, busy: skipped at the concurrency cap)",
            (*shadow_labels, "outcome"),
            registry=r,
        )
        self.shadow_agreement = Gauge(
            "mlgate_shadow_agreement_ratio",
            "share of shadowed answers whose labels all agree with the primary's (this process)",
            shadow_labels,
            registry=r,
        )
        self.shadow_abs_delta = Gauge(
            "mlgate_shadow_abs_delta",
            "|shadow - primary| of a numeric output, by output path and quantile (this process)",
            (*shadow_labels, "path", "quantile"),
            registry=r,
        )
        self.shadow_rel_delta = Gauge(
            "mlgate_shadow_rel_delta",
            "|shadow - primary| / |primary| of a numeric output, by path and quantile (this process)",
            (*shadow_labels, "path", "quantile"),
            registry=r,
        )
        self.shadow_latency_delta = Gauge(
            "mlgate_shadow_latency_delta_seconds",
            "shadow latency quantile minus the primary's (this process)",
            (*shadow_labels, "quantile"),
            registry=r,
        )

    def track_queue(self, model: str, version: int, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(model, str(version)).set_function(depth)

    def for_model(self, model: str, version: int) -> ModelMetrics:
        v = str(version)
        return ModelMetrics(
            invocations=self.invocations.labels(model, v),
            latency=self.latency.labels(model, v),
            batch_size=self.batch_size.labels(model, v),
            cold_starts=self.cold_starts.labels(model, v),
            load_seconds=self.load_seconds.labels(model, v),
            model=model,
            version=v,
            _errors=self.errors,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def render_private(self) -> bytes:
        """The series that name callers (admins only: ``GET /v1/alerts/metrics``)."""
        return generate_latest(self.private)
