"""What only the Redis storage does: key expiry and the EVALSHA -> EVAL fallback (real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis

from mlgate.access import limiter_redis
from mlgate.access.limiter_redis import RedisLimiterStorage
from tests.services import REDIS_URL, missing_service

T0 = 1_750_000_000.0


@pytest.fixture
def redis_prefix() -> Iterator[tuple[redis.Redis, str]]:
    """A sync client and a key prefix of this test's own; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        client.close()
        missing_service(f"Redis unreachable at {REDIS_URL}: {exc}")
        return
    prefix = f"mlgate-test:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_idle_buckets_and_ended_counters_expire(redis_prefix: tuple[redis.Redis, str]) -> None:
    client, prefix = redis_prefix

    async def main() -> None:
        storage = RedisLimiterStorage(REDIS_URL, prefix=prefix)
        try:
            await storage.take("k", rate=4, burst=10, cost=3, now=T0)  # full again in 0.75 s
            await storage.count("k", limit=5, window_end=T0 + 30, now=T0)
        finally:
            await storage.close()

    asyncio.run(main())
    bucket_ttl = client.pttl(f"{prefix}b:k")
    counter_ttl = client.pttl(f"{prefix}q:k")
    assert 0 < bucket_ttl <= 750 + 1000  # refill time plus a second
    assert 60_000 < counter_ttl <= 30_000 + 60_000  # window end plus the grace minute
    assert client.hget(f"{prefix}b:k", "t") == b"7"
    assert client.hget(f"{prefix}q:k", "c") == b"1"


def test_a_script_unknown_to_the_server_is_sent_with_eval(
    redis_prefix: tuple[redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, prefix = redis_prefix
    # a variant of the script Redis has never seen, as after a restart or SCRIPT FLUSH
    fresh = limiter_redis._Script(limiter_redis._TAKE + f"\n-- {uuid.uuid4().hex}\n")
    monkeypatch.setattr(limiter_redis, "_TAKE_SCRIPT", fresh)

    async def main() -> None:
        storage = RedisLimiterStorage(REDIS_URL, prefix=prefix)
        try:
            assert (await storage.take("k", rate=1, burst=2, now=T0)).remaining == 1
            assert (await storage.take("k", rate=1, burst=2, now=T0)).remaining == 0
        finally:
            await storage.close()

    asyncio.run(main())
