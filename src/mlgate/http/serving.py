"""The table of routes the edge serves itself, before FastAPI: predictions, probes, metrics.

An endpoint takes a request's :class:`~mlgate.http.exchange.Exchange` and returns a
:class:`~mlgate.http.wire.WireResponse`. ``mlgate serve``'s protocol serves it straight from the
parsed HTTP request (:mod:`mlgate.http.protocol`), any other ASGI server through the ASGI driver
(:mod:`mlgate.http.asgi`), both with :meth:`mlgate.http.edge.Edge.serve`;
:func:`mlgate.http.deps.starlette_endpoint` wraps the same endpoint as a FastAPI route,
registered for the OpenAPI docs and for the requests the edge passes on to FastAPI (a
``root_path``, a cross-origin request when CORS is configured).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.convertors import CONVERTOR_TYPES, Convertor

from mlgate.http.exchange import ServingRoute, WireEndpoint

__all__ = ["ServingRoute", "ServingRoutes", "WireEndpoint", "compile_path"]


class ServingRoutes:
    """The edge's own routes, matched before FastAPI (:class:`mlgate.http.edge.Edge`).

    FastAPI's stack costs a request more than the rest of the edge together before an endpoint
    runs (its telemetry switch reads the environment, middlewares, matching every router,
    dependency solving, an exit stack; Starlette's request and response objects on top:
    docs/benchmarks.md). The edge's routes are registered here and served from raw parts, with
    errors rendered as the app's handlers render them (:func:`mlgate.http.errors.wire_error`).
    """

    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], ServingRoute] = {}
        self._patterns: list[ServingRoute] = []

    def add(self, path: str, endpoint: WireEndpoint, *, method: str = "POST") -> None:
        regex, convertors = compile_path(path)
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


_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(:[a-zA-Z_][a-zA-Z0-9_]*)?}")


def compile_path(path: str) -> tuple[re.Pattern[str], dict[str, Convertor[Any]]]:
    """``/v1/models/{name}/predict`` -> (a regex with named groups, the parameters' convertors),
    as Starlette routes compile their paths (its convertors: ``{name}``, ``{n:int}``, ``{p:path}``)."""
    pattern = "^"
    convertors: dict[str, Convertor[Any]] = {}
    end = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), (match.group(2) or ":str")[1:]
        if name in convertors:
            raise ValueError(f"duplicated parameter {name!r} in {path!r}")
        convertor = CONVERTOR_TYPES[kind]
        pattern += re.escape(path[end : match.start()]) + f"(?P<{name}>{convertor.regex})"
        convertors[name] = convertor
        end = match.end()
    return re.compile(pattern + re.escape(path[end:]) + "$"), convertors
