"""End to end (issue 14, part 3): large artifacts over a real ``mlgate serve`` process.

A 100 MiB model (a python-runtime class beside 100 MiB of deterministic random weights, which
it hashes when it loads: a prediction proves every byte arrived) is pushed over HTTP and with
the CLI: the upload streams to disk under ``MLGATE_MAX_UPLOAD_BYTES`` (not the 6 MiB predict
limit), the server's RSS does not grow by the artifact's size, and the sha256 the client sent is
checked. A server with a 1 MiB upload limit answers 413 naming ``MLGATE_MAX_UPLOAD_BYTES`` (a
declared length and a chunked body), predict bodies still answer 413 naming
``MLGATE_MAX_BODY_BYTES``, and a version registered from ``s3://`` (moto) never passes through
the HTTP body, so the small upload limit does not apply to it; its sha256 is verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MotoServer
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
WEIGHTS_BYTES = 100 * MIB
SMALL_UPLOAD_LIMIT = 1 * MIB
REFERENCE_MODEL = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "mlgate_services"
    / "temperatura"
    / "artifact"
    / "model.skops"
)
SEED = [round(22.1 - i * (22.1 - 16.2) / 59, 1) for i in range(60)]
ADMIN = {"x-api-key": ADMIN_KEY}
MANIFEST = {"runtime": "python", "artifact": "model.py", "trusted": True}
MODEL_PY = """\
import hashlib
from pathlib import Path


class Model:
    def load(self, artifact_dir: Path) -> None:
        weights = Path(artifact_dir) / "weights.bin"
        with weights.open("rb") as f:
            self.digest = hashlib.file_digest(f, "sha256").hexdigest()
        self.size = weights.stat().st_size

    def predict(self, batch):
        return [{"weights_sha256": self.digest, "weights_bytes": self.size, "n": len(x)} for x in batch]
"""


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _model_dir(folder: Path, weights_bytes: int, seed: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(MODEL_PY)
    (folder / "weights.bin").write_bytes(random.Random(seed).randbytes(weights_bytes))
    return folder


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.py + 100 MiB of random weights (deterministic)."""
    return _model_dir(tmp_path_factory.mktemp("large") / "model", WEIGHTS_BYTES, seed=14)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Default limits: 6 MiB predict bodies, 2 GiB uploads."""
    with run_server(tmp_path_factory.mktemp("e2e-large")) as s:
        yield s


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, moto_server: MotoServer) -> Iterator[ServerProcess]:
    """A 1 MiB upload limit, and the moto S3 server's credentials for s3:// pushes."""
    env = {**moto_server.env(), "MLGATE_MAX_UPLOAD_BYTES": str(SMALL_UPLOAD_LIMIT)}
    with run_server(tmp_path_factory.mktemp("e2e-small-upload"), env=env) as s:
        yield s


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _push(server: ServerProcess, name: str, folder: Path, **extra: Any) -> httpx.Response:
    files = sorted(folder.iterdir())
    handles = [p.open("rb") for p in files]
    try:
        data = {
            "manifest": json.dumps(MANIFEST),
            "sha256": [f"{p.name}={_sha256(p)}" for p in files],
            **extra,
        }
        parts = [
            ("files", (p.name, h, "application/octet-stream")) for p, h in zip(files, handles, strict=True)
        ]
        return httpx.post(
            f"{server.url}/v1/models/{name}/versions", files=parts, data=data, headers=ADMIN, timeout=120
        )
    finally:
        for h in handles:
            h.close()


def _predict(server: ServerProcess, name: str) -> httpx.Response:
    with server.client() as c:
        return c.post(f"/v1/models/{name}/versions/1/predict", json=[1, 2, 3])


