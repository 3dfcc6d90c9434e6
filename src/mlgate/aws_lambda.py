"""AWS Lambda entry point: ``mlgate.aws_lambda.handler`` (docs/deploy.md, "AWS Lambda").

Mangum translates API Gateway events (REST API v1 and HTTP API v2 proxy events) into ASGI
requests for the same application ``mlgate serve`` runs (:func:`mlgate.http.app.create_app`).

Built once per container: the first invocation (the cold start) reads the settings, builds the
application and runs its startup (the components: registry, store, gate, models loaded) on an
event loop kept for the container's life; warm invocations reuse all of it. Mangum runs with
``lifespan="off"``: its own lifespan handling starts *and shuts down* the application around
every invocation, which would rebuild the server per request. The shutdown runs at process
exit (``atexit``; Lambda sends SIGTERM only to functions with extensions, so usage is also
written before each metered answer: ``MLGATE_LIMITER__USAGE_SYNC`` defaults to true here).

Between invocations Lambda freezes the process: the event loop's background tasks and the
server's threads only run while an invocation is in flight. What only makes sense in a
long-running process is therefore off by default (:data:`LAMBDA_DEFAULTS`, each overridable
by setting the variable).

API keys (``MLGATE_LAMBDA_KEYS``):

``apigateway`` (default): API Gateway checks the key and meters it (the template's usage plan:
10/s, burst 10, 1,000 a month; exact across every container, which mlgate's limiter would
only be with Redis/PostgreSQL). mlgate's model routes are then public to mlgate
(``MLGATE_AUTH__MODEL_ROUTES=public`` unless set), and the handler refuses, as API Gateway
does (403 ``{"message": "Forbidden"}``), any event but the probes that arrives without
``requestContext.identity.apiKey`` — an HTTP API event, a direct invoke, an API whose
``ApiKeyRequired`` was lost. The ``x-api-key`` header (API Gateway's key, already checked) is
not passed on; admin routes take mlgate's credentials in ``Authorization: Bearer`` (an admin key
or an admin user's token).

``mlgate``: mlgate's gateway checks keys, plans and limits itself (point the limiter at Redis
or PostgreSQL: ``MLGATE_LIMITER__URL``); the key API Gateway validated
(``requestContext.identity.apiKey``, e.g. from a Lambda authorizer) is forwarded as
``x-api-key`` when the request has none. Use it for HTTP APIs, which have no usage plans.

Cold start (docs/deploy.md, "Cold start"): under the Lambda runtime the application is built
when the runtime imports this module — Lambda's init phase, which provisioned concurrency runs
ahead of any request — not at the first invocation (``MLGATE_LAMBDA_BUILD=invoke`` defers it).
A SQLite registry that does not exist yet (every cold start without a ``DatabaseUrl``: /tmp starts
empty) is copied from a database at the newest schema made when the image was built
(:data:`SCHEMA_DB`, ``python -m mlgate.aws_lambda schema PATH``) instead of being migrated.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import gc
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mangum import Mangum

    from mlgate.http.app import MlgateApp

__all__ = ["LAMBDA_DEFAULTS", "PROBES", "SCHEMA_DB", "LambdaRuntime", "handler", "reset", "write_schema_db"]

HANDLER = "mlgate.aws_lambda.handler"

#: the environment a Lambda container starts with, unless the function sets the variable
LAMBDA_DEFAULTS: dict[str, str] = {
    "MLGATE_DATA_DIR": "/tmp/mlgate",  # noqa: S108 — Lambda's only writable directory
    "MLGATE_ALERTS__ENABLED": "false",  # use CloudWatch alarms (the template's): no evaluator thread
    "MLGATE_STATS__ENABLED": "false",  # per-minute stats flushed by a thread a frozen process never runs
    "MLGATE_MONITOR__INTERVAL_S": "0",  # drift on demand only
    "MLGATE_CAPTURE__SAMPLE": "0",
    # no random admin key printed to CloudWatch Logs at each cold start: set MLGATE_ADMIN_KEY
    "MLGATE_GENERATE_ADMIN_KEY": "false",
    "MLGATE_LIMITER__URL": "database",  # shared by every container when the registry is PostgreSQL
    "MLGATE_LIMITER__USAGE_SYNC": "true",  # a container may be killed while frozen: lose no count
    "MLGATE_LOG__ACCESS_STDOUT": "true",  # CloudWatch Logs
}
#: the registry database at the newest schema in the image (deploy/lambda/Dockerfile), relative
#: to ``LAMBDA_TASK_ROOT``; ``MLGATE_LAMBDA_SCHEMA_DB`` names another file
SCHEMA_DB = "mlgate-schema.db"
#: paths served without an API key (the template exposes them without ApiKeyRequired)
PROBES = frozenset({"/healthz", "/readyz"})
FORBIDDEN: dict[str, Any] = {
    "statusCode": 403,
    "headers": {"content-type": "application/json", "x-amzn-errortype": "ForbiddenException"},
    "body": json.dumps({"message": "Forbidden"}),
    "isBase64Encoded": False,
}

_lock = threading.Lock()
_runtime: LambdaRuntime | None = None
#: how many times this process built the application (1 per container; tests read it)
builds = 0


def _keys_mode() -> str:
    mode = os.environ.get("MLGATE_LAMBDA_KEYS", "apigateway").strip().lower()
    if mode not in ("apigateway", "mlgate"):
        raise ValueError(f"MLGATE_LAMBDA_KEYS must be 'apigateway' or 'mlgate', not {mode!r}")
    return mode


class LambdaRuntime:
    """One container's application: built and started once, on a loop kept between invocations."""

    def __init__(self) -> None:
        from mangum import Mangum

        from mlgate.http.app import create_app
        from mlgate.settings import load_settings

        for name, value in LAMBDA_DEFAULTS.items():
            os.environ.setdefault(name, value)
        self.keys = _keys_mode()
        if self.keys == "apigateway":
            os.environ.setdefault("MLGATE_AUTH__MODEL_ROUTES", "public")
        settings = load_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.seeded = _seed_registry(settings.database_url)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.app: MlgateApp = create_app(settings)
        self._stack = contextlib.AsyncExitStack()
        self.loop.run_until_complete(self._stack.enter_async_context(self.app.lifespan_context()))
        self.mangum: Mangum = Mangum(self.app, lifespan="off")

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        event = _strip_stage(event)
        if self.keys == "apigateway":
            if _path(event) not in PROBES and not _gateway_key(event):
                return dict(FORBIDDEN)
            event = _drop_key_header(event)
        else:
            event = _forward_key(event)
        asyncio.set_event_loop(self.loop)  # Mangum runs each request on the current loop
        return self.mangum(event, context)

    def close(self) -> None:
        """Shut the application down (usage, access log flushed; database closed)."""
        if self.loop.is_closed():
            return
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._stack.aclose())
        finally:
            self.loop.close()
            asyncio.set_event_loop(None)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda function (``CMD ["mlgate.aws_lambda.handler"]``)."""
    return (_runtime or _build())(event, context)


def _build() -> LambdaRuntime:
    """This process's application, built on first use.

    The cyclic GC is off while it is built: the imports and startup allocate a great deal and
    free almost nothing (a full collection or two, ~10 % of the build); the application then
    freezes what it built out of the collector's reach (:mod:`mlgate.http.app`)."""
    global _runtime, builds
    with _lock:
        if _runtime is None:
            collecting = gc.isenabled()
            gc.disable()
            try:
                _runtime = LambdaRuntime()
            finally:
                if collecting:
                    gc.enable()
            builds += 1
            atexit.register(_runtime.close)
        return _runtime


