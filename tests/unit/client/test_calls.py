"""What each method sends (route, query, body, credentials) and what it returns, for both
clients; and waiting on an execution, with a fake clock."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest

from mlgate.client import AsyncClient, Client, InvalidInput, RetryPolicy, Timeout, tensor


class Recorder:
    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer if answer is not None else {"ok": True}
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, json=self.answer)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self) -> Any:
        return json.loads(self.last.content)


def make(recorder: Recorder, **kw: Any) -> Client:
    return Client("http://mlgate.test/", transport=httpx.MockTransport(recorder), **kw)


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "body"),
    [
        (
            lambda c: c.predict("temperatura", {"temperaturas": [1]}),
            "POST",
            "/v1/models/temperatura/predict",
            {},
            {"temperaturas": [1]},
        ),
        (
            lambda c: c.predict("m", [1, 2], version="production"),
            "POST",
            "/v1/models/m/versions/production/predict",
            {},
            [1, 2],
        ),
        (lambda c: c.predict("m", [1], version=2), "POST", "/v1/models/m/versions/2/predict", {}, [1]),
        (
            lambda c: c.predict_batch("m", iter([[1], [2]])),
            "POST",
            "/v1/models/m/batch",
            {},
            {"inputs": [[1], [2]]},
        ),
        (lambda c: c.predict("a/b", 1), "POST", "/v1/models/a%2Fb/predict", {}, 1),
        (lambda c: c.list_keys(owner="ana"), "GET", "/v1/keys", {"owner": "ana"}, None),
        (lambda c: c.create_key("k", plan="gold"), "POST", "/v1/keys", {}, {"name": "k", "plan": "gold"}),
        (lambda c: c.disable_key("abc"), "POST", "/v1/keys/abc/disable", {}, None),
        (
            lambda c: c.rotate_key("abc", grace_seconds=60),
            "POST",
            "/v1/keys/abc/rotate",
            {"grace_seconds": "60"},
            None,
        ),
        (
            lambda c: c.create_plan("p", rate=10, burst=10),
            "POST",
            "/v1/plans",
            {},
            {"name": "p", "rate": 10, "burst": 10},
        ),
        (
            lambda c: c.attach_plan("p", "abc", scope="temperatura"),
            "PUT",
            "/v1/plans/p/keys/abc",
            {"scope": "temperatura"},
            None,
        ),
        (
            lambda c: c.usage("abc", since="2026-01-01"),
            "GET",
            "/v1/usage",
            {"key_id": "abc", "since": "2026-01-01"},
            None,
        ),
        (lambda c: c.usage(), "GET", "/v1/usage", {}, None),
        (lambda c: c.temperatura([1, 2.5]), "POST", "/prod", {}, {"temperaturas": [1.0, 2.5]}),
        (
            lambda c: c.intrusos(b"\xff\xd8img"),
            "POST",
            "/prodfaces",
            {},
            {"body": {"image": base64.b64encode(b"\xff\xd8img").decode()}},
        ),
        (lambda c: c.vehiculos("aGk="), "POST", "/v1/models/vehiculos/predict", {}, {"image": "aGk="}),
        (lambda c: c.cardiaco({"idAtencion": 1}), "POST", "/predict", {}, {"idAtencion": 1}),
        (
            lambda c: c.deploy_workflow("w", {"StartAt": "A"}),
            "PUT",
            "/v1/workflows/w",
            {},
            {"definition": {"StartAt": "A"}},
        ),
        (
            lambda c: c.start_execution("w", {"x": 1}),
            "POST",
            "/v1/workflows/w/executions",
            {"mode": "async"},
            {"x": 1},
        ),
        (
            lambda c: c.start_execution("w", wait=True, name="n1"),
            "POST",
            "/v1/workflows/w/executions",
            {"mode": "sync", "execution_name": "n1"},
            {},
        ),
        (lambda c: c.describe_execution("e1"), "GET", "/v1/executions/e1", {}, None),
        (
            lambda c: c.list_executions("w", status="FAILED"),
            "GET",
            "/v1/executions",
            {"workflow": "w", "status": "FAILED", "limit": "100"},
            None,
        ),
        (lambda c: c.stop_execution("e1", cause="x"), "POST", "/v1/executions/e1/stop", {}, {"cause": "x"}),
    ],
)
def test_each_method_sends_its_route(
    call: Any, method: str, path: str, query: dict[str, str], body: Any
) -> None:
    recorder = Recorder()
    with make(recorder, api_key="mlg_k") as c:
        call(c)
    request = recorder.last
    raw_path = request.url.raw_path.decode().partition("?")[0]
    assert (request.method, raw_path, dict(request.url.params)) == (method, path, query)
    if body is not None:
        assert recorder.body() == body
        assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "mlg_k"
    assert request.headers["user-agent"].startswith("mlgate-client/")


def test_answers_are_unwrapped_where_the_service_wraps_them() -> None:
    with make(Recorder({"statusCode": 200, "body": {"prediccion": 15.85, "unidad": "Celsius"}})) as c:
        assert c.temperatura([1.0] * 60) == {"prediccion": 15.85, "unidad": "Celsius"}
    body = {"detectado": False, "intruso_detectado": False, "objetos": [], "total_objetos": 0}
    with make(Recorder({"statusCode": 200, "headers": {}, "body": body})) as c:
        assert c.intrusos("aGk=") == body
    outputs = {"inferences": [0.1, 0.9], "top": []}
    with make(Recorder({"model_name": "vehiculos", "model_version": 1, "outputs": outputs})) as c:
        assert c.vehiculos(b"img") == outputs
    with make(Recorder({"keys": [{"id": "a"}]})) as c:
        assert c.list_keys() == [{"id": "a"}]


def test_login_switches_the_client_to_the_bearer_token() -> None:
    recorder = Recorder({"access_token": "tok", "token_type": "bearer", "expires_in": 1200})
    with make(recorder) as c:
        assert c.login("ana", "una clave larga") == "tok"
        assert recorder.body() == {"username": "ana", "password": "una clave larga"}
        assert "authorization" not in recorder.last.headers
        c.cardiaco({"idAtencion": 1})
        assert recorder.last.headers["authorization"] == "Bearer tok"
        assert "x-api-key" not in recorder.last.headers


def test_infer_builds_tensors_from_lists() -> None:
    recorder = Recorder({"model_name": "m", "outputs": []})
    with make(recorder) as c:
        c.infer("m", {"x": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}, version=1, outputs=["y"], request_id="r1")
    assert recorder.last.url.path == "/v2/models/m/versions/1/infer"
    assert recorder.body() == {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}
        ],
        "outputs": [{"name": "y"}],
        "id": "r1",
    }
    raw = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    with make(recorder) as c:
        c.infer("m", [raw, {"name": "z", "data": [[1, 2]]}])
    assert recorder.body()["inputs"] == [
        raw,
        {"name": "z", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]},
    ]


def test_tensor_inference_and_its_refusals() -> None:
    assert tensor("b", [True, False]) == {
        "name": "b",
        "shape": [2],
        "datatype": "BOOL",
        "data": [True, False],
    }
    assert tensor("s", [["a"], ["b"]])["datatype"] == "BYTES"
    assert tensor("n", [1, 2.5])["datatype"] == "FP64"
    assert tensor("x", [1, 2, 3, 4], shape=[2, 2])["shape"] == [2, 2]
    with pytest.raises(InvalidInput):
        tensor("ragged", [[1, 2], [3]])
    with pytest.raises(InvalidInput):
        tensor("mixed", [1, "a"])


def test_a_payload_that_is_not_json_is_refused_before_sending() -> None:
    recorder = Recorder()
    with make(recorder) as c, pytest.raises(InvalidInput):
        c.predict("m", {"x": float("nan")})
    assert recorder.requests == []


class Executions:
    """An execution RUNNING for ``polls`` describes, then SUCCEEDED."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.seen = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        status = "RUNNING" if self.seen <= self.polls else "SUCCEEDED"
        return httpx.Response(200, json={"executionId": "e1", "status": status, "output": {"ok": 1}})


