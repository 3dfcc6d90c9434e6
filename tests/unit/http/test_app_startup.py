"""Startup in two steps: what the edge serves answers at once; FastAPI (admin API, docs,
workflows) is built right after, and a request for it waits for it instead of failing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import compile_path as starlette_compile_path

import mlgate.http.app as app_module
from mlgate.http import create_app
from mlgate.http.serving import compile_path
from mlgate.settings import Settings

ADMIN = "mlg_unitadmn_" + "z" * 40
SEED = [20.0 + (i % 24) / 4 for i in range(60)]


def test_the_edge_answers_while_fastapi_is_still_being_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    build = app_module._build_fastapi

    def slow_build(app: Any) -> Any:
        assert release.wait(30)
        return build(app)

    monkeypatch.setattr(app_module, "_build_fastapi", slow_build)
    settings = Settings(
        data_dir=tmp_path,
        admin_key=ADMIN,
        services=["temperatura"],
        auth={"model_routes": "public"},  # type: ignore[arg-type]
        log={"access_stdout": False},  # type: ignore[arg-type]
    )
    app = create_app(settings)

    async def main() -> None:
        async with app.lifespan_context():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/healthz")).status_code == 200
                assert (await client.get("/readyz")).json()["status"] == "ready"
                assert "mlgate_http_requests_total" in (await client.get("/metrics")).text
                r = await client.post("/prod", json={"temperaturas": SEED})
                assert r.status_code == 200
                assert "prediccion" in r.json()["body"]
                admin = asyncio.create_task(client.get("/v1/models", headers={"x-api-key": ADMIN}))
                await asyncio.sleep(0.2)
                assert not admin.done()  # waits for FastAPI, does not fail
                assert app.server.workflows is None
                release.set()
                assert (await admin).status_code == 200
                assert app.server.workflows is not None  # the rest of startup finished

    asyncio.run(main())


def test_the_openapi_document_lists_the_edge_served_routes_too(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, admin_key=ADMIN, services=["temperatura"]))
    paths = app.openapi()["paths"]
    for path in ("/prod", "/healthz", "/readyz", "/metrics", "/v1/models/{name}/predict", "/v1/keys"):
        assert path in paths, path


@pytest.mark.parametrize(
    "path",
    ["/prod", "/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict", "/a/{n:int}/b"],
)
def test_compile_path_matches_starlettes(path: str) -> None:
    ours, our_convertors = compile_path(path)
    theirs, _, their_convertors = starlette_compile_path(path)
    assert ours.pattern == theirs.pattern
    assert our_convertors.keys() == their_convertors.keys()


def test_the_edge_and_the_server_import_no_fastapi_nor_the_workflow_engine() -> None:
    """What ``mlgate serve`` imports before it answers: cold start is a target (the rest is
    imported by the build after startup)."""
    code = (
        "import sys, mlgate.cli, mlgate.http.app, mlgate.http.runner, mlgate.http.protocol,"
        " mlgate.http.endpoints;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'jsonpath_ng', 'alembic',"
        " 'boto3', 'redis', 'jwt', 'rich', 'httpx') or m.startswith('mlgate.workflows')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
