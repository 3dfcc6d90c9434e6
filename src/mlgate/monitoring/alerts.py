"""Alert rules evaluated in-process (stub: being written)."""

from __future__ import annotations

from sqlalchemy import Engine

from mlgate.settings import Settings
from mlgate.telemetry.metrics import Metrics

__all__ = ["AlertEngine"]


class AlertEngine:
    def __init__(self, *, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
