"""Error names of the States Language and the exceptions that carry them through the interpreter.

A state fails with an *error name* and an optional *cause*. Names starting with ``States.``
are the language's own; tasks report any other name by raising :class:`TaskFailure`.

Matching (``ErrorEquals`` of a retrier or catcher) follows Step Functions:

- ``States.ALL`` matches every error except ``States.Runtime`` and ``States.DataLimitExceeded``,
  which can be neither retried nor caught and always fail the execution;
- ``States.TaskFailed`` matches every error except ``States.Timeout`` (and those two);
- ``States.BranchFailed`` matches any error that came out of a Parallel branch or Map iteration
  (the error keeps its own name, so ``CustomError`` raised in a branch is also caught by name).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "ALL",
    "BRANCH_FAILED",
    "DATA_LIMIT_EXCEEDED",
    "EXCEED_TOLERATED_FAILURE_THRESHOLD",
    "HEARTBEAT_TIMEOUT",
    "INTRINSIC_FAILURE",
    "ITEM_READER_FAILURE",
    "NO_CHOICE_MATCHED",
    "PARAMETER_PATH_FAILURE",
    "QUERY_EVALUATION_ERROR",
    "RESULT_PATH_MATCH_FAILURE",
    "RUNTIME",
    "TASK_FAILED",
    "TIMEOUT",
    "StatesError",
    "TaskFailure",
    "error_matches",
]

ALL = "States.ALL"
BRANCH_FAILED = "States.BranchFailed"
DATA_LIMIT_EXCEEDED = "States.DataLimitExceeded"
EXCEED_TOLERATED_FAILURE_THRESHOLD = "States.ExceedToleratedFailureThreshold"
HEARTBEAT_TIMEOUT = "States.HeartbeatTimeout"
INTRINSIC_FAILURE = "States.IntrinsicFailure"
ITEM_READER_FAILURE = "States.ItemReaderFailure"
NO_CHOICE_MATCHED = "States.NoChoiceMatched"
PARAMETER_PATH_FAILURE = "States.ParameterPathFailure"
QUERY_EVALUATION_ERROR = "States.QueryEvaluationError"
RESULT_PATH_MATCH_FAILURE = "States.ResultPathMatchFailure"
RUNTIME = "States.Runtime"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"

#: errors no retrier or catcher can handle
_UNHANDLED = frozenset({RUNTIME, DATA_LIMIT_EXCEEDED})


class TaskFailure(Exception):
    """Raised by a task invoker to fail its Task state with a named error.

    Example::

        raise TaskFailure("THRESHOLD_CONFIDENCE_NOT_MET", "best probability 0.41 < 0.75")
    """

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class StatesError(Exception):
    """A state failed with ``error`` (an error name) and ``cause``; handled by Retry/Catch."""

    def __init__(self, error: str | None, cause: str | None = None, *, from_branch: bool = False) -> None:
        super().__init__(f"{error}: {cause}" if cause else str(error))
        self.error = error
        self.cause = cause or None
        self.from_branch = from_branch

    def output(self) -> dict[str, Any]:
        """The *error output* a catcher passes on: ``{"Error": ..., "Cause": ...}`` (Cause if any)."""
        body: dict[str, Any] = {"Error": self.error}
        if self.cause is not None:
            body["Cause"] = self.cause
        return body

    def in_branch(self) -> StatesError:
        """The same error, as seen by the Parallel or Map state whose branch failed."""
        return StatesError(self.error, self.cause, from_branch=True)


def error_matches(error_equals: Iterable[str], error: StatesError) -> bool:
    """True if a retrier's or catcher's ``ErrorEquals`` handles ``error``."""
    if error.error in _UNHANDLED:
        return False
    for name in error_equals:
        if name == ALL or name == error.error:
            return True
        if name == TASK_FAILED and error.error != TIMEOUT:
            return True
        if name == BRANCH_FAILED and error.from_branch:
            return True
    return False
