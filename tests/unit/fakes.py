"""Test doubles for the batching, executor and dataplane unit tests.

Timing is controlled by :class:`threading.Event` gates inside the fakes, never by sleeps;
``SAFETY_S`` is only a safety net so a broken test fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

#: Upper bound for any wait in these tests; reaching it means the test failed.
SAFETY_S = 5.0


def doubled(batch: list[Any]) -> list[Any]:
    return [x * 2 for x in batch]


class FakePredict:
    """A batch predict function that records its batches, can be held on a gate, and counts concurrency.

    While ``gate`` is set (or absent) calls go straight through to ``fn``; while it is clear
    every call blocks inside the worker thread, holding its executor slot.
    """

    def __init__(
        self, fn: Callable[[list[Any]], list[Any]] = doubled, *, gate: threading.Event | None = None
    ) -> None:
        self.fn = fn
        self.gate = gate
        self.batches: list[list[Any]] = []
        self.running = 0
        self.max_running = 0
        self._cond = threading.Condition()

    def __call__(self, batch: list[Any]) -> list[Any]:
        with self._cond:
            self.batches.append(list(batch))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self._cond.notify_all()
        try:
            if self.gate is not None and not self.gate.wait(SAFETY_S):
                raise TimeoutError("the test never opened the gate")
            return self.fn(batch)
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify_all()

    @property
    def values(self) -> list[Any]:
        """Every value that reached the model, in call order."""
        return [v for batch in self.batches for v in batch]

    def _wait(self, predicate: Callable[[], bool]) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, SAFETY_S)

    async def started(self, calls: int) -> None:
        """Wait (without blocking the loop) until ``calls`` calls have entered the function."""
        if not await asyncio.to_thread(self._wait, lambda: len(self.batches) >= calls):
            raise AssertionError(f"expected {calls} calls, got {len(self.batches)}: {self.batches}")

    async def running_at_least(self, n: int) -> None:
        if not await asyncio.to_thread(self._wait, lambda: self.running >= n):
            raise AssertionError(f"expected {n} concurrent calls, got {self.running}")


async def wait_until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` on the event loop until true; fail after ``SAFETY_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SAFETY_S
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 20) -> None:
    """Let every ready task run a few times (to show that something does *not* happen)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
