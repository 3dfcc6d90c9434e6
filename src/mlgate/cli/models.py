"""``mlgate models``: list, info, push (files, folders, s3:// URIs), alias, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

if TYPE_CHECKING:
    from rich.progress import Progress

models_app = typer.Typer(help="Models, versions and aliases.", no_args_is_help=True)


@models_app.command("list")
def models_list(url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """List models, their aliases and loaded versions."""
    with _client(url, api_key) as client:
        body = _check(client.get("/v1/models"))
    table = _table("model", "latest", "aliases", "loaded")
    for m in body["models"]:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], str(m["latest_version"]), aliases, ", ".join(map(str, m["loaded_versions"])))
    console.print(table)


@models_app.command("info")
def models_info(name: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Show a model, its aliases' splits and shadows, and every version's manifest."""
    with _client(url, api_key) as client:
        body = _check(client.get(f"/v1/models/{name}"))
    for policy in (body.get("policies") or {}).values():
        console.print(describe_policy(policy))
    console.print_json(data=body)


class _Reader:
    """A file whose reads advance a progress bar (httpx streams multipart files by ``read``)."""

    def __init__(self, f: BinaryIO, progress: Progress, task: Any) -> None:
        self._f, self._progress, self._task = f, progress, task

    def read(self, size: int = -1) -> bytes:
        chunk = self._f.read(size)
        self._progress.update(self._task, advance=len(chunk))
        return chunk


@models_app.command("push")
def models_push(
    name: str,
    path: Annotated[
        str, typer.Argument(help="a model file, a folder of files, or an s3://bucket/key the server fetches")
    ],
    runtime: Annotated[str | None, typer.Option(help="runtime (default: from the extension)")] = None,
    artifact: Annotated[str | None, typer.Option(help="main file inside a folder")] = None,
    manifest: Annotated[Path | None, typer.Option(exists=True, help="manifest JSON file")] = None,
    alias: Annotated[
        list[str] | None, typer.Option(help="alias to point at the new version (repeatable)")
    ] = None,
    trusted: Annotated[bool, typer.Option(help="allow a pickle to load (it executes code)")] = False,
    sha256: Annotated[
        str | None, typer.Option(help="the sha256 an s3:// object must have (files are hashed here)")
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="reference rows (.csv/.jsonl): the drift baseline"),
    ] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Upload a new version of NAME from PATH (streamed, with progress; the server checks each
    file's sha256), or register it from an s3:// URI the server fetches itself."""

    data: dict[str, Any] = json.loads(manifest.read_text()) if manifest else {}
    if runtime:
        data["runtime"] = runtime
    if artifact:
        data["artifact"] = artifact
    if trusted:
        data["trusted"] = True
    fields = {"manifest": json.dumps(data), "aliases": ",".join(alias or [])}
    if path.startswith("s3://"):
        pushed = _push_uri(name, path, sha256, fields, url, api_key)
        _push_baseline(name, pushed, baseline, url, api_key)
        return
    local = Path(path)
    if not local.exists():
        err.print(f"[red]no such file or folder[/red]: {path}")
        raise typer.Exit(2)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    root = local.parent if local.is_file() else local
    total = sum(p.stat().st_size for p in files)
    handles = [p.open("rb") for p in files]
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err.real(),
        ) as progress:
            task = progress.add_task(f"hashing {name}", total=total)
            digests = [_sha256(p, progress, task) for p in files]
            progress.reset(task, description=f"uploading {name}", total=total)
            parts: list[tuple[str, Any]] = [
                (
                    "files",
                    (p.relative_to(root).as_posix(), _Reader(h, progress, task), "application/octet-stream"),
                )
                for p, h in zip(files, handles, strict=True)
            ]
            checks = [f"{p.relative_to(root).as_posix()}={d}" for p, d in zip(files, digests, strict=True)]
            form: dict[str, Any] = {**fields, "sha256": checks}
            with _client(url, api_key, timeout=3600) as client:
                body = _check(client.post(f"/v1/models/{name}/versions", files=parts, data=form))
    finally:
        for h in handles:
            h.close()
    _print_pushed(body, "checked by the server against this client's")
    _push_baseline(name, body, baseline, url, api_key)


def _push_baseline(
    name: str, pushed: dict[str, Any], data: Path | None, url: str, api_key: str | None
) -> None:
    """``--baseline``: the reference rows uploaded as the new version's drift baseline."""
    if data is None:
        return
    from mlgate.cli.monitor import upload_baseline

    with _client(url, api_key) as client:
        body = upload_baseline(client, name, int(pushed["version"]), data)
    console.print(f"[green]baseline stored[/green] for {name} v{pushed['version']}: {body['n_rows']} rows")


