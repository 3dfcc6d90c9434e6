"""``mlgate alerts``: firing alerts and their history, rules exported for Prometheus. Being written."""

from __future__ import annotations

import typer

alerts_app = typer.Typer(
    help="Alerts: what fires, its history, the rules for a real Prometheus.", no_args_is_help=True
)
