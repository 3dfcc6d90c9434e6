"""The HTTP edge (FastAPI): the only package that imports the web framework."""

from __future__ import annotations

from mlgate.http.app import create_app

__all__ = ["create_app"]
