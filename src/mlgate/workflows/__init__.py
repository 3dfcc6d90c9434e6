"""Workflows: Amazon States Language definitions run locally, their executions and histories.

``spec`` parses and validates definitions, ``engine`` interprets them, ``store`` keeps
definitions, executions and event histories in the registry database, ``actions`` maps
Task resources to mlgate actions, and ``service`` runs executions (sync and async).
"""

from __future__ import annotations

from mlgate.workflows.engine import (
    Clock,
    ExecutionResult,
    FakeClock,
    HistoryEvent,
    Interpreter,
    SystemClock,
    TaskCall,
    TaskFailure,
    TaskInvoker,
)
from mlgate.workflows.spec import StateMachine, parse_definition

__all__ = [
    "Clock",
    "ExecutionResult",
    "FakeClock",
    "HistoryEvent",
    "Interpreter",
    "StateMachine",
    "SystemClock",
    "TaskCall",
    "TaskFailure",
    "TaskInvoker",
    "parse_definition",
]
