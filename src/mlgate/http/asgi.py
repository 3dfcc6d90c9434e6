"""The ASGI driver: every HTTP request that reaches mlgate's ASGI application.

Two kinds arrive here:

- from ``mlgate serve``'s protocol (:mod:`mlgate.http.protocol`), requests it passes on — to
  FastAPI (the admin and workflow API, the docs), or to the edge's own routes when its predict
  lane is off — with their :class:`~mlgate.http.exchange.Exchange` already open in the scope
  (``scope[EXCHANGE]``) and their body read (streamed for uploads);
- from any other ASGI server (another uvicorn protocol, hypercorn, httpx's ASGI transport in
  tests), every request: here this driver opens the exchange itself, sheds load, checks the
  declared body size and enforces the limit while the body is read.

Either way the same exchange lifecycle follows: the edge's own routes through
:meth:`mlgate.http.edge.Edge.serve`, the rest through FastAPI with the edge's headers added,
usage settled before the answer starts and the exchange closed when the application returns
(499 if the protocol saw the client go). An exception the application raises after it has
answered was already logged by its error handler; one raised before is answered 500 here.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from mlgate.http.edge import OIP_SHED_BODY, OIP_SHED_HEADERS, SHED_BODY, SHED_HEADERS, Edge
from mlgate.http.errors import is_oip_path, wire_error
from mlgate.http.exchange import CLIENT_CLOSED, EXCHANGE, Exchange
from mlgate.http.wire import WireResponse, scan_headers
from mlgate.telemetry.context import REQUEST_ID

__all__ = ["AsgiDriver"]

# ASGI callables, typed loosely (Starlette's types would pull the framework into this module's API).
Scope = MutableMapping[str, Any]
Message = dict[str, Any]
_SHED_START: Message = {"type": "http.response.start", "status": 503, "headers": SHED_HEADERS}
_SHED_END: Message = {"type": "http.response.body", "body": SHED_BODY}
_OIP_SHED_START: Message = {"type": "http.response.start", "status": 503, "headers": OIP_SHED_HEADERS}
_OIP_SHED_END: Message = {"type": "http.response.body", "body": OIP_SHED_BODY}


class AsgiDriver:
    """Drives the exchange of each HTTP request through ASGI; ``app`` is what the edge does not serve."""

    def __init__(self, edge: Edge, app: Any) -> None:
        self.edge = edge
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        x: Exchange | None = scope.get(EXCHANGE)
        own = x is None
        if x is None:  # another server: open the exchange here
            x = await self._open(scope, send)
            if x is None:
                return  # refused at once
        try:
            if x.route is not None:
                await self._serve(x, receive, send, own)
            else:
                await self._pass_on(x, scope, receive, send, own)
        finally:
            x.close(CLIENT_CLOSED if x.gone else 500)  # a no-op unless nothing closed it

    async def _open(self, scope: Scope, send: Any) -> Exchange | None:
        edge = self.edge
        path: str = scope["path"]
        method: str = scope["method"]
        if edge.at_capacity() and edge.sheds(path):
            client = scope.get("client")
            edge.shed(method, path, scope.get("query_string", b""), client[0] if client else None)
            oip = is_oip_path(path)
            await send(_OIP_SHED_START if oip else _SHED_START)
            await send(_OIP_SHED_END if oip else _SHED_END)
            return None
        headers = scope["headers"]
        known = scan_headers(headers)
        client = scope.get("client")
        x = edge.open(
            method,
            path,
            scope.get("query_string", b""),
            headers,
            known,
            client=client[0] if client else None,
            routed=not scope.get("root_path"),
        )
        scope[EXCHANGE] = x
        upload = None if x.route is not None else edge.stream_limit(method, path)
        limit = edge.limit_for(path) if upload is None else upload
        if known.content_length > limit:
            if x.route is None:
                x.label = edge.label(method, path)
            await _send(send, _closing(edge.too_large(x, limit, streaming=upload is not None)))
            return None
        if edge.sheds(path):  # probes and metrics are neither shed nor counted
            x.take_slot()
        return x

    async def _serve(self, x: Exchange, receive: Any, send: Any, own: bool) -> None:
        """An edge route: the whole body, then :meth:`Edge.serve`, then one answer."""
        edge = self.edge
        limit = edge.limit_for(x.path)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                x.gone = True
                x.close(CLIENT_CLOSED, "client_closed")  # gone before its body was complete
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send(send, _closing(edge.too_large(x, limit)))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        x.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        assert x.route is not None
        response = await edge.serve(x.route, x)
        await _send(send, response)

    async def _pass_on(self, x: Exchange, scope: Scope, receive: Any, send: Any, own: bool) -> None:
        """The application (FastAPI), with the edge's headers, settled usage and the body limit
        (an upload's own, while it streams)."""
        upload = self.edge.stream_limit(x.method, x.path)
        limit = self.edge.limit_for(x.path) if upload is None else upload
        status = 0
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                x.answer_headers(headers)
                await x.settle(status)
                message = {**message, "headers": headers}
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An MlgateError, so the application's one error handler answers it (413 JSON).
                    x.reason = "body_too_large"
                    raise self.edge.too_large_error(limit, streaming=upload is not None)
            else:
                x.gone = True
            return message

        REQUEST_ID.set(x.request_id)  # this task's: the dataplane's log lines name the request
        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception as exc:
            if not status:  # not answered yet: answer it (the error is logged once, there)
                response = wire_error(exc, method=x.method, path=x.path)
                await send_wrapper(_start(response))
                await send(_body(response))
                status = response.status
            # else: the application's error handler answered and logged it; it only re-raised
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None)
            x.label = label if isinstance(label, str) else self.edge.label(x.method, x.path)
            gone = x.gone or status == CLIENT_CLOSED
            x.close(CLIENT_CLOSED if gone else status or 500, "client_closed" if gone else None)


def _closing(response: WireResponse) -> WireResponse:
    """A refusal of a request whose body is left unread: the connection cannot be reused."""
    response.headers.append((b"connection", b"close"))
    return response


def _start(response: WireResponse) -> Message:
    return {"type": "http.response.start", "status": response.status, "headers": response.asgi_headers()}


def _body(response: WireResponse) -> Message:
    return {"type": "http.response.body", "body": response.body}


async def _send(send: Any, response: WireResponse) -> None:
    await send(_start(response))
    await send(_body(response))
