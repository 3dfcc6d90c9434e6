"""How each state type runs: the data flow, Retry/Catch, Parallel branches and Map iterations.

Used by :class:`mlgate.workflows.engine.Interpreter` (the engine owns events, time and the
execution's context; this module owns the semantics of the states). See the engine's
docstring for the data flow and the history events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from mlgate.workflows.execution import TaskCall
from mlgate.workflows.failures import (
    DATA_LIMIT_EXCEEDED,
    INTRINSIC_FAILURE,
    NO_CHOICE_MATCHED,
    QUERY_EVALUATION_ERROR,
    RESULT_PATH_MATCH_FAILURE,
    RUNTIME,
    TASK_FAILED,
    TIMEOUT,
    StatesError,
    TaskFailure,
    error_matches,
)
from mlgate.workflows.intrinsics import IntrinsicError
from mlgate.workflows.jsonata import JsonataError, JsonataFields, JsonataRule, JsonataValue, json_size_within
from mlgate.workflows.model import (
    ChoiceState,
    FailState,
    MapState,
    ParallelState,
    PassState,
    State,
    StateMachine,
    SucceedState,
    TaskState,
    WaitState,
)
from mlgate.workflows.paths import JsonPath, PathNotFound
from mlgate.workflows.template import Expression, Template, evaluate_expression
from mlgate.workflows.values import copy_json, is_number, parse_timestamp, preview, to_json_text

if TYPE_CHECKING:
    from mlgate.workflows.engine import Interpreter

#: the largest value a variable may hold (AWS's limit: 256 KiB per variable)
MAX_VARIABLE_BYTES = 256 * 1024
#: the most all of one ``Assign`` field's values (a Choice rule's with the state's) may hold in all
MAX_ASSIGN_BYTES = 256 * 1024
#: the most items a JSONata Map's ``Items`` may hold (the history's 25,000 events could not record more)
MAX_MAP_ITEMS = 25_000

#: the variables (``Assign``) of the running scope: the execution, a branch or an iteration
_VARIABLES: ContextVar[dict[str, Any] | None] = ContextVar("mlgate_workflow_variables", default=None)

__all__ = ["JsonataRunner", "StateRunner", "gather_limited"]

_Step = tuple[Any, str | None]  # (output, next state or None at the end)


class StateRunner:
    """Runs states for one :class:`Interpreter` (its events, clock, invoker and context)."""

    def __init__(self, execution: Interpreter) -> None:
        self.x = execution
        self.ja = JsonataRunner(self)

    async def run_machine(self, machine: StateMachine, data: Any, scope: str) -> Any:
        """Run ``machine`` (the top level, a branch or a Map processor) from StartAt to its end.

        It runs in a scope of its own for variables (``Assign``): a copy of the enclosing one, so
        a branch or iteration reads the variables assigned before it, and assigns its own.
        """
        token = _VARIABLES.set(dict(_VARIABLES.get() or {}))
        try:
            name: str | None = machine.start_at
            while name is not None:
                self.x.check_deadline()
                data, name = await self.run_state(machine.states[name], data, scope)
                # Pass/Choice states never suspend: without this, a loop of them would hold the
                # event loop forever (no other request served, no cancel or stop delivered)
                await asyncio.sleep(0)
            return data
        finally:
            _VARIABLES.reset(token)

    async def run_state(self, state: State, raw: Any, scope: str) -> _Step:
        entered = self.x.clock.now()
        self.x.emit(f"{state.type}StateEntered", state.name, {"input": raw}, scope)
        try:
            if state.ja is not None:
                output, next_state = await self.ja.dispatch(state, state.ja, raw, entered, scope)
            else:
                output, next_state = await self._dispatch(state, raw, entered, scope)
        except StatesError as err:
            catchers = getattr(state, "catch", ())
            catcher = next((c for c in catchers if error_matches(c.error_equals, err)), None)
            if catcher is None:
                raise
            if catcher.ja is not None:
                output = self.ja.caught(state, catcher.ja, raw, entered, err.output())
            else:
                output = self.place(catcher.result_path, raw, err.output())
            next_state = catcher.next
        details: dict[str, Any] = {"output": output}
        if isinstance(state, ChoiceState):
            details["next"] = next_state
        self.x.emit(f"{state.type}StateExited", state.name, details, scope)
        return output, next_state

    async def _dispatch(self, state: State, raw: Any, entered: datetime, scope: str) -> _Step:
        if isinstance(state, TaskState):
            return await self.task(state, raw, entered, scope)
        if isinstance(state, PassState):
            return self.pass_(state, raw, entered)
        if isinstance(state, ChoiceState):
            return self.choice(state, raw, entered)
        if isinstance(state, WaitState):
            return await self.wait(state, raw, entered)
        if isinstance(state, SucceedState):
            return self.output(state, self.select(state.input_path, raw, entered, state), entered), None
        if isinstance(state, FailState):
            self.fail(state, raw, entered)
        if isinstance(state, ParallelState):
            return await self.parallel(state, raw, entered, scope)
        if isinstance(state, MapState):
            return await self.map(state, raw, entered, scope)
        raise StatesError(RUNTIME, f"unsupported state type {state.type}")

    # -- data flow ----------------------------------------------------------------------------

    def select(self, path: JsonPath | None, data: Any, entered: datetime, state: State) -> Any:
        """``InputPath`` (or ``OutputPath``): None means an empty object; a miss is States.Runtime."""
        if path is None:
            return {}
        if path.is_root:
            return data
        try:
            return path.find(data, self.x.context(state.name, entered))
        except PathNotFound as exc:
            raise StatesError(RUNTIME, f"State '{state.name}': {exc}") from None

    def output(self, state: State, data: Any, entered: datetime, retry_count: int = 0) -> Any:
        """``OutputPath``: None means an empty object; ``$$…`` reads the context object, as on AWS."""
        if state.output_path is None:
            return {}
        if state.output_path.is_root:
            return data
        try:
            return state.output_path.find(data, self.x.context(state.name, entered, retry_count))
        except PathNotFound as exc:
            raise StatesError(RUNTIME, f"State '{state.name}' OutputPath: {exc}") from None

    def payload(self, template: Template, data: Any, context: dict[str, Any], field: str) -> Any:
        try:
            return template.evaluate(data, context, rng=self.x.rng)
        except PathNotFound as exc:  # AWS: States.Runtime, not States.ParameterPathFailure (see docs)
            raise StatesError(RUNTIME, _path_failure(exc, field, context)) from None
        except IntrinsicError as exc:
            raise StatesError(INTRINSIC_FAILURE, f"{field}: {exc}") from None

    def place(self, path: JsonPath | None, raw: Any, result: Any) -> Any:
        """``ResultPath``: None keeps the raw input, ``$`` replaces it, else insert a copy-on-write."""
        if path is None:
            return raw
        if path.is_root:
            return result
        try:
            return path.assign(raw, result)
        except PathNotFound as exc:
            raise StatesError(RESULT_PATH_MATCH_FAILURE, str(exc)) from None

    def value(self, path: JsonPath, data: Any, context: dict[str, Any], what: str) -> Any:
        try:
            return path.find(data, context)
        except PathNotFound as exc:
            raise StatesError(RUNTIME, f"{what}: {exc}") from None

    # -- simple states ---------------------------------------------------------------------------

    def pass_(self, state: PassState, raw: Any, entered: datetime) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)
        if state.parameters is not None:
            context = self.x.context(state.name, entered)
            effective = self.payload(state.parameters, effective, context, "Parameters")
        result = copy_json(state.result) if state.has_result else effective
        return self.output(state, self.place(state.result_path, raw, result), entered), state.next

    def choice(self, state: ChoiceState, raw: Any, entered: datetime) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)
        context = self.x.context(state.name, entered)
        target = state.default
        for rule in state.choices:
            try:
                matched = rule.condition.evaluate(effective, context)
            except PathNotFound as exc:
                raise StatesError(RUNTIME, f"State '{state.name}': {exc}") from None
            if matched:
                target = rule.next
                break
        if target is None:
            raise StatesError(
                NO_CHOICE_MATCHED, f"No Choice rule of '{state.name}' matched and it has no Default"
            )
        return self.output(state, effective, entered), target

    async def wait(self, state: WaitState, raw: Any, entered: datetime) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)
        context = self.x.context(state.name, entered)
        seconds: float = 0.0
        if state.seconds is not None:
            seconds = state.seconds
        elif state.seconds_path is not None:
            value = self.value(state.seconds_path, effective, context, "SecondsPath")
            if not is_number(value) or value < 0:
                raise StatesError(
                    RUNTIME, f"SecondsPath '{state.seconds_path.text}' is not a non-negative number"
                )
            seconds = float(value)
        else:
            until = state.timestamp
            if state.timestamp_path is not None:
                until = parse_timestamp(self.value(state.timestamp_path, effective, context, "TimestampPath"))
                if until is None:
                    raise StatesError(
                        RUNTIME, f"TimestampPath '{state.timestamp_path.text}' is not a timestamp"
                    )
            if until is not None:
                seconds = (until - self.x.clock.now()).total_seconds()
        if seconds > 0:
            await self.x.sleep(seconds)
        return self.output(state, effective, entered), state.next

    def fail(self, state: FailState, raw: Any, entered: datetime) -> NoReturn:
        context = self.x.context(state.name, entered)
        error = (
            self._fail_text(state.error_path, raw, context, "ErrorPath") if state.error_path else state.error
        )
        cause = (
            self._fail_text(state.cause_path, raw, context, "CausePath") if state.cause_path else state.cause
        )
        raise StatesError(error, cause)

    def _fail_text(self, expression: Expression, raw: Any, context: dict[str, Any], what: str) -> str:
        try:
            value = evaluate_expression(expression, raw, context, self.x.rng)
        except PathNotFound as exc:
            raise StatesError(RUNTIME, f"{what}: {exc}") from None
        except IntrinsicError as exc:
            raise StatesError(INTRINSIC_FAILURE, f"{what}: {exc}") from None
        if not isinstance(value, str):
            raise StatesError(RUNTIME, f"{what} must select a string, got {preview(value)}")
        return value

    # -- retried states ------------------------------------------------------------------------

    async def retrying(
        self,
        state: TaskState | ParallelState | MapState,
        attempt: Callable[[int], Awaitable[Any]],
        scope: str,
        give_up: Callable[[StatesError], None] | None = None,
    ) -> tuple[Any, int]:
        """Run ``attempt(retry_count)`` under the state's Retry policy → (its result, retries made).

        ``give_up`` is told of the error that ends the retries (not of the retried ones).
        """
        used = [0] * len(state.retry)
        retries = 0
        while True:
            try:
                return await attempt(retries), retries
            except StatesError as err:
                index = next(
                    (i for i, r in enumerate(state.retry) if error_matches(r.error_equals, err)), None
                )
                if index is None or used[index] >= state.retry[index].max_attempts:
                    if give_up is not None:
                        give_up(err)
                    raise
                retrier = state.retry[index]
                used[index] += 1
                retries += 1
                delay = retrier.delay(used[index])
                if retrier.jitter:
                    delay = self.x.rng.uniform(0, delay)
                details = {"error": err.error, "cause": err.cause, "attempt": retries, "retrier": index}
                self.x.emit("RetryScheduled", state.name, {**details, "delay_seconds": delay}, scope)
                await self.x.sleep(delay)

    def finish(
        self, state: TaskState | ParallelState | MapState, raw: Any, result: Any, context: dict[str, Any]
    ) -> Any:
        """ResultSelector, then ResultPath into the raw input."""
        if state.result_selector is not None:
            result = self.payload(state.result_selector, result, context, "ResultSelector")
        return self.place(state.result_path, raw, result)

    async def task(self, state: TaskState, raw: Any, entered: datetime, scope: str) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)

        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            payload = effective
            if state.parameters is not None:
                payload = self.payload(state.parameters, effective, context, "Parameters")
            timeout = state.timeout_seconds
            if state.timeout_seconds_path is not None:
                value = self.value(state.timeout_seconds_path, effective, context, "TimeoutSecondsPath")
                if not is_number(value) or value <= 0:
                    raise StatesError(RUNTIME, "TimeoutSecondsPath must select a positive number")
                timeout = float(value)
            result = await self.invoke(state, payload, context, timeout, scope)
            return self.finish(state, raw, result, context)

        result, retries = await self.retrying(state, attempt, scope)
        return self.output(state, result, entered, retries), state.next

    async def invoke(
        self, state: TaskState, payload: Any, context: dict[str, Any], timeout: float | None, scope: str
    ) -> Any:
        resource = state.resource
        self.x.emit(
            "TaskScheduled",
            state.name,
            {"resource": resource, "parameters": payload, "timeout_seconds": timeout},
            scope,
        )
        self.x.emit("TaskStarted", state.name, {"resource": resource}, scope)
        call = TaskCall(resource, copy_json(payload), state.name, self.x.execution_id, context)
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                result = await self.x.invoke(call)
        except TaskFailure as failure:
            raise self._task_failed(state, resource, failure.error, failure.cause, scope) from None
        except StatesError as err:  # e.g. a child workflow's failure, passed through by name
            raise self._task_failed(
                state, resource, err.error or TASK_FAILED, err.cause or "", scope
            ) from None
        except TimeoutError as exc:
            if limit.expired():
                cause = f"Task '{state.name}' timed out after {timeout:g} seconds"
                self.x.emit(
                    "TaskTimedOut",
                    state.name,
                    {"resource": resource, "error": TIMEOUT, "cause": cause},
                    scope,
                )
                raise StatesError(TIMEOUT, cause) from None
            raise self._task_failed(state, resource, TASK_FAILED, _describe(exc), scope) from None
        except Exception as exc:
            raise self._task_failed(state, resource, TASK_FAILED, _describe(exc), scope) from None
        self.x.emit("TaskSucceeded", state.name, {"resource": resource, "output": result}, scope)
        return result

    def _task_failed(
        self, state: TaskState, resource: str, error: str, cause: str, scope: str
    ) -> StatesError:
        self.x.emit(
            "TaskFailed", state.name, {"resource": resource, "error": error, "cause": cause or None}, scope
        )
        return StatesError(error, cause)

    async def parallel(self, state: ParallelState, raw: Any, entered: datetime, scope: str) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)

        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            data = effective
            if state.parameters is not None:
                data = self.payload(state.parameters, effective, context, "Parameters")
            self.x.emit("ParallelStateStarted", state.name, {}, scope)
            jobs = [self._branch(state, i, branch, data, scope) for i, branch in enumerate(state.branches)]
            try:
                results = await gather_limited(jobs, 0)
            except StatesError as err:
                failed.add(id(err))
                raise
            self.x.emit("ParallelStateSucceeded", state.name, {}, scope)
            return self.finish(state, raw, results, context)

        failed: set[int] = set()
        give_up = self._failed_event(state, "ParallelStateFailed", failed, scope)
        result, retries = await self.retrying(state, attempt, scope, give_up)
        return self.output(state, result, entered, retries), state.next

    def _failed_event(
        self, state: ParallelState | MapState, event: str, failed: set[int], scope: str
    ) -> Callable[[StatesError], None]:
        """``Parallel/MapStateFailed`` once the branches' failure is final (not before a retry, as AWS)."""

        def give_up(err: StatesError) -> None:
            if id(err) in failed:
                self.x.emit(event, state.name, {"error": err.error, "cause": err.cause}, scope)

        return give_up

    def _branch(
        self, state: ParallelState, index: int, branch: StateMachine, data: Any, scope: str
    ) -> Callable[[], Awaitable[Any]]:
        inner = _join(scope, f"{state.name}.branches[{index}]")

        async def run() -> Any:
            self.x.emit("ParallelBranchStarted", state.name, {"index": index}, scope)
            result = await self._inner(
                branch, data, inner, state.name, "ParallelBranch", {"index": index}, scope
            )
            self.x.emit("ParallelBranchSucceeded", state.name, {"index": index}, scope)
            return result

        return run

    async def _inner(
        self,
        machine: StateMachine,
        data: Any,
        inner: str,
        name: str,
        kind: str,
        ids: dict[str, Any],
        scope: str,
    ) -> Any:
        try:
            return await self.run_machine(machine, data, inner)
        except StatesError as err:
            self.x.emit(f"{kind}Failed", name, {**ids, "error": err.error, "cause": err.cause}, scope)
            raise err.in_branch() from None
        except asyncio.CancelledError:
            self.x.emit(f"{kind}Aborted", name, dict(ids), scope)
            raise

    async def map(self, state: MapState, raw: Any, entered: datetime, scope: str) -> _Step:
        effective = self.select(state.input_path, raw, entered, state)
        context = self.x.context(state.name, entered)
        items = self.value(state.items_path, effective, context, "ItemsPath")
        if not isinstance(items, list):
            raise StatesError(
                RUNTIME, f"ItemsPath '{state.items_path.text}' must select an array, got {preview(items)}"
            )
        limit = state.max_concurrency
        if state.max_concurrency_path is not None:
            value = self.value(state.max_concurrency_path, effective, context, "MaxConcurrencyPath")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise StatesError(RUNTIME, "MaxConcurrencyPath must select a non-negative integer")
            limit = value

        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            self.x.emit("MapStateStarted", state.name, {"length": len(items)}, scope)
            jobs = [
                self._iteration(state, i, item, effective, context, scope) for i, item in enumerate(items)
            ]
            try:
                results = await gather_limited(jobs, limit)
            except StatesError as err:
                failed.add(id(err))
                raise
            self.x.emit("MapStateSucceeded", state.name, {}, scope)
            return self.finish(state, raw, results, context)

        failed: set[int] = set()
        give_up = self._failed_event(state, "MapStateFailed", failed, scope)
        result, retries = await self.retrying(state, attempt, scope, give_up)
        return self.output(state, result, entered, retries), state.next

    def _iteration(
        self, state: MapState, index: int, item: Any, effective: Any, context: dict[str, Any], scope: str
    ) -> Callable[[], Awaitable[Any]]:
        inner = _join(scope, f"{state.name}[{index}]")
        assert state.processor is not None
        processor = state.processor

        async def run() -> Any:
            data = item
            if state.parameters is not None:
                item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
                data = self.payload(state.parameters, effective, item_context, "ItemSelector")
            self.x.emit("MapIterationStarted", state.name, {"index": index}, scope)
            result = await self._inner(
                processor, data, inner, state.name, "MapIteration", {"index": index}, scope
            )
            self.x.emit("MapIterationSucceeded", state.name, {"index": index}, scope)
            return result

        return run


