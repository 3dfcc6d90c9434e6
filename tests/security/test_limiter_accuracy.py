"""Usage plans hold exactly across processes: token bucket and quota against real servers.

Each backend gets a real ``mlgate serve`` with 2 worker processes sharing the limiter
state: in this machine's limiter file (the default), in Redis, in SQLite (the registry file)
and in PostgreSQL (a fresh schema). Load
shedding is off here (``max_inflight`` 0: every request reaches the limiter; shedding has
its own test). Plan rate 10/s, burst 10, on one key:

- 1,000 concurrent requests (100 connections): admitted ∈ [10, 10 + ⌈10·T⌉ + 1] where T is
  the client-side span (first byte sent → last answer); all others 429 with Retry-After
  and ``{"error": {"code": "throttled", …}, "message": "Too Many Requests"}``; no other status.
- 1 vs 2 processes: the same paced schedule (100 requests/s for 2 s, so both runs span the
  same T) against one process (its own limiter file) and against the 2 workers: admitted
  counts differ by at most 1. Paced rather than all-at-once because an all-at-once load
  finishes in a time that depends on the server (2 processes answer faster), which would
  change the refill the bound allows; see docs/security.md.
- Quota 100 per day, no rate: exactly 100 of 150 serial requests, then on a fresh key
  exactly 100 of 200 concurrent ones; the refusals are 429 ``Limit Exceeded``.

Token conservation under racing threads with a simulated clock is proven at unit level:
tests/unit/access/test_limiter.py::test_tokens_taken_by_racing_threads_equal_the_tokens_issued_by_a_fake_clock.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
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
    delete_redis_keys,
    record_figure,
    run_async,
    start_server,
)
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RATE, BURST = 10, 10
BURST_REQUESTS, CONNECTIONS = 1000, 100
PACED_RATE, PACED_SECONDS = 100, 2.0
QUOTA = 100


@pytest.fixture(scope="module", params=["local", "redis", "sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A 2-worker server whose limiter state lives in the parametrized backend."""
    env = {"MLGATE_WORKERS": "2", "MLGATE_MAX_INFLIGHT": "0", "MLGATE_LIMITER__URL": "database"}
    redis_url = None
    if request.param == "local":  # the default: this machine's limiter file
        env["MLGATE_LIMITER__URL"] = "local"
    elif request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        env["MLGATE_LIMITER__URL"] = redis_url
    elif request.param == "postgres":
        env["MLGATE_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    with start_server(tmp_path_factory.mktemp(f"limiter-{request.param}"), env=env) as server:
        deployment = {"name": request.param, "server": server, "key_ids": []}
        yield deployment
    if redis_url is not None:
        for key_id in deployment["key_ids"]:
            delete_redis_keys(redis_url, f"*{key_id}*")


@pytest.fixture(scope="module")
def single_process_paced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The paced schedule against one process (the default limiter: its data directory's file)."""
    env = {"MLGATE_MAX_INFLIGHT": "0"}
    with start_server(tmp_path_factory.mktemp("limiter-single"), env=env) as server:

        def fresh_key() -> str:
            with admin(server) as c:
                return str(create_key(c, plan=create_plan(c, rate=RATE, burst=BURST))["key"])

        return _paced_on_schedule(server, fresh_key)


def _bucket_key(backend: dict[str, Any]) -> str:
    server: ServerProcess = backend["server"]
    with admin(server) as c:
        key = create_key(c, plan=create_plan(c, rate=RATE, burst=BURST))
    backend["key_ids"].append(key["id"])
    return str(key["key"])


def _check_refusals(replies: list[Reply], message: str) -> None:
    statuses = {r.status for r in replies}
    assert statuses <= {200, 429}, {s: sum(r.status == s for r in replies) for s in statuses}
    for r in replies:
        if r.status == 429:
            assert int(r.headers["retry-after"]) >= 1
            code = "quota_exceeded" if message == "Limit Exceeded" else "throttled"
            assert r.json() == {"error": {"code": code, "message": message}, "message": message}


def test_1000_concurrent_requests_on_2_processes_admit_within_the_bucket_bound(
    backend: dict[str, Any],
) -> None:
    server: ServerProcess = backend["server"]
    key = _bucket_key(backend)

    async def burst() -> list[Reply]:
        async with LoadClient(server.url, connections=CONNECTIONS) as client:
            await client.warm()  # connection setup is not part of T
            headers = {"x-api-key": key}
            return await asyncio.gather(
                *(
                    client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=headers)
                    for _ in range(BURST_REQUESTS)
                )
            )

    replies = run_async(burst)
    span = max(r.received for r in replies) - min(r.sent for r in replies)
    admitted = sum(r.status == 200 for r in replies)
    bound = BURST + math.ceil(RATE * span) + 1
    _check_refusals(replies, "Too Many Requests")
    assert BURST <= admitted <= bound, (admitted, span, bound)
    record_figure(
        "limiter_burst",
        backend=backend["name"],
        processes=2,
        requests=BURST_REQUESTS,
        admitted=admitted,
        refused_429=BURST_REQUESTS - admitted,
        span_s=round(span, 3),
        bound=bound,
        admitted_minus_refill=round(admitted - RATE * span, 2),
    )


#: A paced run whose sends came later than this behind their schedule did not pace (the client's
#: event loop was starved): its admitted count compares nothing, so it is measured again.
PACED_LATENESS_S = 0.05


def _paced_on_schedule(
    server: ServerProcess, fresh_key: Callable[[], str], attempts: int = 3
) -> dict[str, float]:
    """:func:`_paced` with a fresh key (a full bucket) until the client kept its schedule."""
    for _ in range(attempts):
        run = _paced(server, fresh_key())
        if run["late"] <= PACED_LATENESS_S:
            break
    return run


def _paced(server: ServerProcess, key: str) -> dict[str, float]:
    """``PACED_RATE`` requests/s for ``PACED_SECONDS``, sent on schedule whatever the answers.

    ``late``: how far behind its schedule the latest send was (a starved client bunches sends)."""
    scheduled: list[float] = []

    async def paced() -> list[Reply]:
        async with LoadClient(server.url, connections=40) as client:
            await client.warm()
            headers = {"x-api-key": key}
            start = time.perf_counter() + 0.05
            total = int(PACED_RATE * PACED_SECONDS)
            scheduled.extend(start + i / PACED_RATE for i in range(total))

            async def one(i: int) -> Reply:
                await asyncio.sleep(max(0.0, start + i / PACED_RATE - time.perf_counter()))
                return await client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=headers)

            return await asyncio.gather(*(one(i) for i in range(total)))

    replies = run_async(paced)
    _check_refusals(replies, "Too Many Requests")
    span = max(r.received for r in replies) - min(r.sent for r in replies)
    admitted = sum(r.status == 200 for r in replies)
    assert BURST <= admitted <= BURST + math.ceil(RATE * span) + 1, (admitted, span)
    late = max(r.sent - when for r, when in zip(replies, scheduled, strict=True))
    return {"admitted": admitted, "span": span, "late": late}


