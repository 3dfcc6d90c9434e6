"""The OpenAPI document's per-model paths: built from the manifests, rebuilt only when the
registry generation (or the set of loaded versions) moves."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson

from mlgate.errors import VersionNotFound
from mlgate.http.routes_docs import ModelDocs, model_paths
from mlgate.types import Manifest, ModelInfo, VersionInfo

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeRepository:
    def __init__(self) -> None:
        self.gen = 1
        self.models: dict[str, VersionInfo | None] = {}
        self.listings = 0

    def generation(self) -> int:
        return self.gen

    def list_models(self) -> list[ModelInfo]:
        self.listings += 1
        return [
            ModelInfo(name, "", NOW, {"production": v.version} if v else {}, v.version if v else None)
            for name, v in self.models.items()
        ]

    def resolve(self, name: str) -> VersionInfo:
        info = self.models[name]
        if info is None:
            raise VersionNotFound(f"model {name!r} has no versions")
        return info


def _version(name: str, version: int, **schemas: Any) -> VersionInfo:
    manifest = Manifest(runtime="sklearn", artifact="m.skops", **schemas)
    return VersionInfo(name, version, manifest, NOW, "")


def _server(repo: FakeRepository, loaded: list[Any] | None = None) -> Any:
    return SimpleNamespace(repository=repo, dataplane=SimpleNamespace(loaded=lambda: loaded or []))


def test_each_model_gets_its_schemas() -> None:
    repo = FakeRepository()
    repo.models["iris"] = _version(
        "iris", 3, input_schema={"type": "array"}, output_schema={"type": "string"}
    )
    repo.models["empty"] = None  # no version yet: not documented
    paths, schemas = model_paths(_server(repo))
    assert list(paths) == ["/v1/models/iris/predict"]
    operation = paths["/v1/models/iris/predict"]["post"]
    assert operation["x-mlgate-model"] == {"name": "iris", "version": 3, "runtime": "sklearn"}
    assert "version 3 (the production alias" in operation["description"]
    assert schemas["model-iris-input"] == {"type": "array", "title": "iris v3: one input"}
    assert schemas["model-iris-output"] == {"type": "string", "title": "iris v3: one output"}
    assert repo.models["iris"] is not None
    assert repo.models["iris"].manifest.input_schema == {"type": "array"}  # the manifest is not touched


def test_loaded_runtime_signature_is_included() -> None:
    repo = FakeRepository()
    info = _version("iris", 1)
    repo.models["iris"] = info
    runtime = SimpleNamespace(metadata=lambda: {"inputs": [{"name": "x", "shape": [-1, 4]}], "outputs": []})
    paths, schemas = model_paths(_server(repo, [SimpleNamespace(info=info, runtime=runtime)]))
    operation = paths["/v1/models/iris/predict"]["post"]
    assert operation["x-mlgate-signature"]["inputs"][0]["shape"] == [-1, 4]
    assert "any JSON" in schemas["model-iris-input"]["description"]


def test_the_document_is_rebuilt_only_when_the_registry_moves() -> None:
    repo = FakeRepository()
    repo.models["iris"] = _version("iris", 1)
    base = {"openapi": "3.1.0", "paths": {"/v1/keys": {}}, "components": {"schemas": {}}}
    docs = ModelDocs(lambda: base, lambda: _server(repo))
    first = docs.body()
    assert docs.body() is first  # served from the cache: no listing of the models
    assert repo.listings == 1
    assert "/v1/models/iris/predict" in orjson.loads(first)["paths"]
    assert base["paths"] == {"/v1/keys": {}}  # FastAPI's document is not modified

    repo.models["newer"] = _version("newer", 1)
    assert docs.body() is first  # same generation: same document
    repo.gen += 1
    document = docs.document()
    assert repo.listings == 2
    assert {"/v1/keys", "/v1/models/iris/predict", "/v1/models/newer/predict"} == set(document["paths"])


def test_without_a_server_the_routes_only() -> None:
    base = {"openapi": "3.1.0", "paths": {}}
    assert ModelDocs(lambda: base, lambda: None).document() is base
