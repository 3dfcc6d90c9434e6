"""ArtifactCache: downloads once, verifies sha256, re-fetches corruption, follows URI locations."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlgate.cache import ArtifactCache, sha256_file
from mlgate.errors import IntegrityError, InvalidInput, ObjectNotFound
from mlgate.store import ArtifactStore, FileArtifactStore
from mlgate.types import Manifest, VersionInfo


class CountingStore:
    """Wraps a store and counts downloads (the only call the cache should make)."""

    def __init__(self, inner: ArtifactStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.downloads: list[str] = []

    def put_bytes(self, key: str, data: bytes) -> None:
        self.inner.put_bytes(key, data)

    def put_file(self, key: str, path: Path, *, progress: Callable[[int], None] | None = None) -> None:
        self.inner.put_file(key, path, progress=progress)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def download(self, key: str, dest: Path, *, progress: Callable[[int], None] | None = None) -> None:
        self.downloads.append(key)
        self.inner.download(key, dest, progress=progress)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FILES = {"model.onnx": b"onnx-bytes" * 1000, "pre/vocab.json": b'{"a": 1}'}


def version_of(
    files: dict[str, bytes], *, location: str = "", model: str = "m", number: int = 1
) -> VersionInfo:
    manifest = Manifest(runtime="onnx", artifact="model.onnx", files={k: sha(v) for k, v in files.items()})
    return VersionInfo(
        model=model, version=number, manifest=manifest, created_at=datetime.now(UTC), location=location
    )


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    counting = CountingStore(FileArtifactStore(tmp_path / "store"))
    for data in FILES.values():
        counting.put_bytes(ArtifactCache.blob_key(sha(data)), data)
    return counting


def assert_fetched(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        assert (folder / rel).read_bytes() == data
    assert not [p for p in folder.rglob(".mlgate-tmp-*")]


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1_000_000)
    assert sha256_file(path) == sha(b"abc" * 1_000_000)


def test_blob_key() -> None:
    assert ArtifactCache.blob_key("ab" * 32) == "blobs/sha256/" + "ab" * 32


def test_fetch_downloads_once(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    version = version_of(FILES)
    progress: list[int] = []
    folder = cache.fetch(version, progress=progress.append)
    assert_fetched(folder, FILES)
    assert len(store.downloads) == 2
    assert sum(progress) == sum(len(v) for v in FILES.values())
    assert folder.parent == tmp_path / "cache" / "m"
    assert folder.name.startswith("1-")
    assert len(folder.name) == len("1-") + 12

    assert cache.fetch(version) == folder
    assert len(store.downloads) == 2

    # A new process (new cache object) re-verifies by hashing but still downloads nothing.
    assert ArtifactCache(tmp_path / "cache", store=store).fetch(version) == folder
    assert len(store.downloads) == 2


def test_folder_depends_on_the_files_map(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    one = cache.fetch(version_of(FILES))
    other = cache.fetch(version_of({"model.onnx": FILES["model.onnx"]}))
    assert one != other
    assert one.name.split("-")[0] == other.name.split("-")[0] == "1"


def test_corrupted_file_is_fetched_again(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    version = version_of(FILES)
    folder = cache.fetch(version)
    (folder / "model.onnx").write_bytes(b"tampered")
    assert_fetched(cache.fetch(version), FILES)
    assert store.downloads.count(ArtifactCache.blob_key(sha(FILES["model.onnx"]))) == 2

    # Same size, different bytes: a fresh cache object (no memo) must still notice.
    (folder / "pre" / "vocab.json").write_bytes(b'{"b": 2}')
    assert_fetched(ArtifactCache(tmp_path / "cache", store=store).fetch(version), FILES)
    assert len(store.downloads) == 4


def test_missing_file_is_fetched_again(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    version = version_of(FILES)
    folder = cache.fetch(version)
    (folder / "model.onnx").unlink()
    assert_fetched(cache.fetch(version), FILES)
    assert len(store.downloads) == 3


def test_store_bytes_not_matching_manifest_raise_integrity_error(
    tmp_path: Path, store: CountingStore
) -> None:
    bad = {"model.onnx": b"what the manifest promised"}
    store.put_bytes(ArtifactCache.blob_key(sha(bad["model.onnx"])), b"something else")
    cache = ArtifactCache(tmp_path / "cache", store=store)
    with pytest.raises(IntegrityError):
        cache.fetch(version_of(bad))
    folder = cache.version_dir(version_of(bad))
    assert list(folder.iterdir()) == []  # the bad download is removed, no temp file remains


def test_corrupted_entry_whose_refetch_fails_is_removed(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    version = version_of(FILES)
    folder = cache.fetch(version)
    (folder / "model.onnx").write_bytes(b"tampered")
    store.delete(ArtifactCache.blob_key(sha(FILES["model.onnx"])))
    with pytest.raises(ObjectNotFound):
        cache.fetch(version)
    assert not (folder / "model.onnx").exists()


def test_uri_located_version(tmp_path: Path, store: CountingStore) -> None:
    elsewhere = FileArtifactStore(tmp_path / "bucket")
    for rel, data in FILES.items():
        elsewhere.put_bytes(f"models/x/{rel}", data)
    cache = ArtifactCache(tmp_path / "cache", store=store)
    version = version_of(FILES, location=(tmp_path / "bucket" / "models" / "x").as_uri(), model="x")
    folder = cache.fetch(version)
    assert_fetched(folder, FILES)
    assert store.downloads == []
    assert cache.fetch(version) == folder


def test_key_prefix_located_version(tmp_path: Path, store: CountingStore) -> None:
    for rel, data in FILES.items():
        store.put_bytes(f"models/m/3/{rel}", data)
    cache = ArtifactCache(tmp_path / "cache", store=store)
    folder = cache.fetch(version_of(FILES, location="models/m/3", number=3))
    assert_fetched(folder, FILES)
    assert sorted(store.downloads) == ["models/m/3/model.onnx", "models/m/3/pre/vocab.json"]


@pytest.mark.parametrize("relpath", ["../escape", "/abs", "a//b", "a\\b"])
def test_bad_relpaths_are_refused(tmp_path: Path, store: CountingStore, relpath: str) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    with pytest.raises(InvalidInput):
        cache.fetch(version_of({relpath: b"x"}))
    assert store.downloads == []


def test_bad_model_name_is_refused(tmp_path: Path, store: CountingStore) -> None:
    cache = ArtifactCache(tmp_path / "cache", store=store)
    for model in ("..", "a/b"):
        with pytest.raises(InvalidInput):
            cache.fetch(version_of(FILES, model=model))


def test_concurrent_fetches_agree(tmp_path: Path, store: CountingStore) -> None:
    caches = [ArtifactCache(tmp_path / "cache", store=store) for _ in range(4)]
    version = version_of(FILES)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda c=c: results.append(c.fetch(version))) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert_fetched(results[0], FILES)
