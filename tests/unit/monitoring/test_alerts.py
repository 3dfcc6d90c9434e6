"""Alert rules: Prometheus' states on a fake clock, templating, one evaluator across engines,
takeover, notifications (webhook v4 against a local HTTP server), shared samples, gauges."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mlgate.access.limiter import LimiterStorage
from mlgate.db.tables import alert_events, telemetry_snapshots
from mlgate.monitoring.alerts import (
    DEFAULT_RULES,
    AlertEngine,
    RuleError,
    export_rules_yaml,
    fingerprint,
    go_float,
    load_rules,
    parse_rules,
    render_template,
)
from mlgate.monitoring.notify import Notification, Notifier, NotifyTarget, webhook_payload
from mlgate.monitoring.share import MetricShare, collect_samples, memory_limit_bytes, read_snapshots
from mlgate.repository import Repository
from mlgate.settings import AlertSettings, Settings
from mlgate.telemetry.metrics import Metrics, QuotaUsage
from tests.unit.access.test_gate import World

T0 = 1_800_000_000.0

RULES = """
groups:
  - name: test
    rules:
      - alert: TooManyConnections
        expr: mlgate_http_connections > 5
        for: 30s
        keep_firing_for: 20s
        labels:
          severity: page
          where: "{{ $labels.instance }}"
        annotations:
          summary: "{{ $labels.instance }} has {{ $value }} connections"
          ratio: "{{ $value | humanizePercentage }}"
"""

INSTANT = """
groups:
  - name: test
    rules:
      - alert: Busy
        expr: mlgate_http_connections > 5
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'alerts.db'}")
    yield repo.engine
    repo.close()


def make_engine(
    tmp_path: Path,
    db: Engine,
    rules: str,
    *,
    holder: str = "A",
    clock: Callable[[], float] | None = None,
    **alerts: Any,
) -> AlertEngine:
    path = tmp_path / f"rules-{holder}.yml"
    path.write_text(rules)
    config = AlertSettings(rules_file=path, default_rules=False, **{"interval_s": 1.0, **alerts})
    settings = Settings(data_dir=tmp_path, alerts=config)
    return AlertEngine(
        settings=settings, engine=db, metrics=Metrics(), clock=clock or FakeClock(), holder=holder
    )


class Worker:
    """A server process's metrics, shared into the database at fake times."""

    def __init__(self, db: Engine, name: str = "worker-1") -> None:
        self.metrics = Metrics()
        self.share = MetricShare(db, self.metrics.registry, process=name, interval_s=1.0)

    def connections(self, n: float, at: float) -> None:
        self.metrics.http_connections.set(n)
        self.share.share_once(now=at)


def events(db: Engine) -> list[tuple[str, str]]:
    with db.connect() as conn:
        rows = conn.execute(
            select(alert_events.c.rule, alert_events.c.state).order_by(alert_events.c.id)
        ).all()
    return [(r.rule, r.state) for r in rows]


def webhook_statuses(notes: list[Notification]) -> list[str]:
    return [n.payload["status"] for n in notes if n.target.kind == "webhook"]


# --------------------------------------------------------------------------- states


def test_pending_then_firing_after_for_kept_firing_then_resolved(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, db, RULES, clock=clock, webhooks=["http://127.0.0.1:9/hook"])
    worker = Worker(db)

    def at(dt: float, connections: float) -> list[Notification]:
        clock.now = T0 + dt
        worker.connections(connections, clock.now)
        return engine.tick()

    assert at(0, 10) == []
    [alert] = engine.active_alerts()
    assert alert.state == "pending" and alert.value == 10
    assert at(10, 11) == []  # still pending: for 30s
    assert engine.active_alerts()[0].state == "pending"
    notes = at(30, 12)
    assert webhook_statuses(notes) == ["firing"]
    assert notes[0].payload["alerts"][0]["startsAt"] == "2027-01-15T08:00:30Z"  # when it fired
    [alert] = engine.active_alerts()
    assert alert.state == "firing" and alert.value == 12
    assert alert.labels == {
        "alertname": "TooManyConnections",
        "instance": "worker-1",
        "severity": "page",
        "where": "worker-1",
    }
    assert alert.annotations == {"summary": "worker-1 has 12 connections", "ratio": "1200%"}
    # The condition goes away: kept firing for 20 s, then resolved.
    assert webhook_statuses(at(40, 0)) == []
    assert engine.active_alerts()[0].state == "firing"
    assert webhook_statuses(at(50, 0)) == []
    assert webhook_statuses(at(60, 0)) == ["resolved"]
    assert engine.active_alerts() == []
    assert [s.state for s in engine.all_states()] == ["resolved"]
    assert events(db) == [
        ("TooManyConnections", "pending"),
        ("TooManyConnections", "firing"),
        ("TooManyConnections", "resolved"),
    ]
    history = engine.history_events(limit=10)
    assert [h["state"] for h in history] == ["resolved", "firing", "pending"]
    assert engine.history_events(since=T0 + 30, limit=10)[-1]["state"] == "firing"


