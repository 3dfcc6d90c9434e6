"""The interpreter: run a parsed state machine against an input, calling tasks through an invoker.

The engine knows nothing of models, stores or HTTP: every Task ``Resource`` is handed to the
``invoke`` coroutine given to :class:`Interpreter` as a :class:`TaskCall`. The invoker returns
the task's result, raises :class:`TaskFailure` for a named error, or raises anything else
(→ ``States.TaskFailed``, with the exception's message as the cause).

Data flow per state, as Step Functions does it: ``InputPath`` → ``Parameters`` (``.$`` keys,
``$$`` context object, intrinsics) → the task → ``ResultSelector`` → ``ResultPath`` (into the
state's *raw* input; ``null`` discards the result) → ``OutputPath`` (which may read ``$$``).
Retry and Catch wrap everything from ``Parameters`` to ``ResultPath``; a catcher's
``ResultPath`` places the error output ``{"Error", "Cause"}`` (Cause only when there is one)
into the raw input and ``OutputPath`` is not applied. Bad ``InputPath``/``OutputPath``/
``ItemsPath``/Choice variables, and a ``.$`` field of ``Parameters``/``ResultSelector``/
``ItemSelector`` whose path names nothing, are ``States.Runtime`` errors, which nothing can
catch (AWS's recorded executions do so, although its docs list ``States.ParameterPathFailure``).
JSONata states (``Arguments``/``Output``/``Assign``) run as :class:`~mlgate.workflows.states.JsonataRunner`
describes; their failures are ``States.QueryEvaluationError``.

The context object is AWS's: ``Execution`` (``Id`` = the execution ARN, ``Input``, ``Name``,
``RoleArn``, ``StartTime``, ``RedriveCount``), ``StateMachine`` (``Id`` = its ARN, ``Name``),
``State`` (``EnteredTime``, ``Name``, ``RetryCount``) and, in ``ItemSelector``, ``Map.Item``
(``Index``, ``Value``); ARNs come from :mod:`mlgate.workflows.arns`.

Every step is reported to ``on_event`` as a :class:`HistoryEvent`, with event types named as
in AWS history: ``ExecutionStarted``, ``<Type>StateEntered`` / ``<Type>StateExited`` (no
Exited for a state that fails uncaught, nor for Fail states), ``TaskScheduled``,
``TaskStarted``, ``TaskSucceeded``, ``TaskFailed``, ``TaskTimedOut``, ``RetryScheduled``
(details ``error``, ``cause``, ``attempt``, ``retrier``, ``delay_seconds``),
``ParallelStateStarted/Succeeded/Failed``, ``ParallelBranchStarted/Succeeded/Failed/Aborted``
(``index``), ``MapStateStarted`` (``length``), ``MapStateSucceeded/Failed`` (``Parallel/MapStateFailed``
only when the failure is final, not before a retry, as AWS),
``MapIterationStarted/Succeeded/Failed/Aborted`` (``index``), and one of
``ExecutionSucceeded``, ``ExecutionFailed``, ``ExecutionTimedOut``, ``ExecutionAborted``.
Events from inside a branch or iteration carry ``details["scope"]``, e.g.
``"Validate-All[2]"`` or ``"Lookup.branches[0]"`` (``/``-joined when nested). Payloads in
details are the live values, shared, never copies: treat them as read-only.

No payload size cap is applied (AWS caps state data at 256 KiB; our payloads carry base64
images), so ``States.DataLimitExceeded`` never occurs. There are no heartbeats or task tokens
(``HeartbeatSeconds`` is accepted and ignored), so ``States.HeartbeatTimeout`` never occurs
either, nor ``States.ItemReaderFailure`` (no ItemReader). Task ``TimeoutSeconds`` is enforced
in real time; the execution's ``TimeoutSeconds`` both in real time and on the clock (a Wait
past the deadline ends the execution at the deadline, instantly with a :class:`FakeClock`).

Stopping: :meth:`Interpreter.stop` (or cancelling the task running :meth:`Interpreter.run`)
ends the execution as ``ABORTED``: ``ExecutionAborted`` is emitted and ``run`` *returns* the
ABORTED result rather than raising ``CancelledError``.

Example::

    async def invoke(call: TaskCall) -> Any:
        return {"echo": call.input}

    machine = parse_definition(definition)
    result = await Interpreter(machine, invoke=invoke).run({"s3_key": "moto.jpg"})
    result.status, result.output
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from mlgate.workflows import arns
from mlgate.workflows.clock import Clock, FakeClock, SystemClock
from mlgate.workflows.execution import (
    ExecutionResult,
    ExecutionStatus,
    HistoryEvent,
    MachineTimeout,
    TaskCall,
    TaskInvoker,
    iso_time,
)
from mlgate.workflows.failures import TIMEOUT, StatesError, TaskFailure
from mlgate.workflows.spec import StateMachine
from mlgate.workflows.states import StateRunner
from mlgate.workflows.values import copy_json

__all__ = [
    "Clock",
    "ExecutionResult",
    "FakeClock",
    "HistoryEvent",
    "Interpreter",
    "StatesError",
    "SystemClock",
    "TaskCall",
    "TaskFailure",
    "TaskInvoker",
]

log = logging.getLogger(__name__)


class Interpreter:
    """Runs one execution of a :class:`StateMachine` (create one interpreter per execution).

    ``rng`` drives retry jitter (``JitterStrategy: FULL``) and ``States.MathRandom``.

    ``execution_id`` is mlgate's id of the execution (what :class:`TaskCall` carries). The
    context object is shaped as AWS's: ``$$.Execution.Id`` is the execution's ARN
    (``execution_arn``, by default built by :mod:`mlgate.workflows.arns` from the state machine
    and execution names — or ``execution_id`` itself when that is already an ARN),
    ``$$.StateMachine.Id`` the state machine's ARN (``state_machine_id``, by default from
    ``state_machine_name``), and ``$$.Execution.RoleArn`` is ``role_arn``.
    """

    def __init__(
        self,
        machine: StateMachine,
        *,
        invoke: TaskInvoker,
        clock: Clock | None = None,
        on_event: Callable[[HistoryEvent], None] | None = None,
        execution_id: str = "",
        execution_name: str = "",
        state_machine_name: str = "",
        state_machine_id: str = "",
        execution_arn: str = "",
        role_arn: str = arns.ROLE_ARN,
        rng: random.Random | None = None,
    ) -> None:
        self.machine = machine
        self.invoke = invoke
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.rng = rng if rng is not None else random.Random()
        self.execution_id = execution_id
        self.execution_name = execution_name or execution_id
        self.state_machine_name = state_machine_name
        self.state_machine_id = state_machine_id or arns.state_machine_arn(state_machine_name)
        name = execution_name or execution_id
        if not execution_arn:
            is_arn = execution_id.startswith("arn:")
            execution_arn = execution_id if is_arn else arns.execution_arn(state_machine_name, name)
        self.execution_arn = execution_arn
        self.role_arn = role_arn
        self._on_event = on_event
        self._event_id = 0
        self._deadline: datetime | None = None
        self._stop_reason: tuple[str | None, str | None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self.execution_context: dict[str, Any] = {}
        self.machine_context: dict[str, Any] = {"Id": self.state_machine_id, "Name": state_machine_name}

    # -- events and time (used by the state runner) ------------------------------------------

    def emit(
        self, type_: str, state: str | None = None, details: dict[str, Any] | None = None, scope: str = ""
    ) -> None:
        """Report a history event to ``on_event`` (if any)."""
        if self._on_event is None:
            return
        self._event_id += 1
        body = details if details is not None else {}
        if scope:
            body["scope"] = scope
        self._on_event(HistoryEvent(self._event_id, type_, self.clock.now(), state, body))

    def context(self, state: str, entered: datetime, retry_count: int = 0) -> dict[str, Any]:
        """The ``$$`` context object for a state, as AWS shapes it (no ``Task.Token``: no callbacks)."""
        return {
            "Execution": self.execution_context,
            "StateMachine": self.machine_context,
            "State": {"Name": state, "EnteredTime": iso_time(entered), "RetryCount": retry_count},
        }

    def check_deadline(self) -> None:
        """Raise :class:`MachineTimeout` once the execution's ``TimeoutSeconds`` has passed."""
        if self._deadline is not None and self.clock.now() >= self._deadline:
            raise MachineTimeout

    async def sleep(self, seconds: float) -> None:
        """Sleep on the clock, but never past the execution's deadline."""
        if self._deadline is not None:
            remaining = (self._deadline - self.clock.now()).total_seconds()
            if seconds >= remaining:
                await self.clock.sleep(max(remaining, 0.0))
                raise MachineTimeout
        await self.clock.sleep(seconds)

    # -- running ----------------------------------------------------------------------------

    def stop(self, error: str | None = None, cause: str | None = None) -> None:
        """Abort the running execution; :meth:`run` then returns an ``ABORTED`` result."""
        self._stop_reason = (error, cause)
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def run(self, input: Any) -> ExecutionResult:
        """Run the execution to its end and return how it ended (never raises for state errors)."""
        self._task = asyncio.current_task()
        self._event_id = 0
        started = self.clock.now()
        timeout = self.machine.timeout_seconds
        self._deadline = started + timedelta(seconds=timeout) if timeout is not None else None
        data = copy_json(input)
        self.execution_context = {
            "Id": self.execution_arn,
            "Input": data,
            "Name": self.execution_name,
            "RoleArn": self.role_arn,
            "StartTime": iso_time(started),
            "RedriveCount": 0,
        }
        self.emit("ExecutionStarted", None, {"input": data})
        limit = asyncio.timeout(timeout)
        try:
            if self._stop_reason is not None:
                raise asyncio.CancelledError
            async with limit:
                output = await StateRunner(self).run_machine(self.machine, data, "")
        except StatesError as err:
            return self._end("FAILED", "ExecutionFailed", None, err.error, err.cause)
        except MachineTimeout:
            return self._timed_out(timeout)
        except TimeoutError:
            if not limit.expired():
                raise
            return self._timed_out(timeout)
        except asyncio.CancelledError:
            if self._task is not None:
                self._task.uncancel()
            error, cause = self._stop_reason or (None, None)
            return self._end("ABORTED", "ExecutionAborted", None, error, cause)
        except Exception as exc:  # a bug of ours must not leave the execution running forever
            log.exception("workflow execution %s crashed", self.execution_id)
            cause = f"internal error ({type(exc).__name__}); details in the server log"
            return self._end("FAILED", "ExecutionFailed", None, "States.Runtime", cause)
        self.emit("ExecutionSucceeded", None, {"output": output})
        return ExecutionResult("SUCCEEDED", output, None, None)

    def _timed_out(self, timeout: float | None) -> ExecutionResult:
        cause = f"The execution ran longer than its TimeoutSeconds ({timeout:g} s)" if timeout else None
        return self._end("TIMED_OUT", "ExecutionTimedOut", None, TIMEOUT, cause)

    def _end(
        self, status: ExecutionStatus, event: str, output: Any, error: str | None, cause: str | None
    ) -> ExecutionResult:
        self.emit(event, None, {"error": error, "cause": cause})
        return ExecutionResult(status, output, error, cause)