def _sha256(path: Path, progress: Any, task: Any) -> str:
    """A file's sha256, advancing the progress bar (the server checks it against what it received)."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            progress.update(task, advance=len(chunk))
    return digest.hexdigest()


def _push_uri(
    name: str, uri: str, sha256: str | None, fields: dict[str, str], url: str, api_key: str | None
) -> dict[str, Any]:
    """Register a version from an object the server fetches itself (never through this client)."""
    parts = [(k, (None, v)) for k, v in {**fields, "uri": uri, "sha256": sha256 or ""}.items() if v]
    with err.real().status(f"the server is fetching {uri}"), _client(url, api_key, timeout=3600) as client:
        body = _check(client.post(f"/v1/models/{name}/versions", files=parts))
    _print_pushed(body, "checked by the server against --sha256" if sha256 else "computed by the server")
    return dict(body)


def _print_pushed(body: dict[str, Any], how: str) -> None:
    console.print(f"[green]registered[/green] {body['model']} v{body['version']} ({body['runtime']})")
    for rel, digest in sorted(body["files"].items()):
        console.print(f"  sha256 {digest}  {rel}  ({how})")


@models_app.command("alias")
def models_alias(
    name: str,
    alias: str,
    version: Annotated[int | None, typer.Argument(help="point the alias here (ends a split)")] = None,
    split: Annotated[
        str | None, typer.Option(help="canary split VERSION=PERCENT,… (e.g. 3=90,4=10), sticky per caller")
    ] = None,
    no_split: Annotated[
        bool, typer.Option("--no-split", help="end the split: all to the stable version")
    ] = False,
    min_requests: Annotated[
        int | None, typer.Option(help="guard: requests each version needs before the canary is judged")
    ] = None,
    max_error_rate_delta: Annotated[
        float | None, typer.Option(help="guard: the canary's error rate may exceed the stable's by this much")
    ] = None,
    max_p95_ratio: Annotated[
        float | None, typer.Option(help="guard: the canary's p95 may exceed the stable's by this fraction")
    ] = None,
    no_guard: Annotated[
        bool, typer.Option("--no-guard", help="never roll the canary back by itself")
    ] = False,
    shadow: Annotated[int | None, typer.Option(help="mirror the alias's traffic to this version")] = None,
    sample: Annotated[float, typer.Option(help="the fraction of requests the shadow sees")] = 1.0,
    shadow_timeout: Annotated[float | None, typer.Option(help="the shadow's own timeout, seconds")] = None,
    shadow_concurrency: Annotated[int | None, typer.Option(help="shadow calls in flight per process")] = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="stop the alias's shadow")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Point ALIAS of NAME at VERSION, split its traffic (canary), or give it a shadow.

    mlgate models alias temperatura production 4                      # promote / roll back
    mlgate models alias temperatura production --split 3=90,4=10      # canary, guarded
    mlgate models alias temperatura production --shadow 4 --sample 0.25
    mlgate models alias temperatura production --no-split --no-shadow
    """
    if version is None and split is None and shadow is None and not (no_split or no_shadow):
        raise typer.BadParameter("give a VERSION, --split, --shadow, --no-split or --no-shadow")
    if version is not None and split is not None:
        raise typer.BadParameter("give either a VERSION or --split, not both")
    base = f"/v1/models/{name}/aliases/{alias}"
    with _client(url, api_key) as client:
        body: dict[str, Any] | None = None
        if version is not None:
            body = _check(client.put(base, json={"version": version}))
            console.print(f"{body['model']}:{body['alias']} → v{body['version']}")
        if split is not None:
            from mlgate.policies import parse_weights

            try:
                weights = parse_weights(split)
            except Exception as exc:  # InvalidInput: a clear usage error
                raise typer.BadParameter(str(getattr(exc, "message", exc))) from None
            guard: dict[str, Any] = {}
            if no_guard:
                guard["enabled"] = False
            for key, value in (
                ("min_requests", min_requests),
                ("max_error_rate_delta", max_error_rate_delta),
                ("max_p95_ratio", max_p95_ratio),
            ):
                if value is not None:
                    guard[key] = value
            body = _check(
                client.put(
                    f"{base}/split", json={"weights": {str(v): w for v, w in weights.items()}, "guard": guard}
                )
            )
        elif no_split:
            body = _check(client.delete(f"{base}/split"))
        if shadow is not None:
            payload: dict[str, Any] = {"version": shadow, "sample": sample}
            if shadow_timeout is not None:
                payload["timeout_s"] = shadow_timeout
            if shadow_concurrency is not None:
                payload["max_concurrency"] = shadow_concurrency
            body = _check(client.put(f"{base}/shadow", json=payload))
        elif no_shadow:
            body = _check(client.delete(f"{base}/shadow"))
    if body is not None and (split is not None or shadow is not None or no_split or no_shadow):
        console.print(describe_policy(body))


def describe_policy(policy: dict[str, Any]) -> str:
    """One line: ``temperatura:production → v3 90 %, v4 10 % (canary, guarded); shadow v4 at 25 %``."""
    text = f"{policy['model']}:{policy['alias']} → "
    split = policy.get("split")
    if split:
        parts = [
            f"v{v} {w} %" + (" (canary)" if int(v) != policy["version"] else "") for v, w in split.items()
        ]
        guarded = policy.get("guard", {}).get("enabled", True)
        text += ", ".join(parts) + (" — guarded" if guarded else " — unguarded")
    else:
        text += f"v{policy['version']}"
    shadow = policy.get("shadow")
    if shadow:
        text += f"; shadow v{shadow['version']} at {shadow['sample'] * 100:g} %"
    return text


@models_app.command("delete")
def models_delete(
    name: str,
    version: Annotated[
        int | None, typer.Option(help="delete this version only (refused while aliased)")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete a version of NAME (--version N), or the whole model with its aliases and versions."""
    what = f"{name} v{version}" if version is not None else f"model {name} and every version of it"
    if not yes and not typer.confirm(f"delete {what}?"):
        raise typer.Exit(1)
    route = f"/v1/models/{name}/versions/{version}" if version is not None else f"/v1/models/{name}"
    with _client(url, api_key) as client:
        _check(client.delete(route))
    console.print(f"[green]deleted[/green] {what}")