def test_wait_execution_polls_with_growing_waits_until_the_end() -> None:
    now, sleeps = [0.0], []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    with Client(
        "http://mlgate.test", transport=httpx.MockTransport(Executions(4)), sleep=sleep, clock=lambda: now[0]
    ) as c:
        assert c.wait_execution("e1")["status"] == "SUCCEEDED"
    assert sleeps == pytest.approx([0.1, 0.15, 0.225, 0.3375])
    with (
        Client(
            "http://mlgate.test",
            transport=httpx.MockTransport(Executions(10**6)),
            sleep=sleep,
            clock=lambda: now[0],
        ) as c,
        pytest.raises(Timeout) as raised,
    ):
        c.wait_execution("e1", timeout=5.0)
    assert raised.value.code == "wait_timeout" and raised.value.body["status"] == "RUNNING"


def test_the_async_client_sends_the_same_calls() -> None:
    recorder = Recorder({"access_token": "tok"})
    polls = Executions(2)
    now = [0.0]

    async def asleep(s: float) -> None:
        now[0] += s

    async def run() -> None:
        async with AsyncClient(
            "http://mlgate.test", api_key="k", transport=httpx.MockTransport(recorder)
        ) as c:
            await c.predict("m", [1], version=3)
            assert recorder.last.url.path == "/v1/models/m/versions/3/predict"
            assert await c.login("ana", "pw") == "tok"
            await c.usage(since="2026-01-02")
            assert recorder.last.headers["authorization"] == "Bearer tok"
            assert dict(recorder.last.url.params) == {"since": "2026-01-02"}
        async with AsyncClient(
            "http://mlgate.test",
            transport=httpx.MockTransport(polls),
            sleep=asleep,
            clock=lambda: now[0],
            retry=RetryPolicy(max_attempts=1),
        ) as c:
            assert (await c.wait_execution("e1"))["status"] == "SUCCEEDED"

    asyncio.run(run())
    assert polls.seen == 3 and now[0] == pytest.approx(0.25)
