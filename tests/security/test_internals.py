"""Invariant 8 of issue 13: no internals in errors.

A hostile client with network access (and, here, the admin key) drives a real ``mlgate serve``
into every error path we know of — models whose artifacts cannot load, a blob missing from or
corrupted in the store, user code that puts paths and object reprs in its exceptions, workflows
that name a missing bucket or a broken model — then sweeps every route of ``/openapi.json`` with
a few bad inputs. No response body and no response header may contain an absolute server path
(the data directory, the repository, site-packages, ``/tmp/``, the home directory), traceback
text, SQL driver names or ``0x7f…`` object addresses. The full detail belongs in the server log.
Everything is sequential and answered synchronously: no timing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, record_figure, start_server
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("temperatura",)
#: Text no answer may carry; the data directory and the home directory are added per server.
STATIC_MARKERS = (
    str(REPO),
    "site-packages",
    "/tmp/",
    "Traceback",
    'File "',
    "sqlalchemy",
    "sqlite3.",
    "psycopg",
    "0x7f",
    f"{sys.base_prefix}/lib",
    "opencv/modules/",  # a native library's own source tree (OpenCV's errors)
)

# -- hostile artifacts ---------------------------------------------------------------------------

#: Fails at import with its own path in the message.
IMPORT_FAILS = 'raise RuntimeError("cannot start from " + __file__)\n'
#: ``Model`` is an object, not a class: its repr carries an address.
NOT_A_CLASS = "Model = object()\n"
#: load() fails with a FileNotFoundError naming a file of the version's (cache) folder.
LOAD_FAILS = """
class Model:
    def load(self, folder):
        raise FileNotFoundError(2, "No such file or directory", str(folder / "weights.bin"))

    def predict(self, batch):
        return batch
"""
#: decode() refuses every input with its repr (an address) and its file's path.
DECODE_LEAKS = """
class Model:
    def decode(self, payload):
        raise ValueError(f"{self!r} cannot read this ({__file__})")

    def predict(self, batch):
        return batch
"""
#: predict() raises with a traceback-looking text and its path.
PREDICT_LEAKS = """
import traceback


class Model:
    def predict(self, batch):
        try:
            open(__file__ + ".missing")
        except OSError:
            raise RuntimeError(traceback.format_exc()) from None
"""
#: predict() returns something JSON cannot encode.
OUTPUT_UNENCODABLE = """
class Model:
    def predict(self, batch):
        return [{"value": object()} for _ in batch]
"""


class Probe:
    """Sends requests and remembers every answer, to check them all at the end."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0)
        self.answers: list[tuple[str, httpx.Response]] = []
        data_dir = server.data_dir.resolve()
        self.markers = (*STATIC_MARKERS, str(server.data_dir), str(data_dir), f"{Path.home()}/")

    def close(self) -> None:
        self.client.close()

    def send(self, case: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, path, **kwargs)
        self.answers.append((f"{case}: {method} {path}", response))
        return response

    def upload(
        self, case: str, name: str, filename: str, content: bytes, expect: int = 201, **manifest: Any
    ) -> httpx.Response:
        """Push a version; one that does not load (or warm up) is refused with 422 (issue 14)."""
        r = self.send(
            case,
            "POST",
            f"/v1/models/{name}/versions",
            files={"files": (filename, content)},
            data={"manifest": json.dumps({"artifact": filename, **manifest})},
        )
        assert r.status_code == expect, r.text
        return r

    def leaks(self, since: int = 0) -> list[str]:
        found = []
        for label, response in self.answers[since:]:
            texts = [response.text, response.text.replace('\\"', '"').replace("\\/", "/")]
            texts += [f"{k}: {v}" for k, v in response.headers.items()]
            for marker in self.markers:
                for text in texts:
                    at = text.find(marker)
                    if at >= 0:
                        excerpt = text[max(0, at - 120) : at + 120]
                        found.append(f"{label} -> {response.status_code} leaks {marker!r}: …{excerpt}…")
                        break
        return found

    def assert_clean(self, since: int = 0) -> None:
        found = self.leaks(since)
        assert not found, "internals in answers:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # A model declared by a file:// URI outside the data directory: its location and description
    # name that path, and any key may read them.
    outside = tmp_path_factory.mktemp("declared") / "declared.onnx"
    shutil.copyfile(REPO / "src/mlgate_services/temperatura/artifact/model.onnx", outside)
    env = {"MLGATE_MODEL_URIS__declared": outside.as_uri()}
    with start_server(tmp_path_factory.mktemp("internals"), services=SERVICES, env=env) as server:
        yield server


@pytest.fixture
def probe(server: ServerProcess) -> Iterator[Probe]:
    p = Probe(server)
    yield p
    p.close()


