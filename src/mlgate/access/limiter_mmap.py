"""Limiter state in a memory-mapped file: shared by every server process on this machine, exact.

``mlgate serve --workers N`` needs one bucket and one quota counter per key across its N
processes. In the database each take is a transaction and a thread hop (even group-committed;
measured in docs/benchmarks.md); in Redis a network round trip. Here a take is a few
``struct`` reads and writes in a file that every process maps into memory, under a lock:
about as cheap as the per-process dict of :mod:`mlgate.access.limiter_memory`, and exact
across processes, because the whole read-modify-write holds

- a :class:`threading.Lock` (the threads of one process), and
- an exclusive ``flock`` on a lock file beside the state file (the processes). The kernel
  releases it when its holder dies, so a ``kill -9`` never leaves the limiter locked.

The state outlives the processes: a restart (or a crash) keeps every bucket and quota
count — unlike ``memory://``, a restart does not hand out a fresh month of quota. What is
written is in the kernel's page cache at once, so it survives any process crash; a power
loss may lose the last seconds, as the operating system decides when to write it back.
It is one machine's state: servers on several machines share the database or Redis.

**Layout.** A 64-byte header (magic, version, slot count, used and live counts, a "moved"
flag), then a power-of-two table of 48-byte slots, open addressing with linear probing:
``state`` (empty, live, deleted), ``kind`` (bucket, counter), the key's 128-bit BLAKE2b
digest (personalised by kind, so a bucket and a counter may share a key), and three doubles
— a bucket's tokens, stamp and the moment it is full again; a counter's count, window end
and window end. Entries that no longer matter (a bucket full
again, a counter whose window ended: missing means exactly that) are deleted by a sweep when
the table fills; when live entries still fill more than half of it, the table is rebuilt at
twice the size into a new file that replaces the old one, whose header is then marked
"moved" so every process maps the new file on its next operation. A slot is written values
first and its state byte last.

The arithmetic is :func:`~mlgate.access.limiter_storage.take_tokens`, as in every storage,
and the contract suite (``tests/contract/test_limiter_contract.py``) runs here too, plus a
test with two processes on one file.

Example::

    storage = MmapLimiterStorage(Path(".mlgate/limiter.state"))
    decision = await storage.take("bucket:abcd1234:*", rate=10, burst=10)
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mlgate.access.limiter_storage import (
    Decision,
    InProcessStorage,
    QuotaDecision,
    check_bucket_args,
    check_quota_args,
    take_tokens,
    whole_tokens,
)
from mlgate.errors import ConfigurationError

__all__ = ["MmapLimiterStorage"]

_MAGIC = b"MLGLIMv1"
_HEADER = struct.Struct("<8sIIII B 39x")  # magic, version, capacity, used, live, moved
_HEADER_SIZE = _HEADER.size  # 64
_VERSION = 1
_SLOT = struct.Struct("<BB6x16sddd")  # state, kind, digest, a, b, expires
_SLOT_SIZE = _SLOT.size  # 48
_VALUES = struct.Struct("<ddd")
_SLOT_DTYPE = np.dtype(
    [
        ("state", "u1"),
        ("kind", "u1"),
        ("pad", "V6"),
        ("digest", "V16"),
        ("a", "<f8"),
        ("b", "<f8"),
        ("expires", "<f8"),
    ]
)
_VALUES_AT = 24  # offset of the three doubles in a slot
_EMPTY, _LIVE, _DELETED = 0, 1, 2
_BUCKET, _COUNTER = 1, 2
_PERSON = {_BUCKET: b"mlgate-bucket", _COUNTER: b"mlgate-counter"}
_MIN_CAPACITY = 1024
_MAX_CAPACITY = 1 << 26  # 3 GiB of slots: far past any real number of keys
_USED_OFFSET = 16  # the header's "used" and "live" fields (two uint32)
_COUNTS = struct.Struct("<II")
_MOVED_OFFSET = 24
#: Digests of recently used keys (not one BLAKE2b per call); cleared when this large.
_DIGEST_CACHE_MAX = 65_536


class _Table:
    """One mapping of the state file (replaced when another process moves the table)."""

    def __init__(self, path: Path, capacity: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                size = _HEADER_SIZE + capacity * _SLOT_SIZE
                os.ftruncate(fd, size)  # a sparse file: pages are allocated as slots are used
            self.mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if self.mm[:8] == bytes(8):  # new (or created by a process that died before this line)
            _HEADER.pack_into(self.mm, 0, _MAGIC, _VERSION, capacity, 0, 0, 0)
        magic, version, cap, _, _, _ = _HEADER.unpack_from(self.mm, 0)
        if (
            magic != _MAGIC
            or version != _VERSION
            or cap & (cap - 1)
            or size < _HEADER_SIZE + cap * _SLOT_SIZE
        ):
            self.mm.close()
            raise ConfigurationError(f"{path} is not an mlgate limiter state file (version {_VERSION})")
        self.capacity: int = cap
        self.mask = cap - 1

    def counts(self) -> tuple[int, int]:
        used, live = _COUNTS.unpack_from(self.mm, _USED_OFFSET)
        return used, live

    def set_counts(self, used: int, live: int) -> None:
        _COUNTS.pack_into(self.mm, _USED_OFFSET, used, live)

    def find(self, digest: bytes) -> tuple[int, bool]:
        """``(slot, found)``: the live slot holding ``digest``, else the slot to insert it in."""
        mm = self.mm
        mask = self.mask
        index = int.from_bytes(digest[:8], "little") & mask
        free = -1
        for _ in range(self.capacity):
            offset = _HEADER_SIZE + index * _SLOT_SIZE
            state = mm[offset]
            if state == _EMPTY:
                return (index if free < 0 else free), False
            if state == _LIVE:
                if mm[offset + 8 : offset + 24] == digest:
                    return index, True
            elif free < 0:
                free = index  # a deleted slot: reusable, but the key may still be further on
            index = (index + 1) & mask
        return free, False

    def read(self, index: int) -> tuple[float, float, float]:
        values: tuple[float, float, float] = _VALUES.unpack_from(
            self.mm, _HEADER_SIZE + index * _SLOT_SIZE + 24
        )
        return values

    def write(self, index: int, a: float, b: float, expires: float) -> None:
        _VALUES.pack_into(self.mm, _HEADER_SIZE + index * _SLOT_SIZE + _VALUES_AT, a, b, expires)

    def insert(self, index: int, kind: int, digest: bytes, a: float, b: float, expires: float) -> None:
        offset = _HEADER_SIZE + index * _SLOT_SIZE
        reused = self.mm[offset] == _DELETED
        _SLOT.pack_into(self.mm, offset, _EMPTY, kind, digest, a, b, expires)
        self.mm[offset] = _LIVE  # last: a crash before it leaves the slot as it was
        used, live = self.counts()
        self.set_counts(used if reused else used + 1, live + 1)

    def delete(self, index: int) -> None:
        offset = _HEADER_SIZE + index * _SLOT_SIZE
        if self.mm[offset] == _LIVE:
            self.mm[offset] = _DELETED
            used, live = self.counts()
            self.set_counts(used, live - 1)

    def live_entries(self) -> list[tuple[int, bytes, float, float, float]]:
        slots = np.frombuffer(self.mm, dtype=_SLOT_DTYPE, count=self.capacity, offset=_HEADER_SIZE)
        try:
            live = np.flatnonzero(slots["state"] == _LIVE)
            return [_SLOT.unpack_from(self.mm, _HEADER_SIZE + int(i) * _SLOT_SIZE)[1:] for i in live]
        finally:
            del slots  # no view may outlive the mapping

    def sweep(self, now: float) -> None:
        """Delete what no longer matters: buckets full again, counters whose window ended.

        Vectorised over the whole table (a million slots in milliseconds), as it runs under the
        lock every process waits on."""
        slots = np.frombuffer(self.mm, dtype=_SLOT_DTYPE, count=self.capacity, offset=_HEADER_SIZE)
        try:
            stale = (slots["state"] == _LIVE) & (slots["expires"] <= now)
            deleted = int(np.count_nonzero(stale))
            if deleted:
                slots["state"][stale] = _DELETED
        finally:
            del slots
        if deleted:
            used, live = self.counts()
            self.set_counts(used, live - deleted)

    def close(self) -> None:
        self.mm.close()


class MmapLimiterStorage(InProcessStorage):
    """Token buckets and quota counters in ``path`` (a state file) and ``path.lock`` beside it."""

    def __init__(self, path: Path, *, capacity: int = _MIN_CAPACITY) -> None:
        if capacity < _MIN_CAPACITY or capacity & (capacity - 1):
            raise ConfigurationError(f"limiter capacity must be a power of two >= {_MIN_CAPACITY}")
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._initial = capacity
        self._lock = threading.Lock()
        self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._digests: dict[int, dict[str, bytes]] = {_BUCKET: {}, _COUNTER: {}}
        self._table: _Table | None = None
        try:
            with self._locked():
                pass  # creates (or checks) the state file now, so a bad file fails at start
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    @property
    def _lock_path(self) -> Path:
        return self._path.with_name(self._path.name + ".lock")

    # -- the LimiterStorage protocol ----------------------------------------------------------

    async def reset(self, key: str) -> None:
        with self._locked() as table:
            for kind in (_BUCKET, _COUNTER):
                index, found = table.find(self._digest(key, kind))
                if found:
                    table.delete(index)

    async def close(self) -> None:
        with self._lock:
            if self._table is not None:
                self._table.close()
                self._table = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # -- synchronous operations (the gate calls these directly: they never wait on I/O) --------

    def take_sync(
        self, key: str, *, rate: float, burst: int, cost: int = 1, now: float | None = None
    ) -> Decision:
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        digest = self._digest(key, _BUCKET)
        with self._locked():
            return self._take(digest, rate, burst, cost, t)

    def count_sync(
        self, key: str, *, limit: int, window_end: float, cost: int = 1, now: float | None = None
    ) -> QuotaDecision:
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        digest = self._digest(key, _COUNTER)
        with self._locked():
            return self._count(digest, limit, window_end, cost, t)

    def take_then_count_sync(
        self,
        bucket_key: str,
        quota_key: str,
        *,
        rate: float,
        burst: int,
        limit: int,
        window_end: float,
        cost: int = 1,
        now: float | None = None,
    ) -> tuple[Decision, QuotaDecision | None]:
        """:meth:`take`, then :meth:`count` only if the bucket allowed it, under one lock."""
        check_bucket_args(rate, burst, cost)
        t = time.time() if now is None else now
        check_quota_args(limit, window_end, cost, t)
        bucket = self._digest(bucket_key, _BUCKET)
        counter = self._digest(quota_key, _COUNTER)
        # The gate's call, once per metered request: the lock taken by hand (a generator-based
        # context manager costs more than the work under it).
        self._acquire()
        try:
            decision = self._take(bucket, rate, burst, cost, t)
            if not decision.allowed:
                return decision, None
            return decision, self._count(counter, limit, window_end, cost, t)
        finally:
            self._release()

    def refund_sync(
        self,
        bucket_key: str | None,
        quota_key: str | None,
        *,
        rate: float,
        burst: int,
        window_end: float,
        cost: int,
    ) -> None:
        bucket = self._digest(bucket_key, _BUCKET) if bucket_key is not None else None
        counter = self._digest(quota_key, _COUNTER) if quota_key is not None else None
        with self._locked() as table:
            if bucket is not None:
                index, found = table.find(bucket)
                if found:
                    tokens, stamp, _ = table.read(index)
                    tokens = min(float(burst), tokens + cost)
                    table.write(index, tokens, stamp, stamp + (burst - tokens) / rate)
            if counter is not None:
                index, found = table.find(counter)
                if found:
                    count, ends, _ = table.read(index)
                    if ends == window_end:
                        table.write(index, float(max(0, int(count) - cost)), ends, ends)

    def __len__(self) -> int:
        """Live buckets and counters (for tests and metrics)."""
        with self._locked() as table:
            return table.counts()[1]

    # -- under the lock ---------------------------------------------------------------------

    def _take(self, digest: bytes, rate: float, burst: int, cost: int, now: float) -> Decision:
        table = self._current()
        index, found = table.find(digest)
        if found:
            tokens, stamp, _ = table.read(index)
        else:
            tokens, stamp = float(burst), now  # a new bucket starts full
        allowed, tokens, stamp, retry_after = take_tokens(
            tokens, stamp, now=now, rate=rate, burst=burst, cost=cost
        )
        if allowed:
            full_at = stamp + (burst - tokens) / rate
            if found:
                table.write(index, tokens, stamp, full_at)
            else:
                self._insert(table, index, _BUCKET, digest, tokens, stamp, full_at, now)
        return Decision(allowed, burst, whole_tokens(tokens), retry_after)

    def _count(self, digest: bytes, limit: int, window_end: float, cost: int, now: float) -> QuotaDecision:
        table = self._current()
        index, found = table.find(digest)
        used, ends = 0, window_end
        if found:
            count, stored_end, _ = table.read(index)
            if not (stored_end <= now or stored_end < window_end):  # else: the stored window is over
                used, ends = int(count), stored_end
        allowed = used + cost <= limit
        if allowed:
            used += cost
            if found:
                table.write(index, float(used), ends, ends)
            else:
                self._insert(table, index, _COUNTER, digest, float(used), ends, ends, now)
        return QuotaDecision(allowed, limit, limit - used, ends)

    def _insert(
        self,
        table: _Table,
        index: int,
        kind: int,
        digest: bytes,
        a: float,
        b: float,
        expires: float,
        now: float,
    ) -> None:
        used, _ = table.counts()
        if (used + 1) * 10 > table.capacity * 7:  # past 70 %: sweep, and grow if still crowded
            table = self._make_room(table, now)
            index, _ = table.find(digest)
        table.insert(index, kind, digest, a, b, expires)

    def _make_room(self, table: _Table, now: float) -> _Table:
        table.sweep(now)
        used, live = table.counts()
        capacity = table.capacity
        if live * 2 > capacity:
            capacity *= 2
            if capacity > _MAX_CAPACITY:
                raise ConfigurationError("the limiter state file is full (more than 33 million live keys)")
        elif used * 10 <= capacity * 7:
            return table  # the sweep freed enough
        # Rebuild without deleted slots (and larger when needed) into a new file, then swap it in.
        fresh = self._path.with_name(self._path.name + ".new")
        fresh.unlink(missing_ok=True)
        new = _Table(fresh, capacity)
        for kind, digest, a, b, expires in table.live_entries():
            index, _ = new.find(digest)
            new.insert(index, kind, digest, a, b, expires)
        new.mm.flush()
        os.replace(fresh, self._path)
        table.mm[_MOVED_OFFSET] = 1  # other processes: map the new file
        table.close()
        self._table = new
        return new

    def _current(self) -> _Table:
        table = self._table
        assert table is not None, "only under _locked()"
        return table

    @contextmanager
    def _locked(self) -> Iterator[_Table]:
        table = self._acquire()
        try:
            yield table
        finally:
            self._release()

    def _acquire(self) -> _Table:
        """Take the thread lock, then the file lock; map the table anew if another process moved it."""
        self._lock.acquire()
        try:
            if self._lock_fd < 0:
                raise ConfigurationError("the limiter storage is closed")
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                table = self._table
                if table is None or table.mm[_MOVED_OFFSET]:
                    if table is not None:
                        table.close()
                    table = self._table = _Table(self._path, self._initial)
            except BaseException:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                raise
        except BaseException:
            self._lock.release()
            raise
        return table

    def _release(self) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._lock.release()

    def _digest(self, key: str, kind: int) -> bytes:
        """The key's 128-bit BLAKE2b digest, salted by kind (a bucket and a counter may share a key)."""
        cache = self._digests[kind]
        digest = cache.get(key)
        if digest is None:
            if len(cache) >= _DIGEST_CACHE_MAX:
                cache.clear()
            digest = cache[key] = hashlib.blake2b(key.encode(), digest_size=16, person=_PERSON[kind]).digest()
        return digest
