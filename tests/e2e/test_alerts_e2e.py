"""Alerts end to end: a real ``mlgate serve`` with two workers, a rule that fires quickly, a
webhook receiver and a real Alertmanager. The alert fires (``/v1/alerts``, a webhook v4
payload, Alertmanager's ``/api/v2/alerts``), then resolves — one notification per transition
across the workers (one evaluator)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.server_process import ADMIN_KEY, run_server
from tests.services import free_port, missing_service, port_open

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

T = TypeVar("T")

RULES = """
groups:
  - name: e2e
    rules:
      - alert: E2EHealthzBusy
        expr: sum by (route) (increase(mlgate_http_requests_total{route="/healthz"}[5s])) > 0
        for: 1s
        labels:
          severity: test
        annotations:
          summary: "{{ $labels.route }} answered {{ $value }} requests"
"""

ALERTMANAGER_CONFIG = """
route:
  receiver: sink
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: sink
"""


def _wait(what: str, check: Callable[[], T | None], *, timeout: float = 60.0, every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    class Hook(_Hook):
        bodies: list[dict[str, Any]] = []  # per test

    handler = Hook
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        missing_service("Alertmanager is not installed (Debian: apt-get install prometheus-alertmanager)")
        raise AssertionError("unreachable")
    config = tmp_path / "alertmanager.yml"
    config.write_text(ALERTMANAGER_CONFIG)
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port, timeout=0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                missing_service(f"Alertmanager did not start: {log.read_text(errors='replace')[-500:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cli(url: str, *args: str) -> str:
    """``python -m mlgate ARGS`` against the server (admin key, wide plain output)."""
    env = {**os.environ, "MLGATE_URL": url, "MLGATE_API_KEY": ADMIN_KEY, "COLUMNS": "250", "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout


def _ours(bodies: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [
        b for b in bodies if b["groupLabels"].get("alertname") == "E2EHealthzBusy" and b["status"] == status
    ]


def test_a_rule_fires_and_resolves_once_across_two_workers(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]], alertmanager: str
) -> None:
    hook_url, bodies = webhook
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    env = {
        "MLGATE_WORKERS": "2",
        "MLGATE_ALERTS__RULES_FILE": str(rules),
        "MLGATE_ALERTS__INTERVAL_S": "0.5",
        "MLGATE_ALERTS__SNAPSHOT_S": "0.2",
        "MLGATE_ALERTS__WEBHOOKS": json.dumps([hook_url]),
        "MLGATE_ALERTS__ALERTMANAGER_URL": alertmanager,
    }
    admin = {"x-api-key": ADMIN_KEY}
    with (
        run_server(tmp_path / "data", env=env) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        rules_now = client.get("/v1/alerts/rules", headers=admin).json()
        names = [r["name"] for g in rules_now["groups"] for r in g["rules"]]
        assert "E2EHealthzBusy" in names and "MlgateHighErrorRate" in names
        assert client.get("/v1/alerts").status_code == 401  # admin only
        assert client.get("/v1/alerts/rules", headers={"x-api-key": server.api_key}).status_code == 403

        stop = threading.Event()

        def traffic() -> None:  # /healthz answered by both workers (new connections spread)
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"{server.url}/healthz", timeout=5)
                stop.wait(0.05)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:

            def firing() -> dict[str, Any] | None:
                body = client.get("/v1/alerts", headers=admin).json()
                mine = [
                    a for a in body["alerts"] if a["alertname"] == "E2EHealthzBusy" and a["state"] == "firing"
                ]
                return mine[0] if mine else None

            alert = _wait("the alert to fire (/v1/alerts)", firing)
            assert alert["labels"] == {"alertname": "E2EHealthzBusy", "route": "/healthz", "severity": "test"}
            assert alert["annotations"]["summary"].startswith("/healthz answered ")
            [fired] = _wait("the firing webhook", lambda: _ours(bodies, "firing"), timeout=30)
            assert fired["version"] == "4" and fired["receiver"] == "mlgate"
            assert fired["groupKey"] == '{}:{alertname="E2EHealthzBusy"}'
            assert fired["alerts"][0]["labels"] == alert["labels"]
            assert fired["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"

            def in_alertmanager() -> list[dict[str, Any]] | None:
                listed = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
                return [a for a in listed if a["labels"].get("alertname") == "E2EHealthzBusy"] or None

            [pushed] = _wait("Alertmanager to list the alert", in_alertmanager, timeout=30)
            assert pushed["labels"]["route"] == "/healthz"
            assert pushed["status"]["state"] == "active"
            listed = _cli(server.url, "alerts", "ls")
            assert "E2EHealthzBusy" in listed and "firing" in listed
        finally:
            stop.set()
            sender.join(timeout=10)

        # No traffic: the 5 s increase drops to 0 and the alert resolves.
        [resolved] = _wait("the resolved webhook", lambda: _ours(bodies, "resolved"), timeout=60)
        assert resolved["alerts"][0]["status"] == "resolved"
        assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
        _wait("Alertmanager to see the resolution", lambda: in_alertmanager() is None, timeout=30)
        body = client.get("/v1/alerts", headers=admin, params={"limit": 50}).json()
        assert not [a for a in body["alerts"] if a["alertname"] == "E2EHealthzBusy"]
        states = [e["state"] for e in reversed(body["history"]) if e["alertname"] == "E2EHealthzBusy"]
        assert states == ["pending", "firing", "resolved"]
        later = client.get("/v1/alerts", headers=admin, params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later["history"] == []
        assert len(client.get("/v1/alerts", headers=admin, params={"limit": 1}).json()["history"]) == 1
        assert client.get("/v1/alerts", headers=admin, params={"since": "yesterday"}).status_code == 400

        # One evaluator across both workers: one notification per transition, one log line each.
        time.sleep(2.0)  # a few more evaluation rounds: nothing else may arrive
        assert len(_ours(bodies, "firing")) == 1
        assert len(_ours(bodies, "resolved")) == 1
        lines = [line for line in server.log().splitlines() if '"alertname": "E2EHealthzBusy"' in line]
        assert [json.loads(line.split("alert ", 1)[1])["status"] for line in lines] == ["firing", "resolved"]

        exported = client.get("/v1/alerts/rules/export", headers=admin)
        assert exported.status_code == 200 and "E2EHealthzBusy" in exported.text
        assert "resolved" in _cli(server.url, "alerts", "ls", "--all")
        out = tmp_path / "exported.yml"
        _cli(server.url, "alerts", "export-rules", "--out", str(out))
        assert out.read_text() == exported.text
        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = subprocess.run(
                [promtool, "check", "rules", str(out)], capture_output=True, text=True, timeout=60
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert f"SUCCESS: {len(names)} rules found" in checked.stdout  # the defaults + the file's
