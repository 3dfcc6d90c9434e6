"""Admin routes (never open): upload a version, move or delete an alias."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from mlgate.errors import ConfigurationError, InvalidInput
from mlgate.http.deps import exchange_of, json_body, require_admin, server_of
from mlgate.http.jsonio import JSONResponse
from mlgate.http.routes_models import version_json
from mlgate.registration import runtime_for_suffix
from mlgate.store import validate_key
from mlgate.types import NAME_PATTERN, Caller, Manifest

router = APIRouter(prefix="/v1/models", tags=["admin"])

MAX_FILES = 256
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "manifest": {
                            "type": "string",
                            "description": "Manifest JSON (runtime, artifact, params…)",
                        },
                        "aliases": {"type": "string", "description": "comma-separated aliases to point here"},
                        "description": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _manifest(raw: Any, files: list[str]) -> Manifest:
    try:
        data = orjson.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("manifest must be a JSON object")
    data.pop("files", None)  # always computed by the server
    if "artifact" not in data:
        if len(files) != 1:
            raise InvalidInput("manifest.artifact is required when uploading several files")
        data["artifact"] = files[0]
    if "runtime" not in data:
        try:
            data["runtime"] = runtime_for_suffix(str(data["artifact"]))
        except ConfigurationError as exc:
            raise InvalidInput(f"{exc.message}; or give manifest.runtime") from None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput("manifest is invalid", details={"errors": orjson.loads(exc.json())}) from None


@router.post("/{name}/versions", status_code=201, summary="Upload a new version", openapi_extra=_UPLOAD_BODY)
async def upload_version(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            "model names are lowercase letters, digits, '-' and '_' (1-64, starting with a letter)"
        )
    server = server_of(request)
    form = await request.form(max_files=MAX_FILES, max_fields=16)
    uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not uploads:
        raise InvalidInput("upload at least one file in the 'files' field")
    names = [validate_key(f.filename or "") for f in uploads]
    if len(set(names)) != len(names):
        raise InvalidInput("file names must be unique")
    manifest = _manifest(form.get("manifest"), names)
    aliases = tuple(a.strip() for a in str(form.get("aliases") or "").split(",") if a.strip())
    description = str(form.get("description") or "")
    with tempfile.TemporaryDirectory(prefix="mlgate-upload-") as tmp:
        local: dict[str, Path] = {}
        for rel, upload in zip(names, uploads, strict=True):
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                await asyncio.to_thread(shutil.copyfileobj, upload.file, out)
            local[rel] = target
        info = await asyncio.to_thread(
            server.registrar.register_files, name, local, manifest, description=description, aliases=aliases
        )
    await form.close()
    server.dataplane.invalidate()
    x = exchange_of(request)
    x.model = name
    x.version = str(info.version)
    return JSONResponse(version_json(info, list(aliases)), status_code=201)


@router.put("/{name}/aliases/{alias}", summary="Point an alias at a version (promote / roll back)")
async def set_alias(
    name: str, alias: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    body = await json_body(request)
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInput('body must be {"version": <positive integer>}')
    server = server_of(request)
    info = await asyncio.to_thread(server.repository.get_version, name, version)
    # Load (and warm) the target first, so traffic switches to a ready model.
    await server.dataplane.ensure_loaded(info)
    await asyncio.to_thread(server.repository.set_alias, name, alias, version)
    server.dataplane.invalidate()
    return JSONResponse({"model": name, "alias": alias, "version": version})


@router.delete("/{name}/aliases/{alias}", summary="Remove an alias")
async def delete_alias(
    name: str, alias: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    await asyncio.to_thread(server.repository.delete_alias, name, alias)
    server.dataplane.invalidate()
    return JSONResponse({"model": name, "alias": alias, "deleted": True})
