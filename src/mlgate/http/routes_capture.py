"""Admin API: capture (docs/monitoring.md). Being written."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["monitoring"])
