"""Object store for model files: ``file://`` directories and ``s3://`` buckets behind one role.

Keys are ``/``-separated relative names checked by :func:`validate_key`. Writes and downloads are
atomic (temporary file in the destination directory, then :func:`os.replace`). ``progress``
callbacks receive byte *increments*; with S3 they may be called from transfer worker threads.

Example::

    store = open_store("s3://models/prod", s3=settings.s3)
    store.put_file("blobs/sha256/ab12…", Path("model.onnx"))
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeGuard
from urllib.parse import unquote, urlsplit

from mlgate.errors import ConfigurationError, InvalidInput, ObjectNotFound, StoreError
from mlgate.settings import S3Settings

if TYPE_CHECKING:
    from mlgate.store.s3 import S3ArtifactStore

__all__ = [
    "ArtifactStore",
    "FileArtifactStore",
    "S3ArtifactStore",
    "is_s3",
    "open_store",
    "split_uri",
    "validate_key",
]

Progress = Callable[[int], None]
MAX_KEY_BYTES = 1024
_CHUNK = 1024 * 1024
_TMP_PREFIX = ".mlgate-tmp-"
_ESCAPE = re.compile(r"%([0-9a-fA-F]{2})")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class ArtifactStore(Protocol):
    """Where model files live; implementations are chosen by URL (see :func:`open_store`)."""

    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def download(self, key: str, dest: Path, *, progress: Progress | None = None) -> None: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def delete(self, key: str) -> None: ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative name, else raise :class:`InvalidInput`.

    Non-canonical forms (``./a``, ``a//b``, ``/a``) are refused rather than rewritten.
    """
    if not key:
        raise InvalidInput("store key is empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInput(f"store key is longer than {MAX_KEY_BYTES} bytes")
    if "\\" in key:
        raise InvalidInput(f"store key {key!r} contains a backslash")
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise InvalidInput(f"store key {key!r} contains a control character")
    for escape in _ESCAPE.findall(key):
        char = chr(int(escape, 16))
        if char in "./\\" or unicodedata.category(char) == "Cc":
            raise InvalidInput(f"store key {key!r} contains a percent-encoded {char!r}")
    if key.startswith("/"):
        raise InvalidInput(f"store key {key!r} is absolute")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInput(f"store key {key!r} has an empty, '.' or '..' segment")
    return key


def _validate_prefix(prefix: str) -> str:
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix


@contextmanager
def _atomic_target(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success it replaces ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=_TMP_PREFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _copy(src: Path, dest: Path, progress: Progress | None) -> None:
    with _atomic_target(dest) as tmp, src.open("rb") as fin, tmp.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            if progress is not None:
                progress(len(chunk))


class FileArtifactStore:
    """Objects as files under ``root``; keys never resolve outside it (symlinks included)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise InvalidInput(f"store key {key!r} resolves outside the store root")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            with _atomic_target(path) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            raise StoreError(f"cannot write {key!r} in {self.url}: {exc.strerror}") from exc

    def put_file(self, key: str, path: Path, *, progress: Progress | None = None) -> None:
        target = self._path(key)
        try:
            _copy(path, target, progress)
        except OSError as exc:
            raise StoreError(f"cannot copy {path} to {key!r} in {self.url}: {exc.strerror}") from exc

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {key!r} in {self.url}: {exc.strerror}") from exc

    def download(self, key: str, dest: Path, *, progress: Progress | None = None) -> None:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        try:
            _copy(src, dest, progress)
        except FileNotFoundError as exc:
            if not src.is_file():  # deleted while we copied
                raise ObjectNotFound(f"no object {key!r} in {self.url}") from exc
            raise StoreError(f"cannot download {key!r} to {dest}: {exc.strerror}") from exc
        except OSError as exc:
            raise StoreError(f"cannot download {key!r} to {dest}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {key!r} in {self.url}")
        return path.stat().st_size

    def list(self, prefix: str = "") -> list[str]:
        _validate_prefix(prefix)
        base = self.root / prefix.rpartition("/")[0]
        if not base.resolve().is_relative_to(self.root) or not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(base):  # does not descend into symlinked dirs
            for name in files:
                path = Path(dirpath, name)
                if name.startswith(_TMP_PREFIX):
                    continue
                if path.is_symlink() and not (path.is_file() and path.resolve().is_relative_to(self.root)):
                    continue
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            pass  # a "directory" is not an object: nothing to delete
        except OSError as exc:
            raise StoreError(f"cannot delete {key!r} in {self.url}: {exc.strerror}") from exc


def is_s3(store: ArtifactStore) -> TypeGuard[S3ArtifactStore]:
    """Whether ``store`` is an S3 bucket (without importing boto3 when it cannot be)."""
    return store.url.startswith("s3://")


def __getattr__(name: str) -> object:
    # ``mlgate.store.S3ArtifactStore`` stays importable; boto3 loads on first use only.
    if name == "S3ArtifactStore":
        from mlgate.store.s3 import S3ArtifactStore

        return S3ArtifactStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url: str, *, s3: S3Settings | None = None) -> ArtifactStore:
    """Open ``file:///abs/root`` or ``s3://bucket[/prefix]``; anything else is a ConfigurationError."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigurationError(f"store URL {url!r} must not have a query or fragment")
    if parts.scheme == "file":
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ConfigurationError(f"file store URL {url!r} must be file:///absolute/path")
        return FileArtifactStore(Path(path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigurationError(f"S3 store URL {url!r} has no bucket")
        from mlgate.store.s3 import S3ArtifactStore  # boto3 is imported only for S3 stores

        try:
            return S3ArtifactStore(parts.netloc, parts.path.strip("/"), s3=s3)
        except InvalidInput as exc:
            raise ConfigurationError(f"S3 store URL {url!r} has a bad prefix: {exc.message}") from exc
    raise ConfigurationError(f"unsupported store URL {url!r}: expected file:///… or s3://bucket/…")


def split_uri(uri: str) -> tuple[str, str]:
    """Split an object URI into its store URL and key: ``s3://b/m/x.skops`` -> ``("s3://b/m", "x.skops")``."""
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "file") or parts.query or parts.fragment:
        raise ConfigurationError(f"unsupported object URI {uri!r}: expected s3://bucket/key or file:///path")
    head, _, name = parts.path.rpartition("/")
    if parts.scheme == "file":
        name = unquote(name)
    if not name or (parts.scheme == "s3" and not parts.netloc):
        raise ConfigurationError(f"object URI {uri!r} names no object")
    try:
        validate_key(name)
    except InvalidInput as exc:
        raise ConfigurationError(f"object URI {uri!r}: {exc.message}") from exc
    base = f"{parts.scheme}://{parts.netloc}{head}"
    return (base + "/" if parts.scheme == "file" and not head else base), name
