"""The API documentation: ``/openapi.json`` with every registered model's schemas, and the
``/docs`` (Swagger UI) and ``/redoc`` pages served from assets shipped with mlgate.

The pages name no external URL: Swagger UI's and ReDoc's scripts, stylesheet and favicon come
from the ``fastapi-offline`` package (pinned in ``pyproject.toml``), mounted at
``/docs/static``, so the docs work on a host without Internet access; ReDoc's Google fonts and
Swagger UI's online validator are off.

Per-model schemas: for each registered model, ``/v1/models/<model>/predict`` is documented with
the request and response schemas of the version it serves (its ``production`` alias, else its
latest), taken from the manifest's ``input_schema``/``output_schema`` (components
``model-<model>-input``/``-output``), plus the tensor signature of the loaded runtime
(``x-mlgate-signature``, as ``GET /v2/models/<model>`` answers it) when this process has it
loaded. The document is built once per registry generation (every push, alias move or new
model bumps it) and set of loaded versions, and kept serialized: a ``/openapi.json`` request
costs one read of the generation counter.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse, Response

from mlgate.errors import MlgateError, public_text

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlgate.server import Server

__all__ = ["ASSETS_PATH", "ModelDocs", "install", "model_paths"]

log = logging.getLogger("mlgate")

#: where the documentation pages' scripts, stylesheet and favicon are served
ASSETS_PATH = "/docs/static"
_OPENAPI = "/openapi.json"
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"
#: Swagger UI without its online validator badge (it would fetch validator.swagger.io)
_SWAGGER_PARAMETERS = {"validatorUrl": None}
_TAG = "model schemas"


def assets_directory() -> Path:
    """The shipped Swagger UI and ReDoc assets (``swagger-ui-bundle.js``, ``swagger-ui.css``,
    ``redoc.standalone.js``, ``favicon.png``)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


class ModelDocs:
    """The OpenAPI document: FastAPI's (generated once) plus the registered models' paths,
    rebuilt when the registry generation or the set of loaded versions changes."""

    def __init__(self, base: Callable[[], dict[str, Any]], server: Callable[[], Server | None]) -> None:
        self._base = base
        self._server = server
        self._lock = threading.Lock()
        self._key: tuple[int, int, tuple[tuple[str, int], ...]] | None = None
        self._cached: tuple[dict[str, Any], bytes] | None = None

    def document(self) -> dict[str, Any]:
        """The whole document (blocking: reads the registry when it changed)."""
        return self._current()[0]

    def body(self) -> bytes:
        """The document serialized (blocking, like :meth:`document`)."""
        return self._current()[1]

    def _current(self) -> tuple[dict[str, Any], bytes]:
        base = self._base()
        server = self._server()
        if server is None:  # not started (tests building the app alone): the routes only
            return base, orjson.dumps(base)
        loaded = tuple(sorted((m.info.model, m.info.version) for m in server.dataplane.loaded()))
        key = (id(base), server.repository.generation(), loaded)
        with self._lock:
            cached = self._cached
            if cached is not None and key == self._key:
                return cached
            document = copy.deepcopy(base)
            paths, schemas = model_paths(server)
            document.setdefault("paths", {}).update(paths)
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            if paths:
                tags = document.setdefault("tags", [])
                tags.append(
                    {
                        "name": _TAG,
                        "description": "Each registered model's request and response, from the manifest "
                        "of the version it serves",
                    }
                )
            built = (document, orjson.dumps(document))
            self._key, self._cached = key, built
            return built


def model_paths(server: Server) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(paths, component schemas)`` documenting each registered model's predict route."""
    repository = server.repository
    loaded = {(m.info.model, m.info.version): m for m in server.dataplane.loaded()}
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for model in repository.list_models():
        name = model.name
        try:
            info = repository.resolve(name)
        except MlgateError:  # no version yet (or removed meanwhile): nothing to document
            continue
        manifest = info.manifest
        input_name, output_name = f"model-{name}-input", f"model-{name}-output"
        schemas[input_name] = _schema(manifest.input_schema, f"{name} v{info.version}: one input")
        schemas[output_name] = _schema(manifest.output_schema, f"{name} v{info.version}: one output")
        served = "the production alias" if model.aliases.get("production") == info.version else "the latest"
        description = (
            f"{public_text(model.description or manifest.description)}\n\n"
            f"Schemas of version {info.version} ({served}; runtime `{manifest.runtime}`). "
            "Other versions: `?version=` or `/v1/models/{name}/versions/{version}/predict`."
        ).strip()
        operation: dict[str, Any] = {
            "tags": [_TAG],
            "summary": f"Predict with {name}",
            "description": description,
            "operationId": f"predict_model_{name}",
            "parameters": [
                {
                    "name": "version",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "a version number or alias (default: production, else the latest)",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{input_name}"}}},
            },
            "responses": {
                "200": {
                    "description": "The prediction",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model_name", "model_version", "outputs"],
                                "properties": {
                                    "model_name": {"type": "string", "const": name},
                                    "model_version": {"type": "integer"},
                                    "outputs": {"$ref": f"#/components/schemas/{output_name}"},
                                },
                            }
                        }
                    },
                }
            },
            "x-mlgate-model": {"name": name, "version": info.version, "runtime": manifest.runtime},
        }
        running = loaded.get((name, info.version))
        if running is not None:
            try:
                operation["x-mlgate-signature"] = orjson.loads(orjson.dumps(running.runtime.metadata()))
            except Exception:  # a runtime's metadata must never break the document
                log.warning("mlgate: no signature for %s v%s in the OpenAPI document", name, info.version)
        paths[f"/v1/models/{name}/predict"] = {"post": operation}
    return paths, schemas


def _schema(declared: dict[str, Any], title: str) -> dict[str, Any]:
    """The manifest's JSON schema (a copy), titled; ``{}`` (any JSON) when none is declared."""
    schema = orjson.loads(orjson.dumps(declared)) if declared else {}
    if isinstance(schema, dict):
        schema.setdefault("title", title)
        if not declared:
            schema["description"] = "not declared in the manifest (input_schema/output_schema): any JSON"
    return schema


def install(api: FastAPI, server: Callable[[], Server | None]) -> ModelDocs:
    """Serve ``/openapi.json`` (with the models' schemas), ``/docs``, ``/redoc`` and their assets.

    ``api`` must be created with ``openapi_url``, ``docs_url`` and ``redoc_url`` None (this
    replaces them). ``api.openapi()`` then answers the whole document too.
    """
    from fastapi.staticfiles import StaticFiles

    docs = ModelDocs(api.openapi, server)
    api.openapi = docs.document  # type: ignore[method-assign]
    api.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")
    title = api.title
    router = APIRouter(include_in_schema=False)

    @router.get(_OPENAPI)
    async def openapi(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        if root:  # behind a path prefix: the prefix is the server (rare: not cached)
            document = dict(await asyncio.to_thread(docs.document))
            document["servers"] = [{"url": root}]
            return Response(orjson.dumps(document), media_type="application/json")
        return Response(await asyncio.to_thread(docs.body), media_type="application/json")

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + _OPENAPI,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=root + _OAUTH2_REDIRECT,
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )

    @router.get(_OAUTH2_REDIRECT)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + _OPENAPI,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    api.include_router(router)
    return docs