def _in_lambda_init() -> bool:
    """Imported by the Lambda runtime as the function's handler (its init phase)?"""
    return (
        bool(os.environ.get("AWS_LAMBDA_RUNTIME_API"))
        and os.environ.get("_HANDLER") == HANDLER
        and os.environ.get("MLGATE_LAMBDA_BUILD", "init").strip().lower() != "invoke"
    )


def reset() -> None:
    """Shut down this process's application; the next invocation builds it again (tests)."""
    global _runtime
    with _lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        atexit.unregister(runtime.close)
        runtime.close()


def _schema_db() -> Path | None:
    configured = os.environ.get("MLGATE_LAMBDA_SCHEMA_DB")
    if configured:
        return Path(configured)
    root = os.environ.get("LAMBDA_TASK_ROOT")
    return Path(root) / SCHEMA_DB if root else None


def _seed_registry(database_url: str | None) -> bool:
    """Copy the image's schema database to a SQLite registry that does not exist yet (the
    migrations, Alembic included, are then skipped: the database is at head). True if copied."""
    from sqlalchemy.engine import make_url

    seed = _schema_db()
    if not database_url or seed is None or not seed.is_file():
        return False
    url = make_url(database_url)
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return False
    target = Path(database).expanduser()
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.seed")
    shutil.copyfile(seed, partial)
    os.replace(partial, target)
    return True


