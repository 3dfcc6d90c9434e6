"""The request being served, for log lines written far from HTTP (the dataplane, a model's error).

The edge sets :data:`REQUEST_ID` in the task that serves a request (every request's task runs in
its own :class:`contextvars.Context`), so a log line of the dataplane names the request whose
``x-request-id`` the client got back.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["REQUEST_ID", "current_request_id"]

#: the ``x-request-id`` of the request this task serves ("-" outside a request)
REQUEST_ID: ContextVar[str] = ContextVar("mlgate_request_id", default="-")


def current_request_id() -> str:
    return REQUEST_ID.get()
