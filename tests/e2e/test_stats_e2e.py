"""End to end: the dashboard's JSON APIs (issue 17) count what real requests did, over a restart.

Two keys call a real server — one on a plan that throttles after 3 calls, one that also sends
inputs the model refuses — and the APIs' numbers equal what was sent; the quota equals the
gateway's own ``X-Quota-Remaining``; a restarted server still has the history; a user sees only
their keys; only admins read the model and workflow stats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

ADMIN = {"x-api-key": ADMIN_KEY}
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
ENV = {"MLGATE_STATS__FLUSH_S": "0.5", "MLGATE_LOAD_ON_START": "true"}
PREDICT = "/v1/models/temperatura/predict"
HOLA = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"hola": 1}, "End": True}}}
FALLA = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Nope", "Cause": "test"}}}


def _until(read: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll ``read`` until ``ok`` (a flush every 0.5 s); the last value either way."""
    deadline = time.monotonic() + timeout
    value = read()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-stats")


@pytest.fixture(scope="module")
def sent(data_dir: Path) -> Iterator[dict[str, Any]]:
    """Start a server, send the traffic, wait for it to be flushed; stop the server."""
    with run_server(data_dir, env=ENV) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        yield _send(server, c)


def _send(server: ServerProcess, c: httpx.Client) -> dict[str, Any]:
    plan = {"name": "tiny", "rate": 0.001, "burst": 3, "quota_limit": 100, "quota_period": "DAY"}
    assert c.post("/v1/plans", json=plan, headers=ADMIN).status_code == 201
    big = {"name": "big", "rate": 1000, "burst": 1000, "quota_limit": 1000, "quota_period": "MONTH"}
    assert c.post("/v1/plans", json=big, headers=ADMIN).status_code == 201
    user = {"username": "ana", "password": "correct horse 1", "email": "ana@x.io"}
    assert c.post("/auth/create_user", json=user).status_code == 201
    token = c.post("/auth/token", data={"username": "ana", "password": "correct horse 1"}).json()
    ana = {"authorization": f"Bearer {token['access_token']}"}
    a = c.post("/v1/keys", json={"name": "ana-tiny", "owner": "ana", "plan": "tiny"}, headers=ADMIN).json()
    b = c.post("/v1/keys", json={"name": "plain-big", "plan": "big"}, headers=ADMIN).json()
    # key A: 3 answered, then 2 throttled (429)
    answers_a = [
        c.post(PREDICT, json={"temperaturas": SEED}, headers={"x-api-key": a["key"]}) for _ in range(5)
    ]
    assert [r.status_code for r in answers_a] == [200, 200, 200, 429, 429]
    # key B: 4 answered, 2 refused by the model after admission (4xx: charged, as the gateway does)
    hb = {"x-api-key": b["key"]}
    answers_b = [c.post(PREDICT, json={"temperaturas": SEED}, headers=hb) for _ in range(4)]
    answers_b += [c.post(PREDICT, json={"temperaturas": [1.0, 2.0]}, headers=hb) for _ in range(2)]
    assert [r.status_code // 100 for r in answers_b] == [2, 2, 2, 2, 4, 4], [r.text for r in answers_b]
    # workflows: two succeed, one fails
    for name, definition in (("hola", HOLA), ("falla", FALLA)):
        assert c.put(f"/v1/workflows/{name}", json={"definition": definition}, headers=ADMIN).status_code in (
            200,
            201,
        )
    for name in ("hola", "hola", "falla"):
        c.post(f"/v1/workflows/{name}/executions", params={"mode": "sync"}, json={}, headers=ADMIN)
    models = _until(
        lambda: c.get("/v1/stats/models", headers=ADMIN).json(),
        lambda m: _model(m, "temperatura")["requests"] >= 11,
    )
    keys = _until(
        lambda: c.get("/v1/stats/keys", headers=ADMIN).json(),
        lambda k: {a["id"], b["id"]} <= {e["key_id"] for e in k["keys"]},
    )
    return {
        "a": a,
        "b": b,
        "ana": ana,
        "quota_a": int(answers_a[2].headers["x-quota-remaining"]),
        "quota_b": int(answers_b[-1].headers["x-quota-remaining"]),
        "models": models,
        "keys": keys,
        "model": c.get("/v1/stats/models/temperatura", headers=ADMIN).json(),
        "workflows": c.get("/v1/stats/workflows", headers=ADMIN).json(),
        "as_ana": c.get("/v1/stats/keys", headers=ana).json(),
        "as_b": c.get("/v1/stats/keys", headers=hb).json(),
        "forbidden": [
            c.get(path, headers=who).status_code
            for path in ("/v1/stats/models", "/v1/stats/models/temperatura", "/v1/stats/workflows")
            for who in (ana, hb)
        ],
        "anonymous": c.get("/v1/stats/keys").status_code,
        "unknown": c.get("/v1/stats/models/nadie", headers=ADMIN).status_code,
        "bad_window": c.get("/v1/stats/models", params={"window": "2h"}, headers=ADMIN).status_code,
    }


def _model(answer: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in answer["models"] if m["model"] == name)


def _key(answer: dict[str, Any], key_id: str) -> dict[str, Any]:
    return next(k for k in answer["keys"] if k["key_id"] == key_id)


def test_model_totals_equal_what_was_sent(sent: dict[str, Any]) -> None:
    t = _model(sent["models"], "temperatura")
    assert (t["requests"], t["errors_4xx"], t["throttled"], t["errors_5xx"]) == (11, 4, 2, 0)
    assert t["error_rate"] == 0.0
    assert t["p50_s"] is not None and 0 < t["p50_s"] <= t["p95_s"] <= t["p99_s"]
    assert sent["models"]["window"] == "1h" and sent["models"]["uptime_s"] > 0
    assert sent["models"]["started_at"].endswith("Z")
    other = [m for m in sent["models"]["models"] if m["model"] != "temperatura"]
    assert other and all(m["requests"] == 0 for m in other)  # the other models were not called


def test_model_series_per_version(sent: dict[str, Any]) -> None:
    m = sent["model"]
    assert (m["model"], m["window"], m["step_s"], len(m["t"])) == ("temperatura", "1h", 60, 60)
    versions = m["versions"]
    assert sum(sum(v["requests"]) for v in versions.values()) == 11
    answered = [v for name, v in versions.items() if name != "0"]
    assert sum(sum(v["requests"]) for v in answered) == 7  # 429s and refused inputs name no version
    assert all(len(series) == 60 for v in versions.values() for series in v.values())
    assert sum(v["batch_size"].count(None) for v in answered) < 60 * len(answered)  # batches counted
    assert m["totals"]["requests"] == 11 and m["totals"]["batches"] >= 1


def test_keys_usage_and_quota_equal_the_gateway(sent: dict[str, Any]) -> None:
    a = _key(sent["keys"], sent["a"]["id"])
    assert (a["name"], a["owner"], a["plan"]) == ("ana-tiny", "ana", "tiny")
    assert a["totals"] == {"requests": 3, "units": 3, "throttled": 2, "errors": 0}
    assert sum(a["requests"]) == 3 and sum(a["throttled"]) == 2
    assert a["quota"]["limit"] == 100
    assert a["quota"]["remaining"] == sent["quota_a"] == 97
    assert a["quota"]["used"] == 3 and a["quota"]["used_ratio"] == 0.03
    b = _key(sent["keys"], sent["b"]["id"])
    assert b["owner"] is None and b["plan"] == "big"
    assert b["totals"] == {"requests": 6, "units": 6, "throttled": 0, "errors": 2}
    assert b["quota"]["remaining"] == sent["quota_b"] == 994
    assert b["quota"]["projected_exhaustion"] is None or b["quota"]["projected_exhaustion"].endswith("Z")
    owners = {o["owner"]: o for o in sent["keys"]["owners"]}
    assert (owners["ana"]["requests"], owners["ana"]["throttled"]) == (3, 2)


def test_users_see_only_their_keys_and_non_admins_no_model_stats(sent: dict[str, Any]) -> None:
    mine = {k["key_id"] for k in sent["as_ana"]["keys"]}
    assert sent["a"]["id"] in mine and sent["b"]["id"] not in mine
    assert mine <= {sent["a"]["id"], "user:ana"}
    assert [k["key_id"] for k in sent["as_b"]["keys"]] == [sent["b"]["id"]]
    assert _key(sent["as_b"], sent["b"]["id"])["totals"]["requests"] == 6
    assert sent["forbidden"] == [403] * 6
    assert sent["anonymous"] == 401
    assert (sent["unknown"], sent["bad_window"]) == (404, 400)


def test_workflow_executions_by_status(sent: dict[str, Any]) -> None:
    w = sent["workflows"]
    assert (w["step_s"], len(w["t"])) == (60, 60)
    assert sum(w["by_status"]["SUCCEEDED"]) == 2 and sum(w["by_status"]["FAILED"]) == 1
    assert w["by_workflow"]["hola"]["SUCCEEDED"] == 2 and w["by_workflow"]["falla"]["total"] == 1


def test_a_restarted_server_keeps_the_history(sent: dict[str, Any], data_dir: Path) -> None:
    with run_server(data_dir, env=ENV) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        models = c.get("/v1/stats/models", params={"window": "24h"}, headers=ADMIN).json()
        assert _model(models, "temperatura")["requests"] == 11
        week = c.get("/v1/stats/models/temperatura", params={"window": "7d"}, headers=ADMIN).json()
        assert week["step_s"] == 3600 and len(week["t"]) == 168 and week["totals"]["requests"] == 11
        keys = c.get("/v1/stats/keys", params={"window": "24h"}, headers=ADMIN).json()
        assert _key(keys, sent["a"]["id"])["totals"]["throttled"] == 2
