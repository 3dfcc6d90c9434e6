"""Admin routes (never open): upload a version, move or delete an alias, delete a version or a model."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from mlgate.errors import ConfigurationError, InvalidInput, MlgateError
from mlgate.history import record_event
from mlgate.http.deps import actor_of, exchange_of, json_body, require_admin, server_of
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
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "manifest": {
                            "type": "string",
                            "description": "Manifest JSON (runtime, artifact, params…)",
                        },
                        "aliases": {"type": "string", "description": "comma-separated aliases to point here"},
                        "uri": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "s3://bucket/key of a file the server fetches itself (repeatable)",
                        },
                        "sha256": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "the sha256 the server must find: <hex>, or <file name>=<hex>",
                        },
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
    """The body streams to files in the data directory (hashed while written, never held in
    memory) within ``MLGATE_MAX_UPLOAD_BYTES``; ``uri`` fields are fetched by the server instead."""
    if not NAME_PATTERN.match(name):
        raise InvalidInput(
            "model names are lowercase letters, digits, '-' and '_' (1-64, starting with a letter)"
        )
    server = server_of(request)
    spool_root = server.settings.data_dir / "uploads"
    spool_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="upload-", dir=spool_root) as tmp:
        folder = Path(tmp)  # the version's files, by their relative paths
        form = await _SpooledForm.read(request, folder)
        for uri in form.fields.get("uri", []):
            form.files.append(await asyncio.to_thread(server.registrar.fetch_uri, uri.strip(), folder))
        if not form.files:
            raise InvalidInput("upload at least one file in the 'files' field (or give an s3:// 'uri')")
        names = [validate_key(rel) for rel, _, _ in form.files]
        if len(set(names)) != len(names):
            raise InvalidInput("file names must be unique")
        hashes = {rel: digest for rel, _, digest in form.files}
        _verify(hashes, form.fields.get("sha256", []))
        manifest = _manifest(form.field("manifest"), names)
        aliases = tuple(a.strip() for a in form.field("aliases").split(",") if a.strip())
        for alias in aliases:
            if alias.isdigit() or not NAME_PATTERN.match(alias):
                raise InvalidInput(f"invalid alias {alias!r}", details={"value": alias})
        local = {rel: path for rel, path, _ in form.files}
        # Loaded and warmed up from the received files first: a version that does not is refused
        # (422 with the reason) and never registered.
        info = await asyncio.to_thread(
            server.registrar.register_files,
            name,
            local,
            manifest,
            description=form.field("description"),
            hashes=hashes,
            verify=functools.partial(server.dataplane.trial_load, name),
        )
    if aliases:
        # Loaded here (from the store) before any alias moves: traffic switches to a warm version.
        await server.dataplane.ensure_loaded(info, retry=True)
        for alias in aliases:
            await asyncio.to_thread(server.repository.set_alias, name, alias, info.version)
    server.dataplane.invalidate()
    x = exchange_of(request)
    x.model = name
    x.version = str(info.version)
    return JSONResponse(version_json(info, list(aliases)), status_code=201)


def _verify(hashes: dict[str, str], expected: list[str]) -> None:
    """Check the sha256 the client computed (``sha256`` fields: ``<hex>`` for a single file, or
    ``<file name>=<hex>``) against the bytes received: a mismatch registers nothing."""
    for claim in expected:
        rel, sep, digest = claim.strip().rpartition("=")
        if not sep:
            if len(hashes) != 1:
                raise InvalidInput("with several files, give each sha256 as '<file name>=<hex>'")
            rel = next(iter(hashes))
        digest = digest.strip().lower()
        if rel not in hashes:
            raise InvalidInput(f"sha256 given for {rel!r}, which is not among the files")
        if hashes[rel] != digest:
            raise InvalidInput(
                f"sha256 mismatch for {rel!r}: the client sent {digest}, the server received {hashes[rel]}",
                details={"file": rel, "expected": digest, "received": hashes[rel]},
            )


class _SpooledForm:
    """A ``multipart/form-data`` body read as it streams: file parts written to ``folder`` and
    hashed in a worker thread a megabyte at a time (memory stays bounded by that, whatever the
    artifact's size), small text fields kept."""

    _FLUSH_BYTES = 1 << 20
    _MAX_FIELD_BYTES = 1 << 20
    _MAX_FIELDS = 64

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fields: dict[str, list[str]] = {}
        #: (file name, local path, sha256 hex), in the order received
        self.files: list[tuple[str, Path, str]] = []
        self._headers: dict[str, str] = {}
        self._header = self._value = ""  # parts of the current header line (it may span reads)
        self._field: tuple[str, bytearray] | None = None
        self._file: tuple[str, BinaryIO, Any] | None = None
        self._pending: list[tuple[tuple[str, BinaryIO, Any], bytes | None]] = []  # None: its end
        self._pending_bytes = 0
        self._error: MlgateError | None = None
        self._opened: list[BinaryIO] = []

    @classmethod
    async def read(cls, request: Request, folder: Path) -> _SpooledForm:
        media, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if media != b"multipart/form-data" or not boundary:
            raise InvalidInput("upload a multipart/form-data body ('files' parts, 'manifest' field)")
        form = cls(folder)
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": form._part_begin,
                "on_header_field": form._header_field,
                "on_header_value": form._header_value,
                "on_header_end": form._header_end,
                "on_headers_finished": form._headers_finished,
                "on_part_data": form._part_data,
                "on_part_end": form._part_end,
            },
        )
        try:
            async for chunk in request.stream():
                try:
                    parser.write(chunk)
                except MlgateError:
                    raise
                except Exception as exc:  # python-multipart raises several error types
                    raise InvalidInput(f"malformed multipart body: {exc}") from None
                if form._error is not None:
                    raise form._error
                if form._pending_bytes >= cls._FLUSH_BYTES:
                    await asyncio.to_thread(form._flush)
            try:
                parser.finalize()
            except Exception as exc:
                raise InvalidInput(f"malformed multipart body: {exc}") from None
            if form._error is not None:
                raise form._error
            if form._file is not None or form._field is not None:
                raise InvalidInput("malformed multipart body: it ends inside a part")
            await asyncio.to_thread(form._flush)
        finally:
            for f in form._opened:
                f.close()  # no-op for the files already finished
        return form

    def field(self, name: str) -> str:
        values = self.fields.get(name)
        return values[-1] if values else ""

    # -- parser callbacks (synchronous: they only record; the writing is _flush's) --------------

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end].decode("latin-1")
        if len(self._header) > 16_384:
            self._fail(InvalidInput("a multipart part's header exceeds 16384 bytes"))
            self._header = ""

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end].decode("latin-1")
        if len(self._header) + len(self._value) > 16_384:
            self._fail(InvalidInput("a multipart part's header exceeds 16384 bytes"))
            self._header = self._value = ""

    def _header_end(self) -> None:
        if len(self._headers) < 16:
            self._headers[self._header.lower()] = self._value
        self._header = self._value = ""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            if name != "files":
                self._fail(InvalidInput(f"unexpected file part {name!r}: files go in the 'files' field"))
                return
            if len(self._opened) >= MAX_FILES:
                self._fail(InvalidInput(f"at most {MAX_FILES} files per version"))
                return
            try:
                rel = validate_key(options[b"filename"].decode("utf-8", "replace"))
                target = self.folder / rel
                if target.exists():
                    raise InvalidInput("file names must be unique")
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = target.open("xb")
            except MlgateError as exc:
                self._fail(exc)
                return
            except OSError as exc:
                self._fail(InvalidInput(f"cannot store the file {rel!r}: {exc.strerror}"))
                return
            self._opened.append(handle)
            self._file = (rel, handle, hashlib.sha256())
        else:
            if sum(len(v) for v in self.fields.values()) >= self._MAX_FIELDS:
                self._fail(InvalidInput(f"at most {self._MAX_FIELDS} form fields"))
                return
            self._field = (name, bytearray())

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            chunk = data[start:end]
            self._pending.append((self._file, chunk))
            self._pending_bytes += len(chunk)
        elif self._field is not None:
            buffer = self._field[1]
            buffer += data[start:end]
            if len(buffer) > self._MAX_FIELD_BYTES:
                limit = self._MAX_FIELD_BYTES
                self._fail(InvalidInput(f"form field {self._field[0]!r} exceeds {limit} bytes"))

    def _part_end(self) -> None:
        if self._file is not None:
            self._pending.append((self._file, None))
            self._file = None
        elif self._field is not None:
            name, buffer = self._field
            self.fields.setdefault(name, []).append(buffer.decode("utf-8", "replace"))
            self._field = None

    def _fail(self, error: MlgateError) -> None:
        if self._error is None:
            self._error = error
        self._file = self._field = None

    def _flush(self) -> None:
        """Write and hash what the parser handed over (in a worker thread)."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for (rel, handle, digest), chunk in pending:
            if chunk is None:
                handle.close()
                self.files.append((rel, Path(handle.name), digest.hexdigest()))
            else:
                handle.write(chunk)
                digest.update(chunk)


@router.put("/{name}/aliases/{alias}", summary="Point an alias at a version (promote / roll back)")
async def set_alias(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    body = await json_body(request)
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31:
        raise InvalidInput('body must be {"version": <version number, 1 to 2147483647>}')
    server = server_of(request)
    info = await asyncio.to_thread(server.repository.get_version, name, version)
    # Load (and warm) the target first, so traffic switches to a ready model; an alias only ever
    # points at a version that loaded (one that failed before is tried again).
    await server.dataplane.ensure_loaded(info, retry=True)
    before = await asyncio.to_thread(server.dataplane.policies.get, name, alias)
    await asyncio.to_thread(server.repository.set_alias, name, alias, version)
    server.dataplane.invalidate()
    detail: dict[str, Any] = {"from": before.version if before is not None else None}
    if before is not None and before.split:  # a move ends the split: say which
        detail["ended_split"] = {str(v): w for v, w in before.split}
    await asyncio.to_thread(
        record_event,
        server.repository.engine,
        name,
        "alias",
        alias=alias,
        version=version,
        actor=actor_of(caller),
        detail=detail,
    )
    return JSONResponse({"model": name, "alias": alias, "version": version})


@router.delete("/{name}/aliases/{alias}", summary="Remove an alias")
async def delete_alias(
    name: str, alias: str, request: Request, caller: Caller = Depends(require_admin)
) -> JSONResponse:
    server = server_of(request)
    await asyncio.to_thread(server.repository.delete_alias, name, alias)
    server.dataplane.invalidate()
    await asyncio.to_thread(
        record_event, server.repository.engine, name, "alias_deleted", alias=alias, actor=actor_of(caller)
    )
    return JSONResponse({"model": name, "alias": alias, "deleted": True})


@router.delete("/{name}/versions/{version}", summary="Delete a version (refused while an alias points at it)")
async def delete_version(
    name: str, version: str, request: Request, _: Caller = Depends(require_admin)
) -> JSONResponse:
    if not (version.isascii() and version.isdigit() and len(version) <= 9) or int(version) < 1:
        raise InvalidInput("give a version number (aliases are deleted with DELETE …/aliases/{alias})")
    server = server_of(request)
    info = await asyncio.to_thread(server.registrar.delete_version, name, int(version))
    await server.dataplane.unload(name, info.version)
    x = exchange_of(request)
    x.model, x.version = name, str(info.version)
    return JSONResponse({"model": name, "version": info.version, "deleted": True})


@router.delete("/{name}", summary="Delete a model with its aliases and every version")
async def delete_model(name: str, request: Request, _: Caller = Depends(require_admin)) -> JSONResponse:
    server = server_of(request)
    versions = await asyncio.to_thread(server.registrar.delete_model, name)
    await server.dataplane.unload(name)
    exchange_of(request).model = name
    return JSONResponse({"model": name, "deleted": True, "versions": [v.version for v in versions]})
