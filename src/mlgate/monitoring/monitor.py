"""Drift evaluations on demand and on a schedule (docs/monitoring.md).

A version's baseline is ``monitoring/<model>/<version>/baseline.json`` in the store (uploaded:
it overrides), else its manifest's ``baseline`` (a ``{"file": "baseline.json"}`` pointer reads
that file of the version; the reference services' older shape is converted).
:meth:`DriftMonitor.evaluate` (blocking: run it in a thread) reads the window's captured
records, computes features and drift, writes ``monitoring/<model>/<version>/reports/<time>/``
``report.json`` + ``constraint_violations.json``, replaces the version's ``drift_latest`` rows
and sets the gauges. Every process re-reads ``drift_latest`` every :data:`GAUGE_REFRESH_S` into
``mlgate_drift_psi`` / ``mlgate_drift_ks``; every ``monitor.interval_s`` the holder of the
``drift`` lease evaluates each version with captured data in the last ``window_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select

from mlgate.db.tables import drift_latest
from mlgate.errors import Conflict, InvalidInput, ObjectNotFound, StoreError, Unprocessable
from mlgate.monitoring.baseline import (
    build_baseline,
    check_baseline,
    sagemaker_constraints,
    sagemaker_statistics,
)
from mlgate.monitoring.capture_read import parse_when
from mlgate.monitoring.drift import Thresholds, compare, constraint_violations
from mlgate.monitoring.features import (
    IMAGE_FEATURES,
    FeatureFrame,
    collect_rows,
    extract,
    infer_specs,
    rows_to_columns,
    window_names,
)
from mlgate.monitoring.lease import Lease
from mlgate.repository import Repository
from mlgate.settings import Settings
from mlgate.store import ArtifactStore
from mlgate.telemetry.metrics import Metrics

__all__ = ["GAUGE_REFRESH_S", "DriftMonitor", "parse_instant", "read_captured"]

log = logging.getLogger("mlgate.monitoring")

GAUGE_REFRESH_S = 30.0  # at most; at the pace metrics are shared (alerts.snapshot_s) when shorter
#: Reference rows accepted for one uploaded baseline.
MAX_BASELINE_ROWS = 200_000
_BASELINE_CACHE_S = 30.0
#: Captured records of an image model read per evaluation at most (each may be megabytes).
MAX_IMAGE_RECORDS = 250
#: On-demand drift evaluations and baseline computations at once per process (the routes hold
#: :attr:`DriftMonitor.slots`); more wait their turn on the event loop, holding no thread. Each
#: may hold ``max_rows`` parsed records and a thread busy with the GIL: 20 at once filled the
#: default executor and slowed predictions to 2-4 s (tests/security/test_monitoring_hostile.py).
MAX_CONCURRENT_EVALUATIONS = 2


def parse_instant(value: str | None, *, now: datetime, default: datetime) -> datetime:
    """``None`` → ``default``; ``24h`` / ``30m`` / ``7d`` / ``90s`` / ``1w`` → that long before
    ``now``; else an ISO 8601 instant (naive = UTC). A bad or out-of-range value is a 400
    (:func:`mlgate.monitoring.capture_read.parse_when`, the capture routes' reading)."""
    return parse_when(value, default=default, now=now)


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hour_of(key: str, prefix: str) -> datetime | None:
    parts = key[len(prefix) :].split("/")
    try:
        y, m, d, h = (int(p) for p in parts[:4])
        return datetime(y, m, d, h, tzinfo=UTC)
    except (ValueError, TypeError):
        return None


def read_captured(
    store: ArtifactStore,
    model: str,
    version: int | None,
    since: datetime,
    until: datetime,
    *,
    limit: int = 20_000,
) -> list[dict[str, Any]]:
    """Captured records of ``[since, until)``: the capture module's reader when it provides
    one, else the hour folders under ``capture/<model>/<version>/`` read here."""
    from mlgate.monitoring import capture

    reader = getattr(capture, "read_records", None)
    if reader is not None:
        records: list[dict[str, Any]] = reader(store, model, version, since, until, limit=limit)
        return records
    base = f"capture/{model}/" + (f"{version}/" if version is not None else "")
    try:
        keys = store.list(base)
    except ObjectNotFound:
        return []
    start_hour = since.replace(minute=0, second=0, microsecond=0)
    chosen: list[str] = []
    for key in keys:
        if not key.endswith(".jsonl"):
            continue
        prefix = base if version is not None else base + key[len(base) :].split("/", 1)[0] + "/"
        hour = _hour_of(key, prefix)
        if hour is not None and start_hour <= hour < until:
            chosen.append(key)
    chosen.sort(reverse=True)  # newest first: a limit keeps the latest records
    out: list[dict[str, Any]] = []
    lo, hi = _iso(since), _iso(until)
    for key in chosen:
        for line in store.get_bytes(key).splitlines():
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            when = str((record.get("eventMetadata") or {}).get("inferenceTime", ""))[:19] + "Z"
            if lo <= when < hi or len(when) < 20:
                out.append(record)
                if len(out) >= limit:
                    return out
    return out


class DriftMonitor:
    """Baselines, drift evaluations, reports and drift gauges of one server process."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: ArtifactStore,
        engine: Engine,
        repository: Repository,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.repository = repository
        self.metrics = metrics
        self.lease = Lease(engine, "drift", ttl_s=max(60.0, 3 * settings.monitor.interval_s))
        self._tasks: list[asyncio.Task[None]] = []
        self._baselines: dict[tuple[str, int], tuple[float, dict[str, Any] | None]] = {}
        self._gauge_labels: set[tuple[str, str, str, str]] = set()
        self.slots = asyncio.Semaphore(MAX_CONCURRENT_EVALUATIONS)

    @property
    def thresholds(self) -> Thresholds:
        m = self.settings.monitor
        return Thresholds(psi_warn=m.psi_warn, psi_alert=m.psi_alert, p_value=m.p_value, min_rows=m.min_rows)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresh_loop(), name="mlgate-drift-gauges"))
        if self.settings.monitor.interval_s > 0:
            self._tasks.append(loop.create_task(self._schedule_loop(), name="mlgate-drift-schedule"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.settings.monitor.interval_s > 0:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.refresh_gauges)
            except Exception:  # the database may be briefly unavailable: next time
                log.warning("drift gauges: refresh failed", exc_info=True)
            # at the pace metrics are shared (the alert evaluator reads every process's gauges)
            await asyncio.sleep(min(GAUGE_REFRESH_S, self.settings.alerts.snapshot_s))

    async def _schedule_loop(self) -> None:
        interval = self.settings.monitor.interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                if await asyncio.to_thread(self.lease.acquire):
                    await asyncio.to_thread(self.run_scheduled)
            except Exception:
                log.warning("drift schedule: evaluation round failed", exc_info=True)

    def run_scheduled(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """One scheduled round: every version with captured data in the window and a baseline."""
        until = now or datetime.now(UTC)
        since = until - timedelta(seconds=self.settings.monitor.window_s)
        reports = []
        for model, version in self.captured_versions(since, until):
            if self.baseline_for(model, version) is None:
                continue
            try:
                reports.append(self.evaluate(model, version, since, until, require_rows=False))
            except Exception:
                log.warning("drift: evaluating %s v%s failed", model, version, exc_info=True)
        return reports

    def captured_versions(self, since: datetime, until: datetime) -> list[tuple[str, int]]:
        """(model, version) pairs with a capture file in an hour of ``[since, until)``: one
        listing per version and hour of the window (never the whole capture tree)."""
        hours: list[datetime] = []
        hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        while hour < until and len(hours) < 24 * 31:
            hours.append(hour)
            hour += timedelta(hours=1)
        found: list[tuple[str, int]] = []
        for model in self.repository.list_models():
            for info in self.repository.list_versions(model.name):
                prefix = f"capture/{model.name}/{info.version}/"
                if any(self.store.list(f"{prefix}{h:%Y/%m/%d/%H}/") for h in hours):
                    found.append((model.name, info.version))
        return found

    # -- baselines -------------------------------------------------------------------------------

    def _key(self, model: str, version: int, name: str) -> str:
        return f"monitoring/{model}/{version}/{name}"

    def baseline_for(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's baseline (uploaded, else its manifest's), or None; cached 30 s."""
        cached = self._baselines.get((model, version))
        if cached is not None and time.monotonic() - cached[0] < _BASELINE_CACHE_S:
            return cached[1]
        doc = self._load_baseline(model, version)
        self._baselines[(model, version)] = (time.monotonic(), doc)
        return doc

    def _load_baseline(self, model: str, version: int) -> dict[str, Any] | None:
        key = self._key(model, version, "baseline.json")
        try:
            raw = self.store.get_bytes(key)
        except (ObjectNotFound, StoreError, FileNotFoundError):
            raw = None
        if raw is not None:
            return check_baseline(orjson.loads(raw))
        info = self.repository.get_version(model, version)
        declared = info.manifest.baseline
        if not declared:
            return None
        file = declared.get("file")
        if isinstance(file, str) and file in info.manifest.files and not info.location:
            blob = self.store.get_bytes(f"blobs/sha256/{info.manifest.files[file]}")
            return check_baseline(orjson.loads(blob))
        return check_baseline(declared)

    def save_baseline(self, model: str, version: int, baseline: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``baseline`` for the version (validated), with SageMaker's statistics and constraints."""
        self.repository.get_version(model, version)  # 404 for an unknown model or version
        doc = check_baseline(baseline)
        self.store.put_bytes(self._key(model, version, "baseline.json"), orjson.dumps(doc))
        self.store.put_bytes(
            self._key(model, version, "statistics.json"), orjson.dumps(sagemaker_statistics(doc))
        )
        self.store.put_bytes(
            self._key(model, version, "constraints.json"),
            orjson.dumps(sagemaker_constraints(doc, psi_alert=self.settings.monitor.psi_alert)),
        )
        self._baselines[(model, version)] = (time.monotonic(), doc)
        return doc

    def _template(self, model: str, version: int) -> dict[str, Any] | None:
        try:
            return self.baseline_for(model, version)
        except InvalidInput:
            return None

    def baseline_from_rows(
        self,
        model: str,
        version: int,
        rows: Sequence[Mapping[str, Any]],
        *,
        input_spec: Mapping[str, Any] | None = None,
        output_spec: Mapping[str, Any] | None = None,
        source: str = "uploaded rows",
    ) -> dict[str, Any]:
        """A baseline from reference feature rows (``output:*`` columns are output features);
        the specs default to the version's current baseline's, else ``records``."""
        if not rows:
            raise InvalidInput("no reference rows")
        if len(rows) > MAX_BASELINE_ROWS:
            raise InvalidInput(f"at most {MAX_BASELINE_ROWS} reference rows, got {len(rows)}")
        if not all(isinstance(r, Mapping) for r in rows):
            raise InvalidInput("each reference row is a JSON object (feature name → value)")
        columns, inputs, outputs = rows_to_columns(rows)
        template = self._template(model, version)
        default = {"type": "records"}
        if inputs and all(n == f"f{i}" for i, n in enumerate(inputs)):
            default = {"type": "vector"}  # f0..fn: a plain list of numbers per row
        in_spec = dict(input_spec or (template or {}).get("input") or default)
        out_spec = dict(output_spec or (template or {}).get("output") or {"kind": "none"})
        if template is not None and not input_spec:
            names = list(template["feature_names"])
            absent = [n for n in names if n not in columns]
            if absent:
                raise InvalidInput(
                    f"the rows lack feature(s) {', '.join(absent[:5])} of the version's baseline "
                    "(or give 'input' to declare another shape)"
                )
            inputs = names
        if not outputs:
            out_spec = {"kind": "none"}
        return build_baseline(
            columns,
            feature_names=inputs,
            output_names=outputs,
            input_spec=in_spec,
            output_spec=out_spec,
            meta={"source": source},
        )

    def baseline_from_records(
        self, model: str, version: int, records: Sequence[Mapping[str, Any]], *, source: str
    ) -> dict[str, Any]:
        """A baseline from capture-shaped records (requests and answers), features as the
        version's current baseline declares them, else inferred from the records."""
        template = self._template(model, version)
        if template is not None:
            in_spec, out_spec = dict(template["input"]), dict(template["output"])
            names = list(template["feature_names"])
        else:
            in_spec, out_spec = infer_specs(records)
            kind = in_spec.get("type")
            names = (
                list(IMAGE_FEATURES)
                if kind == "image"
                else window_names(in_spec, records)
                if kind in ("window", "vector")
                else []
            )
        max_rows = MAX_BASELINE_ROWS
        in_rows, out_rows, _, _ = collect_rows(
            records, in_spec, out_spec, names, max_rows=max_rows, max_images=self.settings.monitor.max_rows
        )
        if len(in_rows) < self.settings.monitor.min_rows:
            raise Unprocessable(
                f"{len(in_rows)} usable reference rows from {len(records)} records; a baseline needs "
                f"at least {self.settings.monitor.min_rows} (monitor.min_rows)"
            )
        columns, inputs, _ = rows_to_columns(in_rows)
        out_columns, _, outputs = rows_to_columns(out_rows) if out_rows else ({}, [], [])
        columns.update(out_columns)
        if names:
            inputs = [n for n in names if n in columns]
        return build_baseline(
            columns,
            feature_names=inputs,
            output_names=outputs,
            input_spec=in_spec,
            output_spec=out_spec if outputs else {"kind": "none"},
            meta={"source": source},
        )

    def _record_limit(self, baseline: Mapping[str, Any] | None) -> int:
        """Captured records read at most: ``max_rows``, or :data:`MAX_IMAGE_RECORDS` for an image
        model (a record may hold megabytes of base64)."""
        limit = self.settings.monitor.max_rows
        if baseline is not None and (baseline.get("input") or {}).get("type") == "image":
            limit = min(limit, MAX_IMAGE_RECORDS)
        return limit

    def build_baseline_from_capture(
        self, model: str, version: int, since: datetime, until: datetime
    ) -> dict[str, Any]:
        """A baseline from the version's captured traffic of ``[since, until)`` (not saved)."""
        template = self._template(model, version)
        if template is None:  # a first look decides whether these are images
            probe = read_captured(self.store, model, version, since, until, limit=20)
            template = {"input": infer_specs(probe)[0]} if probe else None
        limit = self._record_limit(template)
        records = read_captured(self.store, model, version, since, until, limit=limit)
        if not records:
            raise Unprocessable(
                f"no captured records for {model} v{version} between {_iso(since)} and {_iso(until)}"
            )
        return self.baseline_from_records(
            model, version, records, source=f"captured traffic {_iso(since)} .. {_iso(until)}"
        )

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(
        self,
        model: str,
        version: int | None,
        since: datetime,
        until: datetime,
        *,
        require_rows: bool = True,
    ) -> dict[str, Any]:
        """Drift of ``[since, until)``'s captured traffic; report stored, gauges and
        ``drift_latest`` updated (blocking). 409 without a baseline; 422 (``require_rows``)
        with fewer than ``min_rows`` rows."""
        info = self.repository.resolve(model, version)
        v = info.version
        baseline = self.baseline_for(model, v)
        if baseline is None:
            raise Conflict(
                f"model {model!r} version {v} has no baseline: upload one "
                f"(PUT /v1/models/{model}/versions/{v}/baseline, or `mlgate monitor baseline {model}`)",
                details={"model": model, "version": v},
            )
        m = self.settings.monitor
        records = read_captured(self.store, model, v, since, until, limit=self._record_limit(baseline))
        frame = extract(records, baseline, max_rows=m.max_rows)
        if require_rows and max(frame.n_rows, frame.n_outputs) < m.min_rows:
            raise Unprocessable(
                f"too few captured rows for a verdict: {frame.n_rows} input rows from {len(records)} "
                f"records of {model} v{v} between {_iso(since)} and {_iso(until)}; at least "
                f"{m.min_rows} are needed (monitor.min_rows)",
                details={"rows": frame.n_rows, "records": len(records), "min_rows": m.min_rows},
            )
        now = datetime.now(UTC)
        report = compare(
            baseline,
            frame,
            self.thresholds,
            model=model,
            version=v,
            since=_iso(since),
            until=_iso(until),
            evaluated_at=_iso(now),
        )
        stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
        prefix = self._key(model, v, f"reports/{stamp}")
        self.store.put_bytes(f"{prefix}/report.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
        self.store.put_bytes(
            f"{prefix}/constraint_violations.json",
            orjson.dumps(constraint_violations(report), option=orjson.OPT_INDENT_2),
        )
        self._write_statistics(prefix, baseline, frame)
        self._record(report, time.time())
        return report

    def _write_statistics(self, prefix: str, baseline: Mapping[str, Any], frame: FeatureFrame) -> None:
        """The window's own ``statistics.json`` (SageMaker's monitoring output has one beside the
        violations); never fails the evaluation."""
        try:
            names = [n for n in baseline["feature_names"] if n in frame.columns]
            outputs = [n for n in baseline.get("output_names", []) if n in frame.columns]
            current = build_baseline(frame.columns, feature_names=names, output_names=outputs)
            self.store.put_bytes(f"{prefix}/statistics.json", orjson.dumps(sagemaker_statistics(current)))
        except Exception:
            log.warning("drift: the window's statistics.json was not written", exc_info=True)

    def latest_report(self, model: str, version: int | None) -> dict[str, Any] | None:
        info = self.repository.resolve(model, version)
        listed = self.store.list(self._key(model, info.version, "reports/"))
        keys = [k for k in listed if k.endswith("/report.json")]
        if not keys:
            return None
        report: dict[str, Any] = orjson.loads(self.store.get_bytes(max(keys)))
        return report

    # -- drift_latest and gauges -----------------------------------------------------------------

    def _record(self, report: Mapping[str, Any], at: float) -> None:
        model, version = str(report["model"]), int(report["version"])
        rows: list[dict[str, Any]] = []
        output_psi: list[float] = []
        for f in report["features"]:
            for metric in ("psi", "ks", "chi2"):
                if metric in f:
                    rows.append(
                        {
                            "model": model,
                            "version": version,
                            "feature": str(f["name"])[:255],
                            "metric": metric,
                            "value": float(f[metric]),
                            "evaluated_at": at,
                        }
                    )
            if f["kind"] == "output" and "psi" in f:
                output_psi.append(float(f["psi"]))
        if output_psi:
            rows.append(
                {
                    "model": model,
                    "version": version,
                    "feature": "__output__",
                    "metric": "psi",
                    "value": max(output_psi),
                    "evaluated_at": at,
                }
            )
        t = drift_latest
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.model == model, t.c.version == version))
            if rows:
                conn.execute(insert(t), rows)
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        """Set the drift gauges from ``drift_latest`` (any process's evaluations); drop stale ones."""
        t = drift_latest
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.model, t.c.version, t.c.feature, t.c.metric, t.c.value).where(
                    t.c.metric.in_(("psi", "ks"))
                )
            ).all()
        seen: set[tuple[str, str, str, str]] = set()
        for row in rows:
            labels = (row.model, str(row.version), row.feature)
            gauge = self.metrics.drift_psi if row.metric == "psi" else self.metrics.drift_ks
            gauge.labels(*labels).set(row.value)
            seen.add((row.metric, *labels))
        for stale in self._gauge_labels - seen:
            gauge = self.metrics.drift_psi if stale[0] == "psi" else self.metrics.drift_ks
            with contextlib.suppress(KeyError):
                gauge.remove(*stale[1:])
        self._gauge_labels = seen
