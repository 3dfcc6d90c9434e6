"""One suite for every ArtifactStore backend (file:// and s3:// against moto)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlgate.errors import InvalidInput, ObjectNotFound, StoreError
from mlgate.settings import S3Settings
from mlgate.store import ArtifactStore, open_store, split_uri
from tests.contract.conftest import S3_PAGE_SIZE, MotoServer

BAD_KEYS = ["", "/abs", "..", "a/../../x", "a/./b", "a//b", "a/", "%2e%2e/x", "a%2Fb", "a\\b", "a\x00b"]


def test_put_and_get_bytes(store: ArtifactStore) -> None:
    store.put_bytes("models/a/1/model.onnx", b"\x00binary\xff")
    assert store.get_bytes("models/a/1/model.onnx") == b"\x00binary\xff"
    store.put_bytes("models/a/1/model.onnx", b"replaced")
    assert store.get_bytes("models/a/1/model.onnx") == b"replaced"


def test_put_empty_object(store: ArtifactStore) -> None:
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b""
    assert store.size("empty") == 0


def test_put_file_and_download_report_progress(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a chunk multiple
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    uploaded: list[int] = []
    store.put_file("blobs/x", src, progress=uploaded.append)
    assert sum(uploaded) == len(data)

    dest = tmp_path / "out" / "deep" / "x.bin"
    downloaded: list[int] = []
    store.download("blobs/x", dest, progress=downloaded.append)
    assert dest.read_bytes() == data
    assert sum(downloaded) == len(data)
    assert [p.name for p in dest.parent.iterdir()] == ["x.bin"]  # no temp file left behind


def test_download_replaces_existing_file(store: ArtifactStore, tmp_path: Path) -> None:
    store.put_bytes("k", b"new")
    dest = tmp_path / "k"
    dest.write_bytes(b"old and longer")
    store.download("k", dest)
    assert dest.read_bytes() == b"new"


def test_exists_and_size(store: ArtifactStore) -> None:
    assert not store.exists("a/b")
    store.put_bytes("a/b", b"12345")
    assert store.exists("a/b")
    assert store.size("a/b") == 5
    assert not store.exists("a")  # a "directory" is not an object


def test_list_with_prefix_is_sorted(store: ArtifactStore) -> None:
    keys = ["m/b/2", "m/a/1", "m/a/10", "m/ab", "n/x", "top"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert store.list() == sorted(keys)
    assert store.list("m/a/") == ["m/a/1", "m/a/10"]
    assert store.list("m/a") == ["m/a/1", "m/a/10", "m/ab"]
    assert store.list("m/") == ["m/a/1", "m/a/10", "m/ab", "m/b/2"]
    assert store.list("zzz/") == []


def test_list_paginates(store: ArtifactStore) -> None:
    keys = [f"p/{i:03d}" for i in range(S3_PAGE_SIZE * 4 + 1)]
    for key in reversed(keys):
        store.put_bytes(key, b"x")
    assert store.list("p/") == keys


def test_delete_is_idempotent(store: ArtifactStore) -> None:
    store.put_bytes("d/x", b"1")
    store.delete("d/x")
    assert not store.exists("d/x")
    store.delete("d/x")
    store.delete("never/was")
    assert store.list() == []


def test_missing_key_raises_object_not_found(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("missing")
    with pytest.raises(ObjectNotFound):
        store.size("missing")
    dest = tmp_path / "dest"
    with pytest.raises(ObjectNotFound):
        store.download("missing", dest)
    assert not dest.exists()
    assert not any(p.name.startswith(".mlgate-tmp-") for p in tmp_path.iterdir())


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_refused(store: ArtifactStore, key: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    with pytest.raises(InvalidInput):
        store.put_bytes(key, b"x")
    with pytest.raises(InvalidInput):
        store.put_file(key, src)
    with pytest.raises(InvalidInput):
        store.get_bytes(key)
    with pytest.raises(InvalidInput):
        store.exists(key)
    with pytest.raises(InvalidInput):
        store.delete(key)
    with pytest.raises(InvalidInput):
        store.download(key, tmp_path / "out")


def test_url_opens_the_same_store(store: ArtifactStore, request: pytest.FixtureRequest) -> None:
    s3 = request.getfixturevalue("moto_server").settings if store.url.startswith("s3://") else None
    store.put_bytes("models/m/1/model.skops", b"model")
    again = open_store(store.url, s3=s3)
    assert again.url == store.url
    assert again.get_bytes("models/m/1/model.skops") == b"model"
    base, key = split_uri(f"{store.url}/models/m/1/model.skops")
    assert key == "model.skops"
    assert open_store(base, s3=s3).get_bytes(key) == b"model"


def test_s3_errors_do_not_leak_credentials(moto_server: MotoServer) -> None:
    settings = S3Settings(
        endpoint_url=moto_server.endpoint, access_key_id="AKIDLEAKCHECK", secret_access_key="s3cr3t-value"
    )
    store = open_store("s3://no-such-bucket-mlgate/p", s3=settings)
    with pytest.raises(StoreError) as info:
        store.put_bytes("k", b"x")
    assert "s3cr3t-value" not in str(info.value)
    assert "no-such-bucket-mlgate" in str(info.value)
