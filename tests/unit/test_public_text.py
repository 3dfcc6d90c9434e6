"""``public_text`` / ``exception_summary``: what a client may read of an error (issue 13, invariant 8)."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest

from mlgate.errors import (
    ModelLoadError,
    NotFound,
    exception_summary,
    public_text,
    register_private_path,
)


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    register_private_path(tmp_path / "data" / "store", "store")
    register_private_path(tmp_path / "data" / "cache", "cache")
    register_private_path(tmp_path / "data", "data")
    return tmp_path.resolve() / "data"


def test_registered_roots_become_their_labels(roots: Path) -> None:
    onnx = f"Load model from {roots}/cache/m/1-abc/model.onnx failed:Protobuf parsing failed."
    assert public_text(onnx) == "Load model from cache/m/1-abc/model.onnx failed:Protobuf parsing failed."
    assert public_text(f"no object 'k' in {roots.as_uri()}/store") == "no object 'k' in store"
    assert public_text(f"{roots}/mlgate.db is locked") == "data/mlgate.db is locked"
    assert public_text(f"{roots}-other/x.txt") == "…/x.txt"  # a sibling is not under the root


def test_other_paths_keep_their_last_part() -> None:
    tmp = tempfile.gettempdir()
    assert (
        public_text(f"[Errno 2] No such file: '{tmp}/upload-1/a.bin'") == "[Errno 2] No such file: '…/a.bin'"
    )
    assert public_text("OpenCV(5.0.0) /io/opencv/modules/dnn/src/tf_io.cpp:42: error") == (
        "OpenCV(5.0.0) …/tf_io.cpp:42: error"
    )
    assert "site-packages" not in public_text(f"{Path(pytest.__file__).parent}/x.py: bad")


@pytest.mark.parametrize(
    "text",
    [
        'send {"inputs": [...]} to /v1/models/iris/predict',
        "expected s3://bucket/key or file:///path",
        "store key '/a' is absolute",
        "model 'a' has no version 3; 1/2 loaded",
        "image is 10x10, more than 100 pixels",
    ],
)
def test_ordinary_messages_are_unchanged(text: str) -> None:
    assert public_text(text) == text


def test_addresses_and_tracebacks_are_dropped() -> None:
    assert public_text("<object object at 0x7f12ab34cd56> is not a class") == "<object object> is not a class"
    assert public_text("id 0x7f12ab34cd56 seen") == "id  seen"
    text = 'boom\nTraceback (most recent call last):\n  File "/srv/x.py", line 1, in <module>\nValueError'
    assert public_text(text) == "boom (details in the server log)"


def test_mlgate_errors_keep_the_full_text_for_the_log(roots: Path) -> None:
    full = f"could not read {roots}/cache/m/1-ab/w.bin"
    exc = ModelLoadError(full, details={"path": f"{roots}/cache/m", "files": [f"{roots}/store/k"]})
    assert str(exc) == full  # the log
    assert exc.message == "could not read cache/m/1-ab/w.bin"  # the client
    assert exc.to_dict()["details"] == {"path": "cache/m", "files": ["store/k"]}
    assert NotFound("model 'a' not found").message == "model 'a' not found"


def test_exception_summary() -> None:
    assert exception_summary(ValueError("bad value\nsecond line")) == "ValueError: bad value"
    assert exception_summary(RuntimeError()) == "RuntimeError"
    assert len(exception_summary(ValueError("x" * 1000), limit=50)) == len("ValueError: ") + 50
    database = sqlite3.OperationalError("no such table: models [SQL: SELECT * FROM models]")
    assert exception_summary(database) == "database error (details in the server log)"
