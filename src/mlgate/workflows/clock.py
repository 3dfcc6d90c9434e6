"""Time for the interpreter: Wait states, retry back-off and timestamps go through a :class:`Clock`.

:class:`SystemClock` is real time. :class:`FakeClock` is for tests: ``sleep`` returns at once,
moves ``now()`` forward and records how long it was asked to sleep, so a retry schedule or a
one-hour Wait is asserted exactly and instantly.

Task ``TimeoutSeconds`` is enforced in real (event-loop) time whatever the clock, because a
task's work runs in real time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the interpreter needs of time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """Real time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock for tests: ``sleep`` advances ``now()`` instantly and is recorded in ``sleeps``.

    Example::

        clock = FakeClock()
        await clock.sleep(3)
        clock.sleeps        # -> [3]
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start if start is not None else datetime(2024, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep."""
        self._now += timedelta(seconds=seconds)
