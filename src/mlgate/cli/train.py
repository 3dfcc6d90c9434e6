"""``mlgate train RECIPE``: train, gate against the alias's version, register, promote (docs/lifecycle.md).

::

    mlgate train temperatura --promote production --seed 7
    mlgate train temperatura --param lags=6 --dry-run
    mlgate train mypkg.recipes:churn --model churn --promote production
    mlgate train cardiaco --remote --seed 3          # a background job on the server (POST /v1/train)
    mlgate runs ls --model cardiaco                  # its runs; mlgate runs show ID [--wait]
    mlgate monitor retrain temperatura --recipe temperatura --cooldown 6h   # retrain on drift
    mlgate models history temperatura                # alias moves, train runs, retrains…

Locally (the default) the fit runs in this process and talks to the server with your key; with
``--remote`` the server runs it as a job (subprocess, its own short-lived key) and this command
only starts it and follows its status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err


def train_command(
    recipe: Annotated[str, typer.Argument(help="a built-in recipe (temperatura) or module:function")],
    model: Annotated[str | None, typer.Option(help="model to register (default: the recipe's name)")] = None,
    promote: Annotated[
        str | None, typer.Option(help="move this alias to the candidate when the gate passes")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="train and evaluate; register nothing")] = False,
    seed: Annotated[int, typer.Option(help="seed of the recipe and the bootstrap")] = 0,
    param: Annotated[list[str] | None, typer.Option(help="a recipe parameter k=v (repeatable)")] = None,
    min_improvement: Annotated[
        float, typer.Option(help="the interval's lower bound (or accuracy gain) must exceed this")
    ] = 0.0,
    data_dir: Annotated[
        Path | None, typer.Option(exists=True, file_okay=False, help="the recipe's data (default: its own)")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="also write the run's report (JSON) here")] = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="run it on the server as a background job (POST /v1/train)")
    ] = False,
    wait: Annotated[bool, typer.Option(help="with --remote: follow the run until it ends")] = True,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Train RECIPE, compare the candidate with the version ALIAS points at (default production) on
    the same held-out rows, register it, and promote it only when the improvement is real."""
    if remote:
        if data_dir is not None:
            err.print(
                "[red]--data-dir is a local path: not with --remote (the server uses the recipe's data)[/red]"
            )
            raise typer.Exit(2)
        _start_remote(
            recipe, model, promote, dry_run, seed, param, min_improvement, report, wait, url, api_key
        )
        return
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from mlgate.errors import MlgateError
    from mlgate.lifecycle.gate import GateConfig
    from mlgate.lifecycle.recipes import parse_params
    from mlgate.lifecycle.train import TrainError, run_train

    try:
        params = parse_params(param)
    except MlgateError as exc:
        err.print(f"[red]{escape(exc.message)}[/red]")
        raise typer.Exit(2) from None
    config = GateConfig(min_improvement=min_improvement, seed=seed)
    tasks: dict[str, Any] = {}
    with (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err.real(),
        ) as bar,
        _client(url, api_key, timeout=600) as client,
    ):

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        try:
            out = run_train(
                recipe,
                client=client,
                model=model,
                alias=promote or "production",
                promote=promote is not None,
                dry_run=dry_run,
                seed=seed,
                params=params,
                data_dir=data_dir,
                config=config,
                progress=progress,
            )
        except (TrainError, MlgateError) as exc:
            err.print(f"[red]train failed[/red]: {escape(str(getattr(exc, 'message', exc)))}")
            raise typer.Exit(1) from None
    if report is not None:
        report.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _print(out)


def _print(out: dict[str, Any]) -> None:
    quality = out.get("quality") or {}
    if quality:
        metric = out["metric"]
        console.print(
            f"{out['model']}: candidate {metric} {quality['candidate'].get(metric, '—')} vs "
            f"v{out['current_version']} {quality['current'].get(metric, '—')} on n={out['n']} held-out rows"
        )
        if "interval" in quality:
            console.print(f"  {quality['confidence']:.0%} interval of the improvement: {quality['interval']}")
    for name, g in sorted((out.get("guardrails") or {}).items()):
        console.print(f"  {name}: {g.get('reason', g.get('status'))}")
    colour = "green" if out["decision"] == "promote" else "yellow"
    console.print(f"[{colour}]{out['decision']}[/{colour}]: {out['reason']}")
    if out.get("registered") is not None:
        console.print(f"registered {out['model']} v{out['registered']} (gate.json among its files)")
    else:
        console.print("dry run: nothing registered")
    if out.get("promoted"):
        console.print(f"[green]{out['alias']} → v{out['registered']}[/green]")
    elif out.get("registered") is not None and out.get("current_version") is not None:
        console.print(f"{out['alias']} stays at v{out['current_version']}")
    console.print_json(
        data={k: out[k] for k in ("decision", "reason", "registered", "promoted", "data_hash")}
    )


