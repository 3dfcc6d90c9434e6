"""``mlgate monitor``: data capture, baselines and drift (docs/monitoring.md).

::

    mlgate monitor drift temperatura --since 24h               # feature, PSI, KS, band
    mlgate monitor baseline temperatura --data reference.csv   # or .jsonl (feature rows)
    mlgate monitor baseline temperatura --version 3 --from-capture --since 24h
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.cli.capture import register_capture
from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

monitor_app = typer.Typer(
    help="Monitoring: data capture, baselines and drift against each version's baseline.",
    no_args_is_help=True,
)
register_capture(monitor_app)

_BAND_STYLE = {"ok": "green", "moderate": "yellow", "drift": "red", "insufficient": "dim"}


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{float(value):.{digits}f}"


def upload_baseline(client: Any, name: str, version: int, data: Path) -> dict[str, Any]:
    """PUT a CSV or JSON-lines file of reference feature rows as the version's baseline."""
    suffix = data.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        err.print("[red]--data[/red] takes a .csv or .jsonl file (feature rows), or a .json baseline")
        raise typer.Exit(2)
    content_type = {".csv": "text/csv", ".json": "application/json"}.get(suffix, "application/x-ndjson")
    body: dict[str, Any] = _check(
        client.put(
            f"/v1/models/{name}/versions/{version}/baseline",
            content=data.read_bytes(),
            headers={"content-type": content_type},
        )
    )
    return body


def _print_baseline(body: dict[str, Any]) -> None:
    console.print(
        f"[green]baseline stored[/green] for {body['model']} v{body['version']}: {body['n_rows']} rows, "
        f"{len(body['feature_names'])} input and {len(body['output_names'])} output features "
        f"(input {body['input'].get('type')}, output {body['output'].get('kind')})"
    )


@monitor_app.command("drift")
def drift(
    name: str,
    version: Annotated[str | None, typer.Option(help="version number or alias (default: production)")] = None,
    since: Annotated[str | None, typer.Option(help="from (ISO-8601 or 30m, 2h, 1d)")] = None,
    until: Annotated[str | None, typer.Option(help="until (ISO-8601 or a time ago; default now)")] = None,
    all_features: Annotated[bool, typer.Option("--all", help="every feature, not only the 30 worst")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Evaluate NAME's drift over captured traffic now: feature, PSI, KS, band."""
    params = {k: v for k, v in {"version": version, "since": since, "until": until}.items() if v}
    with _client(url, api_key) as client:
        report = _check(client.get(f"/v1/models/{name}/drift", params=params))
    features = sorted(report["features"], key=lambda f: -(f.get("psi") or 0.0))
    shown = features if all_features else features[:30]
    table = _table("feature", "kind", "n", "PSI", "KS", "KS p", "chi²", "band")
    for f in shown:
        style = _BAND_STYLE.get(f["band"], "")
        table.add_row(
            f["name"],
            f["kind"],
            str(f["n"]),
            _fmt(f.get("psi")),
            _fmt(f.get("ks")),
            "—" if f.get("ks_p_value") is None else f"{f['ks_p_value']:.2g}",
            _fmt(f.get("chi2"), 1),
            f"[{style}]{f['band']}[/{style}]" if style else f["band"],
        )
    console.print(table)
    window = report["window"]
    verdict = report["verdict"]
    style = {"ok": "green", "moderate": "yellow", "drift": "red"}.get(verdict, "dim")
    console.print(
        f"{report['model']} v{report['version']}  {window['since']} .. {window['until']}  "
        f"{report['n_rows']} rows from {report['n_records']} records  "
        f"verdict [{style}]{verdict}[/{style}] (inputs {report['input_verdict']}, "
        f"outputs {report['output_verdict']})"
    )
    if len(shown) < len(features):
        err.print(f"[dim]{len(features) - len(shown)} more features: --all[/dim]")


@monitor_app.command("baseline")
def baseline(
    name: str,
    version: Annotated[int | None, typer.Option(help="default: production, else latest")] = None,
    from_capture: Annotated[bool, typer.Option("--from-capture", help="from captured traffic")] = False,
    since: Annotated[str, typer.Option(help="--from-capture: from (ISO-8601 or 24h, 7d)")] = "24h",
    until: Annotated[str | None, typer.Option(help="--from-capture: until (default now)")] = None,
    data: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="reference feature rows: .csv or .jsonl")
    ] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Compute and store NAME's baseline from a data file (--data) or captured traffic (--from-capture)."""
    if from_capture == (data is not None):
        err.print(
            "[red]usage[/red]: mlgate monitor baseline NAME (--from-capture [--since 24h] | --data FILE)"
        )
        raise typer.Exit(2)
    with _client(url, api_key) as client:
        if version is None:
            model = _check(client.get(f"/v1/models/{name}"))
            version = model.get("aliases", {}).get("production") or model.get("latest_version")
            if version is None:
                err.print(f"[red]{name} has no versions[/red]")
                raise typer.Exit(1)
        if data is not None:
            body = upload_baseline(client, name, int(version), data)
        else:
            params = {k: v for k, v in {"since": since, "until": until}.items() if v}
            body = _check(
                client.post(f"/v1/models/{name}/versions/{version}/baseline/from-capture", params=params)
            )
    _print_baseline(body)
