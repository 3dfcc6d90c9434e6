"""What every connection of one ``mlgate serve`` server shares: mlgate's edge behind uvicorn's
application, the connection limits, the trusted proxies — found once per server (uvicorn builds
one protocol object per connection and hands it only its config)."""

from __future__ import annotations

import logging
from typing import Any

from mlgate.http.edge import Edge
from mlgate.http.proxy import TrustedProxies
from mlgate.settings import HttpSettings

__all__ = ["Binding", "bind", "default_header_bytes"]

log = logging.getLogger("mlgate.http")


class Binding:
    """What every connection of one server shares: the edge, the limits, the application."""

    def __init__(self, edge: Edge, settings: HttpSettings, app: Any, root_path: str) -> None:
        self.edge = edge
        self.settings = settings
        self.app = app
        self.root_path = root_path
        self.lane = settings.lane
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)


_BOUND: dict[int, Binding] = {}


def bind(config: Any) -> Binding:
    """The edge and limits behind a uvicorn config's application (found once per server)."""
    bound = _BOUND.get(id(config))
    if bound is None or bound.app is not config.loaded_app:
        app = config.loaded_app
        owner: Any = app
        for _ in range(8):  # through uvicorn's wrappers (message logger…) to mlgate's application
            if isinstance(getattr(owner, "edge", None), Edge):
                break
            owner = getattr(owner, "app", None)
        else:
            owner = None
        if owner is None or not isinstance(getattr(owner, "edge", None), Edge):
            raise RuntimeError("mlgate's HTTP protocol serves mlgate's application (mlgate.http.create_app)")
        bound = Binding(owner.edge, owner.settings.http, app, config.root_path or "")
        _BOUND[id(config)] = bound
        if not bound.lane:
            log.warning(
                "mlgate: the predict lane is off (MLGATE_HTTP__LANE=false): every request goes through "
                "the ASGI application"
            )
    return bound


# The server's default headers (``date``) as header lines, re-encoded when uvicorn replaces the
# list (once a second): (the list, its encoding).
_defaults: tuple[Any, bytes] = (None, b"")


def default_header_bytes(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (``date``), encoded as header lines once per change (a second)."""
    global _defaults
    cached = _defaults
    if cached[0] is default_headers:
        return cached[1]
    encoded = b"".join(b"%s: %s\r\n" % (name, value) for name, value in default_headers)
    _defaults = (default_headers, encoded)
    return encoded
