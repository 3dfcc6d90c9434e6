"""Graceful drain: on SIGTERM, readiness answers 503 first; the listener closes later.

uvicorn, on SIGTERM or SIGINT, stops accepting connections at once and then waits for
the requests in flight (up to ``timeout_graceful_shutdown``). A load balancer polling
readiness would only notice when connections start failing. So the first signal only
marks the process as draining (``/readyz`` answers 503, ``/v2/health/ready`` 400) and
hands the signal to uvicorn's own handler ``shutdown_delay_s`` seconds later; requests
keep being served meanwhile. A second signal during the delay is passed on at once (and
a third Ctrl-C still forces uvicorn to quit).

The signal handler only sets flags; a small task on the event loop passes the signal on
when the delay is over, so nothing runs loop code from inside a signal handler. Each
process installs its own handlers in its lifespan, so with ``--workers N`` every worker
drains when the supervisor forwards SIGTERM to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["Drain"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_TICK_S = 0.05


class Drain:
    """Wraps the current SIGTERM/SIGINT handlers (uvicorn's) while the app runs.

    ``on_drain`` is called once, from the signal handler, when the first signal arrives.
    """

    def __init__(self, delay: float, *, on_drain: Callable[[], None]) -> None:
        self.delay = delay
        self.draining = False
        self._on_drain = on_drain
        self._previous: dict[int, Any] = {}
        self._pending: tuple[int, float] | None = None  # (signal, when to pass it on)
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Take over SIGTERM/SIGINT (main thread only; elsewhere, e.g. under a test client, a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, self._handle)
        if self._previous and self.delay > 0:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="mlgate-drain")

    async def uninstall(self) -> None:
        """Give the signals back to their previous handlers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = not self.draining
        if first:
            self.draining = True
            self._on_drain()
        if first and self.delay > 0 and self._task is not None:
            self._pending = (signum, time.monotonic() + self.delay)
            return
        self._pending = None
        self._previous[signum](signum, frame)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_TICK_S)
            pending = self._pending
            if pending is not None and time.monotonic() >= pending[1]:
                self._pending = None
                self._previous[pending[0]](pending[0], None)
