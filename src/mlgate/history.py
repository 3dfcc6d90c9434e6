"""A model's history in the registry database (``model_events``): what happened to it, when and
by whom — alias moves, canary splits and their automatic rollbacks, shadows, train runs.

Example::

    record_event(engine, "temperatura", "alias", alias="production", version=4, actor="key:ab12",
                 detail={"from": 3})
    for event in model_history(engine, "temperatura"):
        print(event["at"], event["kind"], event["detail"])

Kinds in use: ``alias`` (moved), ``alias_deleted``, ``split`` (canary weights set or cleared),
``rollback`` (the rollout guard took a canary's weight to 0), ``shadow`` (set or cleared),
``train`` (a run finished: its version and decision), ``retrain`` (a drift alert started one).
Rows are never updated; ``detail`` is a JSON object.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from mlgate.db.tables import model_events

__all__ = ["EVENT_KINDS", "model_history", "record_event"]

EVENT_KINDS = frozenset({"alias", "alias_deleted", "split", "rollback", "shadow", "train", "retrain", "push"})
#: The most events one read returns.
MAX_EVENTS = 1000


def record_event(
    bind: Engine | Connection,
    model: str,
    kind: str,
    *,
    alias: str | None = None,
    version: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
    at: float | None = None,
) -> None:
    """Append one event to ``model``'s history (inside ``bind``'s transaction when a connection)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown model event kind {kind!r}")
    row = {
        "model": model,
        "at": time.time() if at is None else at,
        "kind": kind,
        "alias": alias,
        "version": version,
        "actor": actor[:160] if actor else None,
        "detail": json.dumps(detail or {}, sort_keys=True, default=str),
    }
    if isinstance(bind, Connection):
        bind.execute(insert(model_events).values(**row))
        return
    with bind.begin() as conn:
        conn.execute(insert(model_events).values(**row))


def model_history(
    engine: Engine, model: str, *, limit: int = 100, before: int | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """``model``'s events, newest first: ``{"id", "at", "kind", "alias", "version", "actor",
    "detail"}``; ``before`` (an event id) pages back, ``kind`` filters."""
    t = model_events
    query = select(t).where(t.c.model == model)
    if before is not None:
        query = query.where(t.c.id < before)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    query = query.order_by(t.c.id.desc()).limit(max(1, min(limit, MAX_EVENTS)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "id": r.id,
            "at": r.at,
            "kind": r.kind,
            "alias": r.alias,
            "version": r.version,
            "actor": r.actor,
            "detail": json.loads(r.detail),
        }
        for r in rows
    ]