def _blob(server: ServerProcess, content: bytes) -> Path:
    return server.data_dir / "store" / "blobs" / "sha256" / hashlib.sha256(content).hexdigest()


def _predict_and_promote(probe: Probe, case: str, name: str, payload: Any = 1) -> None:
    """The failing version through every door: predict, batch, OIP, pinned version, alias move."""
    probe.send(case, "POST", f"/v1/models/{name}/predict", json=payload)
    probe.send(case, "POST", f"/v1/models/{name}/versions/1/predict", json=payload)
    probe.send(case, "POST", f"/v1/models/{name}/batch", json={"inputs": [payload, payload]})
    probe.send(
        case,
        "POST",
        f"/v2/models/{name}/infer",
        json={"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]},
    )
    probe.send(case, "PUT", f"/v1/models/{name}/aliases/production", json={"version": 1})
    probe.send(case, "GET", f"/v2/models/{name}/ready")
    probe.send(case, "GET", f"/v1/models/{name}")


# -- the cases -----------------------------------------------------------------------------------


def test_artifacts_that_cannot_load(probe: Probe, server: ServerProcess) -> None:
    """onnxruntime and OpenCV name the received file (and their own sources) when a model is junk:
    the push is refused (issue 14) with what the library said, never where the file was."""
    answer = probe.upload("junk onnx", "junk-onnx", "model.onnx", b"this is not a protobuf", expect=422)
    _predict_and_promote(probe, "junk onnx", "junk-onnx", [[1.0]])
    # Still useful: which runtime, what the library said, the file by its data-relative name;
    # the absolute path is in the server log.
    message = answer.json()["error"]["message"]
    assert "onnx runtime could not load the artifact: InvalidProtobuf" in message, message
    assert "model.onnx" in message, message
    assert "refused: it does not load or warm up" in server.log()  # with the traceback and paths
    probe.upload(
        "junk opencv",
        "junk-pb",
        "frozen.pb",
        b"\x00\x01 not a graph",
        expect=422,
        runtime="opencv-dnn",
        params={"size": [4, 4]},
    )
    _predict_and_promote(probe, "junk opencv", "junk-pb")
    probe.upload("junk pickle", "junk-pkl", "model.pkl", b"not a pickle", expect=422, trusted=True)
    _predict_and_promote(probe, "junk pickle", "junk-pkl", [1.0])
    probe.assert_clean()


@pytest.mark.parametrize(
    ("case", "source", "pushed"),
    [
        ("import fails", IMPORT_FAILS, 422),  # does not load: refused at push (issue 14)
        ("not a class", NOT_A_CLASS, 422),
        ("load fails", LOAD_FAILS, 422),
        ("decode leaks", DECODE_LEAKS, 201),
        ("predict leaks", PREDICT_LEAKS, 201),
        ("output unencodable", OUTPUT_UNENCODABLE, 201),
    ],
)
def test_user_code_that_leaks(probe: Probe, case: str, source: str, pushed: int) -> None:
    """A (trusted) python model whose exceptions carry paths, reprs and tracebacks."""
    name = "py-" + case.replace(" ", "-")
    probe.upload(case, name, "model.py", source.encode(), expect=pushed, runtime="python", trusted=True)
    _predict_and_promote(probe, case, name, {"x": 1})
    probe.assert_clean()


def test_store_blob_missing_or_corrupt(probe: Probe, server: ServerProcess) -> None:
    """The store lost a version's blob, or its bytes changed: the answer names the blob, not the disk."""
    missing = b"# missing\nclass Model:\n    def predict(self, batch):\n        return batch\n"
    probe.upload("blob missing", "blob-missing", "model.py", missing, runtime="python", trusted=True)
    _blob(server, missing).unlink()
    _predict_and_promote(probe, "blob missing", "blob-missing")
    answer = probe.send("blob missing", "POST", "/v1/models/blob-missing/predict", json=1)
    assert answer.status_code == 503, answer.text  # the version does not load (issue 14)
    assert f"'blobs/sha256/{hashlib.sha256(missing).hexdigest()}'" in answer.json()["error"]["message"]

    corrupt = b"# corrupt\nclass Model:\n    def predict(self, batch):\n        return batch\n"
    probe.upload("blob corrupt", "blob-corrupt", "model.py", corrupt, runtime="python", trusted=True)
    _blob(server, corrupt).write_bytes(b"other bytes")
    _predict_and_promote(probe, "blob corrupt", "blob-corrupt")
    probe.assert_clean()


def test_workflows_naming_missing_things(probe: Probe, server: ServerProcess) -> None:
    """A missing bucket or key, a model that cannot load, an unknown function: the execution's
    error and cause (and its history) stay free of paths."""
    probe.upload("workflow model", "wf-broken", "model.onnx", b"junk", expect=422)  # so: no such model
    (server.data_dir / "store" / "buckets" / "present").mkdir(parents=True, exist_ok=True)
    tasks = {
        "no-bucket": ("mlgate:store:get", {"bucket": "absent", "key": "x.json"}),
        "no-key": ("mlgate:store:get", {"bucket": "present", "key": "x.json"}),
        "bad-key": ("mlgate:store:get", {"bucket": "present", "key": "../../mlgate.db"}),
        "broken-model": ("mlgate:model:invoke", {"model": "wf-broken", "input": [[1.0]]}),
        "no-model": ("mlgate:model:invoke", {"model": "wf-none", "input": 1}),
        "no-function": ("mlgate:python:absent", {}),
    }
    for name, (resource, data) in tasks.items():
        definition = {
            "StartAt": "T",
            "States": {"T": {"Type": "Task", "Resource": resource, "Parameters": data, "End": True}},
        }
        r = probe.send(f"workflow {name}", "PUT", f"/v1/workflows/{name}", json={"definition": definition})
        if r.status_code == 400:  # refused at deploy time (an unknown function): that answer is checked too
            continue
        assert r.status_code in (200, 201), r.text
        r = probe.send(f"workflow {name}", "POST", f"/v1/workflows/{name}/executions", json={})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "FAILED", r.text
        execution = r.json()["executionId"]
        probe.send(f"workflow {name}", "GET", f"/v1/executions/{execution}")
        probe.send(f"workflow {name}", "GET", f"/v1/executions/{execution}/history")
    probe.send("workflow listing", "GET", "/v1/executions")
    probe.assert_clean()


def test_listings_after_failures(probe: Probe) -> None:
    """Listings, readiness and metrics after all of the above (and on their own)."""
    probe.upload("listing", "listed-broken", "model.onnx", b"junk", expect=422)
    probe.send("listing", "POST", "/v1/models/listed-broken/predict", json=[[1.0]])
    paths = ("/readyz", "/healthz", "/metrics", "/v1/models", "/v2/models", "/v2", "/v2/health/ready")
    for path in (*paths, "/v1/models/declared", "/v1/models/declared/versions/1", "/v2/models/declared"):
        probe.send("listing", "GET", path)
    declared = probe.send("listing", "GET", "/v1/models/declared").json()
    assert declared["description"] == "declared by URI …/declared.onnx", declared  # still telling
    assert declared["versions"][0]["location"].startswith("…/declared"), declared
    probe.assert_clean()


# -- the sweep -----------------------------------------------------------------------------------

_NAMES = ("temperatura", "sleepy", "absent", "x" * 300, "é\u202e\U0001f600", "a'b\"c")
_BODIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("empty", {"content": b""}),
    ("not json", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("json object", {"json": {"a": 1, "inputs": [{"b": [1, "x", None]}], "version": "absent"}}),
    ("json list", {"json": [1, [2, 3], {"x": "y"}]}),
    ("json string", {"json": "x" * 5000}),
    ("deep json", {"content": b"[" * 5000 + b"]" * 5000, "headers": {"content-type": "application/json"}}),
    ("form", {"data": {"username": "u\u0000", "password": "p", "manifest": "{", "files": "x"}}),
    (
        "multipart",
        {
            "files": {"files": ("../../etc/passwd", b"x")},
            "data": {"manifest": json.dumps({"runtime": "onnx", "artifact": "/etc/passwd"})},
        },
    ),
    (
        "bad multipart",
        {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=b"}},
    ),
)


def _paths(template: str) -> list[str]:
    if "{" not in template:
        return [template]
    out = []
    for name in _NAMES:
        path = template
        while "{" in path:
            start = path.index("{")
            end = path.index("}", start)
            path = path[:start] + name + path[end + 1 :]
        out.append(path)
    return out


def test_every_route_with_bad_inputs(probe: Probe) -> None:
    """Every operation of /openapi.json, a few hostile names and bodies each, as the admin."""
    schema = probe.client.get("/openapi.json").json()
    sent = 0
    for template, operations in sorted(schema["paths"].items()):
        for method in sorted(operations):
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            for path in _paths(template):
                if method in ("get", "delete"):
                    probe.send("sweep", method.upper(), path, params={"version": "absent", "limit": "-1"})
                    sent += 1
                    continue
                for _label, body in _BODIES:
                    probe.send("sweep", method.upper(), path, **body)
                    sent += 1
    assert sent > 100
    statuses = sorted({r.status_code for _, r in probe.answers})
    assert any(s >= 400 for s in statuses)
    found = probe.leaks()
    record_figure("internals_sweep", requests=sent, statuses=statuses, leaks=len(found))
    probe.assert_clean()