# -- remote runs (POST /v1/train) -----------------------------------------------------------------

_DONE = ("succeeded", "failed")


def _start_remote(
    recipe: str,
    model: str | None,
    promote: str | None,
    dry_run: bool,
    seed: int,
    param: list[str] | None,
    min_improvement: float,
    report: Path | None,
    wait: bool,
    url: str,
    api_key: str | None,
) -> None:
    from rich.markup import escape

    from mlgate.errors import MlgateError
    from mlgate.lifecycle.recipes import parse_params

    try:
        params = parse_params(param)
    except MlgateError as exc:
        err.print(f"[red]{escape(exc.message)}[/red]")
        raise typer.Exit(2) from None
    body: dict[str, Any] = {
        "recipe": recipe,
        "seed": seed,
        "params": params,
        "dry_run": dry_run,
        "trigger": "cli",
    }
    body["min_improvement"] = min_improvement
    if model is not None:
        body["model"] = model
    if promote is not None:
        body["promote"] = promote
    with _client(url, api_key, timeout=60) as client:
        run = _check(client.post("/v1/train", json=body))
        console.print(f"started train run {run['id']} ({run['model']}, {run['recipe']})")
        if not wait:
            console.print(f"follow it with: mlgate runs show {run['id']} --wait")
            return
        run = _follow(client, run["id"])
    if report is not None:
        report.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _print_run(run)
    if run["status"] != "succeeded":
        raise typer.Exit(1)


def _follow(client: Any, run_id: str, interval: float = 0.5) -> dict[str, Any]:
    """Poll ``GET /v1/train/{id}`` until the run ends, printing each new phase."""
    import time

    last = None
    while True:
        run: dict[str, Any] = _check(client.get(f"/v1/train/{run_id}"))
        phase = (run.get("progress") or {}).get("phase")
        if phase != last and run["status"] not in _DONE:
            err.print(f"  {run['status']}: {phase}")
            last = phase
        if run["status"] in _DONE:
            return run
        time.sleep(interval)


def _print_run(run: dict[str, Any]) -> None:
    colour = "green" if run["status"] == "succeeded" else "red"
    console.print(f"run {run['id']}: [{colour}]{run['status']}[/{colour}] ({run['model']}, {run['recipe']})")
    gate = run.get("gate") or {}
    if gate:
        console.print(f"  {run['decision']}: {gate.get('reason')}")
        if run.get("version") is not None:
            console.print(
                f"  registered {run['model']} v{run['version']}; promoted: {bool(run.get('promoted'))}"
            )
    if run.get("error"):
        err.print(f"  error: {run['error']}")


