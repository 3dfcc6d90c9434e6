"""Store keys: traversal, encoding tricks and symlink escapes are refused; nothing lands outside root."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlgate.errors import ConfigurationError, InvalidInput, ObjectNotFound
from mlgate.store import FileArtifactStore, open_store, split_uri, validate_key
from mlgate.store.s3 import S3ArtifactStore

TRAVERSALS = [
    "",
    "..",
    ".",
    "../x",
    "a/..",
    "a/../../x",
    "./a",
    "%2e%2e/x",
    "%2E%2E/x",
    "a%2fb",
    "..%2fx",
    "a%5cb",
    "a%00b",
    "/etc/passwd",
    "//host/x",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "a//b",
    "a/",
    "x" * 1025,
    "é" * 513,
]


@pytest.mark.parametrize("key", TRAVERSALS)
def test_bad_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    ["a", "models/m/1/model.onnx", "blobs/sha256/" + "a" * 64, "a.b/..c/d..", "x%20y", "x" * 1024, ".hidden"],
)
def test_good_keys_are_returned(key: str) -> None:
    assert validate_key(key) == key


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.parametrize("key", TRAVERSALS)
def test_file_store_never_writes_outside_root(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    store = FileArtifactStore(root)
    before = _tree(tmp_path)
    with pytest.raises(InvalidInput):
        store.put_bytes(key, b"evil")
    assert _tree(tmp_path) == before


def test_symlink_inside_root_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    root = tmp_path / "store"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "file-link").symlink_to(outside / "secret")
    store = FileArtifactStore(root)

    for key in ("link/secret", "file-link"):
        with pytest.raises(InvalidInput):
            store.get_bytes(key)
        with pytest.raises(InvalidInput):
            store.exists(key)
        with pytest.raises(InvalidInput):
            store.delete(key)
    with pytest.raises(InvalidInput):
        store.put_bytes("link/new", b"evil")
    with pytest.raises(InvalidInput):
        store.put_bytes("file-link", b"evil")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"
    assert store.list() == []
    assert store.list("link/") == []


def test_sibling_prefix_directory_is_refused(tmp_path: Path) -> None:
    # "/…/store2/x" starts with the string "/…/store" but is not inside it.
    root = tmp_path / "store"
    sibling = tmp_path / "store2"
    root.mkdir()
    sibling.mkdir()
    (sibling / "x").write_bytes(b"sibling")
    (root / "jump").symlink_to(sibling, target_is_directory=True)
    store = FileArtifactStore(root)
    with pytest.raises(InvalidInput):
        store.get_bytes("jump/x")
    with pytest.raises(InvalidInput):
        store.put_bytes("jump/y", b"evil")
    assert sorted(p.name for p in sibling.iterdir()) == ["x"]


def test_symlink_within_root_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = FileArtifactStore(root)
    store.put_bytes("real/x", b"1")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert store.get_bytes("alias/x") == b"1"


def test_file_store_writes_atomically_and_creates_parents(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path / "store")
    store.put_bytes("a/b/c", b"data")
    assert (tmp_path / "store" / "a" / "b" / "c").read_bytes() == b"data"
    assert [p.name for p in (tmp_path / "store" / "a" / "b").iterdir()] == ["c"]
    assert store.url == (tmp_path / "store").resolve().as_uri()


def test_file_store_on_missing_root_is_empty(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path / "nothing")
    assert store.list() == []
    assert not store.exists("x")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("x")
    assert not (tmp_path / "nothing").exists()


def test_open_store_by_url(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    assert isinstance(store, FileArtifactStore)
    assert store.root == tmp_path.resolve()
    s3 = open_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix, s3.url) == ("bucket", "some/prefix", "s3://bucket/some/prefix")
    assert open_store("s3://bucket").url == "s3://bucket"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "relative/path",
        "http://x/y",
        "memory://",
        "file://host/x",
        "file:relative",
        "s3://",
        "s3:///x",
        "s3://b/../x",
        "s3://b/a?x=1",
    ],
)
def test_open_store_refuses_other_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_store(url)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://b/models/x.skops", ("s3://b/models", "x.skops")),
        ("s3://b/x.skops", ("s3://b", "x.skops")),
        ("file:///abs/dir/x.onnx", ("file:///abs/dir", "x.onnx")),
        ("file:///x.onnx", ("file:///", "x.onnx")),
        ("file:///a%20b/my%20model.onnx", ("file:///a%20b", "my model.onnx")),
    ],
)
def test_split_uri(uri: str, expected: tuple[str, str]) -> None:
    assert split_uri(uri) == expected


@pytest.mark.parametrize("uri", ["s3://b", "s3://b/", "s3://b/dir/", "http://x/y", "file:///a/..", "s3:///x"])
def test_split_uri_refuses_uris_without_an_object(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        split_uri(uri)
