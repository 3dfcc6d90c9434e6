"""Monitoring end to end, the issue's story over real HTTP: a server with two workers captures
every temperature request, the drift schedule compares the captured window with the version's
baseline (three stations' real hours, pvlib), and the default drift rule alerts.

1. Traffic from Miami alone → PSI > 0.25 on most lags → ``MlgateDriftPsiHigh`` fires (in
   ``/v1/alerts`` and as one Alertmanager webhook v4 notification).
2. Traffic back to the three stations' mix → the window holds only in-distribution rows → the
   alert resolves (one resolved notification).

Nothing is written by hand: the records come from ``POST /prod`` through capture, the drift
figures from the scheduled evaluation, the alert from the shared metrics.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.e2e.test_alerts_e2e import _wait, webhook
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

__all__ = ["webhook"]  # the fixture, used here

ADMIN = {"x-api-key": ADMIN_KEY}
RULE = "MlgateDriftPsiHigh"


def _stations() -> dict[str, np.ndarray]:
    from mlgate_services.temperatura.recipe import load_stations, windows

    return {label: windows(series)[0] for label, series in load_stations()}


@pytest.fixture
def server(tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]) -> Iterator[ServerProcess]:
    pytest.importorskip("pvlib")
    hook_url, _ = webhook
    env = {
        "MLGATE_WORKERS": "2",
        "MLGATE_SERVICES": '["temperatura"]',
        "MLGATE_CAPTURE__SAMPLE": "1",
        "MLGATE_CAPTURE__FLUSH_S": "0.2",
        "MLGATE_MONITOR__INTERVAL_S": "1",
        "MLGATE_MONITOR__WINDOW_S": "6",
        "MLGATE_ALERTS__INTERVAL_S": "0.5",
        "MLGATE_ALERTS__SNAPSHOT_S": "0.2",
        "MLGATE_ALERTS__WEBHOOKS": f'["{hook_url}"]',
    }
    with run_server(tmp_path / "data", env=env) as s:
        yield s


def _ours(bodies: list[dict[str, Any]], status: str) -> list[dict[str, Any]]:
    return [b for b in bodies if b["groupLabels"].get("alertname") == RULE and b["status"] == status]


class _Traffic:
    """Windows of hourly temperatures sent to ``POST /prod`` from a thread until stopped."""

    def __init__(self, server: ServerProcess, rows: np.ndarray, seed: int) -> None:
        self.server, self.rows = server, rows
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.sent = 0
        self.failed: list[int] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as client:
            while not self.stop.is_set():
                row = self.rows[self.rng.integers(len(self.rows))]
                with contextlib.suppress(httpx.HTTPError):
                    r = client.post("/prod", json={"temperaturas": [float(v) for v in row]})
                    self.sent += 1
                    if r.status_code != 200:
                        self.failed.append(r.status_code)
                self.stop.wait(0.01)

    def __enter__(self) -> _Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _firing(client: httpx.Client) -> list[dict[str, Any]]:
    body = client.get("/v1/alerts", headers=ADMIN).json()
    return [a for a in body["alerts"] if a["alertname"] == RULE and a["state"] == "firing"]


def test_one_station_drifts_and_alerts_then_the_mix_resolves_it(
    server: ServerProcess, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    _, bodies = webhook
    stations = _stations()
    miami = next(rows for label, rows in stations.items() if "MIAMI" in label)
    mix = np.vstack(list(stations.values()))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert not _firing(client)  # an idle server with a baseline alerts on nothing

        # 1. Miami alone: the scheduled evaluation sees it, the drift rule fires.
        with _Traffic(server, miami, seed=1) as miami_traffic:
            alerts = _wait("the drift alert to fire", lambda: _firing(client), timeout=120)
        assert not miami_traffic.failed
        lags = {a["labels"]["feature"] for a in alerts if a["labels"]["feature"].startswith("lag_")}
        assert len(lags) >= 40, f"only {len(lags)} of 60 lags drifted: {sorted(lags)}"
        assert {a["labels"]["model"] for a in alerts} == {"temperatura"}
        [fired] = _wait("the firing webhook", lambda: _ours(bodies, "firing"), timeout=60)
        assert fired["version"] == "4" and fired["status"] == "firing"
        assert {a["labels"]["alertname"] for a in fired["alerts"]} == {RULE}

        report = client.get("/v1/models/temperatura/drift/reports", headers=ADMIN)
        assert report.status_code == 200, report.text
        doc = report.json()
        lag_psi = [f["psi"] for f in doc["features"] if f["name"].startswith("lag_")]
        assert sum(p > 0.25 for p in lag_psi) >= 40
        metrics = client.get("/metrics").text
        assert 'mlgate_drift_psi{feature="lag_1",model="temperatura"' in metrics

        # 2. Back to the three stations' mix: once Miami has left the window, every lag's alert
        # resolves (each feature is its own alert instance, so they may resolve a round apart).
        with _Traffic(server, mix, seed=2) as mix_traffic:
            _wait("every drift alert to resolve", lambda: not _firing(client), timeout=120)
        assert not mix_traffic.failed
        resolved = _wait("the resolved webhook", lambda: _ours(bodies, "resolved"), timeout=60)
        notified = {a["labels"]["feature"] for b in resolved for a in b["alerts"]}
        assert lags <= notified  # every lag that fired was announced resolved
        assert all(a["status"] == "resolved" for b in resolved for a in b["alerts"])
