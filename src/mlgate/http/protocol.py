"""uvicorn's httptools protocol, refusing requests at capacity before any ASGI work.

Under overload every refusal takes event-loop time from the requests being served: at twice
the capacity, a refusal costing r of a served request leaves (1 - 2r)/(1 - r) of the capacity
for successes. Refused in the ASGI app, a request still costs uvicorn's cycle object, an
``asyncio.Event``, a task, the app call and two ``send`` messages — about 1/7 of a served
W1 request here. :class:`SheddingProtocol` decides when a request's headers are parsed:
while the :class:`~mlgate.http.middleware.Edge` is at capacity it writes the same
preencoded 503 + ``Retry-After`` answer straight to the socket (keep-alive kept, the body
skipped by the parser) and counts it; nothing else runs.

A request it admits is counted in flight at once (:meth:`Edge.reserve`), not when its ASGI
task first runs: a burst of requests parsed in one loop iteration would otherwise all pass
this check and then be refused one by one in ASGI, at twice the cost (measured: 24 µs per
refusal here, 48 µs in ASGI).

It only acts where uvicorn's own bookkeeping stays valid: no response pending on the
connection (HTTP pipelining keeps its order; uvicorn queues such a request and starts it
later), no protocol upgrade, and an app that leads to an :class:`Edge` (found once per
connection through uvicorn's wrappers, e.g. the proxy headers middleware). Anything else
takes uvicorn's normal path, where the edge counts and sheds as before. ``mlgate serve``
selects it when httptools is installed.
"""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlgate.http.middleware import Edge

__all__ = ["SheddingProtocol"]


class _NoEvent:
    def set(self) -> None:
        """uvicorn wakes a cycle's event on disconnect; a shed request has nothing waiting."""


class _ShedCycle:
    """Stands in for uvicorn's RequestResponseCycle of a request answered at parse time: complete,
    so the parser's body callbacks skip it and the next request starts as usual."""

    response_complete = True
    disconnected = False
    keep_alive = True
    message_event = _NoEvent()


_SHED_CYCLE: Any = _ShedCycle()
_UNSET: Any = object()


class SheddingProtocol(HttpToolsProtocol):
    _edge: Any = _UNSET

    def on_headers_complete(self) -> None:
        edge = self._edge
        if edge is _UNSET:
            edge = self._edge = _find_edge(self.app)
        if (
            edge is None
            or not (self.cycle is None or self.cycle.response_complete)  # pipelined: uvicorn queues it
            or self.parser.should_upgrade()
        ):
            super().on_headers_complete()
            return
        if edge.at_capacity():
            path = httptools.parse_url(self.url).path.decode("latin-1")
            if edge.sheds(path):
                method = self.parser.get_method().decode("latin-1")
                keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
                edge.count_shed(method)
                self.cycle = _SHED_CYCLE
                self.transport.write(edge.shed_response(self.server_state.default_headers, keep_alive))
                if keep_alive:
                    self.on_response_complete()  # arms keep-alive, resumes reading, as after any answer
                else:
                    self.transport.close()
                return
        # Admitted: its ASGI task starts now (uvicorn's standard case), and the edge counts it in
        # flight from this moment, so the next request parsed in this same loop iteration sees it.
        edge.reserve(self.scope)
        super().on_headers_complete()


def _find_edge(app: Any) -> Edge | None:
    """The edge behind ``app``: uvicorn wraps the application (proxy headers, logging...)."""
    for _ in range(8):
        edge = getattr(app, "edge", None)
        if isinstance(edge, Edge):
            return edge
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
