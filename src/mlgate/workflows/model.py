"""The compiled form of a state machine: frozen dataclasses built by :mod:`mlgate.workflows.spec`.

Paths, payload templates and choice rules are already compiled; nothing here parses. Import
these names from :mod:`mlgate.workflows.spec`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mlgate.workflows.choice import ChoiceRule
from mlgate.workflows.jsonata import JsonataFields
from mlgate.workflows.paths import ROOT, JsonPath
from mlgate.workflows.template import Expression, Template

__all__ = [
    "Catcher",
    "ChoiceState",
    "FailState",
    "MapState",
    "ParallelState",
    "PassState",
    "Retrier",
    "State",
    "StateMachine",
    "SucceedState",
    "TaskState",
    "WaitState",
]


@dataclass(frozen=True, slots=True)
class Retrier:
    """One element of ``Retry``."""

    error_equals: tuple[str, ...]
    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: float | None = None
    jitter: bool = False

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1-based), before jitter."""
        delay = self.interval_seconds * self.backoff_rate ** (retry - 1)
        return min(delay, self.max_delay_seconds) if self.max_delay_seconds is not None else delay


@dataclass(frozen=True, slots=True)
class Catcher:
    """One element of ``Catch``; ``result_path`` None discards the error output."""

    error_equals: tuple[str, ...]
    next: str
    result_path: JsonPath | None = ROOT
    #: a JSONata state's catcher: its Output and Assign
    ja: JsonataFields | None = None


@dataclass(frozen=True, kw_only=True)
class State:
    """Fields every state has. ``input_path``/``output_path`` None mean ``null`` (an empty object)."""

    name: str
    type: str
    comment: str = ""
    next: str | None = None
    end: bool = False
    input_path: JsonPath | None = ROOT
    output_path: JsonPath | None = ROOT
    #: set for a ``QueryLanguage: "JSONata"`` state (whose JSONPath fields are then unused)
    ja: JsonataFields | None = None

    def transitions(self) -> list[str]:
        """Every state this one can go to."""
        return [self.next] if self.next else []


@dataclass(frozen=True, kw_only=True)
class _Resulting(State):
    """States that produce a result: ResultSelector, ResultPath, Retry, Catch."""

    parameters: Template | None = None
    result_selector: Template | None = None
    result_path: JsonPath | None = ROOT
    retry: tuple[Retrier, ...] = ()
    catch: tuple[Catcher, ...] = ()

    def transitions(self) -> list[str]:
        return [*super().transitions(), *(catcher.next for catcher in self.catch)]


@dataclass(frozen=True, kw_only=True)
class PassState(State):
    parameters: Template | None = None
    has_result: bool = False
    result: Any = None
    result_path: JsonPath | None = ROOT


@dataclass(frozen=True, kw_only=True)
class TaskState(_Resulting):
    resource: str = ""
    timeout_seconds: float | None = None
    timeout_seconds_path: JsonPath | None = None


@dataclass(frozen=True, kw_only=True)
class ChoiceState(State):
    choices: tuple[ChoiceRule, ...] = ()
    default: str | None = None

    def transitions(self) -> list[str]:
        rules = [rule.next for rule in self.choices]
        rules += [rule.next for rule in self.ja.rules] if self.ja is not None else []
        return rules + ([self.default] if self.default else [])


@dataclass(frozen=True, kw_only=True)
class WaitState(State):
    seconds: float | None = None
    timestamp: datetime | None = None
    seconds_path: JsonPath | None = None
    timestamp_path: JsonPath | None = None


@dataclass(frozen=True, kw_only=True)
class SucceedState(State):
    pass


@dataclass(frozen=True, kw_only=True)
class FailState(State):
    error: str | None = None
    cause: str | None = None
    error_path: Expression | None = None
    cause_path: Expression | None = None


@dataclass(frozen=True, kw_only=True)
class ParallelState(_Resulting):
    branches: tuple[StateMachine, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MapState(_Resulting):
    """``parameters`` holds ``ItemSelector`` (or the legacy ``Parameters``)."""

    processor: StateMachine | None = None
    items_path: JsonPath = ROOT
    max_concurrency: int = 0
    max_concurrency_path: JsonPath | None = None


@dataclass(frozen=True)
class StateMachine:
    """A validated definition (also used for Parallel branches and Map processors)."""

    start_at: str
    states: Mapping[str, State]
    timeout_seconds: float | None
    comment: str
    raw: dict[str, Any] = field(repr=False, compare=False)

    def task_resources(self) -> set[str]:
        """Every Task ``Resource``, including inside Parallel branches and Map processors."""
        found: set[str] = set()
        for state in self.states.values():
            if isinstance(state, TaskState):
                found.add(state.resource)
            elif isinstance(state, ParallelState):
                for branch in state.branches:
                    found |= branch.task_resources()
            elif isinstance(state, MapState) and state.processor is not None:
                found |= state.processor.task_resources()
        return found