def _mlgate(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLGATE_URL": server.url, "MLGATE_API_KEY": ADMIN_KEY, "COLUMNS": "200"}
    env.update(TERM="dumb", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- 100 MiB over HTTP and with the CLI ---------------------------------------------------------


def test_a_100_mib_model_uploads_streamed_loads_and_predicts(server: ServerProcess, big_model: Path) -> None:
    weights = _sha256(big_model / "weights.bin")
    pid = server.process.pid
    before = _rss(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:  # the server's RSS while the upload runs, every 10 ms
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, _rss(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    try:
        r = _push(server, "big", big_model)
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
    after = _rss(pid)
    assert r.status_code == 201, r.text
    assert r.json()["files"] == {"model.py": _sha256(big_model / "model.py"), "weights.bin": weights}
    growth = max(peak, after) - before
    print(
        f"\n100 MiB upload: {elapsed:.2f} s; server RSS {before / MIB:.0f} MiB before, "
        f"{peak / MIB:.0f} MiB peak, {after / MIB:.0f} MiB after"
    )
    assert growth < 40 * MIB, f"RSS grew by {growth / MIB:.0f} MiB during a 100 MiB upload"
    # Stored content-addressed, nothing left in the upload spool.
    blob = server.data_dir / "store" / "blobs" / "sha256" / weights
    assert blob.stat().st_size == WEIGHTS_BYTES
    assert list((server.data_dir / "uploads").iterdir()) == []
    answer = _predict(server, "big")
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"] == {"weights_sha256": weights, "weights_bytes": WEIGHTS_BYTES, "n": 3}


def test_cli_push_of_100_mib_shows_progress_and_the_verified_sha256(
    server: ServerProcess, big_model: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    result = _mlgate(server, "models", "push", "bigcli", str(big_model), "--manifest", str(manifest))
    assert result.returncode == 0, (result.stdout, result.stderr)
    weights = _sha256(big_model / "weights.bin")
    out = " ".join(result.stdout.split())
    assert "registered bigcli v1 (python)" in out
    assert f"sha256 {weights} weights.bin (checked by the server against this client's)" in out
    assert "uploading bigcli" in result.stderr  # the progress bar
    answer = _predict(server, "bigcli")
    assert answer.status_code == 200, answer.text
    assert weights in answer.text


def test_a_sha256_mismatch_registers_nothing(server: ServerProcess, tmp_path: Path) -> None:
    folder = _model_dir(tmp_path / "m", 2 * MIB, seed=1)
    r = _push(server, "mismatch", folder, sha256=[f"weights.bin={'0' * 64}"])
    assert r.status_code == 400, r.text
    assert "sha256 mismatch for 'weights.bin'" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/v1/models/mismatch", headers=ADMIN).status_code == 404


def test_predict_bodies_keep_their_own_limit(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/v1/models/big/predict", content=b"[" + b"1," * (7 * MIB // 2) + b"1]")
    assert r.status_code == 413
    assert "MLGATE_MAX_BODY_BYTES" in r.json()["error"]["message"]


# -- a small upload limit; s3:// pushes ---------------------------------------------------------


def test_an_upload_over_the_upload_limit_is_413_naming_the_setting(
    small: ServerProcess, tmp_path: Path
) -> None:
    folder = _model_dir(tmp_path / "m", 2 * MIB, seed=2)
    declared = _push(small, "toolarge", folder)  # Content-Length over the limit: refused at its head
    assert declared.status_code == 413, declared.text
    assert "MLGATE_MAX_UPLOAD_BYTES" in declared.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:
        yield b"--b\r\ncontent-disposition: form-data; name=files; filename=w.onnx\r\n\r\n"
        for _ in range(4):
            yield b"\0" * (MIB // 2)
        yield b"\r\n--b--\r\n"

    headers = {**ADMIN, "content-type": "multipart/form-data; boundary=b"}
    chunked = httpx.post(f"{small.url}/v1/models/toolarge/versions", content=chunks(), headers=headers)
    assert chunked.status_code == 413, chunked.text
    assert "MLGATE_MAX_UPLOAD_BYTES" in chunked.json()["error"]["message"]
    assert httpx.get(f"{small.url}/v1/models/toolarge", headers=ADMIN).status_code == 404
    assert list((small.data_dir / "uploads").iterdir()) == []


def test_s3_push_is_fetched_by_the_server_and_verified(
    small: ServerProcess, moto_server: MotoServer, tmp_path: Path
) -> None:
    bucket = moto_server.ensure_bucket(f"e2e-large-{uuid.uuid4().hex[:12]}")
    folder = _model_dir(tmp_path / "m", 8 * MIB, seed=3)  # 8 MiB: over the 1 MiB upload limit
    s3 = moto_server.client()
    try:
        for p in folder.iterdir():
            s3.upload_file(str(p), bucket, f"models/{p.name}")
    finally:
        s3.close()
    weights = _sha256(folder / "weights.bin")
    uris = [f"s3://{bucket}/models/model.py", f"s3://{bucket}/models/weights.bin"]
    parts = [("manifest", (None, json.dumps(MANIFEST))), ("sha256", (None, f"weights.bin={weights}"))]
    parts += [("uri", (None, uri)) for uri in uris]
    r = httpx.post(f"{small.url}/v1/models/froms3/versions", files=parts, headers=ADMIN, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["files"]["weights.bin"] == weights
    answer = _predict(small, "froms3")
    assert answer.status_code == 200, answer.text
    assert weights in answer.text

    # Only s3:// URIs: the server reads no local path for a client.
    local = httpx.post(
        f"{small.url}/v1/models/local/versions", files=[("uri", (None, "file:///etc/passwd"))], headers=ADMIN
    )
    assert local.status_code == 400, local.text


def test_cli_push_from_s3_prints_the_verified_sha256(small: ServerProcess, moto_server: MotoServer) -> None:
    bucket = moto_server.ensure_bucket(f"e2e-large-{uuid.uuid4().hex[:12]}")
    s3 = moto_server.client()
    try:
        s3.upload_file(str(REFERENCE_MODEL), bucket, "models/temp.skops")
    finally:
        s3.close()
    digest = _sha256(REFERENCE_MODEL)
    uri = f"s3://{bucket}/models/temp.skops"
    result = _mlgate(small, "models", "push", "clis3", uri, "--sha256", digest)
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = " ".join(result.stdout.split())
    assert "registered clis3 v1 (sklearn)" in out
    assert f"sha256 {digest} temp.skops (checked by the server against --sha256)" in out
    with small.client() as c:
        r = c.post("/v1/models/clis3/predict", json=SEED)
    assert r.status_code == 200, r.text

    wrong = _mlgate(small, "models", "push", "clis3bad", uri, "--sha256", "0" * 64)
    assert wrong.returncode != 0
    assert "sha256 mismatch" in " ".join((wrong.stdout + wrong.stderr).split())
    assert httpx.get(f"{small.url}/v1/models/clis3bad", headers=ADMIN).status_code == 404
