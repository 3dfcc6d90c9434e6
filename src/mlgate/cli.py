"""The ``mlgate`` command line (Typer + Rich).

``mlgate serve`` runs the server; the other commands talk to a running server over HTTP
(``--url``, default http://127.0.0.1:8000) with the admin key from ``--api-key`` or
``MLGATE_API_KEY``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from mlgate.settings import export_environ, load_settings

if TYPE_CHECKING:
    import httpx
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

app = typer.Typer(
    help="mlgate: machine-learning models as secure, metered, monitored HTTP APIs.", no_args_is_help=True
)
models_app = typer.Typer(help="Models, versions and aliases.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (shown once at creation).", no_args_is_help=True)
plans_app = typer.Typer(help="Usage plans: rate, burst and quota.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")
app.add_typer(plans_app, name="plans")


class _LazyConsole:
    """A Rich console created on first use: `mlgate serve` never prints through one, and
    importing Rich costs ~60 ms of every server start."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def _table(*columns: str) -> Table:
    from rich.table import Table

    return Table(*columns)


console = _LazyConsole()
err = _LazyConsole(stderr=True)

Url = Annotated[str, typer.Option("--url", envvar="MLGATE_URL", help="server base URL")]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="MLGATE_API_KEY", help="API key (admin for writes)")
]


def _client(url: str, api_key: str | None, timeout: float = 120.0) -> httpx.Client:
    import httpx  # client commands only: `mlgate serve` never loads it

    headers = {"x-api-key": api_key} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)


def _check(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.is_error:
        message = body.get("error", body) if isinstance(body, dict) else body
        err.print(f"[red]error {response.status_code}[/red]: {json.dumps(message, ensure_ascii=False)}")
        raise typer.Exit(1)
    return body


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
    """Show a model and every version's manifest."""
    with _client(url, api_key) as client:
        console.print_json(data=_check(client.get(f"/v1/models/{name}")))


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
        _push_uri(name, path, sha256, fields, url, api_key)
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
) -> None:
    """Register a version from an object the server fetches itself (never through this client)."""
    parts = [(k, (None, v)) for k, v in {**fields, "uri": uri, "sha256": sha256 or ""}.items() if v]
    with err.real().status(f"the server is fetching {uri}"), _client(url, api_key, timeout=3600) as client:
        body = _check(client.post(f"/v1/models/{name}/versions", files=parts))
    _print_pushed(body, "checked by the server against --sha256" if sha256 else "computed by the server")


def _print_pushed(body: dict[str, Any], how: str) -> None:
    console.print(f"[green]registered[/green] {body['model']} v{body['version']} ({body['runtime']})")
    for rel, digest in sorted(body["files"].items()):
        console.print(f"  sha256 {digest}  {rel}  ({how})")


@models_app.command("alias")
def models_alias(
    name: str, alias: str, version: int, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None
) -> None:
    """Point ALIAS of NAME at VERSION (promote or roll back, no restart)."""
    with _client(url, api_key) as client:
        body = _check(client.put(f"/v1/models/{name}/aliases/{alias}", json={"version": version}))
    console.print(f"{body['model']}:{body['alias']} → v{body['version']}")


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


def _print_keys(keys: list[dict[str, Any]]) -> None:
    table = _table("id", "name", "role", "owner", "plans", "expires", "disabled")
    for k in keys:
        plans = ", ".join(f"{scope}: {plan}" for scope, plan in sorted((k.get("plans") or {}).items()))
        table.add_row(
            k["id"], k["name"], k["role"], k["owner"] or "", plans, k["expires_at"] or "", str(k["disabled"])
        )
    console.print(table)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="a label for the key")] = "key",
    role: Annotated[str | None, typer.Option(help="user or admin (admins only)")] = None,
    owner: Annotated[str | None, typer.Option(help="username owning the key (admins only)")] = None,
    plan: Annotated[str | None, typer.Option(help="usage plan to attach (admins only)")] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry, e.g. 2027-01-01T00:00:00Z")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a key; its secret is printed once."""
    body = {"name": name, "role": role, "owner": owner, "plan": plan, "expires_at": expires_at}
    with _client(url, api_key) as client:
        created = _check(client.post("/v1/keys", json={k: v for k, v in body.items() if v is not None}))
    console.print(f"[green]created[/green] key {created['id']} ({created['role']})")
    console.print("Secret (shown once, store it now):")
    print(created["key"])


