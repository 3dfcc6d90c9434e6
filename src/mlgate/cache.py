"""Local cache of model versions' files, downloaded once and verified by sha256.

Layout: ``<root>/<model>/<version>-<digest>/<relpath>`` where ``digest`` is the first 12 hex
digits of the sha256 of the version's ``files`` map, so a re-registered version with other
files never shares a folder with the old one. Downloads land under a temporary name and are
renamed into place only once verified, so concurrent fetches (threads or processes) are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from mlgate.errors import IntegrityError, InvalidInput, register_private_path
from mlgate.settings import S3Settings
from mlgate.store import ArtifactStore, open_store, validate_key
from mlgate.types import VersionInfo

__all__ = ["ArtifactCache", "sha256_file"]

_TMP_PREFIX = ".mlgate-tmp-"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ArtifactCache:
    """Downloads a version's files once into cache_dir, verified by sha256; re-fetches corrupted entries.

    ``version.location`` says where the files are: ``""`` means content-addressed blobs in the
    default ``store`` (key :meth:`blob_key`); a URI (``s3://bucket/models/x``, ``file:///…``) is a
    store prefix holding each relpath; any other string is a key prefix in the default store.

    Example::

        cache = ArtifactCache(settings.cache_dir, store=store, s3=settings.s3)
        artifact_dir = cache.fetch(version)
    """

    def __init__(self, root: Path, *, store: ArtifactStore, s3: S3Settings | None = None) -> None:
        self.root = Path(root)
        self._store = store
        # Clients see "cache/<model>/<version>-<digest>/<file>" and "store", never these paths.
        register_private_path(self.root, "cache")
        store_root = getattr(store, "root", None)
        if isinstance(store_root, Path):
            register_private_path(store_root, "store")
        self._s3 = s3
        self._stores: dict[str, ArtifactStore] = {}
        # path -> (size, mtime_ns, sha256) of files verified by this process, to skip re-hashing.
        self._verified: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def blob_key(sha256: str) -> str:
        """Key of a content-addressed blob in the default store."""
        return f"blobs/sha256/{sha256}"

    def version_dir(self, version: VersionInfo) -> Path:
        """The local folder of ``version`` (whether or not it is fetched yet)."""
        model = validate_key(version.model)
        if "/" in model:
            raise InvalidInput(f"model name {model!r} must not contain '/'")
        files = json.dumps(version.manifest.files, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(files.encode()).hexdigest()[:12]
        return self.root / model / f"{version.version}-{digest}"

    def fetch(self, version: VersionInfo, *, progress: Callable[[int], None] | None = None) -> Path:
        """Make every file of ``version`` present and verified locally; return its folder.

        Raises :class:`~mlgate.errors.ObjectNotFound` when the store lacks a file and
        :class:`~mlgate.errors.IntegrityError` when the store's bytes do not match the manifest.
        """
        target = self.version_dir(version)
        files = sorted(version.manifest.files.items())
        for relpath, _ in files:
            validate_key(relpath)
        target.mkdir(parents=True, exist_ok=True)
        for relpath, sha in files:
            path = target / relpath
            if self._verify(path, sha):
                continue
            corrupted = path.exists()
            store, key = self._locate(version, relpath, sha)
            try:
                self._download(store, key, path, sha, progress=progress)
            except Exception:
                if corrupted:  # a bad leftover must not survive a failed re-fetch
                    path.unlink(missing_ok=True)
                raise
        return target

    def _verify(self, path: Path, sha: str) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        record = (st.st_size, st.st_mtime_ns, sha)
        if self._verified.get(path) == record:
            return True
        if path.is_file() and sha256_file(path) == sha:
            self._verified[path] = record
            return True
        self._verified.pop(path, None)
        return False

    def _locate(self, version: VersionInfo, relpath: str, sha: str) -> tuple[ArtifactStore, str]:
        location = version.location
        if not location:
            return self._store, self.blob_key(sha)
        if "://" in location:
            return self._open(location), relpath
        return self._store, validate_key(f"{location.strip('/')}/{relpath}")

    def _open(self, uri: str) -> ArtifactStore:
        if uri == self._store.url:
            return self._store
        with self._lock:
            store = self._stores.get(uri)
            if store is None:
                store = self._stores[uri] = open_store(uri, s3=self._s3)
            return store

    def _download(
        self,
        store: ArtifactStore,
        key: str,
        path: Path,
        sha: str,
        *,
        progress: Callable[[int], None] | None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        os.close(fd)
        tmp = Path(name)
        try:
            store.download(key, tmp, progress=progress)
            actual = sha256_file(tmp)
            if actual != sha:
                raise IntegrityError(
                    f"{key!r} in {store.url} has sha256 {actual}, expected {sha}",
                    details={"key": key, "expected": sha, "actual": actual},
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        st = path.stat()
        self._verified[path] = (st.st_size, st.st_mtime_ns, sha)
