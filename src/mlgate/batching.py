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
from dataclasses import dataclass, field
from typing import Any

from mlgate.errors import MlgateError, Overloaded, PredictionTimeout
from mlgate.executor import BoundedExecutor
from mlgate.types import BatchingConfig

__all__ = ["Batcher"]

PredictFn = Callable[[list[Any]], list[Any]]


@dataclass(slots=True)
class _Item:
    value: Any
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)


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

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._executor.busy

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect(), name="mlgate-batcher")

    async def stop(self) -> None:
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
        self._queue.append(_Item(value, future))
        self._wakeup.set()
        # A plain timer rather than asyncio.wait_for (which costs a task-like wrapper per
        # request): on expiry the item's future fails with PredictionTimeout, so a batch not
        # yet dispatched drops it and one already running keeps its slot until it ends.
        timer = loop.call_later(timeout, _expire, future, timeout)
        try:
            # Awaited directly: if this caller is cancelled (client gone), the future is
            # cancelled with it, which the collector and _deliver already treat as "skip this
            # item"; a batch already running keeps its slot until it really ends.
            return await future
        finally:
            timer.cancel()

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


def _expire(future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        future.set_exception(PredictionTimeout(f"prediction took longer than {timeout:g} s"))