def test_a_pending_alert_that_goes_away_never_fires(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, db, RULES, clock=clock)
    worker = Worker(db)
    worker.connections(10, T0)
    engine.tick()
    clock.now = T0 + 10
    worker.connections(1, clock.now)
    assert engine.tick() == []
    assert engine.all_states() == []
    assert events(db) == [("TooManyConnections", "pending"), ("TooManyConnections", "inactive")]


def test_keep_firing_for_is_reset_when_the_condition_returns(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, db, RULES, clock=clock)
    worker = Worker(db)
    for dt, n in ((0, 10), (30, 10), (40, 0), (55, 10), (70, 0), (85, 0)):
        clock.now = T0 + dt
        worker.connections(n, clock.now)
        engine.tick()
        expected = "pending" if dt == 0 else "firing"  # 55 resets keep_firing_for
        assert engine.active_alerts()[0].state == expected, dt
    clock.now = T0 + 90
    worker.connections(0, clock.now)
    engine.tick()
    assert engine.active_alerts() == []


def test_repeat_interval_and_resolved_notice(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    engine = make_engine(
        tmp_path, db, INSTANT, clock=clock, webhooks=["http://127.0.0.1:9/hook"], repeat_interval_s=100.0
    )
    worker = Worker(db)
    seen = []
    for dt in (0, 50, 99, 100, 150, 200):
        clock.now = T0 + dt
        worker.connections(10, clock.now)
        seen.append((dt, webhook_statuses(engine.tick())))
    assert seen == [(0, ["firing"]), (50, []), (99, []), (100, ["firing"]), (150, []), (200, ["firing"])]
    clock.now = T0 + 210
    worker.connections(0, clock.now)
    assert webhook_statuses(engine.tick()) == ["resolved"]
    clock.now = T0 + 400
    worker.connections(0, clock.now)
    assert webhook_statuses(engine.tick()) == []  # a resolved notice is sent once


def test_alertmanager_is_sent_firing_alerts_every_minute_and_the_resolution_at_once(
    tmp_path: Path, db: Engine
) -> None:
    clock = FakeClock()
    engine = make_engine(tmp_path, db, INSTANT, clock=clock, alertmanager_url="http://127.0.0.1:9")
    worker = Worker(db)

    def at(dt: float, n: float) -> list[Any]:
        clock.now = T0 + dt
        worker.connections(n, clock.now)
        return [n.payload for n in engine.tick() if n.target.kind == "alertmanager"]

    [[first]] = at(0, 10)
    assert set(first) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert first["labels"] == {"alertname": "Busy", "instance": "worker-1"}
    assert first["startsAt"] == "2027-01-15T08:00:00Z"
    assert first["endsAt"] == "2027-01-15T08:04:00Z"  # valid for 4 resend delays
    assert at(30, 10) == []
    assert len(at(60, 10)) == 1  # re-sent while firing
    [[resolved]] = at(65, 0)
    assert resolved["endsAt"] == "2027-01-15T08:01:05Z"


# --------------------------------------------------------------------------- one evaluator


def test_only_the_lease_holder_evaluates_and_a_new_holder_continues(tmp_path: Path, db: Engine) -> None:
    clock = FakeClock()
    hooks = ["http://127.0.0.1:9/hook"]
    a = make_engine(tmp_path, db, INSTANT, holder="A", clock=clock, webhooks=hooks, repeat_interval_s=3600.0)
    b = make_engine(tmp_path, db, INSTANT, holder="B", clock=clock, webhooks=hooks, repeat_interval_s=3600.0)
    worker = Worker(db)
    worker.connections(10, T0)
    first = a.tick()
    assert webhook_statuses(first) == ["firing"]
    for dt in (0.5, 1, 2, 3):
        clock.now = T0 + dt
        worker.connections(10, clock.now)
        assert b.tick() == []  # not the holder: evaluates nothing, notifies nothing
        a.tick()
    assert a.holding and not b.holding
    assert events(db) == [("Busy", "pending"), ("Busy", "firing")]
    assert b.active_alerts()[0].state == "firing"  # any process reads the states
    # A dies; once its lease expires, B takes over from the stored states: no second "firing".
    clock.now = T0 + 3 + a.lease.ttl_s + 0.1
    worker.connections(10, clock.now)
    assert b.tick() == []
    assert b.holding
    assert b.alerts["Busy"][next(iter(b.alerts["Busy"]))].state == "firing"
    assert events(db) == [("Busy", "pending"), ("Busy", "firing")]
    # A comes back: B holds the lease now.
    assert a.tick() == [] and not a.holding
    clock.now += 1
    worker.connections(0, clock.now)
    assert webhook_statuses(b.tick()) == ["resolved"]
    assert events(db) == [("Busy", "pending"), ("Busy", "firing"), ("Busy", "resolved")]


RATE = """
groups:
  - name: test
    rules:
      - alert: Traffic
        expr: sum(increase(mlgate_http_requests_total[30s])) > 0
"""


def test_a_new_holder_does_not_resolve_on_a_history_shorter_than_the_range(
    tmp_path: Path, db: Engine
) -> None:
    clock = FakeClock()
    hooks = ["http://127.0.0.1:9/hook"]
    a = make_engine(tmp_path, db, RATE, holder="A", clock=clock, webhooks=hooks)
    b = make_engine(tmp_path, db, RATE, holder="B", clock=clock, webhooks=hooks)
    worker = Worker(db)
    requests = worker.metrics.http_requests.labels("/x", "GET", "200")

    def at(t: float, engine: AlertEngine, *, more: bool) -> list[str]:
        clock.now = t
        if more:
            requests.inc(5)
        worker.share.share_once(now=t)
        return webhook_statuses(engine.tick())

    fired = [s for dt in (0, 5, 10, 15, 20) for s in at(T0 + dt, a, more=True)]
    assert fired == ["firing"]
    # A dies; B takes over with no history: it keeps the alert firing until its history spans 30 s.
    takeover = T0 + 20 + a.lease.ttl_s + 0.1
    for dt in (0, 5, 10, 15, 20, 25, 29):
        assert at(takeover + dt, b, more=False) == [], dt
        assert b.active_alerts()[0].state == "firing"
    assert at(takeover + 31, b, more=False) == ["resolved"]
    assert events(db) == [("Traffic", "pending"), ("Traffic", "firing"), ("Traffic", "resolved")]


def test_start_evaluates_in_the_background_and_stop_hands_the_lease_over(tmp_path: Path, db: Engine) -> None:
    engine = make_engine(tmp_path, db, INSTANT, holder="bg", clock=time.time, interval_s=0.05)

    async def run() -> None:
        await engine.start()
        try:
            deadline = time.monotonic() + 20
            while engine.evaluations < 2:
                assert time.monotonic() < deadline, "no evaluation within 20 s"
                await asyncio.sleep(0.02)
            assert engine.holding and engine.lease.holder_now() == "bg"
            assert [s.process for s in read_snapshots(db)] == ["bg"]
        finally:
            await engine.stop()

    asyncio.run(run())
    assert engine.lease.holder_now() is None  # released: another process takes over at once
    assert read_snapshots(db) == []
    assert engine.tick() == []  # stopped


# --------------------------------------------------------------------------- rules and templates


def test_templating() -> None:
    labels = {"route": "/prod", "instance": "w1"}
    assert render_template("{{ $labels.route }} at {{ $value }}", labels, 0.25) == "/prod at 0.25"
    assert render_template("{{$labels.missing}}|{{ .Labels.route }}|{{ .Value }}", labels, 3.0) == "|/prod|3"
    assert render_template("{{ $value | humanizePercentage }}", labels, 0.0612) == "6.12%"
    assert render_template("{{ $value | humanize }}", labels, 1234567.0) == "1.235M"
    assert render_template("{{ $value | humanizeDuration }}", labels, 12.5) == "12.5s"
    assert render_template("{{ $value | humanizeDuration }}", labels, 3725.0) == "1h 2m 5s"
    assert go_float(1e-5) == "1e-05" and go_float(math.inf) == "+Inf" and go_float(2.0) == "2"


def test_unsupported_things_are_refused_at_load_naming_the_rule(tmp_path: Path, db: Engine) -> None:
    def refused(rules: str) -> str:
        with pytest.raises(RuleError) as info:
            make_engine(tmp_path, db, rules)
        return str(info.value)

    bad_expr = INSTANT.replace("mlgate_http_connections > 5", "abs(mlgate_http_connections) > 5")
    assert "alert 'Busy'" in refused(bad_expr) and "function abs()" in refused(bad_expr)
    bad_template = INSTANT + "        annotations:\n          summary: '{{ printf \"%.2f\" $value }}'\n"
    assert "unsupported template" in refused(bad_template)
    assert "recording rule" in refused(
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: up\n"
    )
    assert "defined twice" in refused(INSTANT + "      - alert: Busy\n        expr: up > 1\n")
    assert "not a duration" in refused(INSTANT + "        for: 5 minutes\n")
    assert "must be a vector" in refused(INSTANT.replace("mlgate_http_connections > 5", "1 + 1"))


def test_defaults_and_replacement_by_the_rules_file(tmp_path: Path) -> None:
    defaults = load_rules(AlertSettings())
    assert [r.name for r in defaults] == [
        "MlgateHighErrorRate",
        "MlgateHighLatencyP99",
        "MlgateMemoryHigh",
        "MlgateQuotaNearlyUsed",
        "MlgateDriftPsiHigh",
        "MlgateCanaryRolledBack",
        "MlgateCaptureDropping",
    ]
    path = tmp_path / "r.yml"
    path.write_text(
        "groups:\n  - name: mine\n    rules:\n      - alert: MlgateMemoryHigh\n        expr: up > 2\n"
    )
    rules = load_rules(AlertSettings(rules_file=path))
    assert len(rules) == 7 and rules[-1].group == "mine" and rules[-1].expr == "up > 2"
    # exported and read back: the same rules
    again = parse_rules(__import__("yaml").safe_load(export_rules_yaml(rules)), source="export")
    assert [(r.name, r.expr, r.for_s, r.labels, r.annotations) for r in again] == [
        (r.name, r.expr, r.for_s, r.labels, r.annotations) for r in rules
    ]
    assert parse_rules(DEFAULT_RULES, source="default")[0].for_s == 300


def test_fingerprint_is_alertmanagers() -> None:
    # model.LabelSet{"alertname": "Test"}.Fingerprint() in Alertmanager (FNV-1a 64)
    assert fingerprint({}) == "cbf29ce484222325"
    assert len(fingerprint({"alertname": "Busy", "instance": "a"})) == 16
    assert fingerprint({"a": "b"}) != fingerprint({"a": "c"})


# --------------------------------------------------------------------------- notifications


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[tuple[str, Any]]
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"bodies": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_webhook_v4_payload_exact_shape(tmp_path: Path, db: Engine, receiver: tuple[str, Any]) -> None:
    url, handler = receiver
    clock = FakeClock()
    rules = (
        INSTANT + "        labels:\n          severity: page\n        annotations:\n          summary: hi\n"
    )
    engine = make_engine(tmp_path, db, rules, clock=clock, webhooks=[f"{url}/hook"])
    worker = Worker(db)
    worker.connections(10, T0)
    notes = engine.tick()

    async def send() -> None:
        engine.notifier.start()
        engine.notifier.submit(notes)
        await engine.notifier.drain()
        await engine.notifier.stop()

    asyncio.run(send())
    [(path, body)] = handler.bodies
    assert path == "/hook"
    labels = {"alertname": "Busy", "instance": "worker-1", "severity": "page"}
    assert body == {
        "version": "4",
        "groupKey": '{}:{alertname="Busy"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "mlgate",
        "groupLabels": {"alertname": "Busy"},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "hi"},
        "externalURL": "http://127.0.0.1:8000",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "hi"},
                "startsAt": "2027-01-15T08:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:8000/v1/alerts/rules?alert=Busy",
                "fingerprint": fingerprint(labels),
            }
        ],
    }
    assert engine.metrics.alert_notifications.labels("webhook", "sent")._value.get() == 1


