"""Admin API: training runs as background jobs, retrain on drift, a model's history (issue 16;
docs/lifecycle.md).

- ``POST /v1/train`` ``{"recipe", "model"?, "seed"?, "params"?, "promote"?, "alias"?,
  "min_improvement"?, "dry_run"?}`` → 202 with the run (``id``, ``status``); 409 when the model
  has a run already (``details.run``), 403 for a user recipe not in ``train.recipes``;
- ``GET /v1/train/{id}`` → the run: status (queued | running | succeeded | failed), progress
  phase, version, decision, reason, the gate summary, error; ``GET /v1/train?model=&limit=``;
- ``GET | PUT | DELETE /v1/models/{name}/retrain``: the model's retrain-on-drift policy;
- ``GET /v1/models/{name}/history?limit=&before=&kind=``: its events, newest first.

Runs and policies are blocking database work and a process spawn: each route runs it in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from mlgate.errors import InvalidInput, NotFound
from mlgate.history import EVENT_KINDS, MAX_EVENTS, model_history
from mlgate.http.deps import actor_of, require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.lifecycle.jobs import TrainJobs, parse_request
from mlgate.lifecycle.retrain import delete_policy, get_policy, parse_policy, put_policy
from mlgate.payloads import parse_json
from mlgate.server import Server
from mlgate.types import Caller

router = APIRouter(tags=["lifecycle"])

_TRAIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["recipe"],
                    "properties": {
                        "recipe": {
                            "type": "string",
                            "description": "temperatura, cardiaco, or an allowed module:function",
                        },
                        "model": {"type": "string", "description": "default: the recipe's name"},
                        "seed": {"type": "integer"},
                        "params": {"type": "object"},
                        "promote": {"type": "string", "description": "move this alias when the gate passes"},
                        "alias": {
                            "type": "string",
                            "description": "compare with this alias (default production)",
                        },
                        "min_improvement": {"type": "number"},
                        "dry_run": {"type": "boolean"},
                        "trigger": {"enum": ["http", "cli"], "description": "who started it (default http)"},
                    },
                }
            }
        },
    }
}
_POLICY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["recipe"],
                    "properties": {
                        "on_drift": {"type": "boolean"},
                        "recipe": {"type": "string"},
                        "alias": {
                            "type": "string",
                            "description": "promoted when the gate passes (production)",
                        },
                        "cooldown": {"description": "6h, 30m, … or seconds (default 6h)"},
                        "seed": {"type": "integer"},
                        "params": {"type": "object"},
                        "min_improvement": {"type": "number"},
                    },
                }
            }
        },
    }
}


def _jobs(server: Server) -> TrainJobs:
    if server.train_jobs is None:  # only before the server started
        raise NotFound("train jobs are not running on this server")
    return server.train_jobs


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the body is a JSON object")
    return parse_json(raw)


async def _model_exists(server: Server, name: str) -> None:
    await asyncio.to_thread(server.repository.get_model, name)  # 404 model_not_found


@router.post(
    "/v1/train", status_code=202, summary="Start a training run (a background job)", openapi_extra=_TRAIN_BODY
)
async def start_run(request: Request, caller: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    jobs = _jobs(server)
    body = await _body(request)
    trigger = "http"
    if isinstance(body, dict) and "trigger" in body:  # mlgate train --remote says "cli"
        trigger = body.pop("trigger")
        if trigger not in ("http", "cli"):
            raise InvalidInput("'trigger' is http or cli (drift runs are started by the alert)")
    train = parse_request(body)
    run = await asyncio.to_thread(jobs.start, train, trigger=trigger, actor=actor_of(caller))
    return JSONResponse(run, status_code=202, headers={"location": f"/v1/train/{run['id']}"})


@router.get("/v1/train", summary="Training runs, newest first")
async def list_runs(
    request: Request, model: str | None = None, limit: int = 50, _: Caller = Depends(require_admin)
) -> JSONResponse:
    if not 1 <= limit <= 500:
        raise InvalidInput("limit is between 1 and 500")
    runs = await asyncio.to_thread(_jobs(server_of(request)).list, model=model, limit=limit)
    return JSONResponse({"runs": runs})


@router.get("/v1/train/{run_id}", summary="A training run's status, decision and gate summary")
async def get_run(run_id: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    if not run_id.isalnum() or len(run_id) > 32:
        raise NotFound(f"no train run {run_id!r}", details={"run": run_id[:64]})
    return JSONResponse(await asyncio.to_thread(_jobs(server_of(request)).get, run_id))


@router.get("/v1/models/{name}/retrain", summary="The model's retrain-on-drift policy")
async def get_retrain(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    await _model_exists(server, name)
    policy = await asyncio.to_thread(get_policy, server.repository.engine, name)
    if policy is None:
        raise NotFound(f"{name} has no retrain policy", details={"model": name})
    return JSONResponse(policy)


@router.put(
    "/v1/models/{name}/retrain",
    summary="Retrain the model when its drift alert fires (opt in)",
    openapi_extra=_POLICY_BODY,
)
async def put_retrain(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    await _model_exists(server, name)
    policy = parse_policy(name, await _body(request), allowed=server.settings.train.recipes)
    return JSONResponse(await asyncio.to_thread(put_policy, server.repository.engine, policy))


@router.delete("/v1/models/{name}/retrain", status_code=204, summary="Stop retraining the model on drift")
async def delete_retrain(name: str, request: Request, _: Caller = Depends(require_admin)) -> Response:
    server = server_of(request)
    await _model_exists(server, name)
    await asyncio.to_thread(delete_policy, server.repository.engine, name)
    return Response(status_code=204)


@router.get("/v1/models/{name}/history", summary="The model's events (alias moves, train runs, retrains…)")
async def history(
    name: str,
    request: Request,
    limit: int = 100,
    before: int | None = None,
    kind: str | None = None,
    _: Caller = Depends(require_admin),
) -> JSONResponse:
    if not 1 <= limit <= MAX_EVENTS:
        raise InvalidInput(f"limit is between 1 and {MAX_EVENTS}")
    if kind is not None and kind not in EVENT_KINDS:
        raise InvalidInput(f"kind is one of {', '.join(sorted(EVENT_KINDS))}")
    if before is not None and not 1 <= before < 2**62:
        raise InvalidInput("before is an event id (a positive integer)")
    server = server_of(request)
    await _model_exists(server, name)
    events = await asyncio.to_thread(
        model_history, server.repository.engine, name, limit=limit, before=before, kind=kind
    )
    return JSONResponse({"model": name, "events": events})
