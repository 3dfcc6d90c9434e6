"""``mlgate train RECIPE``: train, gate against the alias's version, register, promote (docs/lifecycle.md).

::

    mlgate train temperatura --promote production --seed 7
    mlgate train temperatura --param lags=6 --dry-run
    mlgate train mypkg.recipes:churn --model churn --promote production
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _client, console, err


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
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Train RECIPE, compare the candidate with the version ALIAS points at (default production) on
    the same held-out rows, register it, and promote it only when the improvement is real."""
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
