"""End to end over a real server: plans updated and deleted over HTTP (issue 14, part 5), and
the API docs served offline with every registered model's schemas (part 6)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LinearRegression

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}
SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]
URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-admin-docs")) as s:
        yield s


@pytest.fixture
def c(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(key=False) as client:
        yield client


def _plan(c: httpx.Client, name: str, **fields: Any) -> dict[str, Any]:
    r = c.post("/v1/plans", json={"name": name, **fields}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _key(c: httpx.Client, plan: str) -> dict[str, Any]:
    r = c.post("/v1/keys", json={"name": "t", "plan": plan}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


# -- part 5: PATCH and DELETE /v1/plans/{name} -----------------------------------------------------


def test_patch_plan_changes_the_limits_a_key_gets(c: httpx.Client) -> None:
    _plan(c, "patchy", rate=1000, burst=1000, quota_limit=2, quota_period="DAY")
    h = {"x-api-key": _key(c, "patchy")["key"]}
    url = "/v1/models/temperatura/predict"
    assert [c.post(url, json={"temperaturas": SEED}, headers=h).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    r = c.patch("/v1/plans/patchy", json={"quota_limit": 5, "description": "more"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "name": "patchy",
        "rate": 1000.0,
        "burst": 1000,
        "quota_limit": 5,
        "quota_period": "DAY",
        "quota_offset": 0,
        "description": "more",
    }
    answer = c.post(url, json={"temperaturas": SEED}, headers=h)
    assert answer.status_code == 200  # seen at once in this process
    assert answer.headers["x-quota-limit"] == "5"
    listed = {p["name"]: p for p in c.get("/v1/plans", headers=ADMIN).json()["plans"]}
    assert listed["patchy"]["quota_limit"] == 5

    # null clears a limit (the burst goes with the rate)
    cleared = c.patch("/v1/plans/patchy", json={"rate": None}, headers=ADMIN)
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["rate"], cleared.json()["burst"]) == (None, None)


def test_patch_plan_is_validated(c: httpx.Client) -> None:
    _plan(c, "strict", rate=5)
    _key(c, "strict")  # a user key: the plan must keep a limit
    for body, status in [
        ({"quota_limit": None, "rate": None}, 400),  # would leave a user key unmetered
        ({"name": "renamed"}, 400),
        ({"rate": -1}, 400),
        ({"quota_limit": 10}, 400),  # no period
        ({}, 400),
        ([], 400),
    ]:
        r = c.patch("/v1/plans/strict", json=body, headers=ADMIN)
        assert r.status_code == status, (body, r.text)
    # the default plan may never lose its limits either
    r = c.patch("/v1/plans/reference", json={"rate": None, "quota_limit": None}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert "default plan" in r.text
    assert c.patch("/v1/plans/nosuchplan", json={"rate": 1}, headers=ADMIN).status_code == 404
    assert c.get("/v1/plans", headers=ADMIN).json()["plans"]  # nothing broke
    strict = {p["name"]: p for p in c.get("/v1/plans", headers=ADMIN).json()["plans"]}["strict"]
    assert strict["rate"] == 5.0


def test_delete_plan_refused_while_attached(c: httpx.Client) -> None:
    _plan(c, "doomed", rate=5)
    key = _key(c, "doomed")
    r = c.delete("/v1/plans/doomed", headers=ADMIN)
    assert r.status_code == 409, r.text
    assert "detach" in r.text
    assert c.delete(f"/v1/plans/doomed/keys/{key['id']}", headers=ADMIN).status_code == 200
    gone = c.delete("/v1/plans/doomed", headers=ADMIN)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"plan": "doomed", "deleted": True}
    assert "doomed" not in {p["name"] for p in c.get("/v1/plans", headers=ADMIN).json()["plans"]}
    assert c.delete("/v1/plans/doomed", headers=ADMIN).status_code == 404
    assert c.delete("/v1/plans/reference", headers=ADMIN).status_code == 409  # the default plan


def test_plan_changes_need_an_admin(server: ServerProcess, c: httpx.Client) -> None:
    _plan(c, "guarded", rate=5)
    user = {"x-api-key": server.api_key}
    assert c.patch("/v1/plans/guarded", json={"rate": 9}, headers=user).status_code == 403
    assert c.delete("/v1/plans/guarded", headers=user).status_code == 403
    assert c.patch("/v1/plans/guarded", json={"rate": 9}).status_code == 401
    assert c.delete("/v1/plans/guarded").status_code == 401
    assert c.get("/v1/plans", headers=ADMIN).status_code == 200
    guarded = {p["name"]: p for p in c.get("/v1/plans", headers=ADMIN).json()["plans"]}["guarded"]
    assert guarded["rate"] == 5.0


# -- part 6: docs offline, models' schemas ---------------------------------------------------------


def _assets(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


@pytest.mark.parametrize(
    ("page", "kinds"),
    [
        ("/docs", {".js": "javascript", ".css": "text/css", ".png": "image/png"}),
        ("/redoc", {".js": "javascript", ".png": "image/png"}),
    ],
)
def test_docs_pages_name_no_external_url(
    server: ServerProcess, c: httpx.Client, page: str, kinds: dict[str, str]
) -> None:
    r = c.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    external = [u for u in URL.findall(html) if not u.startswith(server.url)]
    assert external == [], external
    assert "fonts.googleapis" not in html
    assets = _assets(html)
    assert {a.rsplit(".", 1)[-1] for a in assets} == {k.lstrip(".") for k in kinds}, assets
    for asset in assets:
        assert asset.startswith("/docs/static/"), asset
        got = c.get(asset)
        assert got.status_code == 200, asset
        assert kinds["." + asset.rsplit(".", 1)[-1]] in got.headers["content-type"], (asset, got.headers)
        assert len(got.content) > 1000
    assert "/openapi.json" in html
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from the online validator
        assert c.get("/docs/oauth2-redirect").status_code == 200


def _push(c: httpx.Client, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    x = np.arange(20, dtype=float).reshape(10, 2)
    buffer = io.BytesIO(sio.dumps(LinearRegression().fit(x, x.sum(axis=1))))
    r = c.post(
        f"/v1/models/{name}/versions",
        files=[("files", (f"{name}.skops", buffer, "application/octet-stream"))],
        data={"manifest": json.dumps(manifest), "aliases": "production"},
        headers=ADMIN,
        timeout=120,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_openapi_documents_each_model_and_follows_pushes(c: httpx.Client) -> None:
    spec = c.get("/openapi.json").json()
    assert spec["paths"]["/v1/models/{name}/predict"]  # the generic route is still there
    bundled = spec["paths"]["/v1/models/temperatura/predict"]["post"]
    ref = bundled["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/model-temperatura-input"
    assert spec["components"]["schemas"]["model-temperatura-input"]["type"] == "array"
    assert bundled["x-mlgate-model"]["version"] == 1
    assert "/v1/models/docsmodel/predict" not in spec["paths"]

    row = {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
    _push(c, "docsmodel", {"runtime": "sklearn", "input_schema": row, "output_schema": {"type": "number"}})
    spec = c.get("/openapi.json").json()
    operation = spec["paths"]["/v1/models/docsmodel/predict"]["post"]
    assert operation["x-mlgate-model"] == {"name": "docsmodel", "version": 1, "runtime": "sklearn"}
    schemas = spec["components"]["schemas"]
    assert schemas["model-docsmodel-input"] == {**row, "title": "docsmodel v1: one input"}
    assert schemas["model-docsmodel-output"]["type"] == "number"
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["outputs"] == {"$ref": "#/components/schemas/model-docsmodel-output"}

    # a new version with another schema: the document follows the production alias
    _push(c, "docsmodel", {"runtime": "sklearn", "input_schema": {**row, "description": "v2 rows"}})
    spec = c.get("/openapi.json").json()
    assert spec["paths"]["/v1/models/docsmodel/predict"]["post"]["x-mlgate-model"]["version"] == 2
    assert spec["components"]["schemas"]["model-docsmodel-input"]["description"] == "v2 rows"
    assert "any JSON" in spec["components"]["schemas"]["model-docsmodel-output"]["description"]

    # the loaded runtime's tensor signature, once this process has the version loaded
    assert c.post("/v1/models/docsmodel/predict", json=[1, 2], headers=ADMIN).status_code == 200
    spec = c.get("/openapi.json").json()
    signature = spec["paths"]["/v1/models/docsmodel/predict"]["post"]["x-mlgate-signature"]
    assert signature["inputs"][0]["shape"] == [-1, 2]


def test_openapi_is_served_from_cache(c: httpx.Client) -> None:
    first = c.get("/openapi.json")
    second = c.get("/openapi.json")
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.content == second.content
