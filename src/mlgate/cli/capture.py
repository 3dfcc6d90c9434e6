"""``mlgate monitor capture``: sampling, listing and reading captured data. Being written."""

from __future__ import annotations

import typer


def register_capture(app: typer.Typer) -> None:
    """Add the ``capture`` command to ``mlgate monitor``."""
