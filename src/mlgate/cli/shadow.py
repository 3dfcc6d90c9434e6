"""``mlgate models shadow NAME [--alias production] [--json]``: a shadow version's comparison.

Prints what ``GET /v1/models/{name}/shadow`` answers (docs/lifecycle.md, "Shadow"): the calls by
outcome, the overall agreement, one row per compared output path (numbers: |Δ| and relative Δ
p50/p95; labels: agreement), the confusion tables, and the latency and error deltas.
``--json`` prints the answer as is (for scripts).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console

__all__ = ["shadow_command"]


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _ms(value: Any) -> str:
    return "—" if value is None else f"{1000 * value:.2f} ms"


def _delta_ms(value: Any) -> str:
    return "—" if value is None else f"{1000 * value:+.2f} ms"


def shadow_command(
    name: str,
    alias: Annotated[str, typer.Option(help="the shadowed alias")] = "production",
    as_json: Annotated[bool, typer.Option("--json", help="print the answer as JSON")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """How NAME's shadow version compares with the alias's version: agreement, Δ, latency, errors."""
    with _client(url, api_key) as client:
        report = _check(client.get(f"/v1/models/{name}/shadow", params={"alias": alias}))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    calls = report["calls"]
    console.print(
        f"{report['model']} alias {report['alias']}: v{report['primary_version']} (primary) vs "
        f"v{report['shadow_version']} (shadow), sample {report['sample']:g}, "
        f"{report['processes']} process(es)"
    )
    console.print(
        f"pairs {report['pairs']}  calls ok {calls['ok']}, error {calls['error']}, "
        f"timeout {calls['timeout']}, skipped busy {calls['busy']}  agreement {_pct(report['agreement'])}"
    )
    table = _table(
        "output", "kind", "pairs", "agreement", "|Δ| p50", "|Δ| p95", "rel Δ p50", "rel Δ p95", "mismatched"
    )
    for path, out in report["outputs"].items():
        if out["kind"] == "numeric":
            table.add_row(
                path,
                "numeric",
                str(out["pairs"]),
                "—",
                _num(out["abs_delta"]["p50"]),
                _num(out["abs_delta"]["p95"]),
                _pct(out["rel_delta"]["p50"]),
                _pct(out["rel_delta"]["p95"]),
                str(out["mismatched"]),
            )
        else:
            table.add_row(path, "labels", str(out["pairs"]), _pct(out["agreement"]), "—", "—", "—", "—", "—")
    console.print(table)
    for path, out in report["outputs"].items():
        if out["kind"] != "numeric" and out["confusion"]:
            labels = sorted({s for row in out["confusion"].values() for s in row})
            confusion = _table(f"{path}: primary \\ shadow", *labels)
            for p, row in out["confusion"].items():
                confusion.add_row(p, *(str(row.get(s, 0)) for s in labels))
            console.print(confusion)
    lat = report["latency_s"]
    errors = report["errors"]
    console.print(
        f"latency p50 {_ms(lat['primary']['p50'])} → {_ms(lat['shadow']['p50'])} "
        f"({_delta_ms(lat['delta']['p50'])}), p95 {_ms(lat['primary']['p95'])} → "
        f"{_ms(lat['shadow']['p95'])} ({_delta_ms(lat['delta']['p95'])})"
    )
    console.print(
        f"errors: shadow {_pct(errors['shadow_rate'])} ({errors['shadow_failed']} failed), primary "
        f"{_pct(errors['primary_rate'])} ({errors['primary_errors']} of "
        f"{errors['primary_answers'] + errors['primary_errors']})"
    )
