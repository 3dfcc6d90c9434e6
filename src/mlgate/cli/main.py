"""The ``mlgate`` application: ``serve``, ``predict`` and the command groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from mlgate.cli.access import keys_app, plans_app, users_app
from mlgate.cli.alerts import alerts_app
from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, console, err
from mlgate.cli.deploy import deploy_app
from mlgate.cli.models import models_app
from mlgate.cli.monitor import monitor_app
from mlgate.cli.shadow import shadow_command
from mlgate.cli.train import history_command, retrain_command, runs_list, runs_show, train_command
from mlgate.cli.workflows import workflows_app
from mlgate.settings import export_environ, load_settings

app = typer.Typer(
    help="mlgate: machine-learning models as secure, metered, monitored HTTP APIs.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(plans_app, name="plans")
app.add_typer(users_app, name="users")
app.add_typer(workflows_app, name="workflows")
app.add_typer(monitor_app, name="monitor")
app.add_typer(alerts_app, name="alerts")
app.add_typer(deploy_app, name="deploy")  # mlgate deploy aws (issue 18)
app.command("train")(train_command)
# background train runs, retrain on drift, a model's history (cli/train.py; issue 16)
runs_app = typer.Typer(
    help="Training runs the server runs as jobs (mlgate train --remote, drift).", no_args_is_help=True
)
runs_app.command("ls")(runs_list)
runs_app.command("show")(runs_show)
app.add_typer(runs_app, name="runs")
monitor_app.command("retrain")(retrain_command)
models_app.command("history")(history_command)
models_app.command("shadow")(shadow_command)  # a shadow version's comparison (cli/shadow.py)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="bind port (default 8000)")] = None,
    workers: Annotated[int | None, typer.Option(help="server processes")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="local state (default ./.mlgate)")] = None,
) -> None:
    """Start the server with every installed reference model ready."""
    from mlgate.http.runner import run

    overrides = {
        k: str(v)
        for k, v in {"host": host, "port": port, "workers": workers, "data_dir": data_dir}.items()
        if v is not None
    }
    export_environ(overrides)
    settings = load_settings()
    if settings.workers > 1 and settings.limiter.url == "memory://":
        # Per-process limiter state would multiply every plan by N: share it between the workers.
        export_environ({"limiter__url": "local"})
        err.print(
            "[yellow]--workers > 1: usage-plan state shared in the data directory's limiter file "
            "instead of memory:// (or set MLGATE_LIMITER__URL)"
        )
        settings = load_settings()
    run(settings)


@app.command()
def predict(
    name: str,
    json_input: Annotated[str | None, typer.Option("--json", help="input JSON ('-' reads stdin)")] = None,
    file: Annotated[Path | None, typer.Option(exists=True, help="input JSON file")] = None,
    version: Annotated[str | None, typer.Option(help="version number or alias")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Send one input to NAME and print the answer."""
    if file is not None:
        raw = file.read_text()
    elif json_input == "-":
        raw = sys.stdin.read()
    elif json_input is not None:
        raw = json_input
    else:
        err.print("give --json or --file")
        raise typer.Exit(2)
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        err.print(f"[red]input is not JSON[/red]: {exc}")
        raise typer.Exit(2) from None
    route = f"/v1/models/{name}/versions/{version}/predict" if version else f"/v1/models/{name}/predict"
    with _client(url, api_key) as client:
        console.print_json(data=_check(client.post(route, json=payload)))


def main() -> None:
    try:
        app()
    except Exception as exc:
        if type(exc).__module__.split(".")[0] != "httpx":
            raise
        import httpx

        if not isinstance(exc, httpx.TransportError):
            raise
        try:
            url: object = exc.request.url
        except RuntimeError:  # no request attached
            url = "the server"
        err.print(f"[red]cannot reach {url}[/red]: {exc}")
        sys.exit(1)
