"""Data capture's per-model settings as stored in ``monitor_models`` (sample, redact, retention;
part of :mod:`mlgate.monitoring.capture`, whose :class:`~mlgate.monitoring.capture.Capture`
caches them)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlgate.db.tables import monitor_models

__all__ = ["ModelCapture", "load_settings", "store_settings"]


@dataclass(frozen=True, slots=True)
class ModelCapture:
    """One model's capture settings as stored (None: the global setting applies)."""

    sample: float | None = None
    redact: tuple[str, ...] | None = None
    retention_days: int | None = None


def load_settings(engine: Engine) -> dict[str, ModelCapture]:
    """Every model's stored capture settings (``monitor_models``)."""
    t = monitor_models
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.model, t.c.capture_sample, t.c.capture_redact, t.c.capture_retention_days)
        ).all()
    out: dict[str, ModelCapture] = {}
    for row in rows:
        redact_list: tuple[str, ...] | None = None
        if row.capture_redact:
            try:
                parsed = orjson.loads(row.capture_redact)
            except orjson.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                redact_list = tuple(str(p) for p in parsed)
        out[row.model] = ModelCapture(row.capture_sample, redact_list, row.capture_retention_days)
    return out


def store_settings(engine: Engine, model: str, value: ModelCapture) -> None:
    """Store ``model``'s capture settings (an upsert: the latest writer wins)."""
    t = monitor_models
    values = {
        "capture_sample": value.sample,
        "capture_redact": None if value.redact is None else orjson.dumps(list(value.redact)).decode(),
        "capture_retention_days": value.retention_days,
        "updated_at": time.time(),
    }
    with engine.begin() as conn:
        if conn.execute(update(t).where(t.c.model == model).values(**values)).rowcount:
            return
    try:
        with engine.begin() as conn:
            conn.execute(insert(t).values(model=model, **values))
    except IntegrityError:  # another process inserted the row first: ours is the newer change
        with engine.begin() as conn:
            conn.execute(update(t).where(t.c.model == model).values(**values))
