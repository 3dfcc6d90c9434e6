"""Export a definition for AWS Step Functions (``mlgate workflows export NAME --target aws``).

Task resources that are already AWS resources (the original Lambda ARNs a mapping file
maps, ``arn:aws:states:::lambda:invoke``, …) are kept as they are: that definition came
from AWS and goes back unchanged. mlgate's own resources become Lambda ARNs with
CloudFormation-style placeholders, ``arn:aws:lambda:${AWS::Region}:${AWS::AccountId}:function:<name>``
(``mlgate:model:invoke`` with ``"model": "vehiculos"`` → ``mlgate-model-vehiculos``,
``mlgate:python:f`` → ``f``, …); give ``region`` and ``account`` to fill them in, and the
result is ready for ``aws stepfunctions create-state-machine --definition file://…``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ACCOUNT", "REGION", "ExportedDefinition", "export_definition", "iter_states"]

REGION = "${AWS::Region}"
ACCOUNT = "${AWS::AccountId}"


@dataclass(frozen=True, slots=True)
class ExportedDefinition:
    """The exported definition and, per replaced resource, the function that must exist on AWS."""

    definition: dict[str, Any]
    functions: list[dict[str, str]] = field(default_factory=list)
    #: placeholders left in the definition (empty when region and account were given)
    placeholders: list[str] = field(default_factory=list)


def iter_states(doc: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state, nested ones included (Parallel branches, Map processors), with a readable path."""
    states = doc.get("States")
    if not isinstance(states, dict):
        return
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        where = f"{path}{name}"
        yield where, state
        kind = state.get("Type")
        if kind == "Parallel":
            for i, branch in enumerate(state.get("Branches") or []):
                if isinstance(branch, dict):
                    yield from iter_states(branch, f"{where}/branch[{i}]/")
        elif kind == "Map":
            inner = state.get("ItemProcessor") or state.get("Iterator")
            if isinstance(inner, dict):
                yield from iter_states(inner, f"{where}/")


def _function_for(resource: str, state: dict[str, Any]) -> str | None:
    params = state.get("Parameters")
    params = params if isinstance(params, dict) else {}
    if resource == "mlgate:store:get":
        return "mlgate-store-get"
    if resource == "mlgate:model:invoke":
        model = params.get("model")
        return f"mlgate-model-{model}" if isinstance(model, str) and model else "mlgate-model-invoke"
    if resource == "mlgate:workflow:start":
        return "mlgate-workflow-start"
    if resource.startswith("mlgate:python:"):
        return resource.removeprefix("mlgate:python:") or None
    return None


def export_definition(
    doc: dict[str, Any], *, region: str | None = None, account: str | None = None
) -> ExportedDefinition:
    """A copy of ``doc`` whose mlgate resources are Lambda ARNs (placeholders unless given)."""
    out = copy.deepcopy(doc)
    functions: list[dict[str, str]] = []
    reg = region or REGION
    acct = account or ACCOUNT
    for where, state in iter_states(out):
        resource = state.get("Resource")
        if state.get("Type") != "Task" or not isinstance(resource, str) or not resource.startswith("mlgate:"):
            continue
        name = _function_for(resource, state)
        if name is None:
            continue
        arn = f"arn:aws:lambda:{reg}:{acct}:function:{name}"
        state["Resource"] = arn
        functions.append({"state": where, "from": resource, "resource": arn, "function": name})
    placeholders = [p for p, given in ((REGION, region), (ACCOUNT, account)) if not given and functions]
    return ExportedDefinition(out, functions, placeholders)
