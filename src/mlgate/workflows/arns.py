"""Amazon Resource Names for workflows and executions, shaped as Step Functions shapes them.

mlgate has no AWS account or region, so its ARNs use fixed defaults — the ones AWS's own
documentation uses in its examples (``us-east-1``, account ``123456789012``), which are also
the ones the shipped ``vehiculos`` definitions and mapping files use:

- a workflow ``w`` is ``arn:aws:states:us-east-1:123456789012:stateMachine:w``;
- its execution named ``n`` is ``arn:aws:states:us-east-1:123456789012:execution:w:n``;
- the role an execution runs with (``$$.Execution.RoleArn``) is
  ``arn:aws:iam::123456789012:role/mlgate-workflows`` (mlgate has no IAM: it is a label).

Pure functions, no I/O. Example::

    state_machine_arn("vehiculos")
    # 'arn:aws:states:us-east-1:123456789012:stateMachine:vehiculos'
    parse_execution_arn(execution_arn("vehiculos", "run-1"))
    # ExecutionArn(region='us-east-1', account='123456789012', state_machine='vehiculos', name='run-1')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "ACCOUNT",
    "PARTITION",
    "REGION",
    "ROLE_ARN",
    "ExecutionArn",
    "StateMachineArn",
    "execution_arn",
    "parse_execution_arn",
    "parse_state_machine_arn",
    "role_arn",
    "state_machine_arn",
]

PARTITION = "aws"
REGION = "us-east-1"
ACCOUNT = "123456789012"
#: the role every execution "runs with" (``$$.Execution.RoleArn``)
ROLE_ARN = f"arn:{PARTITION}:iam::{ACCOUNT}:role/mlgate-workflows"

_STATE_MACHINE = re.compile(r"^arn:(aws[a-z-]*):states:([^:]*):([^:]*):stateMachine:([^:]+)(?::([^:]+))?\Z")
_EXECUTION = re.compile(r"^arn:(aws[a-z-]*):states:([^:]*):([^:]*):(?:execution|express):([^:]+):([^:]+)\Z")


@dataclass(frozen=True, slots=True)
class StateMachineArn:
    """The parts of a state machine ARN (``qualifier``: a version number or alias, if any)."""

    region: str
    account: str
    name: str
    qualifier: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionArn:
    """The parts of an execution ARN."""

    region: str
    account: str
    state_machine: str
    name: str


def state_machine_arn(name: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    """``arn:aws:states:<region>:<account>:stateMachine:<name>``."""
    return f"arn:{PARTITION}:states:{region}:{account}:stateMachine:{name}"


def execution_arn(state_machine: str, execution: str, *, region: str = REGION, account: str = ACCOUNT) -> str:
    """``arn:aws:states:<region>:<account>:execution:<state machine name>:<execution name>``."""
    return f"arn:{PARTITION}:states:{region}:{account}:execution:{state_machine}:{execution}"


def role_arn(name: str = "mlgate-workflows", *, account: str = ACCOUNT) -> str:
    """``arn:aws:iam::<account>:role/<name>``."""
    return f"arn:{PARTITION}:iam::{account}:role/{name}"


def parse_state_machine_arn(arn: str) -> StateMachineArn | None:
    """The parts of a state machine ARN, or None when ``arn`` is not one."""
    match = _STATE_MACHINE.match(arn) if isinstance(arn, str) else None
    if match is None:
        return None
    _, region, account, name, qualifier = match.groups()
    return StateMachineArn(region, account, name, qualifier)


def parse_execution_arn(arn: str) -> ExecutionArn | None:
    """The parts of an execution ARN (standard ``execution:`` or ``express:``), or None."""
    match = _EXECUTION.match(arn) if isinstance(arn, str) else None
    if match is None:
        return None
    _, region, account, machine, name = match.groups()
    return ExecutionArn(region, account, machine, name)
