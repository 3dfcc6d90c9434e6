"""The dashboard's JSON APIs (issue 17): traffic per model, usage per key, workflow executions.

Read (``telemetry/stats_read.py``) from the per-minute / per-hour stats rows every process adds
to (``telemetry/stats.py``), so the answers cover every worker and survive restarts; a
process's last ``stats.flush_s`` seconds show up after its next flush. Windows: ``?window=1h``
(60 s steps), ``24h`` (300 s), ``7d`` (3600 s, hour rows). Admins see everything;
``/v1/stats/keys`` also answers users (their own keys) and plain keys (themselves).
docs/dashboard.md, "The JSON APIs".
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request

from mlgate.access.limiter import quota_window
from mlgate.access.plans import Plan
from mlgate.access.usage import user_subject
from mlgate.db.tables import api_keys, executions, key_plans
from mlgate.db.tables import models as models_table
from mlgate.errors import InvalidInput, NotFound
from mlgate.http.deps import require_admin, require_caller, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.server import Server, stats_tables
from mlgate.telemetry.stats_read import StatsReader, Window, window_of
from mlgate.telemetry.stats_rows import OTHER
from mlgate.types import Caller

router = APIRouter(prefix="/v1/stats", tags=["dashboard"])

#: Execution statuses, in the order the dashboard stacks them.
STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "RUNNING")
_TABLES = stats_tables()


def _window(value: str | None) -> Window:
    window = window_of(value)
    if window is None:
        raise InvalidInput("window: 1h, 24h or 7d")
    return window


_READERS: weakref.WeakKeyDictionary[Any, StatsReader] = weakref.WeakKeyDictionary()


def _reader(server: Server) -> StatsReader:
    """The server's reader (one per database engine: it keeps settled hours' per-key sums; the
    recorder's, which its thread warms once an hour, when stats are recorded)."""
    if server.stats is not None and server.stats.reader is not None:
        return server.stats.reader
    engine = server.repository.engine
    reader = _READERS.get(engine)
    if reader is None:
        reader = _READERS[engine] = StatsReader(engine, _TABLES)
    return reader


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _model_names(server: Server) -> list[str]:
    with server.repository.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(models_table.c.name).order_by(models_table.c.name))]


@router.get("/models", summary="Traffic per model over a window: requests, errors, latency quantiles")
async def stats_models(
    request: Request, window: str | None = None, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    w = _window(window)

    def read() -> dict[str, Any]:
        names = _model_names(server)
        totals = _reader(server).model_totals(w, names)
        now = time.time()
        return {
            "window": w.name,
            "window_s": w.seconds,
            "started_at": _iso(server.started_at),
            "uptime_s": round(now - server.started_at, 3),
            "models": [{"model": name, **totals[name]} for name in names],
        }

    return JSONResponse(await asyncio.to_thread(read))


@router.get("/models/{name}", summary="One model's series per version over a window")
async def stats_model(
    name: str, request: Request, window: str | None = None, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    w = _window(window)

    def read() -> dict[str, Any]:
        with server.repository.engine.connect() as conn:
            known = conn.execute(sa.select(models_table.c.name).where(models_table.c.name == name)).first()
        if known is None:
            raise NotFound(f"no model '{name}'")
        return _reader(server).model_series(name, w)

    return JSONResponse(await asyncio.to_thread(read))


@router.get("/keys", summary="Usage per key and owner over a window, with each key's quota")
async def stats_keys(
    request: Request, window: str | None = None, caller: Caller = Depends(require_caller)
) -> JSONResponse:
    server = server_of(request)
    w = _window(window)
    return JSONResponse(await asyncio.to_thread(_keys_answer, server, caller, w, time.time()))


def _keys_answer(server: Server, caller: Caller, w: Window, now: float) -> dict[str, Any]:
    engine = server.repository.engine
    visible: list[str] | None
    if caller.role == "admin":
        visible = None  # every key with usage in the window
    elif caller.username:
        with engine.connect() as conn:
            owned = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.owner == caller.username))
            visible = [r[0] for r in owned] + [user_subject(caller.username)]
    else:
        visible = [caller.id] if caller.id else []
    series = _reader(server).usage_series(w, visible)
    ids = sorted(set(series["keys"]) | set(visible or ()))
    meta = _key_rows(server, ids)
    quotas = _quotas(server, ids, meta, now)
    keys: list[dict[str, Any]] = []
    owners: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    n = len(series["t"])
    for key_id in ids:
        s = series["keys"].get(key_id)
        row = meta.get(key_id)
        owner = row["owner"] if row is not None else (s["owner"] if s else "")
        if key_id.startswith("user:") and not owner and caller.username and visible is not None:
            owner = caller.username
        requests = s["requests"] if s else [0] * n
        units = s["units"] if s else [0] * n
        throttled = s["throttled"] if s else [0] * n
        totals = {
            "requests": sum(requests),
            "units": sum(units),
            "throttled": sum(throttled),
            "errors": s["errors"] if s else 0,
        }
        acc = owners[owner or ""]
        acc[0] += totals["requests"]
        acc[1] += totals["units"]
        acc[2] += totals["throttled"]
        keys.append(
            {
                "key_id": key_id,
                "name": row["name"]
                if row is not None
                else ("(token)" if key_id.startswith("user:") else key_id),
                "owner": owner or None,
                "plan": quotas.get(key_id, (None, None))[0],
                "requests": requests,
                "units": units,
                "throttled": throttled,
                "totals": totals,
                "quota": quotas.get(key_id, (None, None))[1],
            }
        )
    keys.sort(key=lambda k: (-k["totals"]["requests"], k["key_id"]))
    return {
        "window": w.name,
        "step_s": series["step_s"],
        "t": series["t"],
        "keys": keys,
        "owners": [
            {"owner": owner or None, "requests": r, "units": u, "throttled": t}
            for owner, (r, u, t) in sorted(owners.items(), key=lambda kv: (-kv[1][0], kv[0]))
        ],
    }


