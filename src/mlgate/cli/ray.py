"""``mlgate ray``: models as Ray Serve deployments behind mlgate's gateway (docs/deploy.md, "Ray Serve").

``mlgate ray deploy [MODEL...]`` runs ``mlgate-<model>`` applications on the cluster (every
registered model by default), ``mlgate ray status`` shows them (replicas, nodes, scaling), ``mlgate
ray delete [MODEL...]`` removes them. They read the same ``MLGATE_*`` settings as ``mlgate serve``
(the registry and store the replicas load from; ``MLGATE_RAY__*`` for the cluster and scaling).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mlgate.cli.common import console, err

__all__ = ["ray_app"]

ray_app = typer.Typer(
    help="Run models as Ray Serve deployments behind mlgate's gateway (needs the 'ray' extra).",
    no_args_is_help=True,
)

Address = Annotated[
    str | None, typer.Option("--address", help="the Ray head (host:port); default MLGATE_RAY__ADDRESS")
]


def _settings(address: str | None) -> Any:
    from mlgate.settings import export_environ, load_settings

    if address is not None:
        export_environ({"ray__address": address})
    settings = load_settings()
    if settings.ray.address is None:
        err.print("[red]set MLGATE_RAY__ADDRESS or --address to the Ray cluster's head")
        raise typer.Exit(2)
    return settings


def _ray_serve() -> Any:
    from mlgate import ray_serve

    try:
        import ray  # noqa: F401
    except ImportError:
        err.print("[red]Ray is not installed: pip install 'mlgate[ray]'")
        raise typer.Exit(2) from None
    return ray_serve


@ray_app.command("deploy")
def deploy_command(
    models: Annotated[list[str] | None, typer.Argument(help="models to deploy (default: every one)")] = None,
    address: Address = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="replicas per model (MLGATE_RAY__NUM_REPLICAS)")
    ] = None,
    autoscaling: Annotated[
        str | None,
        typer.Option(
            "--autoscaling",
            help='Ray Serve autoscaling_config as JSON, e.g. \'{"min_replicas": 1, "max_replicas": 4}\'',
        ),
    ] = None,
) -> None:
    """Deploy models as ``mlgate-<model>`` (Serve's HTTP proxy off: the gateway is the way in)."""
    ray_serve = _ray_serve()
    settings = _settings(address)
    scaling = json.loads(autoscaling) if autoscaling else None
    names = ray_serve.deploy(settings, models or None, num_replicas=replicas, autoscaling=scaling)
    for name in names:
        console.print(f"running {name}")
    console.print(f"gateway: MLGATE_RAY__ADDRESS={settings.ray.address} mlgate serve")


@ray_app.command("status")
def status_command(address: Address = None) -> None:
    """mlgate's applications on the cluster: status, replicas and their nodes, scaling (JSON)."""
    ray_serve = _ray_serve()
    console.print_json(json.dumps(ray_serve.status(_settings(address))))


@ray_app.command("delete")
def delete_command(
    models: Annotated[list[str] | None, typer.Argument(help="models (default: every mlgate one)")] = None,
    address: Address = None,
) -> None:
    """Delete ``mlgate-<model>`` applications from the cluster."""
    ray_serve = _ray_serve()
    for name in ray_serve.delete(_settings(address), models or None):
        console.print(f"deleted {name}")
