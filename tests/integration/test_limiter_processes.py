"""Two OS processes hammer one bucket on a shared storage for ~2 s of real time.

With rate 10 and burst 10 the processes together may admit at most
10 + ceil(10 * T) + 1 takes (T = the measured span from the first take's start to the
last take's end), and at least the burst; no take may fail ("database is locked" or
otherwise). Each process runs several coroutines, so the storage also sees concurrency
inside a process. The two processes are spawned once for the module (importing mlgate
takes ~2 s) and run one round per backend.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from mlgate.access.limiter import LimiterStorage, MmapLimiterStorage, SqlLimiterStorage
from mlgate.access.limiter_redis import RedisLimiterStorage
from mlgate.db.engine import create_engine_for
from mlgate.repository import Repository
from tests.services import REDIS_URL, missing_service

pytestmark = pytest.mark.integration

RATE, BURST = 10.0, 10
DURATION_S = 2.0
PROCESSES = 2
COROUTINES_PER_PROCESS = 4
KEY = "bucket:hammer:*"
WAIT_S = 30.0


# -- the worker processes ----------------------------------------------------------------------


def _worker(jobs: Any, ready: Any, go: Any, results: Any) -> None:
    """Run rounds until told to stop: open the storage, report ready, wait for go, hammer."""
    while (job := jobs.get()) is not None:
        kind, target = job
        try:
            results.put(asyncio.run(_round(kind, target, ready, go)))
        except BaseException:
            ready.set()  # never leave the parent waiting
            results.put(
                {"admitted": 0, "refused": 0, "errors": [traceback.format_exc()], "first": 0, "last": 0}
            )


async def _round(kind: str, target: str, ready: Any, go: Any) -> dict[str, Any]:
    engine = None
    storage: LimiterStorage
    if kind == "redis":
        storage = RedisLimiterStorage(REDIS_URL, prefix=target, socket_timeout=5)
    elif kind == "local":
        storage = MmapLimiterStorage(Path(target))
    else:
        engine = create_engine_for(target)
        storage = SqlLimiterStorage(engine)
    admitted = refused = 0
    errors: list[str] = []
    first, last = math.inf, 0.0
    try:
        await storage.reset("warm-up")  # connect before the clock starts
        ready.set()
        if not await asyncio.to_thread(go.wait, WAIT_S):
            raise TimeoutError("no go signal")
        stop_at = time.time() + DURATION_S

        async def hammer() -> None:
            nonlocal admitted, refused, first, last
            while (started := time.time()) < stop_at:
                first = min(first, started)
                try:
                    decision = await storage.take(KEY, rate=RATE, burst=BURST, now=started)
                except Exception as exc:
                    errors.append(repr(exc))
                else:
                    admitted += decision.allowed
                    refused += not decision.allowed
                last = max(last, time.time())

        await asyncio.gather(*(hammer() for _ in range(COROUTINES_PER_PROCESS)))
    finally:
        await storage.close()
        if engine is not None:
            engine.dispose()
    return {"admitted": admitted, "refused": refused, "errors": errors[:5], "first": first, "last": last}


@dataclass
class Workers:
    """Two spawned processes, each with its own job queue and ready flag, sharing a go flag."""

    procs: list[Any]
    jobs: list[Any]
    readies: list[Any]
    go: Any
    results: Any

    def run_round(self, kind: str, target: str) -> dict[str, Any]:
        self.go.clear()
        for jobs, ready in zip(self.jobs, self.readies, strict=True):
            ready.clear()
            jobs.put((kind, target))
        for ready in self.readies:
            assert ready.wait(WAIT_S), "a limiter worker process did not get ready"
        self.go.set()
        outcomes = [self.results.get(timeout=WAIT_S) for _ in self.procs]
        self.go.clear()
        return {
            "admitted": sum(o["admitted"] for o in outcomes),
            "refused": sum(o["refused"] for o in outcomes),
            "errors": [e for o in outcomes for e in o["errors"]],
            "span": max(o["last"] for o in outcomes) - min(o["first"] for o in outcomes),
        }


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    ctx = multiprocessing.get_context("spawn")
    pool = Workers(
        procs=[],
        jobs=[ctx.Queue() for _ in range(PROCESSES)],
        readies=[ctx.Event() for _ in range(PROCESSES)],
        go=ctx.Event(),
        results=ctx.Queue(),
    )
    for jobs, ready in zip(pool.jobs, pool.readies, strict=True):
        proc = ctx.Process(target=_worker, args=(jobs, ready, pool.go, pool.results), daemon=True)
        proc.start()
        pool.procs.append(proc)
    try:
        yield pool
    finally:
        for jobs in pool.jobs:
            jobs.put(None)
        for proc in pool.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# -- the shared storages -----------------------------------------------------------------------


@pytest.fixture(params=["local", "sqlite", "postgresql", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(kind, target): this machine's limiter file, a migrated SQLite file, a migrated fresh
    PostgreSQL schema, or a Redis key prefix."""
    if request.param == "local":
        yield "local", str(tmp_path / "limiter.state")
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'limiter.db'}"
        Repository.open(url).close()
        yield "sql", url
    elif request.param == "postgresql":
        # imported here so the spawned workers do not import the contract fixtures
        from tests.contract.conftest import _postgres_schema_url

        for url in _postgres_schema_url():
            Repository.open(url).close()
            yield "sql", url
    else:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            client.close()
            missing_service(f"Redis unreachable at {REDIS_URL}: {exc}")
            return
        prefix = f"mlgate-test:{uuid.uuid4().hex}:"
        try:
            yield "redis", prefix
        finally:
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()


def test_two_processes_on_one_bucket_admit_burst_plus_rate_times_span(
    workers: Workers, shared: tuple[str, str], request: pytest.FixtureRequest
) -> None:
    kind, target = shared
    outcome = workers.run_round(kind, target)
    admitted, span = outcome["admitted"], outcome["span"]
    ceiling = BURST + math.ceil(RATE * span) + 1
    print(  # the measured figures, for docs/security.md (pytest -s)
        f"\n{request.node.callspec.id}: {PROCESSES} processes x {COROUTINES_PER_PROCESS} coroutines, "
        f"T={span:.3f} s, admitted={admitted} (allowed {BURST}..{ceiling}), "
        f"refused={outcome['refused']}, errors={len(outcome['errors'])}"
    )
    assert not outcome["errors"], outcome["errors"]
    assert BURST <= admitted <= ceiling
    assert outcome["refused"] > 0
