"""End to end over a real ``mlgate serve``: a shadow version of temperatura at 100 %.

A second version (a different linear model over the same 60 readings) is pushed and set as the
production alias's shadow with capture at 100 %. Every answer must be the primary's alone (the
version-1 answer, same body, ``model_version`` 1); the shadow endpoint's figures must equal an
offline computation from the captured pairs (records of versions 1 and 2 paired by ``eventId``);
the CLI prints them; a shadow whose model fails on every input changes no caller's status and is
counted. Waits poll with deadlines (never a timing assertion).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.e2e.test_capture_e2e import FAST, SEED, cli, records, wait_for
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
N = 40
SHADOW = "/v1/models/temperatura/shadow"
ALIAS = "/v1/models/temperatura/aliases/production/shadow"


def _linear(path: Path, n_features: int, lags: int) -> Path:
    """A model answering the mean of the last ``lags`` readings (fitted exactly on random rows)."""
    x = np.random.default_rng(7).normal(15.0, 5.0, size=(400, n_features))
    sio.dump(LinearRegression().fit(x, x[:, -lags:].mean(axis=1)), path)
    return path


def _push(server: ServerProcess, path: Path) -> int:
    with path.open("rb") as f:
        r = httpx.post(
            server.url + "/v1/models/temperatura/versions",
            files={"files": (path.name, f)},
            headers=ADMIN,
            timeout=60,
        )
    assert r.status_code == 201, r.text
    version: int = r.json()["version"]
    return version


def _payload(i: int) -> dict[str, Any]:
    return {"temperaturas": [round(t + (i % 7) * 0.9 - (i % 3) * 1.3, 1) for t in SEED]}


def _figures(server: ServerProcess) -> dict[str, Any]:
    r = httpx.get(server.url + SHADOW, params={"alias": "production"}, headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-shadow"), env=FAST) as s:
        yield s


def test_shadow_changes_no_answer_and_its_figures_match_the_captured_pairs(
    server: ServerProcess, tmp_path: Path
) -> None:
    shadow_version = _push(server, _linear(tmp_path / "last3.skops", 60, 3))
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        assert admin.get(SHADOW).status_code == 409  # no shadow yet
        assert admin.get("/v1/models/nope/shadow").status_code == 404
        with server.client() as user:  # admin only
            assert user.get(SHADOW).status_code == 403
        assert httpx.get(server.url + SHADOW).status_code == 401
        assert admin.get(SHADOW, params={"alias": "x" * 500}).status_code == 400
        assert admin.get(SHADOW, params={"alias": "nope"}).status_code == 404
        assert admin.put("/v1/models/temperatura/capture", json={"sample": 1.0}).status_code == 200
        # What the primary alone answers, before any shadow.
        with server.client() as c:
            alone = [c.post("/v1/models/temperatura/predict", json=_payload(i)).json() for i in range(N)]
        r = admin.put(
            ALIAS, json={"version": shadow_version, "sample": 1.0, "timeout_s": 10, "max_concurrency": 64}
        )
        assert r.status_code == 200, r.text

    answers = []
    with server.client() as c:
        for i in range(N):
            r = c.post(
                "/v1/models/temperatura/predict", json=_payload(i), headers={"x-request-id": f"sh-{i}"}
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-model-version"] == "1"
            answers.append(r.json())
    assert answers == alone  # the shadow changes no answer
    assert all(a["model_version"] == 1 for a in answers)

    figures = wait_for(
        lambda: (f := _figures(server))["pairs"] >= N and f, message="shadow pairs never counted"
    )
    assert figures["calls"] == {"ok": N, "error": 0, "timeout": 0, "busy": 0}
    assert (figures["primary_version"], figures["shadow_version"], figures["sample"]) == (
        1,
        shadow_version,
        1.0,
    )

    # Offline: pair the captured records by eventId.
    def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        primary = [
            r for r in records(server, {"version": 1}) if r["eventMetadata"]["inferenceId"].startswith("sh-")
        ]
        shadow = records(server, {"version": shadow_version})
        return (primary, shadow) if len(primary) >= N and len(shadow) >= N else None

    primary_records, shadow_records = wait_for(both, message="paired records never captured")
    by_event = {r["eventMetadata"]["eventId"]: r for r in shadow_records}
    assert len(primary_records) == len(by_event) == N
    deltas, rel, agree = [], [], 0
    for record in primary_records:
        attrs = record["eventMetadata"]["customAttributes"]
        assert (attrs["role"], attrs["shadowVersion"]) == ("primary", str(shadow_version))
        twin = by_event[record["eventMetadata"]["eventId"]]
        twin_attrs = twin["eventMetadata"]["customAttributes"]
        assert (twin_attrs["role"], twin_attrs["primaryVersion"], twin_attrs["version"]) == (
            "shadow",
            "1",
            str(shadow_version),
        )
        assert twin["eventMetadata"]["inferenceId"] == record["eventMetadata"]["inferenceId"]
        assert twin["captureData"]["endpointInput"]["data"] == record["captureData"]["endpointInput"]["data"]
        p = json.loads(record["captureData"]["endpointOutput"]["data"])["outputs"]
        s = json.loads(twin["captureData"]["endpointOutput"]["data"])["outputs"]
        deltas.append(abs(s["prediccion"] - p["prediccion"]))
        rel.append(abs(s["prediccion"] - p["prediccion"]) / abs(p["prediccion"]))
        agree += p["unidad"] == s["unidad"]
    out = figures["outputs"]["prediccion"]
    assert out["kind"] == "numeric" and out["pairs"] == N and out["mismatched"] == 0
    assert out["abs_delta"]["p50"] == pytest.approx(float(np.quantile(deltas, 0.5)), rel=1e-12, abs=1e-12)
    assert out["abs_delta"]["p95"] == pytest.approx(float(np.quantile(deltas, 0.95)), rel=1e-12, abs=1e-12)
    assert out["rel_delta"]["p50"] == pytest.approx(float(np.quantile(rel, 0.5)), rel=1e-12, abs=1e-12)
    assert out["rel_delta"]["p95"] == pytest.approx(float(np.quantile(rel, 0.95)), rel=1e-12, abs=1e-12)
    assert max(deltas) > 0  # a different model: the comparison is not trivially zero
    unit = figures["outputs"]["unidad"]
    assert (unit["kind"], unit["agreement"], unit["confusion"]) == (
        "categorical",
        agree / N,
        {"Celsius": {"Celsius": N}},
    )
    assert figures["agreement"] == 1.0
    assert figures["latency_s"]["primary"]["n"] == figures["latency_s"]["shadow"]["n"] == N
    assert figures["errors"]["shadow_rate"] == 0.0

    shown = cli(server, "models", "shadow", "temperatura").stdout
    assert (
        f"v1 (primary) vs v{shadow_version} (shadow)" in shown and "prediccion" in shown and "unidad" in shown
    )
    as_json = json.loads(cli(server, "models", "shadow", "temperatura", "--json").stdout)
    assert as_json["pairs"] >= N
    metrics = httpx.get(server.url + "/metrics").text
    assert (
        f'mlgate_shadow_requests_total{{alias="production",model="temperatura",outcome="ok",shadow_version="{shadow_version}"}}'
        in metrics
    )


def test_a_failing_shadow_never_changes_the_callers_status(server: ServerProcess, tmp_path: Path) -> None:
    broken = _push(server, _linear(tmp_path / "narrow.skops", 59, 3))  # loads, fails on 60 readings
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        r = admin.put(ALIAS, json={"version": broken, "sample": 1.0, "max_concurrency": 64})
        assert r.status_code == 200, r.text
    with server.client() as c:
        for i in range(10):
            r = c.post("/v1/models/temperatura/predict", json=_payload(i))
            assert r.status_code == 200, r.text
            assert r.json()["model_version"] == 1
            prod = c.post("/prod", json=_payload(i))  # the service's own route is shadowed too
            assert prod.status_code == 200 and prod.json()["statusCode"] == 200
    figures = wait_for(
        lambda: (f := _figures(server))["calls"]["error"] >= 20 and f, message="shadow errors never counted"
    )
    assert figures["shadow_version"] == broken and figures["pairs"] == 0
    assert figures["calls"] == {"ok": 0, "error": 20, "timeout": 0, "busy": 0}
    assert figures["errors"]["shadow_rate"] == 1.0
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as admin:
        assert admin.delete(ALIAS).status_code == 200
        assert admin.get(SHADOW).status_code == 409


def _offline(primary: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> list[float]:
    """|Δ| of ``prediccion`` over the captured pairs (primary records paired by eventId)."""
    twins = {r["eventMetadata"]["eventId"]: r for r in shadow}
    deltas = []
    for record in primary:
        twin = twins.get(record["eventMetadata"]["eventId"])
        if twin is not None:
            answered = json.loads(record["captureData"]["endpointOutput"]["data"])
            # /prod's envelope (the shadow's record is in the native route's shape, any route)
            p = answered["body"]["prediccion"] if "body" in answered else answered["outputs"]["prediccion"]
            s = json.loads(twin["captureData"]["endpointOutput"]["data"])["outputs"]["prediccion"]
            deltas.append(abs(s - p))
    return deltas


def test_two_workers_figures_merge_and_match_the_captured_pairs(tmp_path: Path) -> None:
    """Each worker compares what it served and flushes its own row; the endpoint merges them."""
    env = {**FAST, "MLGATE_WORKERS": "2", "MLGATE_CAPTURE__SAMPLE": "1"}
    with run_server(tmp_path / "workers", env=env) as s:
        shadow_version = _push(s, _linear(tmp_path / "last3.skops", 60, 3))
        r = httpx.put(
            s.url + ALIAS,
            json={"version": shadow_version, "sample": 1.0, "max_concurrency": 64},
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        sent = [0]

        def both_workers_compared() -> bool:
            with s.client() as c:  # fresh connections: the kernel deals them to both workers
                for _ in range(10):
                    answer = c.post("/prod", json=_payload(sent[0]), headers={"connection": "close"})
                    assert answer.status_code == 200, answer.text
                    sent[0] += 1
            return bool(_figures(s)["processes"] == 2)

        wait_for(both_workers_compared, timeout=90, message="the second worker never compared")

        def settled() -> tuple[dict[str, Any], list[float]] | None:
            figures = _figures(s)
            primary = [
                r
                for r in records(s, {"version": 1})
                if r["eventMetadata"]["customAttributes"].get("role") == "primary"
            ]
            deltas = _offline(primary, records(s, {"version": shadow_version}))
            ok = figures["pairs"] == len(deltas) == len(primary) and figures["processes"] == 2
            return (figures, deltas) if ok else None

        figures, deltas = wait_for(settled, timeout=60, message="figures never matched the captured pairs")
        assert 0 < len(deltas) <= sent[0]
        out = figures["outputs"]["prediccion"]["abs_delta"]
        assert out["n"] == len(deltas)
        assert out["p50"] == pytest.approx(float(np.quantile(deltas, 0.5)), rel=1e-12, abs=1e-12)
        assert out["p95"] == pytest.approx(float(np.quantile(deltas, 0.95)), rel=1e-12, abs=1e-12)
