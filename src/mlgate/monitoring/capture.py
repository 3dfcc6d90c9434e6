"""Data capture (stub: being written)."""

from __future__ import annotations

from sqlalchemy import Engine

from mlgate.settings import Settings
from mlgate.store import ArtifactStore
from mlgate.telemetry.metrics import Metrics

__all__ = ["Capture"]


class Capture:
    def __init__(self, *, settings: Settings, store: ArtifactStore, engine: Engine, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.metrics = metrics

    def rate(self, model: str) -> float:
        return 0.0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
