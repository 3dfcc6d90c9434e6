"""``mlgate monitor``: data capture, baselines and drift (docs/monitoring.md)."""

from __future__ import annotations

import typer

from mlgate.cli.capture import register_capture

monitor_app = typer.Typer(
    help="Monitoring: data capture, baselines and drift against each version's baseline.",
    no_args_is_help=True,
)
register_capture(monitor_app)