def write_schema_db(path: Path) -> None:
    """A SQLite registry at the newest schema, empty (no keys, no secrets): :data:`SCHEMA_DB`."""
    from mlgate.db.migrate import upgrade

    path = path.resolve()
    path.unlink(missing_ok=True)
    upgrade(f"sqlite:///{path}")


def _is_v2(event: dict[str, Any]) -> bool:
    return event.get("version") == "2.0" and "http" in event.get("requestContext", {})


def _path(event: dict[str, Any]) -> str:
    if _is_v2(event):
        return str(event["requestContext"]["http"]["path"])
    return str(event.get("path", "/"))


def _gateway_key(event: dict[str, Any]) -> str | None:
    """The API key API Gateway validated (REST APIs only: HTTP APIs have none)."""
    identity = event.get("requestContext", {}).get("identity") or {}
    key = identity.get("apiKey")
    return key if isinstance(key, str) and key else None


def _strip_stage(event: dict[str, Any]) -> dict[str, Any]:
    """HTTP API v2 paths start with a named stage (``/prod/healthz`` on stage ``prod``); REST v1
    events' ``path`` has none (``requestContext.path`` has it)."""
    if not _is_v2(event):
        return event
    stage = event["requestContext"].get("stage")
    path = event["requestContext"]["http"]["path"]
    if not stage or stage == "$default" or not (path == f"/{stage}" or path.startswith(f"/{stage}/")):
        return event
    event = copy.deepcopy(event)
    stripped = path[len(stage) + 1 :] or "/"
    event["requestContext"]["http"]["path"] = stripped
    if "rawPath" in event:
        event["rawPath"] = stripped
    return event


def _drop_key_header(event: dict[str, Any]) -> dict[str, Any]:
    """``apigateway`` mode: API Gateway's key (checked by it) is no credential of mlgate's."""
    headers = event.get("headers") or {}
    multi = event.get("multiValueHeaders") or {}
    if not any(name.lower() == "x-api-key" for name in (*headers, *multi)):
        return event
    event = copy.deepcopy(event)
    for field in ("headers", "multiValueHeaders"):
        if event.get(field):
            event[field] = {k: v for k, v in event[field].items() if k.lower() != "x-api-key"}
    return event


def _forward_key(event: dict[str, Any]) -> dict[str, Any]:
    """``mlgate`` mode: the validated API Gateway key as ``x-api-key`` when the request has none."""
    key = _gateway_key(event)
    headers = event.get("headers") or {}
    if key is None or any(name.lower() == "x-api-key" for name in headers):
        return event
    event = copy.deepcopy(event)
    event["headers"] = {**headers, "x-api-key": key}
    if event.get("multiValueHeaders") is not None:
        event["multiValueHeaders"]["x-api-key"] = [key]
    return event


if _in_lambda_init():  # the init phase: build now (provisioned concurrency runs it ahead of requests)
    _build()


if __name__ == "__main__":  # python -m mlgate.aws_lambda schema PATH (deploy/lambda/Dockerfile)
    if len(sys.argv) != 3 or sys.argv[1] != "schema":
        sys.exit("usage: python -m mlgate.aws_lambda schema PATH")
    write_schema_db(Path(sys.argv[2]))