def _join(scope: str, part: str) -> str:
    return f"{scope}/{part}" if scope else part


def _path_failure(exc: PathNotFound, field: str, context: dict[str, Any]) -> str:
    """The cause AWS gives when a ``.$`` field's path names nothing in the state's input."""
    if exc.field is None or exc.path is None or exc.path.startswith("$$"):
        return f"{field}: {exc}"
    state = context.get("State", {}).get("Name", "")
    shown = to_json_text(exc.root)
    shown = shown if len(shown) <= 1024 else shown[:1021] + "..."
    return (
        f"An error occurred while executing the state '{state}'. The JSONPath '{exc.path}' specified "
        f"for the field '{exc.field}' could not be found in the input '{shown}'"
    )


def _describe(exc: BaseException) -> str:
    """The cause of a task's unexpected exception: its message (or its type when it has none)."""
    return str(exc) or type(exc).__name__


async def gather_limited(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    """Run ``jobs`` with at most ``limit`` at once (0 = all), results in order.

    The first job to fail cancels the others and its exception is raised.
    """
    results: list[Any] = [None] * len(jobs)
    if not jobs:
        return results
    indices = iter(range(len(jobs)))

    async def worker() -> None:
        for index in indices:
            results[index] = await jobs[index]()

    workers = len(jobs) if limit <= 0 else min(limit, len(jobs))
    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    return results


# -- JSONata states ------------------------------------------------------------------------------


class JsonataRunner:
    """How ``QueryLanguage: "JSONata"`` states run (see :mod:`mlgate.workflows.jsonata`).

    Each state sees ``$states.input`` (its raw input), ``$states.context``, and the variables;
    ``Arguments`` builds what a Task, or Parallel branches, receive (default: the input); the
    result is ``$states.result`` in ``Output`` (default: the result) and ``Assign``. A catcher's
    ``Output`` (default: the error output) and ``Assign`` see ``$states.errorOutput``. All of a
    state's ``Assign`` values are evaluated first, with the variables as they were when it was
    entered, then assigned; ``Output`` never sees them. Failures are ``States.QueryEvaluationError``.
    """

    def __init__(self, runner: StateRunner) -> None:
        self.r = runner
        self.x = runner.x

    # -- helpers --------------------------------------------------------------------------------

    def bindings(self, raw: Any, context: Mapping[str, Any], **states: Any) -> dict[str, Any]:
        variables = _VARIABLES.get() or {}
        return {**variables, "states": {"input": raw, "context": context, **states}}

    def value(self, value: JsonataValue, bindings: Mapping[str, Any], field: str, state: State) -> Any:
        try:
            return value.evaluate(bindings)
        except JsonataError as exc:
            raise StatesError(
                QUERY_EVALUATION_ERROR,
                f"An error occurred while executing the state '{state.name}'. {exc} (field '{field}')",
            ) from None

    def finish(
        self,
        state: State,
        fields: JsonataFields,
        bindings: Mapping[str, Any],
        default: Any,
        rule: JsonataRule | None = None,
    ) -> Any:
        """``Assign`` (evaluated, then assigned) and ``Output`` (or ``default``).

        For a Choice, the matched ``rule``'s own ``Assign`` adds to the state's (its names win)
        and its ``Output`` replaces the state's.
        """
        assigned: dict[str, Any] = {}
        if fields.assign is not None:
            assigned.update(self.value(fields.assign, bindings, "Assign", state))
        if rule is not None and rule.assign is not None:
            assigned.update(self.value(rule.assign, bindings, "Assign", state))
        output_value = rule.output if rule is not None and rule.output is not None else fields.output
        output = self.value(output_value, bindings, "Output", state) if output_value is not None else default
        for name, value in assigned.items():
            try:
                json_size_within(value, MAX_VARIABLE_BYTES)
            except ValueError:
                raise StatesError(
                    DATA_LIMIT_EXCEEDED,
                    f"State '{state.name}': variable '{name}' is over {MAX_VARIABLE_BYTES} bytes as JSON",
                ) from None
        if assigned:
            try:
                json_size_within(assigned, MAX_ASSIGN_BYTES)
            except ValueError:
                raise StatesError(
                    DATA_LIMIT_EXCEEDED,
                    f"State '{state.name}': its Assign holds over {MAX_ASSIGN_BYTES} bytes as JSON in all",
                ) from None
            variables = _VARIABLES.get()
            if variables is not None:
                variables.update(assigned)
        return output

    def caught(
        self, state: State, fields: JsonataFields, raw: Any, entered: datetime, error_output: dict[str, Any]
    ) -> Any:
        bindings = self.bindings(raw, self.x.context(state.name, entered), errorOutput=error_output)
        return self.finish(state, fields, bindings, error_output)

    # -- states ---------------------------------------------------------------------------------

    async def dispatch(
        self, state: State, fields: JsonataFields, raw: Any, entered: datetime, scope: str
    ) -> _Step:
        context = self.x.context(state.name, entered)
        if isinstance(state, TaskState):
            return await self.task(state, fields, raw, entered, scope)
        if isinstance(state, ParallelState):
            return await self.parallel(state, fields, raw, entered, scope)
        if isinstance(state, MapState):
            return await self.map(state, fields, raw, entered, scope)
        bindings = self.bindings(raw, context)
        if isinstance(state, ChoiceState):
            return self.choice(state, fields, bindings, raw)
        if isinstance(state, FailState):
            error = self.text(state, fields.error, bindings, "Error")
            cause = self.text(state, fields.cause, bindings, "Cause")
            raise StatesError(error, cause)
        if isinstance(state, WaitState):
            await self.wait(state, fields, bindings)
        return self.finish(state, fields, bindings, raw), state.next

    def text(
        self, state: State, value: JsonataValue | None, bindings: Mapping[str, Any], field: str
    ) -> str | None:
        if value is None:
            return None
        text = self.value(value, bindings, field, state)
        if not isinstance(text, str):
            raise StatesError(QUERY_EVALUATION_ERROR, f"State '{state.name}': {field} must be a string")
        return text

    def choice(
        self, state: ChoiceState, fields: JsonataFields, bindings: Mapping[str, Any], raw: Any
    ) -> _Step:
        for index, rule in enumerate(fields.rules):
            matched = self.value(rule.condition, bindings, f"Choices[{index}].Condition", state)
            if not isinstance(matched, bool):
                raise StatesError(
                    QUERY_EVALUATION_ERROR,
                    f"State '{state.name}': Choices[{index}].Condition must be true or false, "
                    f"got {preview(matched)}",
                )
            if matched:
                return self.finish(state, fields, bindings, raw, rule), rule.next
        if state.default is None:
            raise StatesError(
                NO_CHOICE_MATCHED, f"No Choice rule of '{state.name}' matched and it has no Default"
            )
        return self.finish(state, fields, bindings, raw), state.default

    async def wait(self, state: WaitState, fields: JsonataFields, bindings: Mapping[str, Any]) -> None:
        seconds = 0.0
        if fields.seconds is not None:
            value = self.value(fields.seconds, bindings, "Seconds", state)
            if not is_number(value) or value < 0:
                raise StatesError(
                    QUERY_EVALUATION_ERROR, f"State '{state.name}': Seconds must be a non-negative number"
                )
            seconds = float(value)
        elif fields.timestamp is not None:
            until = parse_timestamp(self.value(fields.timestamp, bindings, "Timestamp", state))
            if until is None:
                raise StatesError(
                    QUERY_EVALUATION_ERROR, f"State '{state.name}': Timestamp is not a timestamp"
                )
            seconds = (until - self.x.clock.now()).total_seconds()
        if seconds > 0:
            await self.x.sleep(seconds)

    async def task(
        self, state: TaskState, fields: JsonataFields, raw: Any, entered: datetime, scope: str
    ) -> _Step:
        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            bindings = self.bindings(raw, context)
            payload = self.value(fields.arguments, bindings, "Arguments", state) if fields.arguments else raw
            timeout = state.timeout_seconds
            if fields.timeout_seconds is not None:
                value = self.value(fields.timeout_seconds, bindings, "TimeoutSeconds", state)
                if not is_number(value) or value <= 0:
                    raise StatesError(QUERY_EVALUATION_ERROR, "TimeoutSeconds must be a positive number")
                timeout = float(value)
            result = await self.r.invoke(state, payload, context, timeout, scope)
            return self.finish(
                state, fields, {**bindings, "states": {**bindings["states"], "result": result}}, result
            )

        output, _ = await self.r.retrying(state, attempt, scope)
        return output, state.next

    async def parallel(
        self, state: ParallelState, fields: JsonataFields, raw: Any, entered: datetime, scope: str
    ) -> _Step:
        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            bindings = self.bindings(raw, context)
            data = self.value(fields.arguments, bindings, "Arguments", state) if fields.arguments else raw
            self.x.emit("ParallelStateStarted", state.name, {}, scope)
            jobs = [self.r._branch(state, i, branch, data, scope) for i, branch in enumerate(state.branches)]
            try:
                results = await gather_limited(jobs, 0)
            except StatesError as err:
                failed.add(id(err))
                raise
            self.x.emit("ParallelStateSucceeded", state.name, {}, scope)
            return self.finish(
                state, fields, {**bindings, "states": {**bindings["states"], "result": results}}, results
            )

        failed: set[int] = set()
        give_up = self.r._failed_event(state, "ParallelStateFailed", failed, scope)
        output, _ = await self.r.retrying(state, attempt, scope, give_up)
        return output, state.next

    async def map(
        self, state: MapState, fields: JsonataFields, raw: Any, entered: datetime, scope: str
    ) -> _Step:
        context = self.x.context(state.name, entered)
        bindings = self.bindings(raw, context)
        items = self.value(fields.items, bindings, "Items", state) if fields.items is not None else raw
        if not isinstance(items, list):
            raise StatesError(
                QUERY_EVALUATION_ERROR,
                f"State '{state.name}': Items must be an array, got {preview(items)}",
            )
        if len(items) > MAX_MAP_ITEMS:
            raise StatesError(
                QUERY_EVALUATION_ERROR,
                f"State '{state.name}': Items holds {len(items)} items, "
                f"over the {MAX_MAP_ITEMS} a Map may run",
            )
        limit = 0
        if fields.max_concurrency is not None:
            value = self.value(fields.max_concurrency, bindings, "MaxConcurrency", state)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise StatesError(QUERY_EVALUATION_ERROR, "MaxConcurrency must be a non-negative integer")
            limit = value
        assert state.processor is not None
        processor = state.processor

        def iteration(index: int, item: Any, context: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
            inner = _join(scope, f"{state.name}[{index}]")

            async def run() -> Any:
                data = item
                if fields.item_selector is not None:
                    item_context = {**context, "Map": {"Item": {"Index": index, "Value": item}}}
                    data = self.value(
                        fields.item_selector, self.bindings(raw, item_context), "ItemSelector", state
                    )
                self.x.emit("MapIterationStarted", state.name, {"index": index}, scope)
                result = await self.r._inner(
                    processor, data, inner, state.name, "MapIteration", {"index": index}, scope
                )
                self.x.emit("MapIterationSucceeded", state.name, {"index": index}, scope)
                return result

            return run

        async def attempt(retry_count: int) -> Any:
            context = self.x.context(state.name, entered, retry_count)
            self.x.emit("MapStateStarted", state.name, {"length": len(items)}, scope)
            jobs = [iteration(i, item, context) for i, item in enumerate(items)]
            try:
                results = await gather_limited(jobs, limit)
            except StatesError as err:
                failed.add(id(err))
                raise
            self.x.emit("MapStateSucceeded", state.name, {}, scope)
            done = self.bindings(raw, context, result=results)
            return self.finish(state, fields, done, results)

        failed: set[int] = set()
        give_up = self.r._failed_event(state, "MapStateFailed", failed, scope)
        output, _ = await self.r.retrying(state, attempt, scope, give_up)
        return output, state.next
