"""The plain data the interpreter exchanges with its callers: task calls, history events, results.

Re-exported by :mod:`mlgate.workflows.engine`, which is where callers should import them from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "ExecutionResult",
    "ExecutionStatus",
    "HistoryEvent",
    "MachineTimeout",
    "TaskCall",
    "TaskInvoker",
    "iso_time",
]

ExecutionStatus = Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"]


@dataclass(frozen=True)
class TaskCall:
    """What a task invoker receives: the resource, its input and the ``$$`` context object."""

    resource: str
    input: Any
    state_name: str
    execution_id: str
    context: Mapping[str, Any] = field(repr=False)


TaskInvoker = Callable[[TaskCall], Awaitable[Any]]


@dataclass(frozen=True)
class HistoryEvent:
    """One entry of an execution's history (``id`` counts from 1 in emission order)."""

    id: int
    type: str
    timestamp: datetime
    state: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class ExecutionResult:
    """How an execution ended: ``output`` when SUCCEEDED, ``error``/``cause`` otherwise."""

    status: ExecutionStatus
    output: Any
    error: str | None
    cause: str | None


class MachineTimeout(Exception):
    """The execution's ``TimeoutSeconds`` ran out (not catchable by states)."""


def iso_time(moment: datetime) -> str:
    """``2019-03-26T20:14:13.192Z``: the timestamp format of the context object."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
