"""``mlgate keys``, ``mlgate plans`` and ``mlgate users``: the gateway's admin commands."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlgate.cli.common import ApiKeyOpt, Url, _check, _client, _table, console, err

if TYPE_CHECKING:
    pass

keys_app = typer.Typer(help="API keys (shown once at creation).", no_args_is_help=True)
plans_app = typer.Typer(help="Usage plans: rate, burst and quota.", no_args_is_help=True)


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
