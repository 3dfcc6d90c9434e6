"""``mlgate alerts``: firing alerts and their history, rules exported for Prometheus."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

alerts_app = typer.Typer(
    help="Alerts: what fires, its history, the rules for a real Prometheus.", no_args_is_help=True
)


def _folded(*columns: str) -> Any:
    """A table whose cells wrap instead of being cut with "…" (times and labels must be whole)."""
    table = _table(*columns)
    for column in table.columns:
        column.overflow = "fold"
    return table


def _labels(labels: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")


@alerts_app.command("ls")
def alerts_ls(
    show_all: Annotated[bool, typer.Option("--all", help="also the recent history of state changes")] = False,
    since: Annotated[
        str | None, typer.Option(help="history since (ISO 8601, epoch seconds or a time ago: 30m, 24h, 7d)")
    ] = None,
    limit: Annotated[int, typer.Option(help="history entries at most")] = 50,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Alerts firing and pending now (--all: and their recent history). Needs an admin key."""
    params: dict[str, Any] = {"limit": limit}
    if since:
        params["since"] = since
    with _client(url, api_key) as client:
        body = _check(client.get("/v1/alerts", params=params))
    alerts = body["alerts"]
    if alerts:
        table = _folded("alert", "state", "labels", "value", "since", "summary")
        for a in alerts:
            table.add_row(
                a["alertname"],
                a["state"],
                _labels(a["labels"]),
                str(a["value"]),
                a["activeAt"] or "",
                a["annotations"].get("summary", ""),
            )
        console.print(table)
    else:
        console.print("no alert is firing or pending")
    if show_all:
        history = _folded("at", "alert", "state", "labels", "value")
        for e in body["history"]:
            history.add_row(e["at"], e["alertname"], e["state"], _labels(e["labels"]), str(e["value"]))
        console.print(history)


@alerts_app.command("export-rules")
def alerts_export_rules(
    out: Annotated[
        Path | None, typer.Option("--out", help="write the rule file here (default: stdout)")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="from this machine's settings (MLGATE_ALERTS__*), no server")
    ] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """The alert rules as a Prometheus rule file (`promtool check rules` accepts it)."""
    if local:
        from mlgate.monitoring.rules import RuleError, export_rules_yaml, load_rules
        from mlgate.settings import load_settings

        try:
            text = export_rules_yaml(load_rules(load_settings().alerts))
        except RuleError as exc:
            err.print(f"[red]the alert rules do not load[/red]: {exc}")
            raise typer.Exit(2) from None
    else:
        with _client(url, api_key) as client:
            response = client.get("/v1/alerts/rules/export")
            if response.is_error:
                _check(response)
            text = response.text
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"[green]wrote[/green] {out}")
