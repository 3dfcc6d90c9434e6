"""The HTTP edge in process (httpx over ASGI): errors, limits, request ids, OIP tensors, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from mlgate.http import create_app
from mlgate.settings import Settings

ADMIN = "mlg_unitadmn_" + "z" * 40
SEED = [20.0 + (i % 24) / 4 for i in range(60)]

Call = Callable[[httpx.AsyncClient], Awaitable[None]]


def run(tmp_path: Path, body: Call, **overrides: object) -> None:
    overrides.setdefault("auth", {"model_routes": "public"})  # these tests are about the edge, not auth
    overrides.setdefault("services", ["temperatura"])  # one small service: these are about the edge
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN, log={"access_stdout": False}, **overrides)  # type: ignore[arg-type]
    app = create_app(settings)

    async def main() -> None:
        async with app.lifespan_context():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await body(client)

    asyncio.run(main())


def test_errors_are_json_with_codes(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get("/v1/models/nope")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "model_not_found"
        r = await c.get("/no/such/route")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = await c.delete("/healthz")
        assert r.status_code == 405
        r = await c.post("/v1/models/temperatura/predict", content=b"[NaN]")
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "invalid_input"
        r = await c.post("/v1/models/temperatura/versions/0/predict", json={"temperaturas": SEED})
        assert r.status_code == 400
        r = await c.post("/v1/models/temperatura/versions/nosuchalias/predict", json={"temperaturas": SEED})
        assert r.status_code == 404

    run(tmp_path, body)


def test_request_id_echoed_or_generated(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get("/healthz", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        r = await c.get("/healthz", headers={"x-request-id": "bad id\nwith newline"})
        assert r.headers["x-request-id"] != "bad id\nwith newline"
        assert len(r.headers["x-request-id"]) == 32

    run(tmp_path, body)


def test_body_limit_without_content_length(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    async def body(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/models/temperatura/predict", content=chunks())
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        r = await c.post("/v1/models/temperatura/predict", content=b" " * 5000)
        assert r.status_code == 413

    run(tmp_path, body, max_body_bytes=4096)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": [1.0] * 59}, "do not fill"),
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "NOPE", "data": [1.0] * 60}, "datatype"),
        ({"name": "temperaturas", "shape": [1, -60], "datatype": "FP64", "data": [1.0] * 60}, "shape"),
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": ["a"] * 60}, "datatype"),
        ({"name": "", "shape": [1, 60], "datatype": "FP64", "data": [1.0] * 60}, "name"),
        ({"name": "temperaturas", "shape": [100000, 100000], "datatype": "FP64", "data": [1.0]}, "at most"),
        ({"name": "temperaturas", "shape": [1, 59], "datatype": "FP64", "data": [1.0] * 59}, "[-1, 60]"),
        ({"name": "x", "shape": [1, 60], "datatype": "FP64", "data": [1.0] * 60}, "unknown input 'x'"),
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "INT32", "data": [1] * 60}, "INT32 does not"),
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "FP32", "data": [1.0] * 60}, "FP64 [-1, 60]"),
        ({"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": [True] * 60}, "numbers"),
    ],
)
def test_v2_tensor_validation(tmp_path: Path, tensor: dict[str, object], fragment: str) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.post("/v2/models/temperatura/infer", json={"inputs": [tensor]})
        assert r.status_code == 400, r.text
        error = r.json()["error"]  # the protocol's shape: {"error": "<message>"}
        assert isinstance(error, str) and fragment in error, error

    run(tmp_path, body)


def test_admin_key_roles(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        url = "/v1/models/temperatura/aliases/staging"
        assert (await c.put(url, json={"version": 1})).status_code == 401
        assert (await c.put(url, json={"version": 1}, headers={"x-api-key": ADMIN + "x"})).status_code == 403
        bearer = {"authorization": f"Bearer {ADMIN}"}
        assert (await c.put(url, json={"version": 1}, headers=bearer)).status_code == 200
        assert (await c.delete(url, headers=bearer)).status_code == 200
        assert (await c.delete(url, headers=bearer)).status_code == 404

    run(tmp_path, body)


def test_openapi_documents_routes(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        spec = (await c.get("/openapi.json")).json()
        for path in (
            "/v1/models/{name}/predict",
            "/v2/models/{name}/infer",
            "/prod",
            "/v1/models/{name}/versions",
        ):
            assert path in spec["paths"], path
        assert (await c.get("/docs")).status_code == 200

    run(tmp_path, body)


def test_readyz_and_metrics(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get("/readyz")
        assert r.status_code == 200
        assert "temperatura:1" in r.json()["loaded"]
        text = (await c.get("/metrics")).text
        assert "mlgate_server_startup_seconds" in text

    run(tmp_path, body)


def test_readyz_lists_failed_versions_and_is_unready_only_when_an_alias_points_at_one(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        admin_key=ADMIN,
        log={"access_stdout": False},
        services=["temperatura"],
        auth={"model_routes": "public"},  # type: ignore[arg-type]
    )
    app = create_app(settings)

    async def main() -> None:
        async with app.lifespan_context():
            assert app.server is not None
            failed = app.server.dataplane._failed
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                assert (await c.get("/readyz")).json()["failed"] == []
                failed[("temperatura", 7)] = (0.0, "could not load temperatura v7")  # nothing aliases v7
                r = await c.get("/readyz")
                assert r.status_code == 200 and r.json()["failed"] == ["temperatura:7"]
                failed[("temperatura", 1)] = (0.0, "could not load temperatura v1")  # production's
                r = await c.get("/readyz")
                assert r.status_code == 503
                assert r.json()["status"] == "degraded"
                assert r.json()["failed"] == ["temperatura:1", "temperatura:7"]

    asyncio.run(main())
