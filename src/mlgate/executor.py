"""Blocking model work on a bounded thread pool.

A slot is taken before work is submitted and given back only when the work really
ends — not when the caller stops waiting. So a request answered 504 still counts
against the model's concurrency until its batch finishes, and timed-out work can
never pile up unbounded threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["BoundedExecutor"]

T = TypeVar("T")


class BoundedExecutor:
    """``max_concurrency`` threads; ``acquire`` a slot, then ``submit`` exactly once per slot."""

    def __init__(self, max_concurrency: int, *, name: str) -> None:
        self.max_concurrency = max_concurrency
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix=f"mlgate-{name}")
        self._slots = asyncio.Semaphore(max_concurrency)
        self._busy = 0

    @property
    def busy(self) -> int:
        """Slots held by running (possibly abandoned) work."""
        return self._busy

    async def acquire(self) -> None:
        await self._slots.acquire()
        self._busy += 1

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the pool; the slot taken by :meth:`acquire` is released when it ends."""
        loop = asyncio.get_running_loop()
        cf: Future[T] = self._pool.submit(fn)
        cf.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return asyncio.wrap_future(cf, loop=loop)

    async def run(self, fn: Callable[[], T]) -> T:
        """Acquire a slot and run ``fn``; cancelling the caller does not free the slot early."""
        await self.acquire()
        return await asyncio.shield(self.submit(fn))

    def release_unused(self) -> None:
        """Give back a slot acquired but not used for :meth:`submit`."""
        self._release()

    def _release(self) -> None:
        self._busy -= 1
        self._slots.release()

    def shutdown(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