def runs_list(
    model: Annotated[str | None, typer.Option(help="only this model's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Training runs (over HTTP, by a drift alert or from the CLI), newest first."""
    from datetime import UTC, datetime

    params: dict[str, Any] = {"limit": limit}
    if model is not None:
        params["model"] = model
    with _client(url, api_key) as client:
        runs = _check(client.get("/v1/train", params=params))["runs"]
    table = _table("id", "model", "recipe", "trigger", "status", "phase", "created", "version", "decision")
    for r in runs:
        created = datetime.fromtimestamp(r["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            r["id"],
            r["model"],
            r["recipe"],
            r["trigger"],
            r["status"],
            "" if r["status"] in _DONE else str((r.get("progress") or {}).get("phase") or ""),
            created,
            "" if r["version"] is None else str(r["version"]),
            r["decision"] or "",
        )
    console.print(table)


def runs_show(
    run_id: Annotated[str, typer.Argument(help="the run's id")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the run as JSON")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """One training run: status, progress, decision and reason, the gate summary, the error."""
    with _client(url, api_key) as client:
        run = _follow(client, run_id) if wait else _check(client.get(f"/v1/train/{run_id}"))
    if as_json:
        console.print_json(data=run)
    else:
        _print_run(run)


# -- retrain on drift (PUT /v1/models/{name}/retrain) ----------------------------------------------


def retrain_command(
    name: Annotated[str, typer.Argument(help="the model")],
    recipe: Annotated[str | None, typer.Option(help="opt in: the recipe a drift alert runs")] = None,
    alias: Annotated[str, typer.Option(help="promoted when the run passes the gate")] = "production",
    cooldown: Annotated[str, typer.Option(help="at most one run per this (6h, 30m, 1h30m)")] = "6h",
    seed: Annotated[int, typer.Option(help="the run's seed")] = 0,
    param: Annotated[list[str] | None, typer.Option(help="a recipe parameter k=v (repeatable)")] = None,
    min_improvement: Annotated[float, typer.Option(help="the gate's minimum improvement")] = 0.0,
    off: Annotated[bool, typer.Option("--off", help="stop retraining the model on drift")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Retrain NAME when its drift alert (MlgateDriftPsiHigh) fires: with --recipe, opt in; with
    --off, opt out; with neither, show the policy."""
    from mlgate.errors import MlgateError
    from mlgate.lifecycle.recipes import parse_params

    with _client(url, api_key) as client:
        if off:
            _check(client.delete(f"/v1/models/{name}/retrain"))
            console.print(f"{name}: no retrain on drift")
            return
        if recipe is None:
            console.print_json(data=_check(client.get(f"/v1/models/{name}/retrain")))
            return
        try:
            params = parse_params(param)
        except MlgateError as exc:
            err.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(2) from None
        body = {
            "on_drift": True,
            "recipe": recipe,
            "alias": alias,
            "cooldown": cooldown,
            "seed": seed,
            "params": params,
            "min_improvement": min_improvement,
        }
        policy = _check(client.put(f"/v1/models/{name}/retrain", json=body))
    console.print(
        f"{name}: a drift alert runs {policy['recipe']} (promote {policy['alias']} if the gate passes), "
        f"at most once per {policy['cooldown_s']:g} s"
    )


# -- history (GET /v1/models/{name}/history) -------------------------------------------------------


def history_command(
    name: Annotated[str, typer.Argument(help="the model")],
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    kind: Annotated[str | None, typer.Option(help="only this kind (alias, train, retrain, split…)")] = None,
    before: Annotated[int | None, typer.Option(help="events older than this event id (paging)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the events as JSON")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """NAME's history, newest first: alias moves, canary splits and rollbacks, train runs, retrains."""
    from datetime import UTC, datetime

    params: dict[str, Any] = {"limit": limit}
    if kind is not None:
        params["kind"] = kind
    if before is not None:
        params["before"] = before
    with _client(url, api_key) as client:
        body = _check(client.get(f"/v1/models/{name}/history", params=params))
    if as_json:
        console.print_json(data=body)
        return
    table = _table("id", "at (UTC)", "kind", "alias", "version", "actor", "detail")
    for e in body["events"]:
        at = datetime.fromtimestamp(e["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        detail = _describe(e["kind"], e["detail"])
        table.add_row(
            str(e["id"]),
            at,
            e["kind"],
            e["alias"] or "",
            "" if e["version"] is None else str(e["version"]),
            e["actor"] or "",
            detail if len(detail) <= 160 else detail[:157] + "…",
        )
    console.print(table)


def _describe(kind: str, detail: dict[str, Any]) -> str:
    """A train or retrain event in words; any other kind as its JSON detail."""
    run = str(detail.get("run") or "")[:8]
    if kind == "train":
        said = f"{detail.get('status')} run {run} ({detail.get('trigger')})"
        if detail.get("decision"):
            promoted = " (promoted)" if detail.get("promoted") else ""
            said += f": {detail['decision']}{promoted} — {detail.get('reason')}"
        if detail.get("error"):
            said += f": {detail['error']}"
        return said
    if kind == "retrain":
        features = ", ".join(detail.get("features") or [])
        why = f"{detail.get('alert')} on {features}" if features else str(detail.get("alert"))
        if detail.get("outcome") == "started":
            return f"started run {run} ({why})"
        return f"skipped: {detail.get('reason')} ({why})"
    return json.dumps(detail, sort_keys=True, ensure_ascii=False)
