"""``mlgate workflows``: deploy, start, describe, list, stop, export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

if TYPE_CHECKING:
    pass

workflows_app = typer.Typer(
    help="Workflows: Amazon States Language definitions run here (start, describe, export).",
    no_args_is_help=True,
)


def _read_json_file(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        err.print(f"[red]cannot read the {what} {path}[/red]: {exc}")
        raise typer.Exit(2) from None


def _print_executions(rows: list[dict[str, Any]]) -> None:
    table = _table("execution", "workflow", "status", "error", "started", "stopped")
    for e in rows:
        stopped = e["stopDate"] or ""
        table.add_row(e["executionId"], e["workflow"], e["status"], e["error"] or "", e["startDate"], stopped)
    console.print(table)


@workflows_app.command("deploy")
def workflows_deploy(
    name: str,
    file: Annotated[Path, typer.Argument(exists=True, help="the definition (Amazon States Language JSON)")],
    mapping: Annotated[
        Path | None, typer.Option(exists=True, help="mapping of the definition's AWS resources (JSON)")
    ] = None,
    description: Annotated[str | None, typer.Option(help="a description")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Deploy NAME from FILE (a new revision when it exists). Needs an admin key."""
    body: dict[str, Any] = {"definition": _read_json_file(file, "definition")}
    if mapping is not None:
        body["mapping"] = _read_json_file(mapping, "mapping")
    if description is not None:
        body["description"] = description
    with _client(url, api_key) as client:
        deployed = _check(client.put(f"/v1/workflows/{name}", json=body))
    console.print(f"[green]deployed[/green] {deployed['name']} revision {deployed['revision']}")


@workflows_app.command("start")
def workflows_start(
    name: str,
    input_json: Annotated[str, typer.Option("--input", help="input JSON ('-' reads stdin)")] = "{}",
    run_async: Annotated[bool, typer.Option("--async", help="return the execution id at once")] = False,
    execution_name: Annotated[str | None, typer.Option("--name", help="a unique execution name")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Start an execution of NAME; waits for its end unless --async."""
    raw = sys.stdin.read() if input_json == "-" else input_json
    try:
        payload = json.loads(raw)
    except json.JSONDecodeError as exc:
        err.print(f"[red]input is not JSON[/red]: {exc}")
        raise typer.Exit(2) from None
    params = {"mode": "async" if run_async else "sync"}
    if execution_name:
        params["execution_name"] = execution_name
    with _client(url, api_key, timeout=3600) as client:
        body = _check(client.post(f"/v1/workflows/{name}/executions", json=payload, params=params))
    console.print_json(data=body)
    if not run_async and body.get("status") != "SUCCEEDED":
        raise typer.Exit(1)


@workflows_app.command("describe")
def workflows_describe(
    execution_id: str,
    history: Annotated[bool, typer.Option(help="print the event history too")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Describe an execution (status, input, output, error, cause)."""
    with _client(url, api_key) as client:
        body = _check(client.get(f"/v1/executions/{execution_id}"))
        if history:
            body["history"] = _check(client.get(f"/v1/executions/{execution_id}/history"))["events"]
    console.print_json(data=body)


@workflows_app.command("list")
def workflows_list(
    workflow: Annotated[str | None, typer.Option(help="only this workflow's executions")] = None,
    status: Annotated[str | None, typer.Option(help="RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED")] = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    deployed: Annotated[bool, typer.Option("--deployed", help="list the deployed workflows instead")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """List executions (yours; an admin's: all), or the deployed workflows with --deployed."""
    with _client(url, api_key) as client:
        if deployed:
            rows = _check(client.get("/v1/workflows"))["workflows"]
            table = _table("workflow", "revision", "updated", "description")
            for w in rows:
                table.add_row(w["name"], str(w["revision"]), w["updatedAt"], w["description"])
            console.print(table)
            return
        params: dict[str, Any] = {"limit": limit}
        params.update({k: v for k, v in {"workflow": workflow, "status": status}.items() if v})
        _print_executions(_check(client.get("/v1/executions", params=params))["executions"])


@workflows_app.command("stop")
def workflows_stop(
    execution_id: str,
    cause: Annotated[str | None, typer.Option(help="why it is stopped")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Stop a running execution (it ends ABORTED)."""
    with _client(url, api_key) as client:
        stop = client.post(f"/v1/executions/{execution_id}/stop", json={"cause": cause} if cause else {})
        body = _check(stop)
    console.print(f"execution {body['executionId']}: {body['status']}")


@workflows_app.command("export")
def workflows_export(
    name: str,
    target: Annotated[str, typer.Option(help="only 'aws' (Step Functions)")] = "aws",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write here (default stdout)")] = None,
    region: Annotated[str | None, typer.Option(help="fill ${AWS::Region} in mlgate resources")] = None,
    account: Annotated[str | None, typer.Option(help="fill ${AWS::AccountId} in mlgate resources")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Write NAME's definition for AWS Step Functions (aws stepfunctions create-state-machine)."""
    params = {k: v for k, v in {"target": target, "region": region, "account": account}.items() if v}
    with _client(url, api_key) as client:
        body = _check(client.get(f"/v1/workflows/{name}/export", params=params))
    text = json.dumps(body["definition"], indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"[green]wrote[/green] {output}")
    for f in body["functions"]:
        err.print(f"state {f['state']!r}: {f['from']} -> {f['resource']} (deploy that Lambda function)")
    if body["placeholders"]:
        err.print(f"replace {', '.join(body['placeholders'])} (or pass --region/--account) before deploying")