def test_resolved_payload_and_common_labels() -> None:
    from mlgate.monitoring.alerts import AlertInstance

    a = AlertInstance(
        "f1", "R", {"alertname": "R", "x": "1", "k": "a"}, {"s": "1"}, "resolved", 1.0, T0, T0, T0 + 60
    )
    b = AlertInstance(
        "f2", "R", {"alertname": "R", "x": "1", "k": "b"}, {"s": "2"}, "resolved", 1.0, T0, T0, T0 + 60
    )
    body = webhook_payload("R", "resolved", [a, b], external_url="http://h")
    assert body["commonLabels"] == {"alertname": "R", "x": "1"}
    assert body["commonAnnotations"] == {}
    assert [x["endsAt"] for x in body["alerts"]] == ["2027-01-15T08:01:00Z"] * 2
    assert {x["status"] for x in body["alerts"]} == {"resolved"}


def test_failures_are_counted_never_raised(receiver: tuple[str, Any]) -> None:
    url, handler = receiver
    handler.status = 400
    metrics = Metrics()
    notifier = Notifier(targets=[], metrics=metrics, timeout_s=2.0)

    async def run() -> tuple[bool, bool]:
        refused = await notifier.send(Notification(NotifyTarget("webhook", url), {"x": 1}))
        closed = await notifier.send(Notification(NotifyTarget("webhook", "http://127.0.0.1:9/"), {"x": 1}))
        await notifier.stop()
        return refused, closed

    assert asyncio.run(run()) == (False, False)
    assert metrics.alert_notifications.labels("webhook", "failed")._value.get() == 2
    # a stopped notifier drops (counted) instead of queueing forever
    notifier.submit([Notification(NotifyTarget("webhook", url), {})])
    assert metrics.alert_notifications.labels("webhook", "dropped")._value.get() == 1


