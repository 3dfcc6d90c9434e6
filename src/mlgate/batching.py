"""Adaptive per-model batching with a bounded queue.

Requests queue in front of the model. Whenever a worker slot is free the collector
takes everything waiting, up to ``max_batch_size``; a lone request waits at most
``max_wait_ms`` for company. So under light load a request runs alone at once, and
under heavy load batches grow by themselves while the model is busy. A full queue
answers :class:`Overloaded` (503 + Retry-After) instead of growing without bound.
If a batch fails, its items are retried one by one so one bad input fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mlgate.errors import MlgateError, Overloaded, PredictionTimeout
from mlgate.executor import BoundedExecutor
from mlgate.types import BatchingConfig

__all__ = ["Batcher"]

PredictFn = Callable[[list[Any]], list[Any]]


class _Item:
    __slots__ = ("enqueued", "future", "value")

    def __init__(self, value: Any, future: asyncio.Future[Any], enqueued: float) -> None:
        self.value = value
        self.future = future
        self.enqueued = enqueued


class Batcher:
    """Queue + collector for one model version; ``submit`` one decoded item, get its output."""

    def __init__(
        self,
        predict: PredictFn,
        config: BatchingConfig,
        *,
        name: str,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._predict = predict
        self._config = config
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._executor = BoundedExecutor(config.max_concurrency, name=name)
        self._task: asyncio.Task[None] | None = None
        self._mean_batch_s = 0.0
        # Timeouts: (deadline, future, timeout) in submission order, and one timer for the head.
        # Not a timer per request (call_later + cancel, measured in docs/benchmarks.md): with one
        # timeout per model, deadlines arrive in order and one timer serves them all.
        self._deadlines: deque[tuple[float, asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def free(self) -> int:
        """Items the queue takes before it answers :class:`Overloaded`."""
        return max(0, self._config.max_queue - len(self._queue))

    @property
    def in_flight(self) -> int:
        return self._executor.busy

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="mlgate-batcher")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(Overloaded("model is being unloaded", retry_after=1.0))
        self._executor.shutdown(wait=False)

    async def submit(self, value: Any, *, timeout: float) -> Any:
        """Queue one decoded item; raise Overloaded when full, PredictionTimeout after ``timeout`` s."""
        if len(self._queue) >= self._config.max_queue:
            raise Overloaded("model queue is full", retry_after=self._retry_after())
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        now = time.monotonic()
        self._queue.append(_Item(value, future, now))
        self._wakeup.set()
        # On expiry the item's future fails with PredictionTimeout, so a batch not yet dispatched
        # drops it and one already running keeps its slot until it ends.
        self._watch(loop, now + timeout, future, timeout)
        # Awaited directly: if this caller is cancelled (client gone), the future is cancelled
        # with it, which the collector and _deliver already treat as "skip this item"; a batch
        # already running keeps its slot until it really ends.
        return await future

    async def submit_all(self, values: list[Any], *, timeout: float) -> list[Any]:
        """Queue every item of ``values`` or none (:class:`Overloaded` when the queue has not room
        for all: a request is never partly queued); their outputs in order. When one fails, or
        the caller is cancelled, the items still queued are dropped (never run for nothing)."""
        if len(values) > self.free:
            raise Overloaded("model queue is full", retry_after=self._retry_after())
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[Any]] = []
        for value in values:
            future: asyncio.Future[Any] = loop.create_future()
            self._queue.append(_Item(value, future, now))
            self._watch(loop, now + timeout, future, timeout)
            futures.append(future)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for future in futures:  # the collector skips them; a batch already running ends
                future.cancel()
            raise

    def _watch(
        self, loop: asyncio.AbstractEventLoop, deadline: float, future: asyncio.Future[Any], timeout: float
    ) -> None:
        deadlines = self._deadlines
        if deadlines and deadline < deadlines[-1][0]:
            # Out of order (a shorter timeout than the items before it): a timer of its own.
            timer = loop.call_at(_loop_time(loop, deadline), _expire, future, timeout)
            future.add_done_callback(lambda _: timer.cancel())
            return
        deadlines.append((deadline, future, timeout))
        while deadlines[0][1].done():  # answered items leave from the front (the new one is not done)
            deadlines.popleft()
        if self._timer is None:
            self._timer = loop.call_at(_loop_time(loop, deadlines[0][0]), self._expire_due)

    def _expire_due(self) -> None:
        """Fail every item past its deadline, then wait for the next deadline still pending."""
        self._timer = None
        deadlines = self._deadlines
        now = time.monotonic()
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, future, timeout = deadlines.popleft()
            _expire(future, timeout)
        if deadlines:
            loop = deadlines[0][1].get_loop()
            self._timer = loop.call_at(_loop_time(loop, deadlines[0][0]), self._expire_due)

    def _retry_after(self) -> float:
        per_batch = max(self._mean_batch_s, 0.001)
        batches = len(self._queue) / self._config.max_batch_size / self._config.max_concurrency
        return float(max(1, round(per_batch * (batches + 1))))

    async def _collect(self) -> None:
        cfg = self._config
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._executor.acquire()
            if cfg.max_wait_ms > 0 and len(self._queue) < cfg.max_batch_size:
                await self._wait_for_company(cfg.max_wait_ms / 1000.0)
            batch: list[_Item] = []
            while self._queue and len(batch) < cfg.max_batch_size:
                item = self._queue.popleft()
                if not item.future.done():  # skip items whose caller timed out
                    batch.append(item)
            if not batch:
                self._executor.release_unused()
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            values = [i.value for i in batch]
            done = self._executor.submit(functools.partial(self._run, values))
            done.add_done_callback(functools.partial(self._deliver, batch))

    async def _wait_for_company(self, max_wait: float) -> None:
        deadline = self._queue[0].enqueued + max_wait if self._queue else time.monotonic() + max_wait
        while len(self._queue) < self._config.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _run(self, values: list[Any]) -> list[tuple[bool, Any]]:
        started = time.perf_counter()
        try:
            results = [(True, o) for o in self._checked_predict(values)]
        except Exception as exc:
            if len(values) == 1:
                results = [(False, exc)]
            else:
                results = [self._run_one(v) for v in values]
        elapsed = time.perf_counter() - started
        self._mean_batch_s = elapsed if self._mean_batch_s == 0 else 0.9 * self._mean_batch_s + 0.1 * elapsed
        return results

    def _checked_predict(self, values: list[Any]) -> list[Any]:
        outputs = self._predict(values)
        if len(outputs) != len(values):
            raise MlgateError(f"runtime returned {len(outputs)} outputs for {len(values)} inputs")
        return outputs

    def _run_one(self, value: Any) -> tuple[bool, Any]:
        # Checked too: a runtime that breaks the contract must not have its first output taken.
        try:
            return True, self._checked_predict([value])[0]
        except Exception as exc:
            return False, exc

    @staticmethod
    def _deliver(batch: list[_Item], fut: asyncio.Future[list[tuple[bool, Any]]]) -> None:
        # Cancelled only by stop() shutting the pool down before the batch started.
        exc = Overloaded("model is being unloaded", retry_after=1.0) if fut.cancelled() else fut.exception()
        for i, item in enumerate(batch):
            if item.future.done():
                continue
            if exc is not None:
                item.future.set_exception(exc)
                continue
            ok, value = fut.result()[i]
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)


def _loop_time(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the loop's clock (the same clock on uvloop and asyncio)."""
    return deadline - time.monotonic() + loop.time()


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(PredictionTimeout(f"prediction took longer than {timeout:g} s"))
