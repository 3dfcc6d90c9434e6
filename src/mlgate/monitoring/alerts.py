"""Alert rules evaluated in-process, with Prometheus' states and one evaluator across processes.

The rules — Prometheus alerting rules in the supported PromQL subset
(:mod:`mlgate.monitoring.promql`), the built-in defaults plus ``alerts.rules_file`` — are loaded
and checked by :mod:`mlgate.monitoring.rules`; an alert instance and its state changes are
:mod:`mlgate.monitoring.alert_instances`; the samples history the rules read is
:mod:`mlgate.monitoring.sample_history`. Their public names are re-exported here.

Every process shares its metric samples (:mod:`mlgate.monitoring.share`); exactly one process
across workers and replicas — the holder of the ``alerts`` lease — reads them into an in-memory
history, evaluates the rules every ``alerts.interval_s`` and moves each alert instance through
Prometheus' states (inactive → pending for ``for`` → firing → resolved, kept firing for
``keep_firing_for``). States are stored in ``alert_states`` (a new holder continues from them),
every change in ``alert_events`` (kept ``history_days``), and notifications go out through
:mod:`mlgate.monitoring.notify` off the evaluation path.

Example::

    engine = AlertEngine(settings=settings, engine=db, metrics=metrics)
    await engine.start()          # shares samples; evaluates while it holds the lease
    engine.active_alerts()        # firing and pending alerts (any process: read from the DB)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from mlgate.db.tables import alert_events, alert_states
from mlgate.monitoring import promql
from mlgate.monitoring.alert_instances import (
    AlertInstance,
    State,
    Transition,
    fingerprint,
    instance_of_row,
    iso,
    json_value,
    loads_str_map,
)
from mlgate.monitoring.lease import Lease, process_id
from mlgate.monitoring.notify import Notification, Notifier, NotifyTarget, build_notifications
from mlgate.monitoring.rules import (
    DEFAULT_RULES,
    Rule,
    RuleError,
    check_template,
    export_rules_yaml,
    go_float,
    humanize,
    humanize_duration,
    load_rules,
    parse_rules,
    render_template,
)
from mlgate.monitoring.sample_history import SampleHistory
from mlgate.monitoring.share import (
    MetricShare,
    memory_limit_bytes,
    read_snapshots,
    resident_memory_bytes,
)
from mlgate.settings import Settings
from mlgate.telemetry.metrics import Metrics

__all__ = [
    "DEFAULT_RULES",
    "AlertEngine",
    "AlertInstance",
    "Rule",
    "RuleError",
    "SampleHistory",
    "State",
    "Transition",
    "check_template",
    "export_rules_yaml",
    "fingerprint",
    "go_float",
    "humanize",
    "humanize_duration",
    "iso",
    "load_rules",
    "parse_rules",
    "render_template",
]

log = logging.getLogger("mlgate.alerts")

RESOLVED_RETENTION_S = 15 * 60.0  # Prometheus keeps a resolved alert this long (re-sent as resolved)


# --------------------------------------------------------------------------- the engine


class AlertEngine:
    """Shares this process's samples; evaluates the rules while it holds the ``alerts`` lease."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics
        self.config = settings.alerts
        self.clock = clock
        self.holder = holder or process_id()
        self.rules = load_rules(self.config)
        self.interval_s = self.config.interval_s
        self.lease = Lease(engine, "alerts", holder=self.holder, ttl_s=max(4 * self.interval_s, 10.0))
        names: set[str] | None = set()
        for rule in self.rules:
            used = promql.metric_names(rule.parsed)
            if used is None or names is None:
                names = None
            else:
                names |= used
        self.share = MetricShare(
            engine,
            [metrics.registry, metrics.private],  # private: the quota series name their owners
            process=self.holder,
            interval_s=self.config.snapshot_s,
            names=names,
        )
        # the longest range a rule reads, or the lookback of an instant selector (+ a margin)
        self.history = SampleHistory(keep_s=max(_longest_range(self.rules), promql.LOOKBACK_S) + 60.0)
        self._ranges = {rule.name: _longest_range([rule]) for rule in self.rules}
        self.alerts: dict[str, dict[str, AlertInstance]] = {r.name: {} for r in self.rules}
        self.holding = False
        self.holding_since = 0.0  # when this engine took the lease (its history starts there)
        self.evaluations = 0
        self.last_errors: dict[str, str] = {}
        wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104  # a bind address, not binding
        self.external_url = f"http://{'127.0.0.1' if wildcard else settings.host}:{settings.port}"
        self.notifier = Notifier(
            targets=[NotifyTarget("webhook", url) for url in self.config.webhooks]
            + (
                [NotifyTarget("alertmanager", self.config.alertmanager_url)]
                if self.config.alertmanager_url
                else []
            ),
            metrics=metrics,
        )
        self._lock = threading.Lock()  # one evaluation at a time (the loop, tests, an API call)
        self._task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        self._stored_any = True  # whether alert_states may hold rows (checked on the first write)
        self._stopped = False
        #: called with the alerts that just went to firing (the evaluator's thread; see subscribe)
        self.subscribers: list[Callable[[list[AlertInstance], float], None]] = []
        metrics.process_resident_memory.set_function(resident_memory_bytes)
        metrics.process_memory_limit.set(memory_limit_bytes(self.config.memory_limit_bytes))

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if not self.config.enabled or self._task is not None:
            return
        self.share.start()
        self.notifier.start()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mlgate-alerts")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.to_thread(self._quiesce)  # a round still running in its thread ends first
        await asyncio.to_thread(self.share.stop)
        await self.notifier.stop()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.share.forget)

    def _quiesce(self) -> None:
        """No more rounds; the lease given up at once, so another process takes over now."""
        with self._lock:
            self._stopped = True
            if self.holding:
                self.holding = False
                try:
                    self.lease.release()
                except Exception as exc:
                    log.warning("releasing the alert lease failed: %s", exc)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                notes = await asyncio.to_thread(self.tick)
                self.notifier.submit(notes)
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(max(0.0, self.interval_s - (loop.time() - started)))

    def subscribe(self, subscriber: Callable[[list[AlertInstance], float], None]) -> None:
        """Call ``subscriber(alerts, now)`` after each evaluation with the alerts that went to
        firing in it (only in the lease holder, in its evaluation thread: keep it short; an
        exception is logged, never stops the round). Retrain on drift uses it (lifecycle/retrain.py)."""
        self.subscribers.append(subscriber)

    # ----------------------------------------------------------------- evaluation

    def tick(self, now: float | None = None) -> list[Notification]:
        """One round: take or renew the lease; if held, read the samples, evaluate every rule,
        store the states and answer the notifications to send (empty when not the holder)."""
        with self._lock:
            if self._stopped:
                return []
            now = self.clock() if now is None else now
            if not self.lease.acquire(now):
                if self.holding:
                    log.info("alert evaluation lease lost to %s", self.lease.holder_now(now))
                self.holding = False
                return []
            if not self.holding:
                self._load_states()
                self.history = SampleHistory(keep_s=self.history.keep_s)
                self.holding = True
                self.holding_since = now
            snapshots = read_snapshots(self.engine, since=now - self.history.keep_s, seen=self.history.seen)
            self.history.ingest(snapshots, now)
            return self.evaluate(now)

    def evaluate(self, now: float) -> list[Notification]:
        """Evaluate every rule at ``now`` over :attr:`history`; store and answer notifications."""
        transitions: list[Transition] = []
        for rule in self.rules:
            try:
                result = promql.evaluate(rule.parsed, self.history, now)
            except promql.PromQLError as exc:
                self.metrics.alert_evaluation_failures.labels(rule.name).inc()
                if self.last_errors.get(rule.name) != str(exc):
                    log.warning("alert rule %s failed: %s", rule.name, exc)
                self.last_errors[rule.name] = str(exc)
                continue
            self.last_errors.pop(rule.name, None)
            vector: promql.Vector = result if isinstance(result, dict) else {(): result}
            transitions += self._step(rule, vector, now)
        self.evaluations += 1
        notes = build_notifications(self, transitions, now)
        self._store(transitions, now)
        fired = [t.alert for t in transitions if t.state == "firing"]
        for subscriber in self.subscribers if fired else ():
            try:
                subscriber(fired, now)
            except Exception:
                log.exception("an alert subscriber failed")
        return notes

    def _step(self, rule: Rule, vector: promql.Vector, now: float) -> list[Transition]:
        """Prometheus' ``AlertingRule.Eval`` for one rule's result."""
        active = self.alerts.setdefault(rule.name, {})
        out: list[Transition] = []
        # A new holder's history is short: until it covers the rule's longest range, an alert
        # missing from the result is left as it is (not resolved on too little data).
        warming = now - self.holding_since < self._ranges.get(rule.name, 0.0)
        seen: set[str] = set()
        for sample_labels, value in vector.items():
            base = {k: v for k, v in sample_labels if k != "__name__"}
            labels = dict(base)
            for k, v in rule.labels.items():
                rendered = render_template(v, base, value)
                if rendered:
                    labels[k] = rendered
                else:
                    labels.pop(k, None)
            labels["alertname"] = rule.name
            annotations = {k: render_template(v, base, value) for k, v in rule.annotations.items()}
            fp = fingerprint(labels)
            seen.add(fp)
            alert = active.get(fp)
            if alert is not None and alert.state != "resolved":
                alert.value, alert.annotations, alert.last_seen_at = value, annotations, now
                alert.keep_firing_since = None
                continue
            alert = active[fp] = AlertInstance(
                fingerprint=fp,
                rule=rule.name,
                labels=labels,
                annotations=annotations,
                state="pending",
                value=value,
                active_at=now,
                last_seen_at=now,
            )
            out.append(Transition(alert, "pending", now))
        for fp, alert in list(active.items()):
            if fp not in seen:
                if warming:
                    continue
                keep_firing = False
                if alert.state == "firing" and rule.keep_firing_for_s > 0:
                    if alert.keep_firing_since is None:
                        alert.keep_firing_since = now
                    keep_firing = now - alert.keep_firing_since < rule.keep_firing_for_s
                if alert.state == "pending" or (
                    alert.resolved_at is not None
                    and alert.state == "resolved"
                    and now - alert.resolved_at > RESOLVED_RETENTION_S
                ):
                    del active[fp]
                    if alert.state == "pending":
                        out.append(Transition(alert, "inactive", now))
                    continue
                if alert.state == "firing" and not keep_firing:
                    alert.state = "resolved"
                    alert.resolved_at = now
                    out.append(Transition(alert, "resolved", now))
                if not keep_firing:
                    continue
            if (
                alert.state == "pending"
                and alert.active_at is not None
                and now - alert.active_at >= rule.for_s
            ):
                alert.state = "firing"
                alert.fired_at = now
                out.append(Transition(alert, "firing", now))
        return out

    # ----------------------------------------------------------------- storage

    def _load_states(self) -> None:
        """Continue from the stored states (a new holder after a takeover or a restart)."""
        by_rule: dict[str, dict[str, AlertInstance]] = {r.name: {} for r in self.rules}
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_states)).all()
        for row in rows:
            if row.rule in by_rule:
                by_rule[row.rule][row.fingerprint] = instance_of_row(row)
        self.alerts = by_rule

    def _store(self, transitions: list[Transition], now: float) -> None:
        rows = [
            {
                "fingerprint": a.fingerprint,
                "rule": a.rule,
                "labels": json.dumps(a.labels, sort_keys=True),
                "annotations": json.dumps(a.annotations, sort_keys=True),
                "state": a.state,
                "value": a.value if a.value is None or math.isfinite(a.value) else None,
                "active_at": a.active_at,
                "fired_at": a.fired_at,
                "resolved_at": a.resolved_at,
                "last_seen_at": a.last_seen_at,
                "last_notified_at": a.last_notified_at,
                "updated_at": now,
            }
            for by_fp in self.alerts.values()
            for a in by_fp.values()
        ]
        events = [
            {
                "at": t.at,
                "fingerprint": t.alert.fingerprint,
                "rule": t.alert.rule,
                "state": t.state,
                "value": t.alert.value if t.alert.value is None or math.isfinite(t.alert.value) else None,
                "labels": json.dumps(t.alert.labels, sort_keys=True),
            }
            for t in transitions
        ]
        retention_due = self.config.history_days > 0 and now - self._last_retention >= 3600.0
        if not rows and not events and not self._stored_any and not retention_due:
            return  # nothing active, nothing stored: no write
        self._stored_any = bool(rows)
        with self.engine.begin() as conn:
            conn.execute(delete(alert_states))
            if rows:
                conn.execute(insert(alert_states), rows)
            if events:
                conn.execute(insert(alert_events), events)
            if retention_due:
                self._last_retention = now
                conn.execute(
                    delete(alert_events).where(alert_events.c.at < now - self.config.history_days * 86400)
                )

    # ----------------------------------------------------------------- reads (any process)

    def active_alerts(self) -> list[AlertInstance]:
        """Firing and pending alerts (from the database: whichever process evaluates)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(alert_states)
                .where(alert_states.c.state.in_(("firing", "pending")))
                .order_by(alert_states.c.rule, alert_states.c.fingerprint)
            ).all()
        return [instance_of_row(r) for r in rows]

    def all_states(self) -> list[AlertInstance]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(alert_states).order_by(alert_states.c.rule)).all()
        return [instance_of_row(r) for r in rows]

    def history_events(self, *, since: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """State changes, newest first."""
        t = alert_events
        query = select(t).order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(t.c.at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "at": iso(r.at),
                "fingerprint": r.fingerprint,
                "alertname": r.rule,
                "state": r.state,
                "value": json_value(r.value),
                "labels": loads_str_map(r.labels),
            }
            for r in rows
        ]

    def rules_status(self) -> list[dict[str, Any]]:
        """The loaded rules, grouped, each with its state (firing > pending > inactive)."""
        states: dict[str, list[AlertInstance]] = {}
        for a in self.all_states():
            states.setdefault(a.rule, []).append(a)
        groups: dict[str, list[dict[str, Any]]] = {}
        for rule in self.rules:
            alerts = [a for a in states.get(rule.name, []) if a.state in ("firing", "pending")]
            state = (
                "firing" if any(a.state == "firing" for a in alerts) else "pending" if alerts else "inactive"
            )
            groups.setdefault(rule.group, []).append(
                {
                    "name": rule.name,
                    "query": rule.expr,
                    "duration": rule.for_s,
                    "keepFiringFor": rule.keep_firing_for_s,
                    "labels": rule.labels,
                    "annotations": rule.annotations,
                    "source": rule.source,
                    "state": state,
                    "alerts": [a.json() for a in alerts],
                    "lastError": self.last_errors.get(rule.name),
                }
            )
        return [{"name": name, "rules": rules} for name, rules in groups.items()]

    def export_yaml(self) -> str:
        return export_rules_yaml(self.rules)


def _longest_range(rules: Iterable[Rule]) -> float:
    longest = 0.0

    def walk(e: promql.Expr) -> None:
        nonlocal longest
        if isinstance(e, promql.Selector) and e.range_s is not None:
            longest = max(longest, e.range_s)
        elif isinstance(e, promql.Binary):
            walk(e.lhs)
            walk(e.rhs)
        elif isinstance(e, promql.Aggregate):
            walk(e.expr)
        elif isinstance(e, promql.Call):
            for a in e.args:
                walk(a)

    for rule in rules:
        walk(rule.parsed)
    return longest