def _key_rows(server: Server, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{id: {name, owner, lineage}}`` of the keys among ``ids`` (user subjects and ``(other)``
    are not keys)."""
    wanted = [i for i in ids if not i.startswith("user:") and i != OTHER]
    if not wanted:
        return {}
    query = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.owner, api_keys.c.lineage)
    with server.repository.engine.connect() as conn:
        return {
            r.id: {"name": r.name, "owner": r.owner, "lineage": r.lineage}
            for r in conn.execute(query.where(api_keys.c.id.in_(wanted)))
        }


def _budget(key_id: str, row: dict[str, Any] | None) -> str:
    if row is None:
        return key_id  # a user's token subject: "user:<name>"
    return user_subject(row["owner"]) if row["owner"] else f"key:{row['lineage'] or key_id}"


def _quotas(
    server: Server, ids: list[str], meta: dict[str, dict[str, Any]], now: float
) -> dict[str, tuple[str | None, dict[str, Any] | None]]:
    """Each key's governing global plan (``*``: attached, else the default) and its quota now,
    computed as the gateway counts it: the units served this period by every key (and token)
    spending the same budget with the same period — what ``X-Quota-Remaining`` reflects."""
    ids = [i for i in ids if i != OTHER]
    if not ids:
        return {}
    engine = server.repository.engine
    budgets = {i: _budget(i, meta.get(i)) for i in ids}
    owners = {meta[i]["owner"] for i in ids if i in meta and meta[i]["owner"]}
    owners |= {i[5:] for i in ids if i.startswith("user:")}
    lineages = {meta[i]["lineage"] or i for i in ids if i in meta and not meta[i]["owner"]}
    # every member of those budgets: the owners' keys and tokens, the lineages' keys
    members: dict[str, dict[str, Any] | None] = {i: meta.get(i) for i in ids}
    query = sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.owner, api_keys.c.lineage)
    with engine.connect() as conn:
        conds = []
        if owners:
            conds.append(api_keys.c.owner.in_(sorted(owners)))
        if lineages:
            conds.append(api_keys.c.lineage.in_(sorted(lineages)))
            conds.append(api_keys.c.id.in_(sorted(lineages)))
        if conds:
            for r in conn.execute(query.where(sa.or_(*conds))):
                members.setdefault(r.id, {"name": r.name, "owner": r.owner, "lineage": r.lineage})
        key_ids = [m for m in members if not m.startswith("user:")]
        attached: dict[str, dict[str, str]] = defaultdict(dict)
        for r in conn.execute(sa.select(key_plans).where(key_plans.c.key_id.in_(key_ids))):
            attached[r.key_id][r.scope] = r.plan
    for owner in owners:
        members.setdefault(user_subject(owner), None)
    plans = {p.name: p for p in server.plans.list()}
    default = server.plans.default_plan

    def star_plan(member: str) -> Plan | None:
        name = attached.get(member, {}).get("*", default)
        return plans.get(name) if name is not None else None

    windows: dict[str, tuple[Plan, float, float]] = {}
    for member in members:
        plan = star_plan(member)
        if plan is not None and plan.quota_limit is not None and plan.quota_period is not None:
            start, end = quota_window(plan.quota_period, offset_days=plan.quota_offset, now=now)
            windows[member] = (plan, start, end)
    since = min((s for _, s, _ in windows.values()), default=now)
    rows = server.usage.report(
        key_ids=sorted(members), since=datetime.fromtimestamp(since, UTC).date(), until=None
    )
    used_by: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for u in rows:
        used_by[u["key_id"]].append((u["day"], u["scope"], int(u["units"])))
    out: dict[str, tuple[str | None, dict[str, Any] | None]] = {}
    for key_id in ids:
        plan = star_plan(key_id)
        if key_id not in windows or plan is None:
            out[key_id] = (plan.name if plan is not None else None, None)
            continue
        _, start, end = windows[key_id]
        first_day = datetime.fromtimestamp(start, UTC).date().isoformat()
        last_day = datetime.fromtimestamp(end, UTC).date().isoformat()  # exclusive
        used = 0
        for member, member_budget in ((m, _budget(m, members[m])) for m in members):
            other = windows.get(member)
            if member_budget != budgets[key_id] or other is None:
                continue
            if (other[0].quota_period, other[0].quota_offset) != (plan.quota_period, plan.quota_offset):
                continue
            own_scopes = attached.get(member, {})
            for day, scope, units in used_by.get(member, ()):
                if first_day <= day < last_day and (scope == "*" or scope not in own_scopes):
                    used += units
        assert plan.quota_limit is not None
        limit = plan.quota_limit
        remaining = max(0, limit - used)
        out[key_id] = (plan.name, _quota_json(limit, used, remaining, start, end, now))
    return out


def _quota_json(
    limit: int, used: int, remaining: int, start: float, end: float, now: float
) -> dict[str, Any]:
    """The quota now; ``projected_exhaustion``: when this period's burn rate (units since its
    start) uses up what remains — null if it would not before the period ends (or nothing was used)."""
    projected: str | None = None
    if remaining <= 0:
        projected = _iso(now)
    elif used > 0 and now > start:
        at = now + remaining / (used / (now - start))
        projected = _iso(at) if at < end else None
    return {
        "limit": limit,
        "used": used,
        "remaining": remaining,
        "period_start": _iso(start),
        "period_end": _iso(end),
        "used_ratio": round(used / limit, 6) if limit else 1.0,
        "projected_exhaustion": projected,
    }


@router.get("/workflows", summary="Workflow executions by status over a window")
async def stats_workflows(
    request: Request, window: str | None = None, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    w = _window(window)
    return JSONResponse(await asyncio.to_thread(_workflows_answer, server, w, time.time()))


def _workflows_answer(server: Server, w: Window, now: float) -> dict[str, Any]:
    """Executions started in each step, by their status now; totals per workflow."""
    step = w.step_s
    points = w.seconds // step
    last = int(now // step)
    first = last - points + 1
    since = datetime.fromtimestamp(first * step, UTC)
    by_status = {s: [0] * points for s in STATUSES}
    by_workflow: dict[str, dict[str, int]] = {}
    e = executions.c
    query = sa.select(e.workflow, e.status, e.started_at).where(e.started_at >= since)
    with server.repository.engine.connect() as conn:
        for workflow, status, started in conn.execute(query):
            i = int(started.timestamp() // step) - first
            if not 0 <= i < points:
                continue
            series = by_status.get(status)
            if series is None:
                series = by_status[status] = [0] * points
            series[i] += 1
            totals = by_workflow.get(workflow)
            if totals is None:
                totals = by_workflow[workflow] = {s: 0 for s in STATUSES} | {"total": 0}
            totals[status] = totals.get(status, 0) + 1
            totals["total"] += 1
    return {
        "window": w.name,
        "step_s": step,
        "t": [(first + i) * step for i in range(points)],
        "by_status": by_status,
        "by_workflow": dict(sorted(by_workflow.items())),
    }


__all__ = ["STATUSES", "router"]
