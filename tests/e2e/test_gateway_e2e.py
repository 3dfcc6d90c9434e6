"""End to end: API keys, usage plans, users and roles over real HTTP against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e
ADMIN = {"x-api-key": ADMIN_KEY}
SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MLGATE_AUTH__ROUTES": json.dumps({"/v1/models/temperatura/batch": "either"})}
    with run_server(tmp_path_factory.mktemp("e2e-gateway"), env=env) as s:
        yield s


@pytest.fixture
def anon(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client(key=False) as c:
        yield c


FORBIDDEN = {"error": {"code": "forbidden", "message": "Forbidden"}, "message": "Forbidden"}


def _key(
    c: httpx.Client, *, plan: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, str]:
    body = {"name": "t", **({"plan": plan} if plan else {})}
    r = c.post("/v1/keys", json=body, headers=headers or ADMIN)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def test_missing_unknown_disabled_key_is_403(anon: httpx.Client) -> None:
    url = "/v1/models/temperatura/predict"
    r = anon.post(url, json={"temperaturas": SEED})
    assert r.status_code == 403
    assert r.json() == FORBIDDEN  # the native envelope, API Gateway's message beside it
    assert (
        anon.post(url, json={"temperaturas": SEED}, headers={"x-api-key": "mlg_deadbeef_nope"}).status_code
        == 403
    )
    key = _key(anon)
    ok = anon.post(url, json={"temperaturas": SEED}, headers={"x-api-key": key["key"]})
    assert ok.status_code == 200
    assert anon.post(f"/v1/keys/{key['id']}/disable", headers=ADMIN).status_code == 200
    r = anon.post(url, json={"temperaturas": SEED}, headers={"x-api-key": key["key"]})
    assert r.status_code == 403
    assert r.json() == FORBIDDEN  # the native envelope, API Gateway's message beside it
    # the original route keeps API Gateway's 403 too
    assert anon.post("/prod", json={"temperaturas": SEED}).json() == {"message": "Forbidden"}


def test_plan_throttles_then_quota(anon: httpx.Client) -> None:
    r = anon.post(
        "/v1/plans",
        json={"name": "tiny", "rate": 0.001, "burst": 3, "quota_limit": 100, "quota_period": "DAY"},
        headers=ADMIN,
    )
    assert r.status_code == 201, r.text
    key = _key(anon, plan="tiny")
    h = {"x-api-key": key["key"]}
    answers = [
        anon.post("/v1/models/temperatura/predict", json={"temperaturas": SEED}, headers=h) for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[0].headers["x-ratelimit-limit"] == "3"
    assert answers[0].headers["x-ratelimit-remaining"] == "2"
    assert answers[0].headers["x-quota-limit"] == "100"
    assert answers[0].headers["x-quota-remaining"] == "99"
    assert answers[3].json() == {
        "error": {"code": "throttled", "message": "Too Many Requests"},
        "message": "Too Many Requests",
    }
    assert int(answers[3].headers["retry-after"]) >= 1
    assert answers[3].headers["x-ratelimit-remaining"] == "0"
    original = anon.post("/prod", json={"temperaturas": SEED}, headers=h)
    assert original.status_code == 429
    assert original.json() == {"error": "Too Many Requests"}

    anon.post("/v1/plans", json={"name": "quota2", "quota_limit": 2, "quota_period": "MONTH"}, headers=ADMIN)
    q = {"x-api-key": _key(anon, plan="quota2")["key"]}
    codes = [
        anon.post("/v1/models/temperatura/predict", json={"temperaturas": SEED}, headers=q) for _ in range(3)
    ]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json() == {
        "error": {"code": "quota_exceeded", "message": "Limit Exceeded"},
        "message": "Limit Exceeded",
    }
    assert codes[1].headers["x-quota-remaining"] == "0"


def test_batch_costs_one_token_per_input(anon: httpx.Client) -> None:
    anon.post("/v1/plans", json={"name": "five", "rate": 0.001, "burst": 5}, headers=ADMIN)
    h = {"x-api-key": _key(anon, plan="five")["key"]}
    body = {"inputs": [{"temperaturas": SEED}] * 4}
    assert anon.post("/v1/models/temperatura/batch", json=body, headers=h).status_code == 200
    assert anon.post("/v1/models/temperatura/batch", json=body, headers=h).status_code == 429


def test_users_tokens_and_bola(anon: httpx.Client) -> None:
    for name in ("ana", "beto"):
        r = anon.post(
            "/auth/create_user",
            json={"username": name, "password": "correct horse 1", "email": f"{name}@x.io"},
        )
        assert r.status_code == 201, r.text
        assert "password" not in r.text
    assert (
        anon.post("/auth/create_user", json={"username": "ana", "password": "correct horse 1"}).status_code
        == 409
    )
    evil = anon.post(
        "/auth/create_user", json={"username": "mallory", "password": "correct horse 1", "role": "admin"}
    )
    assert evil.status_code == 403

    form = anon.post("/auth/token", data={"username": "ana", "password": "correct horse 1"})
    assert form.status_code == 200, form.text
    assert form.json()["token_type"] == "bearer"
    as_json = anon.post("/auth/token", json={"username": "beto", "password": "correct horse 1"})
    assert as_json.status_code == 200
    bad = anon.post("/auth/token", data={"username": "ana", "password": "wrong password"})
    assert bad.status_code == 401
    ana = {"authorization": f"Bearer {form.json()['access_token']}"}
    beto = {"authorization": f"Bearer {as_json.json()['access_token']}"}

    ana_key = _key(anon, headers=ana)
    assert ana_key["owner"] == "ana"
    assert [k["id"] for k in anon.get("/v1/keys", headers=ana).json()["keys"]] == [ana_key["id"]]
    assert anon.get("/v1/keys", headers=beto).json()["keys"] == []
    assert anon.post(f"/v1/keys/{ana_key['id']}/disable", headers=beto).status_code == 404
    assert anon.get("/v1/usage", params={"key_id": ana_key["id"]}, headers=beto).status_code == 404
    assert anon.post("/v1/plans", json={"name": "x"}, headers=ana).status_code == 403
    assert anon.get("/v1/users", headers=ana).status_code == 403
    assert anon.post("/v1/keys", json={"name": "k", "role": "admin"}, headers=ana).status_code == 403

    # the route configured "either": a user token works, a garbage token does not
    body = {"inputs": [{"temperaturas": SEED}]}
    assert anon.post("/v1/models/temperatura/batch", json=body, headers=ana).status_code == 200
    r = anon.post("/v1/models/temperatura/batch", json=body, headers={"authorization": "Bearer not.a.jwt"})
    assert r.status_code == 401
    # a disabled user's token stops working at once
    assert anon.post("/v1/users/ana/disable", headers=ADMIN).status_code == 200
    assert anon.post("/v1/models/temperatura/batch", json=body, headers=ana).status_code == 401


def test_usage_report_counts(anon: httpx.Client) -> None:
    key = _key(anon)
    h = {"x-api-key": key["key"]}
    for _ in range(3):
        assert (
            anon.post("/v1/models/temperatura/predict", json={"temperaturas": SEED}, headers=h).status_code
            == 200
        )
    assert (
        anon.post("/v1/models/temperatura/predict", json={"temperaturas": [1]}, headers=h).status_code == 400
    )
    rows = anon.get("/v1/usage", params={"key_id": key["id"]}, headers=ADMIN).json()["usage"]
    assert len(rows) == 1
    assert rows[0]["scope"] == "temperatura"
    assert rows[0]["requests"] == 4  # admitted calls, the bad input included (it was metered)
    assert rows[0]["errors"] == 1
