"""The documented security choices, each shown on a real server (docs/security.md).

- Redis unreachable: keyed calls under a plan fail closed with 503 ``limiter_unavailable``
  by default; with ``MLGATE_LIMITER__REDIS_DOWN=open`` they are admitted and the plan still
  holds per process.
- The server refuses to start with a published or short JWT secret outside dev mode, and
  with a wildcard CORS origin combined with credentials.
- Passwords are hashed whole (argon2: no 72-byte truncation) and longer than 1,024 bytes
  refused with 422.
- A key disabled, or moved to another plan, through one server process is seen by another
  process on the same database within the in-process cache's 5 s (KeyStore.verify_cached,
  PlanStore cache_ttl); the process that made the change sees it at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import (
    PREDICT_BODY,
    PREDICT_PATH,
    LoadClient,
    Reply,
    admin,
    create_key,
    create_plan,
    record_figure,
    run_async,
    start_server,
)
from tests.server_process import ADMIN_KEY
from tests.services import free_port

pytestmark = [pytest.mark.e2e]

CACHE_TTL_S = 5.0  # KeyStore.verify_cached and PlanStore default
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _predict(c: httpx.Client, key: str) -> httpx.Response:
    return c.post(
        PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": key, "content-type": "application/json"}
    )


def test_redis_down_fails_closed_by_default_and_open_caps_per_process(tmp_path: Path) -> None:
    env = {"MLGATE_LIMITER__URL": DEAD_REDIS}
    with start_server(tmp_path / "closed", env=env) as server, admin(server) as c:
        key = create_key(c, plan=create_plan(c, rate=0.001, burst=3))["key"]
        started = time.perf_counter()
        r = _predict(c, key)
        closed_ms = (time.perf_counter() - started) * 1000
        assert r.status_code == 503, r.text
        assert r.json() == {
            "error": {"code": "limiter_unavailable", "message": "the limiter's Redis is unavailable"},
            "message": "the limiter's Redis is unavailable",
        }, r.text
        assert r.headers.get("retry-after") == "1"  # when the storage probes Redis again
        assert _predict(c, ADMIN_KEY).status_code == 200  # the admin key is unmetered: nothing to take
    env["MLGATE_LIMITER__REDIS_DOWN"] = "open"
    with start_server(tmp_path / "open", env=env) as server, admin(server) as c:
        key = create_key(c, plan=create_plan(c, rate=0.001, burst=3))["key"]
        statuses = [_predict(c, key).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]  # the plan holds in this process
        assert "failing open with per-process limits" in server.log()
    record_figure(
        "redis_down", default="503 limiter_unavailable", closed_answer_ms=round(closed_ms, 1), open=statuses
    )


def _refuses_to_start(tmp_path: Path, env: dict[str, str]) -> str:
    """Run ``mlgate serve`` with ``env``; it must exit (not serve); return its output."""
    full = {
        **os.environ,
        "MLGATE_DATA_DIR": str(tmp_path),
        "MLGATE_PORT": str(free_port()),
        "MLGATE_ADMIN_KEY": ADMIN_KEY,
        "MLGATE_SERVICES": "[]",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", "serve"], env=full, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    ("name", "env", "message"),
    [
        ("published JWT secret", {"MLGATE_AUTH__JWT_SECRET": "your-256-bit-secret"}, "published default"),
        ("short JWT secret", {"MLGATE_AUTH__JWT_SECRET": "Xk3-short-9"}, "shorter than 32"),
        (
            "wildcard CORS with credentials",
            {"MLGATE_CORS__ORIGINS": '["*"]', "MLGATE_CORS__ALLOW_CREDENTIALS": "true"},
            "wildcard origin cannot be combined with allow_credentials",
        ),
    ],
)
def test_unsafe_configuration_refuses_to_start(
    tmp_path: Path, name: str, env: dict[str, str], message: str
) -> None:
    output = _refuses_to_start(tmp_path, env)
    assert message in output, output[-2000:]
    assert "Uvicorn running" not in output


def test_passwords_are_hashed_whole_and_over_1024_bytes_refused(tmp_path: Path) -> None:
    long_password = "p" * 71 + "-" + "tail that bcrypt would cut off"  # 102 bytes
    with start_server(tmp_path / "passwords", sleepy=False) as server, httpx.Client(base_url=server.url) as c:
        assert (
            c.post("/auth/create_user", json={"username": "longpw", "password": long_password}).status_code
            == 201
        )
        ok = c.post("/auth/token", data={"username": "longpw", "password": long_password})
        assert ok.status_code == 200
        truncated = c.post("/auth/token", data={"username": "longpw", "password": long_password[:72]})
        assert truncated.status_code == 401  # the first 72 bytes alone are not the password
        too_long = c.post("/auth/create_user", json={"username": "hugepw", "password": "x" * 1025})
        assert too_long.status_code == 422, too_long.text
        assert (
            c.post("/auth/create_user", json={"username": "maxpw", "password": "x" * 1024}).status_code == 201
        )
    record_figure(
        "passwords", hashed_whole_bytes=len(long_password), first_72_bytes_refused=True, over_1024="422"
    )


def test_disabled_key_and_changed_plan_reach_another_process_within_the_cache_ttl(tmp_path: Path) -> None:
    """Two server processes on one database: admin calls go to A, traffic to B."""
    with start_server(tmp_path / "a") as a, admin(a) as c:
        shared = {
            "MLGATE_DATABASE_URL": f"sqlite:///{(a.data_dir / 'mlgate.db').resolve()}",
            "MLGATE_STORE_URL": (a.data_dir / "store").resolve().as_uri(),
        }
        with start_server(tmp_path / "b", env=shared) as b:
            roomy = create_plan(c, rate=1000, burst=1000)
            tight = create_plan(c, rate=0.001, burst=1)
            disabled = create_key(c, plan=roomy)
            moved = create_key(c, plan=roomy)

            async def measure() -> tuple[float, float]:
                async with LoadClient(b.url, connections=16) as client:
                    for key in (disabled["key"], moved["key"]):  # B has both keys and their plan cached
                        replies = await asyncio.gather(*(_call(client, key) for _ in range(8)))
                        assert {r.status for r in replies} == {200}
                    assert c.post(f"/v1/keys/{disabled['id']}/disable").status_code == 200
                    assert c.put(f"/v1/plans/{tight}/keys/{moved['id']}").status_code == 200
                    t_disable, t_plan = await asyncio.gather(
                        _poll(client, disabled["key"], 403), _poll(client, moved["key"], 429)
                    )
                    return t_disable, t_plan

            disable_s, plan_s = run_async(measure)
    assert 0 < disable_s <= CACHE_TTL_S + 1.0, disable_s  # not at once (B's cache), within its ttl
    assert 0 < plan_s <= CACHE_TTL_S + 1.0, plan_s
    record_figure(
        "propagation",
        processes=2,
        key_disable_s=round(disable_s, 2),
        plan_change_s=round(plan_s, 2),
        ttl_s=CACHE_TTL_S,
    )


def _call(client: LoadClient, key: str) -> Coroutine[Any, Any, Reply]:
    return client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers={"x-api-key": key})


async def _poll(client: LoadClient, key: str, status: int, limit_s: float = CACHE_TTL_S + 3) -> float:
    """When (seconds from now) the last answer other than ``status`` came, once 3 rounds in
    a row of 8 parallel calls answered only ``status``."""
    started = time.perf_counter()
    streak = 0
    last_other = 0.0
    while time.perf_counter() - started < limit_s:
        replies = await asyncio.gather(*(_call(client, key) for _ in range(8)))
        if all(r.status == status for r in replies):
            streak += 1
            if streak == 3:
                return last_other
        else:
            streak = 0
            last_other = time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not all {status} after {limit_s} s")
