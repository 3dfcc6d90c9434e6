"""``mlgate monitor capture`` and ``mlgate monitor review``: data capture from the command line.

::

    mlgate monitor capture temperatura                      # show the settings
    mlgate monitor capture temperatura --sample 0.25 --redact email,customer.card --retention-days 7
    mlgate monitor capture ls temperatura --version 1 --since 2h
    mlgate monitor capture cat temperatura --since 30m --limit 100   # JSON lines
    mlgate monitor review vehiculos --since 1d                       # executions kept for review

All of them call the admin API (an admin key: ``--api-key`` or ``MLGATE_API_KEY``).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

__all__ = ["register_capture"]

_ACTIONS = ("ls", "cat")
_NOTHING = (
    "[yellow]no captured {what} of {model} in the window[/yellow] (default: the last 24 h; "
    "records are written every few seconds, MLGATE_CAPTURE__FLUSH_S, 5 by default). "
    "Is capture on? `mlgate monitor capture {model}` shows its sample rate."
)


def _lines(records: list[dict[str, Any]]) -> None:
    """Records as JSON lines on stdout (for jq, grep, files)."""
    out = sys.stdout
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    out.flush()


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def capture(
    action_or_name: Annotated[str, typer.Argument(metavar="ACTION_OR_NAME", help="ls, cat, or a model name")],
    name: Annotated[str | None, typer.Argument(metavar="[NAME]", help="the model (after ls or cat)")] = None,
    sample: Annotated[
        float | None, typer.Option(help="fraction of answers captured, 0 to 1 (-1: the global setting)")
    ] = None,
    redact: Annotated[
        str | None,
        typer.Option(help="fields never captured: names or dotted paths, comma-separated ('-': none)"),
    ] = None,
    retention_days: Annotated[
        int | None, typer.Option(help="days captured data is kept, 0 = forever (-1: the global setting)")
    ] = None,
    version: Annotated[int | None, typer.Option(help="ls/cat: only this version")] = None,
    since: Annotated[
        str | None, typer.Option(help="ls/cat: from (ISO-8601 or 30m, 2h, 1d; default 24h)")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="ls/cat: until (ISO-8601 or a time ago; default now)")
    ] = None,
    limit: Annotated[int, typer.Option(help="cat: records at most (up to 10000)")] = 1000,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Show or set a model's data capture (sample, redact, retention); `ls NAME` lists its captured
    files, `cat NAME` prints its captured records as JSON lines."""
    action = action_or_name if action_or_name in _ACTIONS else None
    model = name if action else action_or_name
    if model is None or (action is None and name is not None):
        err.print("[red]usage[/red]: mlgate monitor capture [ls|cat] NAME [options]")
        raise typer.Exit(2)
    with _client(url, api_key) as client:
        if action == "ls":
            params = _params(version=version, since=since, until=until)
            body = _check(client.get(f"/v1/models/{model}/capture/files", params=params))
            if not body["files"]:
                err.print(_NOTHING.format(what="file", model=model))
                return
            table = _table("key", "version", "hour", "bytes")
            table.columns[0].overflow = "fold"  # the whole key, wrapped (never cut with …)
            for f in body["files"]:
                table.add_row(f["key"], str(f["version"]), f["hour"], str(f["size"]))
            console.print(table)
            if body.get("truncated"):
                err.print("[yellow]more files than listed: narrow --since/--until[/yellow]")
            return
        if action == "cat":
            params = _params(version=version, since=since, until=until, limit=limit)
            body = _check(client.get(f"/v1/models/{model}/capture/records", params=params))
            if not body["records"]:
                err.print(_NOTHING.format(what="record", model=model))
            _lines(body["records"])
            if body.get("truncated"):
                err.print(
                    "[yellow]more records than printed: raise --limit or narrow --since/--until[/yellow]"
                )
            return
        change: dict[str, Any] = {}
        if sample is not None:
            change["sample"] = None if sample < 0 else sample
        if redact is not None:
            change["redact"] = (
                [] if redact.strip() == "-" else [r.strip() for r in redact.split(",") if r.strip()]
            )
        if retention_days is not None:
            change["retention_days"] = None if retention_days < 0 else retention_days
        if change:
            body = _check(client.put(f"/v1/models/{model}/capture", json=change))
        else:
            body = _check(client.get(f"/v1/models/{model}/capture"))
    console.print_json(data=body)


def review(
    workflow: Annotated[str, typer.Argument(help="the workflow (e.g. vehiculos)")],
    since: Annotated[str | None, typer.Option(help="from (ISO-8601 or 30m, 2h, 1d; default 24h)")] = None,
    until: Annotated[str | None, typer.Option(help="until (ISO-8601 or a time ago; default now)")] = None,
    limit: Annotated[int, typer.Option(help="records at most (up to 10000)")] = 100,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Print WORKFLOW's executions kept for review (a Fail state ended them, e.g. the confidence
    gate; stored under review/WORKFLOW/) as JSON lines: the image read (BASE64), the state data,
    execution id, error and cause."""
    with _client(url, api_key) as client:
        params = _params(workflow=workflow, since=since, until=until, limit=limit)
        body = _check(client.get("/v1/monitor/review", params=params))
    if not body["records"]:
        err.print(
            f"[yellow]no execution of {workflow} kept for review in the window[/yellow] "
            "(default: the last 24 h)"
        )
    _lines(body["records"])
    if body.get("truncated"):
        err.print("[yellow]more records than printed: raise --limit or narrow --since/--until[/yellow]")


def register_capture(app: typer.Typer) -> None:
    """Add the ``capture`` and ``review`` commands to ``mlgate monitor``."""
    app.command("capture")(capture)
    app.command("review")(review)
