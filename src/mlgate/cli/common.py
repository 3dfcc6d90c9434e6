"""What every command shares: the console, the HTTP client, option types, error checks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx
    from rich.console import Console
    from rich.table import Table


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
