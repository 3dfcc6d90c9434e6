"""``mlgate serve``: uvicorn running mlgate's application with mlgate's HTTP protocol.

uvicorn runs the process — sockets, ``--workers`` processes, signals, the lifespan, graceful
shutdown — and :class:`~mlgate.http.protocol.HttpProtocol` every connection. The protocol
couples to uvicorn's protocol interface (the constructor uvicorn calls and its shared
``ServerState``), so the uvicorn versions it was tested with are pinned in ``pyproject.toml``
and checked here at start: outside them the server still starts when that interface is there,
with a loud warning, and refuses to start when it is not.
"""

from __future__ import annotations

import inspect
import logging
import resource
from typing import Any

from mlgate.settings import Settings

__all__ = ["TESTED_UVICORN", "check_uvicorn", "raise_open_file_limit", "run"]

log = logging.getLogger("mlgate")

#: [lowest, highest) uvicorn minor versions mlgate's HTTP protocol was tested with
TESTED_UVICORN = ((0, 30), (0, 56))
#: file descriptors a process needs besides its connections (models, database, logs, limiter)
_SPARE_FILES = 256


def check_uvicorn() -> str:
    """The installed uvicorn's version, after checking the interface the protocol uses."""
    import uvicorn
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    version = uvicorn.__version__
    state = ServerState()
    missing = [
        a for a in ("connections", "tasks", "default_headers", "total_requests") if not hasattr(state, a)
    ]
    if not hasattr(Config, "load"):
        missing.append("Config.load")
    if missing:
        raise RuntimeError(
            f"uvicorn {version} lacks {', '.join(missing)}, which mlgate's HTTP protocol uses; "
            f"install a uvicorn mlgate was tested with: pip install 'uvicorn{_range()}'"
        )
    try:
        numbers = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        numbers = ()
    low, high = TESTED_UVICORN
    if not (low <= numbers < high):
        log.warning(
            "mlgate: uvicorn %s is outside the versions mlgate's HTTP protocol was tested with (%s); "
            "serving anyway — pin uvicorn%s for a tested server",
            version,
            _range(),
            _range(),
        )
    return version


def _range() -> str:
    (a, b), (c, d) = TESTED_UVICORN
    return f">={a}.{b},<{c}.{d}"


def raise_open_file_limit(max_connections: int) -> int:
    """Raise this process's open-file limit (within the hard limit) to fit ``max_connections``
    connections; returns the limit, with a warning if it stays too low (connections past it
    would fail at accept instead of getting the edge's 503)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "mlgate: the open-file limit (%d) is below MLGATE_HTTP__MAX_CONNECTIONS (%d) + %d; "
            "lower max_connections or raise `ulimit -n`",
            soft,
            max_connections,
            _SPARE_FILES,
        )
    return int(soft)


def options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``mlgate serve``."""
    from mlgate.http.protocol import HttpProtocol

    chosen: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "access_log": False,  # mlgate writes its own (one JSON line per request)
        "server_header": False,
        "timeout_graceful_shutdown": 30,
        "log_level": settings.log.level.lower(),
        "ws": "none",  # no WebSocket route: not importing a WebSocket library shortens every cold start
        "http": HttpProtocol,
        # the protocol reads X-Forwarded-* itself (MLGATE_HTTP__FORWARDED_ALLOW_IPS), for every
        # request alike: uvicorn's proxy-headers middleware would apply its rule a second time
        "proxy_headers": False,
    }
    try:
        import uvloop  # noqa: F401

        chosen["loop"] = "uvloop"
    except ImportError:
        pass
    return chosen


def run(settings: Settings) -> None:
    """Serve until told to stop (blocking)."""
    import uvicorn

    check_uvicorn()
    raise_open_file_limit(settings.http.max_connections)
    chosen = options(settings)
    if settings.workers > 1:
        from mlgate.server import bootstrap_once

        bootstrap_once(settings)  # migrations, admin key, bundled models: once, not per worker
        _run_workers(settings.workers, chosen)
    else:
        from mlgate.http.app import create_app

        uvicorn.run(create_app(settings), **chosen)


def _run_workers(workers: int, chosen: dict[str, Any]) -> None:
    """``uvicorn.run(..., workers=N)``, except that the supervisor closes its copy of the
    listening socket as soon as it is told to stop. Otherwise, once the workers have drained
    and closed theirs, new connections would wait in the supervisor's backlog until it exits
    instead of being refused at once."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def terminate_all(self) -> None:
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    config = uvicorn.Config("mlgate.http.app:create_app_from_env", factory=True, workers=workers, **chosen)
    sockets = [config.bind_socket()]
    if "target" in inspect.signature(Multiprocess.__init__).parameters:  # uvicorn < 0.36
        Supervisor(config, target=uvicorn.Server(config).run, sockets=sockets).run()  # type: ignore[call-arg]
    else:
        Supervisor(config, sockets=sockets).run()
