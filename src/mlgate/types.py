"""Plain data shared by every layer: manifests, version records and the service plug-in shapes.

Imports nothing of ours. The manifest is validated with pydantic because it arrives from
uploads; everything else is a frozen dataclass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "NAME_PATTERN",
    "AuthMode",
    "BatchingConfig",
    "BundledModel",
    "BundledWorkflow",
    "Caller",
    "InfoContext",
    "InfoRoute",
    "Manifest",
    "ModelInfo",
    "Processor",
    "RawInput",
    "RouteAdapter",
    "Service",
    "VersionInfo",
]

#: Who may call a route: an API key, a user's bearer token, either, anyone; "default" defers
#: to the server's setting (``MLGATE_AUTH__MODEL_ROUTES``).
AuthMode = Literal["key", "user", "either", "public", "default"]

#: Model and alias names: lowercase letters, digits, ``-`` and ``_``, 1-64 characters, starting with a letter.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BatchingConfig(BaseModel):
    """How the dataplane groups requests for one model version.

    Batches form adaptively: whatever is queued when a worker frees up is taken, up to
    ``max_batch_size``; ``max_wait_ms`` is how long a lone request may wait for company.
    """

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_wait_ms: float = Field(default=0.0, ge=0, le=10_000)
    max_queue: int = Field(default=256, ge=1, le=1_000_000, description="queued requests beyond this get 503")
    max_concurrency: int = Field(default=1, ge=1, le=64, description="batches running at once")


class Manifest(BaseModel):
    """Everything mlgate knows about one immutable model version besides its files' bytes."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    runtime: str = Field(description="registered runtime name, e.g. 'sklearn', 'onnx', 'opencv-dnn'")
    artifact: str = Field(description="main artifact path, relative to the version folder")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256 of every file")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict, description="runtime and pre/post-processing params")
    metrics: dict[str, float] = Field(default_factory=dict, description="evaluation metrics")
    baseline: dict[str, Any] = Field(default_factory=dict, description="training-data statistics for drift")
    trusted: bool = Field(default=False, description="allow formats that execute code on load (pickle)")
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    timeout_s: float | None = Field(
        default=None, gt=0, le=3600, description="per-request timeout (504); None uses the server default"
    )

    @field_validator("files")
    @classmethod
    def _hashes_are_sha256(cls, files: dict[str, str]) -> dict[str, str]:
        for path, digest in files.items():
            if not _SHA256.match(digest):
                raise ValueError(f"files[{path!r}] is not a lowercase hex sha256")
        return files


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    description: str
    created_at: datetime
    aliases: Mapping[str, int] = field(default_factory=dict)
    latest_version: int | None = None


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version: its number, manifest and where its files live in the store."""

    model: str
    version: int
    manifest: Manifest
    created_at: datetime
    #: store key prefix of the version's files (``models/<name>/<version>``), or an absolute URI
    #: (``s3://bucket/key``) for models declared by URI alone.
    location: str


@dataclass(frozen=True, slots=True)
class RawInput:
    """A non-JSON request body (an image upload, a multipart file) handed to a processor."""

    data: bytes
    content_type: str
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as the gateway authenticated it."""

    kind: Literal["anonymous", "key", "user"]
    id: str | None = None  # key id, or the user's username
    username: str | None = None  # the user (a user's token, or the owner of a key)
    role: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


class Processor(Protocol):
    """A model's own request/response shape, wrapped around a generic runtime.

    ``decode`` turns the JSON payload of ``/v1/models/{name}/predict`` into the runtime's
    input (raising :class:`mlgate.errors.InvalidInput`); ``encode`` turns the runtime's
    encoded output into the JSON the model's clients expect.

    A processor may also define ``for_version(manifest) -> Processor``: the dataplane then
    calls it once per loaded version, so a pushed version's own params (a threshold, the
    class list) take effect without code changes.
    """

    def decode(self, payload: Any) -> Any: ...

    def encode(self, output: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class RouteAdapter:
    """A framework-neutral route that keeps an original deployment's URL and envelope.

    ``parse(body, content_type)`` returns the payload handed to the model's processor;
    ``render(output)`` and ``render_error(status, message)`` return ``(status, json)``.
    """

    path: str
    model: str
    parse: Callable[[bytes, str], Any]
    render: Callable[[Any], tuple[int, Any]]
    render_error: Callable[[int, str], tuple[int, Any]]
    method: str = "POST"
    summary: str = ""
    auth: AuthMode = "default"
    #: a larger body limit for this path (e.g. base64 images of up to 6 MB); None: the server's
    max_body_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class InfoContext:
    """What an :class:`InfoRoute` may answer from: the caller and the served versions."""

    caller: Caller
    #: version the default alias of each of the service's models resolves to now
    model_versions: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class InfoRoute:
    """A non-predicting route an original deployment had (``GET /home``, ``GET /``)."""

    path: str
    respond: Callable[[InfoContext], tuple[int, Any]]
    method: str = "GET"
    summary: str = ""
    auth: AuthMode = "default"
    #: renders auth failures in the original envelope; None uses the gateway's
    render_error: Callable[[int, str], tuple[int, Any]] | None = None


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A model shipped in a service folder and registered on first start."""

    name: str
    artifact_dir: Path
    manifest: Manifest
    description: str = ""
    aliases: tuple[str, ...] = ("production",)
    #: register only these relative paths of ``artifact_dir`` (None: every file in it)
    files: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class BundledWorkflow:
    """A workflow shipped in a service folder, deployed on first start (never over a redeploy).

    ``definition`` is Amazon States Language JSON; ``mapping`` maps its AWS resources (Lambda
    ARNs) to mlgate actions (see ``docs/workflows.md``).
    """

    name: str
    definition: Path
    mapping: Path | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Service:
    """A reference (or third-party) service: bundled models, processors and original routes."""

    name: str
    models: tuple[BundledModel, ...] = ()
    processors: Mapping[str, Processor] = field(default_factory=dict)
    routes: tuple[RouteAdapter, ...] = ()
    info_routes: tuple[InfoRoute, ...] = ()
    workflows: tuple[BundledWorkflow, ...] = ()
    #: functions workflows may call as ``mlgate:python:<name>`` (JSON in, JSON out; sync or async)
    functions: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
