"""Workflow routes: deploy and export (admin), start, describe, list, history and stop (any caller).

Executions belong to whoever started them: a user (by token or by one of their keys) or an
ownerless key. Others get 404 for them, exactly like an id that does not exist (BOLA);
admins see every execution. Starting an execution is metered like a model call (one unit
of the caller's plan, scoped by the route path); the models it calls are not metered again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from mlgate.errors import InvalidInput, NotFound, Overloaded
from mlgate.http.deps import exchange_of, json_body, require_admin, require_caller, server_of
from mlgate.http.gateway import admit
from mlgate.http.jsonio import JSONResponse
from mlgate.payloads import parse_json
from mlgate.types import NAME_PATTERN, Caller
from mlgate.workflows.export import export_definition
from mlgate.workflows.service import WorkflowService
from mlgate.workflows.store import ExecutionEvent, ExecutionRecord, ExecutionSummary, WorkflowRecord

router = APIRouter(prefix="/v1", tags=["workflows"])

_OBJECT = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_INPUT = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"description": "the execution's input (JSON)"}}},
    }
}


def owner_of(caller: Caller) -> str:
    """The identity executions are filed under: the user, else the key."""
    if caller.username:
        return caller.username
    return f"key:{caller.id}"


def _service(request: Request) -> WorkflowService:
    workflows = server_of(request).workflows
    if workflows is None:  # FastAPI routes run only once the rest of the app is built
        raise Overloaded("the workflow service is starting; retry shortly", retry_after=1.0)
    return workflows


def workflow_json(w: WorkflowRecord, *, full: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": w.name,
        "revision": w.revision,
        "description": w.description,
        "createdAt": w.created_at.isoformat(),
        "updatedAt": w.updated_at.isoformat(),
    }
    if full:
        body["definition"] = w.document()
        body["mapping"] = w.mapping
    return body


def execution_json(e: ExecutionSummary) -> dict[str, Any]:
    body: dict[str, Any] = {
        "executionId": e.id,
        "name": e.name,
        "workflow": e.workflow,
        "revision": e.revision,
        "status": e.status,
        "startDate": e.started_at.isoformat(),
        "stopDate": e.stopped_at.isoformat() if e.stopped_at else None,
        "error": e.error,
        "cause": e.cause,
        "parentId": e.parent_id,
    }
    if isinstance(e, ExecutionRecord):
        body["input"] = e.input
        body["output"] = e.output
    return body


def event_json(e: ExecutionEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "timestamp": e.timestamp.isoformat(),
        "state": e.state,
        "details": e.details,
    }


def _visible(e: ExecutionSummary, caller: Caller) -> bool:
    return caller.role == "admin" or e.owner == owner_of(caller)


async def _own_execution(request: Request, caller: Caller, execution_id: str) -> ExecutionRecord:
    try:
        record = await _service(request).describe(execution_id)
    except NotFound:
        raise NotFound(f"no execution {execution_id!r}") from None
    if not _visible(record, caller):
        raise NotFound(f"no execution {execution_id!r}")
    return record


# -- workflows -------------------------------------------------------------------------------


@router.put(
    "/workflows/{name}", summary="Deploy a workflow (create, or a new revision)", openapi_extra=_OBJECT
)
async def deploy(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or "definition" not in body:
        raise InvalidInput('send {"definition": {...}, "mapping": {...}?, "description": "..."?}')
    definition = body["definition"]
    if not isinstance(definition, dict | str):
        raise InvalidInput("definition must be a JSON object (or its JSON text)")
    mapping = body.get("mapping")
    if mapping is not None and not isinstance(mapping, dict):
        raise InvalidInput("mapping must be a JSON object")
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string")
    service = _service(request)
    existed = any(w.name == name for w in await service.list_workflows())
    record = await service.deploy(name, definition, mapping=mapping, description=description)
    return JSONResponse(workflow_json(record), status_code=200 if existed else 201)


@router.get("/workflows", summary="List deployed workflows")
async def list_workflows(request: Request, _: Caller = Depends(require_caller)) -> JSONResponse:
    records = await _service(request).list_workflows()
    return JSONResponse({"workflows": [workflow_json(w, full=False) for w in records]})


@router.get("/workflows/{name}", summary="A workflow's definition and mapping")
async def get_workflow(name: str, request: Request, _: Caller = Depends(require_caller)) -> JSONResponse:
    return JSONResponse(workflow_json(await _service(request).get(name)))


@router.get("/workflows/{name}/export", summary="The definition, ready for AWS Step Functions")
async def export(
    name: str,
    request: Request,
    target: str = "aws",
    region: str | None = None,
    account: str | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    if target != "aws":
        raise InvalidInput("the only export target is 'aws'")
    record = await _service(request).get(name)
    exported = export_definition(record.document(), region=region, account=account)
    return JSONResponse(
        {
            "name": record.name,
            "revision": record.revision,
            "target": target,
            "definition": exported.definition,
            "functions": exported.functions,
            "placeholders": exported.placeholders,
        }
    )


# -- executions ------------------------------------------------------------------------------


@router.post(
    "/workflows/{name}/executions",
    summary="Start an execution (?mode=sync waits for it; async answers 202 at once)",
    openapi_extra=_INPUT,
)
async def start(
    name: str,
    request: Request,
    mode: Literal["sync", "async"] = "sync",
    execution_name: str | None = None,
) -> JSONResponse:
    raw = await request.body()
    data = parse_json(raw) if raw.strip() else {}
    service = _service(request)
    stored = service.check_input(data)  # 413 / 400 before anything is metered or stored
    x = exchange_of(request)

    # metered as "workflow:<name>" once the workflow is known to exist (nothing a client types
    # becomes a usage scope; an anonymous caller learns nothing)
    async def known() -> WorkflowRecord:
        if not NAME_PATTERN.match(name):  # no workflow can have it: never looked up
            raise NotFound(f"no workflow {name[:80]!r}")
        return await service.get(name)

    admission = await admit(x, model=None, declared="either", scope=f"workflow:{name}", check=known)
    caller = admission.caller
    if caller.kind == "anonymous":
        caller = await require_caller(request)
    x.model = f"workflow:{name}"
    record = await service.start_execution(
        name, stored, mode=mode, name=execution_name, owner=owner_of(caller)
    )
    if mode == "async":
        return JSONResponse(
            {"executionId": record.id, "name": record.name, "startDate": record.started_at.isoformat()},
            status_code=202,
            headers={"Location": f"/v1/executions/{record.id}"},
        )
    return JSONResponse(execution_json(record))


@router.delete(
    "/workflows/{name}/executions",
    summary="Purge finished executions: started before ?before= and/or beyond the newest ?keep=",
)
async def purge(
    name: str,
    request: Request,
    before: str | None = None,
    keep: int | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    if before is None and keep is None:
        raise InvalidInput("give before (an ISO-8601 time) and/or keep (executions to keep)")
    cutoff: datetime | None = None
    if before is not None:
        try:
            cutoff = datetime.fromisoformat(before.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("before must be an ISO-8601 time, e.g. 2026-01-31T00:00:00Z") from None
        if cutoff.tzinfo is None:
            cutoff = cutoff.replace(tzinfo=UTC)
    if keep is not None and keep < 0:
        raise InvalidInput("keep must be >= 0")
    deleted = await _service(request).purge(name, before=cutoff, keep=keep)
    return JSONResponse({"workflow": name, "deleted": deleted})


@router.get("/executions", summary="Executions, newest first (yours; an admin's: all)")
async def list_executions(
    request: Request,
    workflow: str | None = None,
    status: str | None = None,
    limit: int = 100,
    caller: Caller = Depends(require_caller),
) -> JSONResponse:
    owner = None if caller.role == "admin" else owner_of(caller)
    rows = await _service(request).list_executions(workflow=workflow, status=status, owner=owner, limit=limit)
    return JSONResponse({"executions": [execution_json(r) for r in rows]})


@router.get("/executions/{execution_id}", summary="Describe an execution")
async def describe(
    execution_id: str, request: Request, caller: Caller = Depends(require_caller)
) -> JSONResponse:
    return JSONResponse(execution_json(await _own_execution(request, caller, execution_id)))


@router.get("/executions/{execution_id}/history", summary="An execution's event history")
async def history(
    execution_id: str,
    request: Request,
    after: int = 0,
    limit: int | None = None,
    caller: Caller = Depends(require_caller),
) -> JSONResponse:
    record = await _own_execution(request, caller, execution_id)
    service = _service(request)
    if record.status == "RUNNING":
        await service.flush()
    events = await service.history(execution_id, after=after, limit=limit)
    return JSONResponse(
        {"executionId": execution_id, "status": record.status, "events": [event_json(e) for e in events]}
    )


@router.post("/executions/{execution_id}/stop", summary="Stop a running execution (ABORTED)")
async def stop(execution_id: str, request: Request, caller: Caller = Depends(require_caller)) -> JSONResponse:
    await _own_execution(request, caller, execution_id)
    raw = await request.body()
    body = parse_json(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput('send {"error": "...", "cause": "..."} or nothing')
    error, cause = body.get("error"), body.get("cause")
    if not isinstance(error, str | None) or not isinstance(cause, str | None):
        raise InvalidInput("error and cause must be strings")
    record = await _service(request).stop_execution(execution_id, error=error, cause=cause)
    return JSONResponse(execution_json(record))
