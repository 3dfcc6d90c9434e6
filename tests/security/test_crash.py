"""Crash safety on SQLite: ``kill -9`` under load, again and again, and concurrent writers.

Each round starts the server on the same data directory, runs sign-ups and keyed
predictions concurrently, and SIGKILLs the process mid-load (at a different point of the
usage flush cycle each round). Then, with the process dead:

- ``PRAGMA integrity_check`` is ``ok``;
- every user whose sign-up was answered 201 exists;
- the usage counted for the round's key is never more than the predictions sent (nothing
  counted twice) and at least the predictions answered 200 — exactly, in the rounds run
  with ``limiter.usage_sync`` on (every other round); with the default batching, minus
  those answered in the documented crash window: the last ``usage_flush_s`` (+ a margin
  for the flush being written at the kill) before the kill (see UsageRecorder).

30 rounds with ``MLGATE_SOAK=1`` (``make soak``), 5 in CI. A last start proves the data
directory still serves: the users log in, the usage report agrees with the database.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.security.conftest import (
    ADMIN,
    PREDICT_BODY,
    PREDICT_PATH,
    SOAK,
    LoadClient,
    admin,
    create_key,
    create_plan,
    record_figure,
    run_async,
    start_server,
)
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 30 if SOAK else 5
FLUSH_S = 1.0  # the default usage_flush_s
#: How long a flush may take beyond its interval (the one in flight at the kill).
FLUSH_MARGIN_S = 0.5
PASSWORD = "crash-test passphrase 1"
SIGNUP_WORKERS = 2  # argon2 is deliberately expensive: a few sign-ups at a time load 2 cores
PREDICT_WORKERS = 16


@dataclass
class Round:
    number: int
    sync: bool
    key_id: str = ""
    users_acked: list[str] = field(default_factory=list)
    predictions_sent: int = 0
    acked_at: list[float] = field(default_factory=list)  # perf_counter of each 200
    other_statuses: dict[int, int] = field(default_factory=dict)
    killed_at: float = 0.0
    load_s: float = 0.0
    usage: int = 0

    @property
    def acked(self) -> int:
        return len(self.acked_at)

    @property
    def in_window(self) -> int:
        return sum(t >= self.killed_at - FLUSH_S - FLUSH_MARGIN_S for t in self.acked_at)


async def _load_then_kill(server: ServerProcess, key: str, rnd: Round, kill_after: float) -> None:
    stop = asyncio.Event()
    headers = {"x-api-key": key}

    def count(status: int) -> None:
        rnd.other_statuses[status] = rnd.other_statuses.get(status, 0) + 1

    async with LoadClient(server.url, connections=SIGNUP_WORKERS + PREDICT_WORKERS, timeout=10) as client:

        async def signups(worker: int) -> None:
            n = 0
            while not stop.is_set():
                name = f"r{rnd.number}w{worker}n{n}"
                n += 1
                body = json.dumps({"username": name, "password": PASSWORD}).encode()
                r = await client.request("POST", "/auth/create_user", body=body)
                if r.status == 201:
                    rnd.users_acked.append(name)
                else:
                    count(r.status)
                if r.status == 0:
                    return

        async def predictions() -> None:
            while not stop.is_set():
                rnd.predictions_sent += 1
                r = await client.request("POST", PREDICT_PATH, body=PREDICT_BODY, headers=headers)
                if r.status == 200:
                    rnd.acked_at.append(r.received)
                else:
                    count(r.status)
                if r.status == 0:
                    return

        async def killer() -> None:
            rnd.load_s = kill_after
            await asyncio.sleep(kill_after)
            rnd.killed_at = time.perf_counter()
            server.process.kill()
            stop.set()

        workers = [signups(i) for i in range(SIGNUP_WORKERS)] + [
            predictions() for _ in range(PREDICT_WORKERS)
        ]
        await asyncio.gather(killer(), *workers)


def _check_database(db: Path, rnd: Round) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        found = set()
        names = rnd.users_acked
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found |= {
                r[0] for r in conn.execute(f"SELECT username FROM users WHERE username IN ({marks})", chunk)
            }
        missing = sorted(set(names) - found)
        assert not missing, f"round {rnd.number}: users answered 201 but missing: {missing[:10]}"
        rnd.usage = conn.execute(
            "SELECT COALESCE(SUM(requests), 0) FROM usage_daily WHERE key_id = ?", (rnd.key_id,)
        ).fetchone()[0]
    finally:
        conn.close()


def test_kill_9_under_load_keeps_sqlite_intact_and_acknowledged_work(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash"
    rounds: list[Round] = []
    rng = random.Random(20240401)
    started = time.monotonic()
    for number in range(ROUNDS):
        rnd = Round(number, sync=number % 2 == 1)
        env = {"MLGATE_LIMITER__USAGE_SYNC": "true"} if rnd.sync else {}
        with start_server(data_dir, env=env) as server:
            with admin(server) as c:
                key = create_key(c, plan="roomy")  # the harness's plan that never throttles
            rnd.key_id = key["id"]
            # Kill at a different point of the 1 s usage flush cycle each round.
            run_async(functools.partial(_load_then_kill, server, key["key"], rnd, 1.2 + rng.random()))
            assert server.process.wait(timeout=10) == -9
        _check_database(data_dir / "mlgate.db", rnd)
        assert rnd.acked > 0 and rnd.users_acked, rnd
        assert set(rnd.other_statuses) <= {0}, rnd.other_statuses  # only the kill cut answers short
        allowed_loss = 0 if rnd.sync else rnd.in_window
        assert rnd.usage >= rnd.acked - allowed_loss, (rnd.number, rnd.usage, rnd.acked, allowed_loss)
        assert rnd.usage <= rnd.predictions_sent, (rnd.number, rnd.usage, rnd.predictions_sent)
        rounds.append(rnd)

    # The data directory still serves after the last crash.
    with start_server(data_dir) as server, admin(server) as c:
        for rnd in rounds:
            rows = c.get("/v1/usage", params={"key_id": rnd.key_id}).json()["usage"]
            assert sum(r["requests"] for r in rows) == rnd.usage
        for rnd in rounds:
            name = rnd.users_acked[-1]
            r = c.post("/auth/token", data={"username": name, "password": PASSWORD})
            assert r.status_code == 200, (name, r.text)

    for sync in (False, True):
        group = [r for r in rounds if r.sync == sync]
        lost = [r.acked - r.usage for r in group]
        record_figure(
            "crash",
            usage_sync=sync,
            rounds=len(group),
            integrity_ok=len(group),
            users_acked=sum(len(r.users_acked) for r in group),
            users_missing=0,
            predictions_acked=sum(r.acked for r in group),
            usage_counted=sum(r.usage for r in group),
            max_lost_per_round=max(lost),
            max_acked_in_window=max(r.in_window for r in group),
            rounds_losing_nothing=sum(x <= 0 for x in lost),
            acked_per_s=round(sum(r.acked for r in group) / sum(r.load_s for r in group)),
        )
    record_figure("crash_total", rounds=len(rounds), seconds=round(time.monotonic() - started, 1))


# -- concurrent writers -------------------------------------------------------------------------


def test_concurrent_writers_on_sqlite_never_see_database_is_locked(tmp_path: Path) -> None:
    """2 worker processes, limiter state in SQLite too: sign-ups, key and plan creation and
    metered predictions all at once. Zero 5xx, zero "database is locked"."""
    users, keys, plans, predictions = (60, 40, 20, 400) if SOAK else (30, 30, 10, 200)
    env = {"MLGATE_WORKERS": "2"}  # --workers > 1: limiter state goes to the database
    with start_server(tmp_path / "writers", env=env) as server:
        with admin(server) as c:
            plan = create_plan(c, rate=1000, burst=1000, quota_limit=1_000_000, quota_period="DAY")
            metered = create_key(c, plan=plan)["key"]
        tag = uuid.uuid4().hex[:6]

        async def load() -> list[tuple[str, int]]:
            async with LoadClient(server.url, connections=48, timeout=60) as client:

                async def call(
                    kind: str, method: str, path: str, body: object, headers: dict[str, str]
                ) -> tuple[str, int]:
                    for _ in range(30):
                        r = await client.request(
                            method, path, body=json.dumps(body).encode(), headers=headers
                        )
                        # Sign-ups beyond the password-hash cap's waiting room get 503 + Retry-After
                        # (access/login.py): a well-behaved client comes back.
                        if r.status != 503 or kind != "user" or "retry-after" not in r.headers:
                            break
                        await asyncio.sleep(float(r.headers["retry-after"]))
                    return kind, r.status

                calls = (
                    [
                        call(
                            "user",
                            "POST",
                            "/auth/create_user",
                            {"username": f"w{tag}{i}", "password": PASSWORD},
                            {},
                        )
                        for i in range(users)
                    ]
                    + [
                        call("key", "POST", "/v1/keys", {"name": f"k{i}", "plan": plan}, ADMIN)
                        for i in range(keys)
                    ]
                    + [
                        call(
                            "plan", "POST", "/v1/plans", {"name": f"p{tag}{i}", "rate": 5, "burst": 5}, ADMIN
                        )
                        for i in range(plans)
                    ]
                    + [
                        call(
                            "predict",
                            "POST",
                            PREDICT_PATH,
                            json.loads(PREDICT_BODY),
                            {"x-api-key": metered},
                        )
                        for _ in range(predictions)
                    ]
                )
                random.Random(7).shuffle(calls)
                return await asyncio.gather(*calls)

        started = time.monotonic()
        results = run_async(load)
        elapsed = time.monotonic() - started
        log = server.log()
        db = server.data_dir / "mlgate.db"
    by_kind: dict[str, dict[int, int]] = {}
    for kind, status in results:
        by_kind.setdefault(kind, {}).setdefault(status, 0)
        by_kind[kind][status] += 1
    assert by_kind == {
        "user": {201: users},
        "key": {201: keys},
        "plan": {201: plans},
        "predict": {200: predictions},
    }
    assert "database is locked" not in log
    assert "Traceback" not in log
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    record_figure(
        "concurrent_writers",
        workers=2,
        calls=len(results),
        users=users,
        keys=keys,
        plans=plans,
        predictions=predictions,
        server_errors=0,
        database_is_locked=0,
        seconds=round(elapsed, 2),
    )