def test_one_and_two_processes_admit_the_same_within_one(
    backend: dict[str, Any], single_process_paced: dict[str, float]
) -> None:
    two = _paced_on_schedule(backend["server"], lambda: _bucket_key(backend))
    one = single_process_paced
    if max(one["late"], two["late"]) <= PACED_LATENESS_S:
        assert abs(two["admitted"] - one["admitted"]) <= 1, (one, two)
    # else: the machine starved the client in every attempt (both runs still met the
    # per-run bound in _paced); the comparison needs a schedule that was kept.
    record_figure(
        "limiter_1_vs_2",
        backend=backend["name"],
        schedule=f"{PACED_RATE}/s for {PACED_SECONDS} s",
        admitted_1_process=one["admitted"],
        span_1_process_s=round(one["span"], 3),
        admitted_2_processes=two["admitted"],
        span_2_processes_s=round(two["span"], 3),
        late_s=round(max(one["late"], two["late"]), 3),
    )


def test_quota_admits_exactly_its_limit_serial_then_concurrent(backend: dict[str, Any]) -> None:
    server: ServerProcess = backend["server"]
    with admin(server) as c:
        plan = create_plan(c, quota_limit=QUOTA, quota_period="DAY")
        serial_key, concurrent_key = create_key(c, plan=plan), create_key(c, plan=plan)
    backend["key_ids"] += [serial_key["id"], concurrent_key["id"]]

    headers = {"x-api-key": serial_key["key"], "content-type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
        serial = [c.post(PREDICT_PATH, content=PREDICT_BODY).status_code for _ in range(150)]
        last = c.post(PREDICT_PATH, content=PREDICT_BODY)
    assert serial == [200] * QUOTA + [429] * 50
    assert last.json()["message"] == "Limit Exceeded"  # API Gateway's, beside the native envelope
    assert last.json()["error"]["code"] == "quota_exceeded"
    assert last.headers["x-quota-remaining"] == "0"

    async def concurrent() -> list[Reply]:
        async with LoadClient(server.url, connections=50) as client:
            headers = {"x-api-key": concurrent_key["key"]}
            return await asyncio.gather(
                *(
                    client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=headers)
                    for _ in range(200)
                )
            )

    replies = run_async(concurrent)
    _check_refusals(replies, "Limit Exceeded")
    admitted = sum(r.status == 200 for r in replies)
    assert admitted == QUOTA
    record_figure(
        "limiter_quota",
        backend=backend["name"],
        processes=2,
        serial_admitted=serial.count(200),
        serial_sent=150,
        concurrent_admitted=admitted,
        concurrent_sent=200,
    )
