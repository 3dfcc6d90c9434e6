"""This machine's limiter file (``local``): state kept across restarts and crashes, the table
growing and sweeping, another process seeing a moved table, a dead lock holder, a bad file.

The arithmetic is the contract suite's (tests/contract/test_limiter_contract.py), and the
exactness between processes the integration test's (tests/integration/test_limiter_processes.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mlgate.access import limiter_mmap
from mlgate.access.limiter import open_limiter_storage
from mlgate.access.limiter_mmap import MmapLimiterStorage
from mlgate.errors import ConfigurationError

T0 = 1_750_000_000.0
END = T0 + 30 * 86_400


def test_state_survives_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "limiter.state"

    async def first() -> None:
        storage = MmapLimiterStorage(path)
        for _ in range(3):
            assert (await storage.take("bucket:k", rate=0.001, burst=5, now=T0)).allowed
        assert (await storage.count("quota:k", limit=10, window_end=END, cost=4, now=T0)).remaining == 6
        await storage.close()

    async def second() -> None:
        storage = MmapLimiterStorage(path)  # a restarted server
        decision = await storage.take("bucket:k", rate=0.001, burst=5, now=T0)
        assert (decision.allowed, decision.remaining) == (True, 1)  # 5 - 3 - 1: nothing minted
        quota = await storage.count("quota:k", limit=10, window_end=END, now=T0)
        assert quota.remaining == 5  # the month's count was kept
        await storage.close()

    asyncio.run(first())
    asyncio.run(second())


def test_the_table_grows_and_another_process_follows_it(tmp_path: Path) -> None:
    path = tmp_path / "limiter.state"
    keys = [f"quota:key{i}" for i in range(3000)]  # well past 70 % of the first 1,024 slots

    async def scenario() -> None:
        writer = MmapLimiterStorage(path)
        reader = MmapLimiterStorage(path)  # maps the first table before it moves
        for key in keys:
            assert (await writer.count(key, limit=9, window_end=END, cost=2, now=T0)).allowed
        assert path.stat().st_size > 64 + 1024 * 48  # rebuilt larger into a new file
        assert len(writer) == 3000
        for key in keys[:50] + keys[-50:]:  # the old mapping sees "moved" and maps the new file
            assert (await reader.count(key, limit=9, window_end=END, now=T0)).remaining == 6
        assert len(reader) == 3000
        await writer.close()
        await reader.close()

    asyncio.run(scenario())


def test_buckets_full_again_and_ended_windows_are_swept_instead_of_growing(tmp_path: Path) -> None:
    path = tmp_path / "limiter.state"

    async def scenario() -> None:
        storage = MmapLimiterStorage(path)
        for i in range(5000):
            now = T0 + i  # each bucket is full again one second later (rate 10, burst 10, one take)
            assert (await storage.take(f"bucket:k{i}", rate=10, burst=10, now=now)).allowed
        assert len(storage) < 1024  # swept as the table filled
        assert path.stat().st_size == 64 + 1024 * 48  # never grew
        await storage.close()

    asyncio.run(scenario())


def test_a_bucket_and_a_counter_with_one_key_and_reset(tmp_path: Path) -> None:
    async def scenario() -> None:
        storage = MmapLimiterStorage(tmp_path / "limiter.state")
        assert (await storage.take("k", rate=1, burst=1, now=T0)).allowed
        assert (await storage.count("k", limit=1, window_end=END, now=T0)).allowed
        assert not (await storage.take("k", rate=1, burst=1, now=T0)).allowed
        await storage.reset("k")
        assert len(storage) == 0
        assert (await storage.take("k", rate=1, burst=1, now=T0)).allowed
        assert (await storage.count("k", limit=1, window_end=END, now=T0)).allowed
        await storage.close()

    asyncio.run(scenario())


def test_a_process_killed_while_holding_the_lock_does_not_block_the_others(tmp_path: Path) -> None:
    path = tmp_path / "limiter.state"
    holder = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        from pathlib import Path
        from mlgate.access.limiter_mmap import MmapLimiterStorage
        storage = MmapLimiterStorage(Path({str(path)!r}))
        storage._acquire()  # take the lock as an operation would, then die holding it
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        storage = MmapLimiterStorage(path)
        started = time.monotonic()
        assert storage.take_sync("bucket:k", rate=1, burst=1, now=T0).allowed
        assert time.monotonic() - started < 5  # the kernel released the dead process's lock
        asyncio.run(storage.close())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_file_that_is_not_a_limiter_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "limiter.state"
    path.write_bytes(b"not a limiter file" + bytes(100_000))
    with pytest.raises(ConfigurationError, match="not an mlgate limiter state file"):
        MmapLimiterStorage(path)
    with pytest.raises(ConfigurationError, match="power of two"):
        MmapLimiterStorage(tmp_path / "other.state", capacity=1000)


def test_a_closed_storage_refuses_to_work(tmp_path: Path) -> None:
    storage = MmapLimiterStorage(tmp_path / "limiter.state")
    asyncio.run(storage.close())
    with pytest.raises(ConfigurationError, match="closed"):
        storage.take_sync("bucket:k", rate=1, burst=1)


def test_open_limiter_storage_names_the_local_file(tmp_path: Path) -> None:
    default = open_limiter_storage("local", data_dir=tmp_path)
    assert isinstance(default, MmapLimiterStorage)
    assert (tmp_path / "limiter.state").is_file()
    chosen = open_limiter_storage(f"local://{tmp_path / 'elsewhere' / 'limits.state'}")
    assert (tmp_path / "elsewhere" / "limits.state").is_file()
    with pytest.raises(ConfigurationError, match="data directory"):
        open_limiter_storage("local")
    for storage in (default, chosen):
        asyncio.run(storage.close())


def test_the_slot_layout_is_what_the_docstring_says() -> None:
    assert limiter_mmap._HEADER.size == 64
    assert limiter_mmap._SLOT.size == 48
    assert limiter_mmap._SLOT_DTYPE.itemsize == 48
    assert limiter_mmap._SLOT_DTYPE.fields is not None
    assert limiter_mmap._SLOT_DTYPE.fields["expires"][1] == 40
