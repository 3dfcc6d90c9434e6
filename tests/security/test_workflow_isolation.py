"""Tenants are isolated in workflows (issue 13, invariant 5), over HTTP on a real ``mlgate serve``,
with SQLite and with PostgreSQL (where NUL in a text column is refused).

Two tenants (two API keys). One sends poisoned inputs — NUL reaching an execution's error and
cause, and a value nested so deep that its history cannot hold it — while the other's
executions run: only the poisoned executions fail, with a clear error; the others succeed with
their full history; nothing stays RUNNING. Plus: the payload cap (413), inputs that could not
be stored (400), another tenant's execution id (404), execution names per tenant (one tenant's
name never collides with, nor reveals, another's), and the admin purge (403 for others).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, admin, create_key, record_figure, start_server
from tests.server_process import ServerProcess

CAP = 8192
FAIL = {"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.error", "CausePath": "$.cause"}}}
#: each turn wraps the state once more: the input's n decides how deep the history must go
NEST = {
    "StartAt": "Loop",
    "States": {
        "Loop": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": "Wrap"}],
            "Default": "Done",
        },
        "Wrap": {
            "Type": "Pass",
            "Parameters": {"n.$": "States.MathAdd($.n, -1)", "v.$": "$"},
            "Next": "Loop",
        },
        "Done": {"Type": "Succeed"},
    },
}
SLOW = {
    "StartAt": "W",
    "States": {
        "W": {"Type": "Wait", "Seconds": 1, "Next": "P"},
        "P": {"Type": "Pass", "Parameters": {"done.$": "$.i"}, "End": True},
    },
}
ECHO = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"MLGATE_WORKFLOWS__MAX_PAYLOAD_BYTES": str(CAP)}
    if request.param == "postgresql":
        env["MLGATE_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with start_server(tmp_path_factory.mktemp(f"wf-iso-{request.param}"), env=env, sleepy=False) as s:
        with admin(s) as c:
            for name, doc in {"fail": FAIL, "nest": NEST, "slow": SLOW, "echo": ECHO}.items():
                r = c.put(f"/v1/workflows/{name}", json={"definition": doc})
                assert r.status_code in (200, 201), r.text
        yield s


@pytest.fixture(scope="module")
def tenants(server: ServerProcess) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with admin(server) as c:
        eve, bob = (create_key(c, name=f"tenant-{i}")["key"] for i in range(2))
    with (
        httpx.Client(base_url=server.url, timeout=60.0, headers={"x-api-key": eve}) as a,
        httpx.Client(base_url=server.url, timeout=60.0, headers={"x-api-key": bob}) as b,
    ):
        yield a, b


def start(c: httpx.Client, workflow: str, data: Any, **params: str) -> httpx.Response:
    return c.post(f"/v1/workflows/{workflow}/executions", content=json.dumps(data), params=params)


def full_history(c: httpx.Client, execution_id: str) -> list[dict[str, Any]]:
    r = c.get(f"/v1/executions/{execution_id}/history")
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    return events


def test_a_poisoned_execution_fails_alone(tenants: tuple[httpx.Client, httpx.Client]) -> None:
    eve, bob = tenants
    poisons = [
        ("fail", {"error": "Bad\u0000", "cause": "nul \u0000 here"}),
        ("nest", {"n": 300}),
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        others = [pool.submit(start, bob, "slow", {"i": i}) for i in range(6)]
        bad = [pool.submit(start, eve, w, d) for w, d in poisons * 2]
        answers = [f.result() for f in bad]
        good = [f.result() for f in others]
    for r in answers:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "FAILED", body
        if body["workflow"] == "fail":
            assert (body["error"], body["cause"]) == ("Bad\ufffd", "nul \ufffd here")
        else:
            assert body["error"] == "States.Runtime"
            assert body["cause"].startswith("history event could not be stored")
        assert full_history(eve, body["executionId"])[-1]["type"] == "ExecutionFailed"
    for r in good:
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "SUCCEEDED", r.json()
        assert full_history(bob, r.json()["executionId"])[-1]["type"] == "ExecutionSucceeded"
    for c in tenants:
        assert c.get("/v1/executions", params={"status": "RUNNING"}).json()["executions"] == []
    record_figure("workflow_isolation", poisoned=len(answers), others_succeeded=len(good))


def test_inputs_over_the_cap_or_unstorable_are_refused(tenants: tuple[httpx.Client, httpx.Client]) -> None:
    eve, _ = tenants
    before = len(eve.get("/v1/executions").json()["executions"])
    r = start(eve, "echo", {"x": "y" * CAP})
    assert r.status_code == 413, r.text
    assert f"the limit is {CAP}" in r.json()["error"]["message"]
    r = start(eve, "echo", nested(254))
    assert r.status_code == 400, r.text
    assert len(eve.get("/v1/executions").json()["executions"]) == before
    assert start(eve, "echo", {"x": "y" * (CAP - 100)}).json()["status"] == "SUCCEEDED"


def test_another_tenants_executions_are_invisible(tenants: tuple[httpx.Client, httpx.Client]) -> None:
    eve, bob = tenants
    mine = start(bob, "echo", {"secret": 42}, execution_name="nightly").json()
    assert mine["status"] == "SUCCEEDED"
    for path in (f"/v1/executions/{mine['executionId']}", f"/v1/executions/{mine['executionId']}/history"):
        assert eve.get(path).status_code == 404
        assert bob.get(path).status_code == 200
    theirs = start(eve, "echo", {}, execution_name="nightly")  # names are per tenant: no collision
    assert theirs.status_code == 200 and theirs.json()["executionId"] != mine["executionId"]
    assert mine["executionId"] not in theirs.text and theirs.json()["input"] == {}  # nothing of bob's
    again = start(bob, "echo", {}, execution_name="nightly")
    assert again.status_code == 409 and mine["executionId"] in again.text


def test_admin_purge(server: ServerProcess, tenants: tuple[httpx.Client, httpx.Client]) -> None:
    eve, _ = tenants
    for i in range(4):
        assert start(eve, "echo", {"i": i}).json()["status"] == "SUCCEEDED"
    assert eve.delete("/v1/workflows/echo/executions", params={"keep": 0}).status_code == 403
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        r = c.delete("/v1/workflows/echo/executions", params={"keep": 2})
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] >= 2
        assert len(c.get("/v1/executions", params={"workflow": "echo"}).json()["executions"]) == 2
        r = c.delete("/v1/workflows/echo/executions", params={"before": "2999-01-01T00:00:00Z"})
        assert r.status_code == 200 and r.json()["deleted"] == 2
        assert c.delete("/v1/workflows/echo/executions").status_code == 400
        assert c.delete("/v1/workflows/nope/executions", params={"keep": 1}).status_code == 404


def test_the_retention_settings_are_read(tmp_path: Path) -> None:
    from mlgate.settings import Settings

    s = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert (s.workflows.max_payload_bytes, s.workflows.history_max_age_days) == (262_144, 30.0)
