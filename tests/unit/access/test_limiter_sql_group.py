"""The database limiter's group commit: concurrent operations share transactions and stay exact,
and ``take_then_count`` decides exactly as ``take`` followed (if allowed) by ``count``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlgate.access.limiter import MemoryLimiterStorage, SqlLimiterStorage
from mlgate.repository import Repository

T0 = 1_750_000_000.0
END = T0 + 86_400


def _storage(tmp_path: Path) -> tuple[Repository, SqlLimiterStorage]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'limiter.db'}")
    return repo, SqlLimiterStorage(repo.engine)


def test_concurrent_takes_and_counts_are_exact_when_grouped(tmp_path: Path) -> None:
    repo, storage = _storage(tmp_path)

    async def main() -> tuple[int, int]:
        takes = [storage.take("bucket:k", rate=0.001, burst=40, now=T0) for _ in range(100)]
        counts = [storage.count("quota:k", limit=60, window_end=END, now=T0) for _ in range(100)]
        decisions = await asyncio.gather(*takes, *counts)
        return sum(d.allowed for d in decisions[:100]), sum(d.allowed for d in decisions[100:])

    try:
        assert asyncio.run(main()) == (40, 60)
    finally:
        repo.close()


def test_grouped_answers_match_the_same_operations_one_by_one(tmp_path: Path) -> None:
    repo, storage = _storage(tmp_path)
    memory = MemoryLimiterStorage()  # the reference: same arithmetic, one operation at a time

    async def main() -> None:
        nows = [T0 + i * 0.05 for i in range(30)]
        grouped = await asyncio.gather(*(storage.take("bucket:g", rate=4, burst=5, now=t) for t in nows))
        one_by_one = [await memory.take("bucket:g", rate=4, burst=5, now=t) for t in nows]
        assert grouped == one_by_one

    try:
        asyncio.run(main())
    finally:
        repo.close()


def test_take_then_count_is_take_then_count(tmp_path: Path) -> None:
    repo, storage = _storage(tmp_path)
    memory = MemoryLimiterStorage()

    async def main() -> None:
        for i in range(8):
            now = T0 + i * 0.01
            decision, quota = await storage.take_then_count(
                "bucket:t", "quota:t", rate=1, burst=3, limit=2, window_end=END, now=now
            )
            expected = await memory.take("bucket:t", rate=1, burst=3, now=now)
            assert decision == expected
            if expected.allowed:
                assert quota == await memory.count("quota:t", limit=2, window_end=END, now=now)
            else:
                assert quota is None  # a throttled request uses no quota
        # the stored state is what the separate operations would have left
        assert await storage.count("quota:t", limit=2, window_end=END, now=T0 + 1) == await memory.count(
            "quota:t", limit=2, window_end=END, now=T0 + 1
        )

    try:
        asyncio.run(main())
    finally:
        repo.close()
