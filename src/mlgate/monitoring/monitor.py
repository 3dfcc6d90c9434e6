"""Drift evaluations on demand and on a schedule (stub: being written)."""

from __future__ import annotations

from sqlalchemy import Engine

from mlgate.repository import Repository
from mlgate.settings import Settings
from mlgate.store import ArtifactStore
from mlgate.telemetry.metrics import Metrics

__all__ = ["DriftMonitor"]


class DriftMonitor:
    def __init__(
        self,
        *,
        settings: Settings,
        store: ArtifactStore,
        engine: Engine,
        repository: Repository,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.repository = repository
        self.metrics = metrics

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