@keys_app.command("list")
def keys_list(url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """List keys (yours, or all for an admin)."""
    with _client(url, api_key) as client:
        _print_keys(_check(client.get("/v1/keys"))["keys"])


@keys_app.command("disable")
def keys_disable(key_id: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Disable a key at once."""
    with _client(url, api_key) as client:
        _check(client.post(f"/v1/keys/{key_id}/disable"))
    console.print(f"key {key_id} disabled")


@keys_app.command("enable")
def keys_enable(key_id: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Enable a disabled key again (admin)."""
    with _client(url, api_key) as client:
        _check(client.post(f"/v1/keys/{key_id}/enable"))
    console.print(f"key {key_id} enabled")


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    grace_seconds: Annotated[int, typer.Option(help="keep the old secret working this long")] = 0,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Replace a key's secret; the new one is printed once."""
    with _client(url, api_key) as client:
        new = _check(client.post(f"/v1/keys/{key_id}/rotate", params={"grace_seconds": grace_seconds}))
    console.print(f"[green]rotated[/green] {key_id} -> {new['id']}; new secret (shown once):")
    print(new["key"])


@plans_app.command("create")
def plans_create(
    name: str,
    rate: Annotated[float | None, typer.Option(help="steady requests per second")] = None,
    burst: Annotated[int | None, typer.Option(help="bucket capacity")] = None,
    quota: Annotated[int | None, typer.Option(help="requests per period")] = None,
    period: Annotated[str | None, typer.Option(help="DAY, WEEK or MONTH")] = None,
    offset: Annotated[int, typer.Option(help="days into the period the quota resets")] = 0,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a usage plan (reference: --rate 10 --burst 10 --quota 1000 --period MONTH)."""
    body: dict[str, Any] = {"name": name, "rate": rate, "burst": burst, "quota_limit": quota}
    body.update(quota_period=period.upper() if period else None, quota_offset=offset)
    with _client(url, api_key) as client:
        plan = _check(client.post("/v1/plans", json={k: v for k, v in body.items() if v is not None}))
    console.print_json(data=plan)


@plans_app.command("list")
def plans_list(url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """List usage plans (admin)."""
    with _client(url, api_key) as client:
        plans = _check(client.get("/v1/plans"))["plans"]
    table = _table("plan", "rate", "burst", "quota", "period", "offset", "description")
    for p in plans:
        cells = (p["rate"], p["burst"], p["quota_limit"], p["quota_period"], p["quota_offset"])
        table.add_row(p["name"], *("" if c is None else str(c) for c in cells), p["description"])
    console.print(table)


@plans_app.command("update")
def plans_update(
    name: str,
    rate: Annotated[float | None, typer.Option(help="steady requests per second")] = None,
    burst: Annotated[int | None, typer.Option(help="bucket capacity")] = None,
    quota: Annotated[int | None, typer.Option(help="requests per period")] = None,
    period: Annotated[str | None, typer.Option(help="DAY, WEEK or MONTH")] = None,
    offset: Annotated[int | None, typer.Option(help="days into the period the quota resets")] = None,
    description: Annotated[str | None, typer.Option(help="a description")] = None,
    no_rate: Annotated[bool, typer.Option("--no-rate", help="remove throttling (rate, burst)")] = False,
    no_quota: Annotated[bool, typer.Option("--no-quota", help="remove the quota")] = False,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Change some limits of a usage plan (what is not given is kept)."""
    body: dict[str, Any] = {"rate": rate, "burst": burst, "quota_limit": quota, "quota_offset": offset}
    body.update(quota_period=period.upper() if period else None, description=description)
    body = {k: v for k, v in body.items() if v is not None}
    if no_rate:
        body["rate"] = None
    if no_quota:
        body["quota_limit"] = None
    if not body:
        err.print("nothing to change: give a limit, --description, --no-rate or --no-quota")
        raise typer.Exit(2)
    with _client(url, api_key) as client:
        console.print_json(data=_check(client.patch(f"/v1/plans/{name}", json=body)))


@plans_app.command("delete")
def plans_delete(name: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Delete a usage plan (refused while a key uses it: detach it first)."""
    with _client(url, api_key) as client:
        _check(client.delete(f"/v1/plans/{name}"))
    console.print(f"plan {name} deleted")


@plans_app.command("attach")
def plans_attach(
    plan: str,
    key_id: str,
    scope: Annotated[str, typer.Option(help="'*' for every model, or one model name")] = "*",
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Attach a key to a plan."""
    with _client(url, api_key) as client:
        _check(client.put(f"/v1/plans/{plan}/keys/{key_id}", params={"scope": scope}))
    console.print(f"key {key_id} -> plan {plan} (scope {scope})")


@plans_app.command("detach")
def plans_detach(
    plan: str,
    key_id: str,
    scope: Annotated[str, typer.Option(help="the scope it was attached for ('*' or a model name)")] = "*",
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Detach a key from a plan for a scope (the key falls back to its global or the default plan)."""
    with _client(url, api_key) as client:
        _check(client.delete(f"/v1/plans/{plan}/keys/{key_id}", params={"scope": scope}))
    console.print(f"key {key_id} detached from plan {plan} (scope {scope})")


@plans_app.command("usage")
def plans_usage(
    key_id: Annotated[str | None, typer.Option(help="one key (default: all you may see)")] = None,
    since: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Usage per key, day and model."""
    params = {k: v for k, v in {"key_id": key_id, "since": since, "until": until}.items() if v}
    with _client(url, api_key) as client:
        rows = _check(client.get("/v1/usage", params=params))["usage"]
    table = _table("key", "day", "scope", "requests", "units", "throttled", "errors")
    for r in rows:
        counts = (r["requests"], r.get("units", r["requests"]), r["throttled"], r["errors"])
        table.add_row(r["key_id"], r["day"], r["scope"], *(str(n) for n in counts))
    console.print(table)


# -- users -------------------------------------------------------------------------------------

users_app = typer.Typer(help="User accounts (admin): create, list, disable, enable.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("create")
def users_create(
    username: str,
    password: Annotated[
        str | None, typer.Option(help="the password (visible to ps: prefer the prompt or --password-stdin)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
    email: Annotated[str | None, typer.Option(help="e-mail address")] = None,
    first_name: Annotated[str | None, typer.Option(help="first name")] = None,
    last_name: Annotated[str | None, typer.Option(help="last name")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a user account (with an admin key); the password is asked for unless given."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    body = {"username": username, "password": password, "role": role, "email": email}
    body.update(first_name=first_name, last_name=last_name)
    with _client(url, api_key) as client:
        user = _check(client.post("/auth/create_user", json={k: v for k, v in body.items() if v is not None}))
    console.print(f"[green]created[/green] user {user['username']} ({user['role']})")


@users_app.command("list")
def users_list(url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """List user accounts."""
    with _client(url, api_key) as client:
        users = _check(client.get("/v1/users"))["users"]
    table = _table("username", "role", "email", "name", "disabled")
    for u in users:
        full = " ".join(n for n in (u.get("first_name"), u.get("last_name")) if n)
        table.add_row(u["username"], u["role"], u.get("email") or "", full, str(u["disabled"]))
    console.print(table)


@users_app.command("disable")
def users_disable(username: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Disable a user: their tokens and keys stop working at once."""
    with _client(url, api_key) as client:
        _check(client.post(f"/v1/users/{username}/disable"))
    console.print(f"user {username} disabled")


@users_app.command("enable")
def users_enable(username: str, url: Url = "http://127.0.0.1:8000", api_key: ApiKeyOpt = None) -> None:
    """Enable a user again (their keys work again)."""
    with _client(url, api_key) as client:
        _check(client.post(f"/v1/users/{username}/enable"))
    console.print(f"user {username} enabled")


# -- workflows ---------------------------------------------------------------------------------

workflows_app = typer.Typer(
    help="Workflows: Amazon States Language definitions run here (start, describe, export).",
    no_args_is_help=True,
)
app.add_typer(workflows_app, name="workflows")


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
