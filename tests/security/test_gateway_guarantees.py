"""The gateway's guarantees against a hostile user with network access only (issue 13).

Each test attacks a real ``mlgate serve`` over loopback and fails on the gateway as it was
before: a self-minted key or a bearer token escaped metering, disabling a user left their
keys working, a throttled login still had its password hashed (and the right one
answered 200), a batch's refused items and a 5xx answer were charged, a plan attached to
a route scope was never applied, and unknown model names became usage scopes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.security.conftest import (
    ADMIN,
    PREDICT_BODY,
    PREDICT_PATH,
    SLEEPY_MODEL,
    SOAK,
    TEMPERATURE_BODY,
    LoadClient,
    admin,
    create_key,
    create_plan,
    create_user_token,
    record_figure,
    run_async,
    start_server,
)
from tests.server_process import ServerProcess

CACHE_TTL_S = 5.0  # KeyStore.verify_cached


def _burst(server: ServerProcess, headers: dict[str, str], n: int = 30) -> tuple[int, float, set[int]]:
    """``n`` predictions at once: (admitted, client-side span, statuses)."""

    async def go() -> tuple[int, float, set[int]]:
        async with LoadClient(server.url, connections=n) as client:
            started = time.perf_counter()
            replies = await asyncio.gather(
                *(client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=headers) for _ in range(n))
            )
            span = time.perf_counter() - started
        return sum(r.status == 200 for r in replies), span, {r.status for r in replies}

    return run_async(go)


def _within_reference_plan(admitted: int, span: float) -> bool:
    """The reference plan (burst 10, 10/s) admits at most its burst plus the refill over the span."""
    return 1 <= admitted <= 10 + 10 * span + 1


def test_nothing_that_runs_a_model_is_unmetered(tmp_path: Path) -> None:
    env = {"MLGATE_AUTH__ROUTES": json.dumps({"sleepy": "either"})}
    with start_server(tmp_path, env=env) as s, admin(s) as c, httpx.Client(base_url=s.url) as anon:
        # sign up, log in, mint a key: the three requests that escaped metering
        token = create_user_token(anon, "mallory", "correct horse battery")
        bearer = {"Authorization": f"Bearer {token}"}
        minted = anon.post("/v1/keys", json={"name": "mine"}, headers=bearer)
        assert minted.status_code == 201, minted.text
        assert minted.json()["plans"] == {"*": "reference"}
        admitted, span, statuses = _burst(s, {"x-api-key": minted.json()["key"]})
        assert statuses == {200, 429} and _within_reference_plan(admitted, span), (admitted, span)
        # the owner's budget is spent: their token and a second self-minted key get nothing new
        second = anon.post("/v1/keys", json={"name": "another"}, headers=bearer).json()["key"]
        assert anon.post(PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": second}).status_code == 429
        assert anon.post(PREDICT_PATH, content=PREDICT_BODY, headers=bearer).status_code == 429
        # a bearer-token caller on their own is metered by the default plan
        fresh = create_user_token(anon, "trudy", "correct horse battery")
        admitted, span, statuses = _burst(s, {"Authorization": f"Bearer {fresh}"})
        assert statuses == {200, 429} and _within_reference_plan(admitted, span), (admitted, span)
        # a key an admin makes without a plan: the default plan
        plain = create_key(c)
        assert plain["plans"] == {"*": "reference"}
        admitted, span, statuses = _burst(s, {"x-api-key": plain["key"]})
        assert statuses == {200, 429} and _within_reference_plan(admitted, span), (admitted, span)
        # unmetered only by an explicit choice, for admin keys only, and listed
        listed = {k["name"]: k for k in c.get("/v1/keys").json()["keys"]}
        assert listed["bootstrap-admin"]["plans"] == {"*": "unmetered"}
        assert listed["security"]["plans"] == {"*": "reference"}
        refused = c.put(f"/v1/plans/unmetered/keys/{plain['id']}")
        assert refused.status_code == 400 and "admin" in refused.json()["error"]["message"]
        assert c.post("/v1/keys", json={"name": "x", "plan": "unmetered"}).status_code == 400
        assert c.post("/v1/keys", json={"name": "x", "plan": "unmetered", "role": "admin"}).status_code == 201


def test_rotating_an_ownerless_key_never_mints_quota(tmp_path: Path) -> None:
    with start_server(tmp_path) as s, admin(s) as c:
        plan = create_plan(c, quota_limit=3, quota_period="DAY")
        key = create_key(c, plan=plan)
        for _ in range(3):
            assert (
                c.post(PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": key["key"]}).status_code
                == 200
            )
        rotated = c.post(f"/v1/keys/{key['id']}/rotate")
        assert rotated.status_code == 201
        again = c.post(PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": rotated.json()["key"]})
        assert again.status_code == 429 and again.headers["X-Quota-Remaining"] == "0", again.text


def test_disabling_a_user_revokes_their_keys_tokens_and_minting_in_every_process(tmp_path: Path) -> None:
    """Two server processes on one database: the admin disables the user on A."""
    secret = {"MLGATE_AUTH__JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex}  # one secret, as documented
    with start_server(tmp_path / "a", env=secret) as a, admin(a) as c, httpx.Client(base_url=a.url) as on_a:
        shared = {
            **secret,
            "MLGATE_DATABASE_URL": f"sqlite:///{(a.data_dir / 'mlgate.db').resolve()}",
            "MLGATE_STORE_URL": (a.data_dir / "store").resolve().as_uri(),
        }
        with start_server(tmp_path / "b", env=shared) as b, httpx.Client(base_url=b.url) as on_b:
            token = create_user_token(on_a, "eve", "correct horse battery")
            bearer = {"Authorization": f"Bearer {token}"}
            key = on_a.post("/v1/keys", json={"name": "k"}, headers=bearer).json()
            roomy = create_plan(c, rate=1000, burst=1000)
            assert c.put(f"/v1/plans/{roomy}/keys/{key['id']}").status_code == 200
            keyed = {"x-api-key": key["key"]}
            assert (
                on_b.post(PREDICT_PATH, content=PREDICT_BODY, headers=keyed).status_code == 200
            )  # cached on B
            assert on_b.get("/v1/keys", headers=bearer).status_code == 200

            assert c.post("/v1/users/eve/disable").status_code == 200
            # the process that made the change: at once
            assert on_a.post(PREDICT_PATH, content=PREDICT_BODY, headers=keyed).status_code == 403
            assert on_a.post("/v1/keys", json={"name": "more"}, headers=keyed).status_code == 403
            assert on_a.post("/v1/keys", json={"name": "more"}, headers=bearer).status_code == 401
            # the other process: tokens and minting at once, the key within the cache ttl
            assert on_b.post("/v1/keys", json={"name": "more"}, headers=bearer).status_code == 401
            started = time.perf_counter()
            while on_b.post(PREDICT_PATH, content=PREDICT_BODY, headers=keyed).status_code != 403:
                assert time.perf_counter() - started < CACHE_TTL_S + 1.0, (
                    "B still serves the disabled user's key"
                )
                time.sleep(0.05)
            revoked_s = time.perf_counter() - started
            assert on_b.post("/v1/keys", json={"name": "more"}, headers=keyed).status_code == 403
            # an admin cannot hand the disabled user a fresh key either
            assert c.post("/v1/keys", json={"name": "x", "owner": "eve"}).status_code == 409
            # enabled again: the keys work again (they were never touched)
            assert c.post("/v1/users/eve/enable").status_code == 200
            assert on_a.post(PREDICT_PATH, content=PREDICT_BODY, headers=keyed).status_code == 200
    record_figure("user_revocation", processes=2, other_process_s=round(revoked_s, 2), ttl_s=CACHE_TTL_S)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in clock ticks (100/s)


def _login(client: httpx.Client, username: str, password: str, ip: str) -> httpx.Response:
    return client.post(
        "/auth/token", data={"username": username, "password": password}, headers={"X-Forwarded-For": ip}
    )


def test_logins_are_throttled_before_the_password_is_checked(tmp_path: Path) -> None:
    # the loopback peer is a trusted proxy by default: X-Forwarded-For names the client
    with start_server(tmp_path, sleepy=False) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for name in ("alice", "bob"):
            created = c.post(
                "/auth/create_user", json={"username": name, "password": "right password"}, headers=ADMIN
            )
            assert created.status_code == 201
        # per client: ten failures from one address, then even the right password is refused
        assert [_login(c, "alice", f"guess {i}", "10.0.0.1").status_code for i in range(10)] == [401] * 10
        throttled = _login(c, "alice", "right password", "10.0.0.1")
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
        # per username: ten failures from ten addresses, then the right password from an eleventh
        assert [_login(c, "bob", "guess", f"10.0.1.{i}").status_code for i in range(10)] == [401] * 10
        assert _login(c, "bob", "right password", "10.0.2.1").status_code == 429
        # successes do not count: another user logs in again and again from one address
        assert (
            c.post("/auth/create_user", json={"username": "carol", "password": "right password"}).status_code
            == 201
        )
        assert {_login(c, "carol", "right password", "10.0.3.1").status_code for _ in range(15)} == {200}

        # while throttled no hash is computed. Behaviour: 60 throttled guesses at once all get 429
        # — hashed, they would overflow the one hashing slot and its 16 waiting places (503s).
        async def at_once() -> list[int]:
            async with LoadClient(s.url, connections=60) as client:
                body = json.dumps({"username": "bob", "password": "guess"}).encode()
                headers = {"X-Forwarded-For": "10.0.0.1"}
                replies = await asyncio.gather(
                    *(client.request("POST", "/auth/token", body=body, headers=headers) for _ in range(60))
                )
            return [r.status for r in replies]

        before = _cpu_seconds(s.process.pid)
        concurrent = run_async(at_once)
        spent = _cpu_seconds(s.process.pid) - before
    assert concurrent == [429] * 60, sorted(set(concurrent))
    if SOAK:  # the figure: a hash each would be ~9 CPU-s
        assert spent < 1.0, spent
    record_figure("login_throttle", guesses=60, server_cpu_s=round(spent, 2))


def test_concurrent_password_checks_are_capped_and_serving_goes_on(tmp_path: Path) -> None:
    with start_server(tmp_path) as s:

        async def go() -> tuple[list[int], list[int], str | None]:
            async with LoadClient(s.url, connections=80) as client:

                def guess(i: int) -> Any:
                    body = json.dumps({"username": f"u{i}", "password": f"guess {i}"}).encode()
                    return client.request(
                        "POST", "/auth/token", body=body, headers={"X-Forwarded-For": f"10.9.{i}.1"}
                    )

                guesses = asyncio.gather(*(guess(i) for i in range(60)))  # > 1 slot + 16 waiting
                await asyncio.sleep(0.2)
                served = [
                    await client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=ADMIN)
                    for _ in range(5)
                ]
                replies = await guesses
                retry = next((r.headers.get("retry-after") for r in replies if r.status == 503), None)
                return [r.status for r in replies], [r.status for r in served], retry

        logins, predictions, retry_after = run_async(go)
    assert set(logins) <= {401, 503}, set(logins)
    assert logins.count(503) >= 1 and retry_after == "1"
    assert predictions == [200] * 5
    record_figure("hash_cap", logins=60, refused_503=logins.count(503), answered_401=logins.count(401))


TINY_MANIFEST = {
    "runtime": "python",
    "artifact": "tiny.py",
    "trusted": True,
    "timeout_s": 1,
    "batching": {"max_batch_size": 1, "max_concurrency": 1, "max_queue": 2},
}


def test_charged_equals_served(tmp_path: Path) -> None:
    with start_server(tmp_path) as s, admin(s) as c:
        pushed = c.post(
            "/v1/models/tiny/versions",
            files={"files": ("tiny.py", SLEEPY_MODEL.encode())},
            data={"manifest": json.dumps(TINY_MANIFEST), "aliases": "production"},
        )
        assert pushed.status_code == 201, pushed.text
        plan = create_plan(c, quota_limit=100, quota_period="DAY")
        key = create_key(c, plan=plan)
        keyed = {"x-api-key": key["key"]}
        # a batch whose items the queue partly refuses: only the answered ones are charged
        batch = c.post("/v1/models/tiny/batch", json={"inputs": [{"sleep": 0.05}] * 20}, headers=keyed)
        assert batch.status_code == 200, batch.text
        results = batch.json()["results"]
        served = sum("output" in r for r in results)
        refused = [r["error"]["status"] for r in results if "error" in r]
        assert served >= 1 and refused and set(refused) == {503}, results
        after_batch = c.post("/v1/models/tiny/predict", json={"sleep": 0}, headers=keyed)
        assert after_batch.headers["X-Quota-Remaining"] == str(100 - served - 1)
        # an answer the server failed to give (504: the model's timeout) is not charged
        timed_out = c.post("/v1/models/tiny/predict", json={"sleep": 2}, headers=keyed)
        assert timed_out.status_code == 504
        time.sleep(1.5)  # the model finishes the item it was given (one at a time)
        after = c.post("/v1/models/tiny/predict", json={"sleep": 0}, headers=keyed)
        assert after.status_code == 200 and after.headers["X-Quota-Remaining"] == str(100 - served - 2)
        time.sleep(1.5)  # the usage flush (every second)
        rows = c.get("/v1/usage", params={"key_id": key["id"]}).json()["usage"]
    assert [(r["scope"], r["requests"], r["errors"], r["units"]) for r in rows] == [
        ("tiny", 4, 1, served + 2)
    ]


def test_a_route_scoped_plan_applies_on_its_route(tmp_path: Path) -> None:
    with start_server(tmp_path, services=("temperatura",), sleepy=False) as s, admin(s) as c:
        roomy = create_plan(c, rate=1000, burst=1000)
        tight = create_plan(c, rate=0.001, burst=2)
        key = create_key(c, plan=roomy)
        assert c.put(f"/v1/plans/{tight}/keys/{key['id']}", params={"scope": "/prod"}).status_code == 200
        keyed = {"x-api-key": key["key"], "content-type": "application/json"}
        statuses = [c.post("/prod", content=TEMPERATURE_BODY, headers=keyed).status_code for _ in range(4)]
        assert statuses == [200, 200, 429, 429], statuses
        # the same model through its generic route is on the key's global plan
        generic = c.post("/v1/models/temperatura/predict", content=TEMPERATURE_BODY, headers=keyed)
        assert generic.status_code == 200 and generic.headers["X-RateLimit-Limit"] == "1000"
        # a route scope the gateway does not meter by path is refused, not silently ignored
        for scope in ("/v1/models/temperatura/predict", "/nowhere"):
            refused = c.put(f"/v1/plans/{tight}/keys/{key['id']}", params={"scope": scope})
            assert refused.status_code == 400 and "/prod" in refused.json()["error"]["message"]


def test_names_are_validated_before_any_metering_or_usage(tmp_path: Path) -> None:
    with start_server(tmp_path) as s, admin(s) as c, httpx.Client(base_url=s.url) as anon:
        plan = create_plan(c, quota_limit=5, quota_period="DAY")
        key = create_key(c, plan=plan)
        keyed = {"x-api-key": key["key"]}
        ids: list[str] = []

        def call(method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
            ids.append(uuid.uuid4().hex)
            return anon.request(method, path, headers={**headers, "x-request-id": ids[-1]}, **kw)

        unknown = f"nosuch{uuid.uuid4().hex[:6]}"
        refusals = [
            (call("POST", f"/v1/models/{unknown}/predict", keyed, json={}), 404),
            (call("POST", f"/v1/models/{unknown}/batch", keyed, json={"inputs": [{}]}), 404),
            (
                call(
                    "POST",
                    f"/v2/models/{unknown}/infer",
                    keyed,
                    json={"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]},
                ),
                404,
            ),
            (call("POST", "/v1/models/Bad%20Name/predict", keyed, json={}), 400),
            (call("POST", "/v1/models/sleepy/versions/0/predict", keyed, json={}), 400),
            (call("POST", f"/v1/models/{unknown}/predict", {}, json={}), 403),  # anonymous: learns nothing
            (call("POST", PREDICT_PATH, {"x-api-key": "mlg_00000000_forged"}, content=PREDICT_BODY), 403),
            (call("POST", PREDICT_PATH, keyed, content=b"x" * (7 * 1024 * 1024)), 413),
        ]
        for reply, status in refusals:
            assert reply.status_code == status, (reply.request.url, reply.text)
            assert "X-Quota-Remaining" not in reply.headers
        # nothing was charged: the plan's 5 requests are all still there
        assert [call("POST", PREDICT_PATH, keyed, content=PREDICT_BODY).status_code for _ in range(6)] == [
            200
        ] * 5 + [429]
        time.sleep(1.5)  # the usage flush
        scopes = {r["scope"] for r in c.get("/v1/usage", params={"key_id": key["id"]}).json()["usage"]}
        assert scopes == {"sleepy"}
        log = (s.data_dir / "logs" / "access.log").read_text().splitlines()
    seen = [json.loads(line)["request_id"] for line in log]
    assert all(seen.count(i) == 1 for i in ids), [i for i in ids if seen.count(i) != 1]
