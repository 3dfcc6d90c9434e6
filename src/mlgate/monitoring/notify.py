"""Alert notifications: the log, webhooks (Alertmanager webhook v4), a real Alertmanager.

:func:`build_notifications` turns one evaluation's state changes into what to send — it runs in
the evaluator, after each round:

- **the log**: one structured line (JSON) per alert that starts firing or resolves;
- **webhooks** (``alerts.webhooks``): the JSON Alertmanager's ``webhook_config`` posts
  (``"version": "4"``), one per rule and status: when alerts start firing, again every
  ``alerts.repeat_interval_s`` while they fire, and once when they resolve;
- **Alertmanager** (``alerts.alertmanager_url``): ``POST /api/v2/alerts`` as Prometheus does —
  firing alerts re-sent every minute with ``endsAt`` a few intervals ahead, resolved ones with
  ``endsAt`` their resolution time (re-sent while Prometheus would keep them, 15 minutes).

:class:`Notifier` sends them off the evaluation path: a bounded queue and one task, a timeout
per request; failures are logged and counted (``mlgate_alert_notifications_total``), never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlgate.monitoring.alert_instances import AlertInstance, Transition, iso
from mlgate.telemetry.metrics import Metrics

if TYPE_CHECKING:
    import httpx

    from mlgate.monitoring.alerts import AlertEngine

__all__ = ["Notification", "Notifier", "NotifyTarget", "build_notifications", "webhook_payload"]

log = logging.getLogger("mlgate.alerts")

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: a firing alert's endsAt in webhook v4
RECEIVER = "mlgate"
RESEND_DELAY_S = 60.0  # Prometheus' --rules.alert.resend-delay: firing alerts re-sent to Alertmanager


@dataclass(frozen=True)
class NotifyTarget:
    kind: str  # webhook | alertmanager
    url: str


@dataclass(frozen=True)
class Notification:
    target: NotifyTarget
    payload: Any  # JSON


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_payload(
    rule: str, status: str, alerts: list[AlertInstance], *, external_url: str
) -> dict[str, Any]:
    """Alertmanager's webhook v4 body for one group (the rule's alerts of one status)."""
    group_labels = {"alertname": rule}
    items = []
    for a in alerts:
        resolved = a.state == "resolved"
        items.append(
            {
                "status": "resolved" if resolved else "firing",
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": iso(a.fired_at or a.active_at) or ZERO_TIME,  # Prometheus: FiredAt
                "endsAt": (iso(a.resolved_at) or ZERO_TIME) if resolved else ZERO_TIME,
                "generatorURL": generator_url(external_url, rule),
                "fingerprint": a.fingerprint,
            }
        )
    return {
        "version": "4",
        "groupKey": "{}:{" + ", ".join(f'{k}="{v}"' for k, v in group_labels.items()) + "}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": RECEIVER,
        "groupLabels": group_labels,
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": items,
    }


def generator_url(external_url: str, rule: str) -> str:
    from urllib.parse import quote

    return f"{external_url}/v1/alerts/rules?alert={quote(rule)}"


def _alertmanager_item(a: AlertInstance, *, external_url: str, valid_until: float) -> dict[str, Any]:
    ends = a.resolved_at if a.state == "resolved" and a.resolved_at is not None else valid_until
    return {
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": iso(a.fired_at or a.active_at),  # what Prometheus sends: when it fired
        "endsAt": iso(ends),
        "generatorURL": generator_url(external_url, a.rule),
    }


def _log_line(t: Transition) -> None:
    a = t.alert
    line = {
        "event": "alert",
        "status": t.state,
        "alertname": a.rule,
        "labels": a.labels,
        "annotations": a.annotations,
        "value": a.value,
        "activeAt": iso(a.active_at),
        "at": iso(t.at),
    }
    text = json.dumps(line, ensure_ascii=False, default=str)
    log.warning("alert %s", text)  # firing and resolved alike: both are what an operator must see


def build_notifications(
    engine: AlertEngine, transitions: Iterable[Transition], now: float
) -> list[Notification]:
    """Log the state changes; answer the webhook and Alertmanager requests this round needs
    (and mark the alerts notified)."""
    repeat = engine.config.repeat_interval_s
    changed: dict[str, str] = {}
    for t in transitions:
        if t.state in ("firing", "resolved"):
            _log_line(t)
            engine.metrics.alert_notifications.labels("log", "sent").inc()
            changed[t.alert.fingerprint] = t.state
    webhooks = [target for target in engine.notifier.targets if target.kind == "webhook"]
    managers = [target for target in engine.notifier.targets if target.kind == "alertmanager"]
    notes: list[Notification] = []
    groups: dict[tuple[str, str], list[AlertInstance]] = {}
    pushed: list[AlertInstance] = []
    resend = RESEND_DELAY_S
    for by_fp in engine.alerts.values():
        for a in by_fp.values():
            if a.state == "firing":
                due = changed.get(a.fingerprint) == "firing" or (
                    a.last_notified_at is not None and now - a.last_notified_at >= repeat
                )
                if due or a.last_notified_at is None:
                    groups.setdefault((a.rule, "firing"), []).append(a)
                    a.last_notified_at = now
            elif a.state == "resolved" and changed.get(a.fingerprint) == "resolved":
                groups.setdefault((a.rule, "resolved"), []).append(a)
                a.last_notified_at = now
            # Prometheus' needsSending: never pending; at once after a resolution, else every minute.
            if a.state == "pending":
                continue
            resolved_since = (
                a.resolved_at is not None
                and a.state == "resolved"
                and (a.last_sent_at is None or a.resolved_at > a.last_sent_at)
            )
            if resolved_since or a.last_sent_at is None or now - a.last_sent_at >= resend:
                pushed.append(a)
                a.last_sent_at = now
    if webhooks:
        for (rule, status), alerts in sorted(groups.items()):
            payload = webhook_payload(rule, status, alerts, external_url=engine.external_url)
            notes += [Notification(target, payload) for target in webhooks]
    if managers and pushed:
        valid_until = now + 4 * max(RESEND_DELAY_S, engine.interval_s)
        items = [
            _alertmanager_item(a, external_url=engine.external_url, valid_until=valid_until) for a in pushed
        ]
        notes += [Notification(target, items) for target in managers]
    return notes


class Notifier:
    """Sends notifications from a bounded queue in one task (timeouts; failures logged, counted)."""

    def __init__(
        self, *, targets: list[NotifyTarget], metrics: Metrics, queue_size: int = 256, timeout_s: float = 5.0
    ) -> None:
        self.targets = targets
        self.metrics = metrics
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[Notification] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._work(), name="mlgate-alert-notify")

    def submit(self, notes: Iterable[Notification]) -> None:
        """Queue ``notes`` without waiting; a full queue (or a stopped notifier) drops them, counted."""
        for note in notes:
            if self._queue is None:
                self._dropped(note)
                continue
            try:
                self._queue.put_nowait(note)
            except asyncio.QueueFull:
                self._dropped(note)

    def _dropped(self, note: Notification) -> None:
        self.metrics.alert_notifications.labels(note.target.kind, "dropped").inc()
        log.warning("alert notification to %s dropped (queue full or stopped)", note.target.url)

    async def drain(self) -> None:
        """Wait until everything queued was sent (or failed)."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self) -> None:
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=self.timeout_s)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._queue = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _work(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            note = await queue.get()
            try:
                await self.send(note)
            finally:
                queue.task_done()

    async def send(self, note: Notification) -> bool:
        """POST one notification (one retry after a second); True when it was accepted."""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        url = note.target.url
        if note.target.kind == "alertmanager":
            url = url.rstrip("/") + "/api/v2/alerts"
        error = ""
        for attempt in range(2):
            try:
                response = await self._client.post(url, json=note.payload)
                if response.status_code < 300:
                    self.metrics.alert_notifications.labels(note.target.kind, "sent").inc()
                    return True
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500:
                    break
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # never let one notification stop the task
                error = f"{type(exc).__name__}: {exc}"
                break
            if attempt == 0:
                await asyncio.sleep(1.0)
        self.metrics.alert_notifications.labels(note.target.kind, "failed").inc()
        log.warning("alert notification to %s failed: %s", url, error)
        return False
