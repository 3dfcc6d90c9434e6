"""Helpers for the workflow tests: run a definition against fake async tasks and a fake clock."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlgate.workflows.engine import ExecutionResult, FakeClock, HistoryEvent, Interpreter, TaskCall
from mlgate.workflows.spec import parse_definition


class Tasks:
    """A fake task invoker keyed by resource.

    A handler is a value (returned), an exception (raised), a callable of the task input (sync or
    async; its result returned), or a list of those (one per call, the last one repeating).
    Every call is recorded in ``calls``.
    """

    def __init__(self, handlers: dict[str, Any] | None = None) -> None:
        self.handlers: dict[str, Any] = dict(handlers or {})
        self.calls: list[TaskCall] = []

    def on(self, resource: str, handler: Any) -> Tasks:
        self.handlers[resource] = handler
        return self

    async def __call__(self, call: TaskCall) -> Any:
        self.calls.append(call)
        handler = self.handlers.get(call.resource, _echo)
        if isinstance(handler, list):
            index = sum(1 for c in self.calls if c.resource == call.resource) - 1
            handler = handler[min(index, len(handler) - 1)]
        if isinstance(handler, BaseException):
            raise handler
        if callable(handler):
            result = handler(call.input)
            return await result if inspect.isawaitable(result) else result
        return handler

    def inputs(self, resource: str) -> list[Any]:
        return [c.input for c in self.calls if c.resource == resource]


def _echo(value: Any) -> Any:
    return value


@dataclass
class Run:
    """An execution's result, its history and the fake clock it ran on."""

    result: ExecutionResult
    events: list[HistoryEvent]
    clock: FakeClock
    tasks: Tasks = field(repr=False)

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def output(self) -> Any:
        return self.result.output

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def cause(self) -> str | None:
        return self.result.cause

    def types(self) -> list[str]:
        return [event.type for event in self.events]

    def of_type(self, kind: str) -> list[HistoryEvent]:
        return [event for event in self.events if event.type == kind]


def execute(
    definition: dict[str, Any] | str,
    input: Any = None,
    *,
    tasks: Tasks | None = None,
    clock: FakeClock | None = None,
    start: datetime | None = None,
    **options: Any,
) -> Run:
    """Parse ``definition`` and run it to the end with a :class:`FakeClock`."""
    machine = parse_definition(definition)
    tasks = tasks if tasks is not None else Tasks()
    clock = clock if clock is not None else FakeClock(start)
    events: list[HistoryEvent] = []
    interpreter = Interpreter(machine, invoke=tasks, clock=clock, on_event=events.append, **options)
    result = asyncio.run(interpreter.run({} if input is None else input))
    return Run(result, events, clock, tasks)


def machine(states: dict[str, Any], start: str | None = None, **top: Any) -> dict[str, Any]:
    """A definition from its states (StartAt defaults to the first state)."""
    return {"StartAt": start or next(iter(states)), "States": states, **top}


def single(state: dict[str, Any], name: str = "S") -> dict[str, Any]:
    """A definition of one terminal state."""
    body = dict(state)
    if body.get("Type") not in ("Choice", "Succeed", "Fail") and "Next" not in body:
        body.setdefault("End", True)
    return machine({name: body})


def task(resource: str = "fn", **fields: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": resource, **fields}


def returning(value: Any) -> Callable[[Any], Any]:
    return lambda _input: value