# --------------------------------------------------------------------------- shared samples, gauges


def test_samples_are_shared_and_stale_rows_deleted(db: Engine) -> None:
    metrics = Metrics()
    metrics.http_requests.labels("/prod", "POST", "200").inc(3)
    metrics.http_latency.labels("/prod").observe(0.2)
    names = {"mlgate_http_requests_total", "mlgate_http_request_duration_seconds_bucket"}
    samples = collect_samples(metrics.registry, names)
    assert (
        "mlgate_http_requests_total",
        {"route": "/prod", "method": "POST", "status": "200"},
        3.0,
        True,
    ) in samples
    assert {s[0] for s in samples} == names
    old = MetricShare(db, metrics.registry, process="old", interval_s=1.0, names=names)
    old.share_once(now=T0)
    share = MetricShare(db, metrics.registry, process="new", interval_s=1.0, names=names)
    share.share_once(now=T0 + 700)
    assert [s.process for s in read_snapshots(db)] == ["new"]  # "old": not updated for 10 minutes
    metrics.http_requests.labels("/prod", "POST", "200").inc()
    share.share_once(now=T0 + 701)
    [snap] = read_snapshots(db)
    assert snap.updated_at == T0 + 701
    assert (
        "mlgate_http_requests_total",
        {"route": "/prod", "method": "POST", "status": "200"},
        4.0,
        True,
    ) in (snap.samples)
    share.forget()
    with db.connect() as conn:
        assert conn.execute(select(telemetry_snapshots)).all() == []


