"""The predict routes' table, served by the edge before FastAPI's stack."""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

__all__ = ["Endpoint", "ServingRoute", "ServingRoutes"]

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class ServingRoute:
    """One hot-path route: its template (the metrics label), compiled pattern and endpoint."""

    path: str
    method: str
    endpoint: Endpoint
    regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]


class ServingRoutes:
    """The predict routes, dispatched by the edge (:mod:`mlgate.http.middleware`) before FastAPI.

    FastAPI's stack costs ~100 µs per request before an endpoint runs (its telemetry switch
    reads the environment, four middlewares, matching every router, dependency solving, an
    exit stack). The predict routes are registered here and served by the edge directly, with
    the same endpoints (which take only the ``Request``) and the same error rendering
    (:func:`mlgate.http.errors.response_for`); the FastAPI route registered for the same path
    stays, for the OpenAPI docs and for requests the edge passes on (a ``root_path``, a
    cross-origin request when CORS is configured, another method).
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], ServingRoute] = {}
        self._patterns: list[ServingRoute] = []

    def add(self, path: str, endpoint: Endpoint, *, method: str = "POST") -> None:
        regex, _, convertors = compile_path(path)
        route = ServingRoute(path, method.upper(), endpoint, regex, convertors)
        if convertors:
            self._patterns.append(route)
        else:
            self._exact[(route.method, path)] = route

    def match(self, method: str, path: str) -> tuple[ServingRoute, dict[str, Any]] | None:
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        for route in self._patterns:
            if route.method == method:
                found = route.regex.match(path)
                if found is not None:
                    params = {k: route.convertors[k].convert(v) for k, v in found.groupdict().items()}
                    return route, params
        return None
