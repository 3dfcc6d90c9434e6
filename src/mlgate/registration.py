"""Register versions: uploaded files, bundled reference models and models declared by URI.

Files go to the store content-addressed (``blobs/sha256/<hex>``) *before* the version row
is written, so a version is never visible without its files; identical files are
stored once. Bundled and URI-declared models register idempotently: the same files
give back the same version.

A pushed version is first loaded and warmed up from its local files (``verify``): one that
does not is never registered. Deleting a version or a model deletes the blobs no remaining
version references.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlgate.cache import ArtifactCache, sha256_file
from mlgate.errors import ConfigurationError, InvalidInput, UnsafeArtifact
from mlgate.repository import Repository
from mlgate.runtimes import RUNTIMES
from mlgate.settings import Settings
from mlgate.store import ArtifactStore, open_store, split_uri, validate_key
from mlgate.types import BundledModel, Manifest, VersionInfo

__all__ = ["PICKLE_SUFFIXES", "Registrar", "Verify", "runtime_for_suffix"]

log = logging.getLogger("mlgate.registration")

#: ``verify(manifest, artifact_dir)``: load and warm up a version from its local files, or raise.
Verify = Callable[[Manifest, Path], None]

#: Formats whose loading executes code.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib", ".pt", ".pth")

_SUFFIX_RUNTIMES = {
    ".skops": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".joblib": "sklearn",
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".pb": "opencv-dnn",
}


def runtime_for_suffix(filename: str) -> str:
    """The runtime a single-file model uses, by extension (ConfigurationError if unknown)."""
    suffix = Path(filename).suffix.lower()
    try:
        return _SUFFIX_RUNTIMES[suffix]
    except KeyError:
        known = ", ".join(sorted(_SUFFIX_RUNTIMES))
        raise ConfigurationError(
            f"cannot tell the runtime of '{filename}'; known extensions: {known}"
        ) from None


class Registrar:
    """Writes versions to the store and the registry."""

    def __init__(self, *, repository: Repository, store: ArtifactStore, settings: Settings) -> None:
        self.repository = repository
        self.store = store
        self.settings = settings

    def check(self, manifest: Manifest, files: Mapping[str, str]) -> None:
        """Refuse manifests the server could never load (unknown runtime, untrusted pickle)."""
        if manifest.runtime not in RUNTIMES:
            raise InvalidInput(f"unknown runtime '{manifest.runtime}'; known: {', '.join(sorted(RUNTIMES))}")
        if manifest.artifact not in files:
            raise InvalidInput(f"artifact '{manifest.artifact}' is not among the uploaded files")
        digest = files[manifest.artifact]
        if (
            Path(manifest.artifact).suffix.lower() in PICKLE_SUFFIXES
            and manifest.runtime != "torchscript"  # it loads TorchScript safely, refuses pickles itself
            and not manifest.trusted
            and digest not in self.settings.trusted_sha256
        ):
            raise UnsafeArtifact(
                f"'{manifest.artifact}' is a pickle, and loading a pickle executes code: "
                "mark the version trusted (models push --trusted) or pin its sha256 in MLGATE_TRUSTED_SHA256 "
                "(prefer a safe format: skops, ONNX)"
            )

    def register_files(
        self,
        name: str,
        files: Mapping[str, Path],
        manifest: Manifest,
        *,
        description: str = "",
        aliases: tuple[str, ...] = (),
        progress: Callable[[int], None] | None = None,
        hashes: Mapping[str, str] | None = None,
        verify: Verify | None = None,
    ) -> VersionInfo:
        """Store ``files`` (relpath -> local path) and register them as a new version
        (``hashes``: their sha256, when computed already — as an upload was written to disk).

        ``verify`` is called first with the manifest and a folder holding the files under their
        relpaths; whatever it raises refuses the version before anything is stored.
        """
        if not files:
            raise InvalidInput("a version needs at least one file")
        if hashes is None:
            hashes = {validate_key(rel): sha256_file(path) for rel, path in files.items()}
        else:
            hashes = {validate_key(rel): hashes[rel] for rel in files}
        manifest = manifest.model_copy(update={"files": hashes})
        self.check(manifest, hashes)
        if verify is not None:
            with _laid_out(files) as root:
                verify(manifest, root)
        self._put_blobs(files, hashes, progress)
        self.repository.ensure_model(name, description=description)
        info = self.repository.add_version(name, manifest)
        # A deletion that released one of these blobs may have committed after the first check
        # and before add_version: the blob is gone and this version references it. Put it back.
        self._put_blobs(files, hashes, None)
        for alias in aliases:
            self.repository.set_alias(name, alias, info.version)
        return info

    def _put_blobs(
        self, files: Mapping[str, Path], hashes: Mapping[str, str], progress: Callable[[int], None] | None
    ) -> None:
        for rel, path in files.items():
            key = ArtifactCache.blob_key(hashes[rel])
            if not self.store.exists(key):
                self.store.put_file(key, path, progress=progress)

    def delete_version(self, name: str, version: int) -> VersionInfo:
        """Delete a version (refused while aliased) and the blobs nothing else references."""
        return self.repository.delete_version(name, version, release=self._release)

    def delete_model(self, name: str) -> list[VersionInfo]:
        """Delete a model, its aliases and versions, and the blobs nothing else references."""
        return self.repository.delete_model(name, release=self._release)

    def _release(self, digests: set[str]) -> None:
        for sha in sorted(digests):
            self.store.delete(ArtifactCache.blob_key(sha))
        log.info("released %d unreferenced blob(s) from the store", len(digests))

    def register_bundled(self, bundled: BundledModel) -> VersionInfo:
        """Register a service's shipped model once; set its aliases only where unset."""
        root = bundled.artifact_dir
        if bundled.files is not None:
            files = {rel: root / rel for rel in bundled.files}
        else:
            files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
        hashes = {rel: sha256_file(path) for rel, path in files.items()}
        info = (
            self.repository.find_version(bundled.name, hashes) if self._model_exists(bundled.name) else None
        )
        if info is None:
            info = self.register_files(bundled.name, files, bundled.manifest, description=bundled.description)
        self._alias_if_unset(info, bundled.aliases)
        return info

    def register_uri(self, name: str, uri: str) -> VersionInfo:
        """Register a single-file model given by URI (``MODEL_S3_URI`` style), idempotently."""
        prefix, key = split_uri(uri)
        store = open_store(prefix, s3=self.settings.s3)
        with tempfile.TemporaryDirectory(prefix="mlgate-uri-") as tmp:
            local = Path(tmp) / Path(key).name
            store.download(key, local)
            digest = sha256_file(local)
        manifest = Manifest(runtime=runtime_for_suffix(key), artifact=key, files={key: digest})
        self.check(manifest, manifest.files)
        self.repository.ensure_model(name, description=f"declared by URI {uri}")
        info = self.repository.find_version(name, manifest.files, location=prefix)
        if info is None:
            info = self.repository.add_version(name, manifest, location=prefix)
        # The URI is the deployment's source of truth: whatever bytes it holds now serve
        # (new bytes, or older bytes put back), as with the original serverless function.
        if self.repository.get_model(name).aliases.get("production") != info.version:
            self.repository.set_alias(name, "production", info.version)
        return info

    def fetch_uri(self, uri: str, folder: Path) -> tuple[str, Path, str]:
        """Download the object ``uri`` names (``s3://bucket/key``) into ``folder``, for a version
        registered from a URI instead of an upload: its file name, local path and sha256."""
        if not uri.startswith("s3://"):
            raise InvalidInput(f"a version is registered from s3://bucket/key URIs only, not {uri!r}")
        try:
            prefix, key = split_uri(uri)
        except ConfigurationError as exc:
            raise InvalidInput(exc.message) from None
        local = folder / key
        if local.exists():
            raise InvalidInput("file names must be unique")
        try:
            store = open_store(prefix, s3=self.settings.s3)
        except ConfigurationError as exc:  # the client's URI, not the server's configuration
            raise InvalidInput(exc.message) from None
        store.download(key, local)
        return key, local, sha256_file(local)

    def _model_exists(self, name: str) -> bool:
        return any(m.name == name for m in self.repository.list_models())

    def _alias_if_unset(self, info: VersionInfo, aliases: tuple[str, ...]) -> None:
        current = self.repository.get_model(info.model).aliases
        for alias in aliases:
            if alias not in current:
                self.repository.set_alias(info.model, alias, info.version)


@contextmanager
def _laid_out(files: Mapping[str, Path]) -> Iterator[Path]:
    """A folder where each file is at its relpath: theirs when they already are, else links to them."""
    roots = {_root_of(rel, path) for rel, path in files.items()}
    root = roots.pop() if len(roots) == 1 else None
    if root is not None:
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="mlgate-verify-") as tmp:
        for rel, path in files.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path.resolve(), target)
        yield Path(tmp)


def _root_of(rel: str, path: Path) -> Path | None:
    """The folder ``path`` is ``rel`` under, or None when it is not laid out so."""
    parts = Path(rel).parts
    if len(path.parts) <= len(parts) or path.parts[-len(parts) :] != parts:
        return None
    return Path(*path.parts[: -len(parts)])