def test_share_thread_starts_and_stops(db: Engine) -> None:
    share = MetricShare(db, Metrics().registry, process="t", interval_s=0.05)
    share.start()
    try:
        deadline = __import__("time").monotonic() + 10
        while not read_snapshots(db):
            assert __import__("time").monotonic() < deadline, "no snapshot within 10 s"
            threading.Event().wait(0.02)
    finally:
        share.stop()


def test_memory_gauges(tmp_path: Path, db: Engine) -> None:
    engine = make_engine(tmp_path, db, INSTANT, memory_limit_bytes=1 << 30)
    text = engine.metrics.render().decode()
    assert "mlgate_process_memory_limit_bytes 1.073741824e+09" in text
    rss = [line for line in text.splitlines() if line.startswith("mlgate_process_resident_memory_bytes ")]
    assert rss and float(rss[0].split()[1]) > 1e6
    # cgroup v2, then v1, then RAM
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/mlgate.slice\n")
    (root / "sys/fs/cgroup/mlgate.slice").mkdir(parents=True)
    (root / "sys/fs/cgroup/mlgate.slice/memory.max").write_text("536870912\n")
    (root / "proc/meminfo").write_text("MemTotal:       16384 kB\n")
    assert memory_limit_bytes(root=str(root)) == 536870912
    (root / "sys/fs/cgroup/mlgate.slice/memory.max").write_text("max\n")
    assert memory_limit_bytes(root=str(root)) == 16384 * 1024
    (root / "sys/fs/cgroup/memory").mkdir(parents=True)
    (root / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("1048576\n")
    assert memory_limit_bytes(root=str(root)) == 1048576
    assert memory_limit_bytes(123) == 123


def test_quota_gauge_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry

    usage = QuotaUsage(registry=CollectorRegistry())
    usage.observe("quota:user:ann:*:month0", "reference", 400, 1000, T0 + 100)  # under 50 %: not kept
    usage.observe("quota:user:bob:*:month0", "reference", 900, 1000, T0 + 100)
    usage.observe("quota:user:bob:temperatura:month0", "reference", 950, 1000, T0 + 100)
    usage.observe("quota:key:k1:*:day0", "basic", 10, 10, T0 + 10)
    monkeypatch.setattr("mlgate.telemetry.metrics.time.time", lambda: T0)
    [family] = usage.collect()
    got = {(s.labels["owner"], s.labels["plan"]): s.value for s in family.samples}
    assert got == {("user:bob", "reference"): 0.95, ("key:k1", "basic"): 1.0}
    monkeypatch.setattr("mlgate.telemetry.metrics.time.time", lambda: T0 + 50)
    [family] = usage.collect()  # k1's window ended: its series goes
    assert {s.labels["owner"] for s in family.samples} == {"user:bob"}
    for i in range(QuotaUsage.MAX_SERIES + 10):
        usage.observe(f"quota:user:u{i}:*:month0", "reference", 9, 10, T0 + 1000)
    assert len(usage._ratios) == QuotaUsage.MAX_SERIES


@pytest.fixture(params=["memory", "local", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """The gate on each kind of limiter storage (synchronous and over I/O)."""
    from mlgate.access.limiter import MemoryLimiterStorage, MmapLimiterStorage, SqlLimiterStorage

    storages: dict[str, Callable[[Repository], LimiterStorage]] = {
        "memory": lambda _: MemoryLimiterStorage(),
        "local": lambda _: MmapLimiterStorage(tmp_path / "limiter.state"),
        "sqlite": lambda repo: SqlLimiterStorage(repo.engine),
    }
    w = World(tmp_path, storages[request.param])
    yield w
    w.close()


def test_the_gate_sets_the_quota_gauge_on_every_storage(world: World) -> None:
    from prometheus_client import CollectorRegistry

    from mlgate.errors import QuotaExceeded

    usage = QuotaUsage(registry=CollectorRegistry())
    world.gate.quota_usage = usage
    world.plans.create("p", rate=1000.0, burst=1000, quota_limit=4, quota_period="MONTH")
    key = world.keys.create(name="k")
    world.plans.attach(key.key.id, "p")

    def gauge() -> dict[tuple[str, str], float]:
        [family] = usage.collect()
        return {(s.labels["owner"], s.labels["plan"]): s.value for s in family.samples}

    world.admit(key.secret, now=time.time())
    assert gauge() == {}  # 25 %: not recorded
    world.admit(key.secret, now=time.time())
    assert gauge() == {(f"key:{key.key.id}", "p"): 0.5}
    world.admit(key.secret, now=time.time())
    world.admit(key.secret, now=time.time())
    with pytest.raises(QuotaExceeded):
        world.admit(key.secret, now=time.time())
    assert gauge() == {(f"key:{key.key.id}", "p"): 1.0}
