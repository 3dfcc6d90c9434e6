"""A hostile client against the Open Inference Protocol (``/v2``) of a real ``mlgate serve``.

Network access only: every request goes over loopback to one module-scoped server (intrusos,
an image model; temperatura, FP64 ``[-1, 60]``; the suite's ``sleepy`` python model, which
declares no inputs). The attacks: the binary tensor data extension's framing
(``Inference-Header-Content-Length`` and ``binary_data_size`` lies, chunked bodies, duplicated
headers), tensor shapes and datatypes, BYTES length prefixes, image bombs in BYTES tensors
(binary and base64), many images or rows in one request, duplicated requested outputs,
metering, and the shape of every refusal (``{"error": "<message>"}`` with the right status,
never a 500, never a traceback or a path).

The secure behaviour is asserted; where the product falls short the test is marked
``xfail(strict=True, reason="FINDING: ...")``. Server cost is read from /proc (RSS and its peak,
``VmHWM``, reset before the attack); the bounds are generous, no timing ratios.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, create_key, create_plan, start_server
from tests.security.hostile_images import corpus, png
from tests.server_process import ServerProcess

MB = 1024 * 1024
HL = "Inference-Header-Content-Length"
SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]
TEMP = "/v2/models/temperatura/infer"
FACES = "/v2/models/intrusos/infer"
SLEEPY = "/v2/models/sleepy/infer"
#: Text that must never reach a client.
LEAKS = ("Traceback", 'File "', "site-packages", "/tmp/", "/work/", "0x7f", "numpy", "ValueError")


# -- helpers -------------------------------------------------------------------------------------


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> int:
    """Reset VmHWM to the current RSS; return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _proc_status(pid, "VmRSS")


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def framed(head: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    """A binary request as tritonclient sends it: JSON header, then the inputs' bytes."""
    text = json.dumps(head).encode()
    return text + b"".join(blobs), str(len(text))


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def temp_input(**extra: Any) -> dict[str, Any]:
    return {"name": "temperaturas", "datatype": "FP64", "shape": [1, 60], **extra}


def raw_request(
    server: ServerProcess, head: bytes, body: bytes = b"", *, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh socket; read one answer (Content-Length or chunked)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        top, _, rest = data.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:length]


def assert_oip_error(
    r: httpx.Response | tuple[int, dict[str, str], bytes], status: int | tuple[int, ...]
) -> str:
    """The protocol's error: ``{"error": "<message>"}`` only, with ``status``, nothing leaked."""
    if isinstance(r, httpx.Response):
        code, body = r.status_code, r.content
    else:
        code, _, body = r
    wanted = status if isinstance(status, tuple) else (status,)
    assert code in wanted, (code, body[:500])
    doc = json.loads(body)
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert isinstance(doc["error"], str) and doc["error"], doc
    for leak in LEAKS:
        assert leak not in doc["error"], doc
    return str(doc["error"])


# -- the server ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with start_server(
        tmp_path_factory.mktemp("v2hostile"),
        services=("intrusos", "temperatura"),
        env={"MLGATE_MAX_INFLIGHT": "0"},
    ) as srv:
        with srv.client() as c:  # warm: the detector, Pillow's plugins
            small = next(s for s in corpus() if s.name == "jpeg_baseline")
            r = c.post(FACES, json=_faces_json(small.data))
            assert r.status_code == 200, r.text
            assert c.post(TEMP, json={"inputs": [temp_input(data=SEED)]}).status_code == 200
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _faces_json(*images: bytes) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ]
    }


def _faces_binary(*images: bytes, outputs: list[dict[str, Any]] | None = None) -> tuple[bytes, str]:
    blob = bytes_tensor(*images)
    head: dict[str, Any] = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [len(images)],
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    if outputs is not None:
        head["outputs"] = outputs
    return framed(head, blob)


def _post_framed(c: httpx.Client, path: str, body: bytes, length: str, **headers: str) -> httpx.Response:
    return c.post(
        path, content=body, headers={HL: length, "content-type": "application/octet-stream", **headers}
    )


# -- the framing: Inference-Header-Content-Length ------------------------------------------------


def test_a_legitimate_binary_request_is_served(client: httpx.Client) -> None:
    blob = struct.pack("<60d", *SEED)
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": len(blob)})]}, blob)
    r = _post_framed(client, TEMP, body, n)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["name"] == "prediccion"


@pytest.mark.parametrize(
    "value",
    ["-5", "abc", "1e3", "0x10", "12.0", "+12", "99999999999999999999", "0", "", "١٢", "9" * 13, "1 2"],
)
def test_header_length_garbage_is_a_400(server: ServerProcess, value: str) -> None:
    body, _ = framed({"inputs": [temp_input(data=SEED)]})
    head = (
        f"POST {TEMP} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        f"{HL}: {value}\r\nConnection: close\r\n\r\n"
    ).encode()
    assert_oip_error(raw_request(server, head, body), 400)


def test_header_length_larger_than_the_body_is_a_400(client: httpx.Client) -> None:
    body, n = framed({"inputs": [temp_input(data=SEED)]})
    r = _post_framed(client, TEMP, body, str(int(n) + 1))
    assert "Inference-Header-Content-Length" in assert_oip_error(r, 400)
    r = _post_framed(client, TEMP, body, str(10**11))
    assert_oip_error(r, 400)


def test_header_length_cutting_the_json_is_a_400(client: httpx.Client) -> None:
    body, n = framed({"inputs": [temp_input(data=SEED)]})
    r = _post_framed(client, TEMP, body, str(int(n) - 3))
    assert_oip_error(r, 400)


def test_header_length_shorter_than_the_json_leaves_unaccounted_bytes(client: httpx.Client) -> None:
    # Valid JSON followed by trailing garbage the header length says is binary: 400, not ignored.
    body, n = framed({"inputs": [temp_input(data=SEED)]})
    r = _post_framed(client, TEMP, body + b"\x00" * 16, n)
    assert "accounts for" in assert_oip_error(r, 400)


def test_duplicated_header_length_is_refused(server: ServerProcess) -> None:
    """Two ``Inference-Header-Content-Length`` values: which one frames the body is ambiguous
    (a proxy may take the last, mlgate the first), so the request must be refused, as RFC 9110
    asks of a duplicated Content-Length."""
    blob = struct.pack("<60d", *SEED)
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": len(blob)})]}, blob)
    head = (
        f"POST {TEMP} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n"
        f"{HL}: {n}\r\n{HL}: {int(n) + 8}\r\nConnection: close\r\n\r\n"
    ).encode()
    reply = raw_request(server, head, body)
    assert_oip_error(reply, 400)


def test_chunked_binary_request_is_served_like_a_sized_one(server: ServerProcess) -> None:
    blob = struct.pack("<60d", *SEED)
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": len(blob)})]}, blob)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 100]), body[i : i + 100]) for i in range(0, len(body), 100)
    )
    head = (
        f"POST {TEMP} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n"
        f"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n"
        f"{HL}: {n}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, _, answer = raw_request(server, head, chunks + b"0\r\n\r\n")
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["name"] == "prediccion"


def test_chunked_body_over_the_limit_is_a_413_even_with_binary_framing(server: ServerProcess) -> None:
    head = (
        f"POST {TEMP} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n"
        f"Transfer-Encoding: chunked\r\n{HL}: 10\r\nConnection: close\r\n\r\n"
    ).encode()
    piece = b"\x00" * MB
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(7)) + b"0\r\n\r\n"
    try:
        reply = raw_request(server, head, chunks)
    except (ConnectionResetError, BrokenPipeError):
        pytest.fail("the server reset the connection instead of answering 413")
    assert_oip_error(reply, 413)


def test_sized_body_over_the_limit_is_a_413(client: httpx.Client) -> None:
    blob = b"\x00" * (7 * MB)
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "UINT8",
                    "shape": [len(blob)],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    assert_oip_error(_post_framed(client, TEMP, body, n), 413)


# -- binary_data_size lies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [-8, 480.0, "480", True, None, 2**63 - 1, 2**64 - 1, 479, 481, 0, [480], {"n": 480}]
)
def test_binary_data_size_lies_are_a_400(client: httpx.Client, size: Any) -> None:
    blob = struct.pack("<60d", *SEED)
    params = {"binary_data_size": size} if size is not None else {"binary_data_size": None}
    body, n = framed({"inputs": [temp_input(parameters=params)]}, blob)
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)


def test_binary_sizes_that_do_not_sum_to_the_remainder_are_a_400(client: httpx.Client) -> None:
    blob = struct.pack("<60d", *SEED)
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": 480})]}, blob, b"\x01" * 8)
    assert "accounts for" in assert_oip_error(_post_framed(client, TEMP, body, n), 400)
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": 480})]}, blob[:-8])
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)


def test_binary_data_without_the_header_is_a_400(client: httpx.Client) -> None:
    blob = struct.pack("<60d", *SEED)
    body, _ = framed({"inputs": [temp_input(parameters={"binary_data_size": 480})]}, blob)
    r = client.post(TEMP, content=body, headers={"content-type": "application/json"})
    assert_oip_error(r, 400)


def test_nan_and_infinity_in_binary_floats_are_a_400(client: httpx.Client) -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        blob = struct.pack("<60d", bad, *SEED[1:])
        body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": 480})]}, blob)
        assert_oip_error(_post_framed(client, TEMP, body, n), 400)


@pytest.mark.parametrize("value", [1.7e308, -1.7e308, 1e308, 5e-324])
def test_extreme_finite_values_are_a_finite_answer_or_a_400(client: httpx.Client, value: float) -> None:
    r = client.post(TEMP, json={"inputs": [temp_input(data=[value] * 60)]})
    if r.status_code == 200:
        assert all(v is not None for v in r.json()["outputs"][0]["data"]), r.text
    else:
        assert_oip_error(r, 400)


# -- shapes and element counts --------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        [-1, 60],
        [1, -60],
        [2**40, 60],
        [2**31, 2**31],
        [2**62, 4],
        [1] * 33,
        [1.0, 60],
        ["1", 60],
        [True, 60],
        None,
        5,
    ],
)
def test_hostile_shapes_are_a_400(client: httpx.Client, shape: Any) -> None:
    blob = struct.pack("<60d", *SEED)
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "temperaturas",
                    "datatype": "FP64",
                    "shape": shape,
                    "parameters": {"binary_data_size": 480},
                }
            ]
        },
        blob,
    )
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP64", "BYTES"])
def test_zero_sized_shape_with_huge_dimensions_is_a_400(
    server: ServerProcess, binary: bool, datatype: str
) -> None:
    shape = [0, 2**62, 2**62]
    spec: dict[str, Any] = {"name": "temperaturas", "datatype": datatype, "shape": shape}
    with server.client() as c:
        if binary:
            body, n = framed({"inputs": [{**spec, "parameters": {"binary_data_size": 0}}]})
            r = _post_framed(c, TEMP, body, n)
        else:
            r = c.post(TEMP, json={"inputs": [{**spec, "data": []}]})
    assert_oip_error(r, 400)


def test_zero_rows_is_a_400(client: httpx.Client) -> None:
    r = client.post(
        TEMP, json={"inputs": [{"name": "temperaturas", "datatype": "FP64", "shape": [0, 60], "data": []}]}
    )
    assert_oip_error(r, 400)


def test_element_count_times_itemsize_must_match_the_bytes(client: httpx.Client) -> None:
    # 2**61 FP64 elements = 2**64 bytes: an int64 overflow if computed in C; refused by the cap.
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "temperaturas",
                    "datatype": "FP64",
                    "shape": [2**61],
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    )
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)
    # A shape of 60 FP64 values sent as 60 bytes (UINT8's size): 400.
    body, n = framed({"inputs": [temp_input(parameters={"binary_data_size": 60})]}, b"\x00" * 60)
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)


# -- JSON data ------------------------------------------------------------------------------------


def _nested(depth: int) -> Any:
    value: Any = [22.0]
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "data",
    [
        "22.0",
        True,
        None,
        {"a": 1},
        [None] * 60,
        [True] * 60,
        ["22.0"] * 60,
        [[22.0] * 30, [22.0] * 31],
        [22.0] * 59,
        _nested(40),
    ],
    ids=["str", "bool", "null", "object", "nulls", "bools", "strings", "ragged", "short", "deep"],
)
def test_json_data_of_the_wrong_kind_is_a_400(client: httpx.Client, data: Any) -> None:
    r = client.post(TEMP, json={"inputs": [temp_input(data=data)]})
    assert_oip_error(r, 400)


def test_deeply_nested_json_is_a_quick_400(client: httpx.Client) -> None:
    body = (
        b'{"inputs":[{"name":"temperaturas","datatype":"FP64","shape":[1,60],"data":'
        + b"[" * 200_000
        + b"]" * 200_000
        + b"}]}"
    )
    r = client.post(TEMP, content=body, headers={"content-type": "application/json"})
    assert_oip_error(r, 400)


@pytest.mark.parametrize("datatype", ["BF16", "FP8", "fp64", "STRING", "", None, 7])
def test_unknown_datatypes_are_a_400(client: httpx.Client, datatype: Any) -> None:
    r = client.post(TEMP, json={"inputs": [temp_input(datatype=datatype, data=SEED)]})
    assert_oip_error(r, 400)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "INT64", "BOOL", "BYTES"])
def test_a_datatype_the_model_does_not_declare_is_a_400(client: httpx.Client, datatype: str) -> None:
    data: list[Any] = {"BOOL": [True] * 60, "BYTES": ["1"] * 60, "INT64": [22] * 60}.get(datatype, SEED)
    r = client.post(TEMP, json={"inputs": [temp_input(datatype=datatype, data=data)]})
    assert "does not match the model" in assert_oip_error(r, 400)


def test_binary_bool_bytes_other_than_0_or_1_are_a_400(client: httpx.Client) -> None:
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "temperaturas",
                    "datatype": "BOOL",
                    "shape": [1, 60],
                    "parameters": {"binary_data_size": 60},
                }
            ]
        },
        b"\x02" * 60,
    )
    assert_oip_error(_post_framed(client, TEMP, body, n), 400)


def test_unknown_parameters_are_ignored(client: httpx.Client) -> None:
    r = client.post(
        TEMP,
        json={
            "id": "x" * 1000,
            "parameters": {"priority": 9, "timeout": -1, "sequence_id": 7, "whatever": {"a": [1]}},
            "inputs": [temp_input(data=SEED, parameters={"content_type": "evil", "x": None})],
            "outputs": [{"name": "prediccion", "parameters": {"unknown": True}}],
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "x" * 1000


@pytest.mark.parametrize(
    "extra",
    [
        {"outputs": {"name": "prediccion"}},
        {"outputs": [{"name": ""}]},
        {"outputs": [{"name": "nope"}]},
        {"outputs": [{"name": "prediccion", "parameters": {"classification": 3}}]},
        {"outputs": [{"name": "prediccion", "parameters": {"binary_data": "yes"}}]},
        {"parameters": {"binary_data_output": 1}},
        {"parameters": []},
        {"inputs": [temp_input(data=SEED), temp_input(data=SEED)]},
        {"inputs": [temp_input(data=SEED, parameters={"shared_memory_region": "r"})]},
        {"inputs": []},
        {"inputs": "x"},
    ],
)
def test_malformed_requests_are_a_400(client: httpx.Client, extra: dict[str, Any]) -> None:
    r = client.post(TEMP, json={"inputs": [temp_input(data=SEED)], **extra})
    assert_oip_error(r, 400)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "identity, gzip"])
def test_compressed_requests_are_a_400(client: httpx.Client, encoding: str) -> None:
    r = client.post(
        TEMP,
        content=json.dumps({"inputs": [temp_input(data=SEED)]}).encode(),
        headers={"content-type": "application/json", "content-encoding": encoding},
    )
    assert "Content-Encoding" in assert_oip_error(r, 400)


# -- BYTES tensors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "count"),
    [
        (struct.pack("<I", 0xFFFFFFFF) + b"abc", 1),  # a length prefix running past the data
        (struct.pack("<I", 3) + b"abc" + struct.pack("<I", 2**31), 2),
        (b"\x01\x00", 1),  # ends inside the length
        (bytes_tensor(b"a", b"b") + b"\x00", 2),  # trailing byte
        (bytes_tensor(b"a"), 2),  # fewer bytes than 4 per element
        (bytes_tensor(b"a", b"b", b"c"), 2),  # more elements than the shape
    ],
    ids=["past-end", "second-huge", "inside-length", "trailing", "too-few", "too-many"],
)
def test_lying_bytes_length_prefixes_are_a_400(client: httpx.Client, blob: bytes, count: int) -> None:
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    assert_oip_error(_post_framed(client, FACES, body, n), 400)


def test_text_bytes_that_are_not_utf8_never_reach_an_image_model_as_text(client: httpx.Client) -> None:
    # Non-image bytes into the image input: the image decoder refuses them (400).
    r = _post_framed(client, FACES, *_faces_binary(b"\xff\xfe\x00garbage"))
    assert_oip_error(r, 400)


@pytest.mark.parametrize("text", ["!!!not base64!!!", "QUJD=", "data:image/png;base64,@@@", "", "QUJD" * 3])
def test_invalid_base64_images_are_a_400(client: httpx.Client, text: str) -> None:
    r = client.post(
        FACES, json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    )
    assert_oip_error(r, 400)


def _bombs() -> list[Any]:
    return [s for s in corpus() if s.verdict == "refused"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "base64"])
def test_image_bombs_in_bytes_tensors_are_refused_cheaply(server: ServerProcess, binary: bool) -> None:
    pid = server.process.pid
    with server.client() as c:
        base = _reset_peak(pid)
        cpu = _proc_cpu(pid)
        for sample in _bombs():
            if binary:
                r = _post_framed(c, FACES, *_faces_binary(sample.data))
            else:
                r = c.post(FACES, json=_faces_json(sample.data))
            assert_oip_error(r, 400)
        spent = _proc_cpu(pid) - cpu
        peak = _proc_status(pid, "VmHWM") - base
    print(f"bombs binary={binary}: {len(_bombs())} refused, {spent:.2f} CPU-s, peak +{peak / MB:.0f} MB")
    assert peak < 300 * MB


def test_one_bomb_among_good_images_fails_the_request_with_a_400(client: httpx.Client) -> None:
    good = next(s for s in corpus() if s.name == "jpeg_baseline").data
    bomb = next(s for s in corpus() if s.name == "png_bomb").data
    assert_oip_error(_post_framed(client, FACES, *_faces_binary(good, bomb, good)), 400)


def _max_png() -> bytes:
    """A 4160x3120 RGB PNG of zeros (12.98 MP, just under the cap): ~40 KB, 39 MB decoded."""
    return png(4160, 3120, depth=8, color=2)


def test_many_images_at_the_pixel_cap_in_one_request_stay_within_the_memory_budget(
    server: ServerProcess,
) -> None:
    image = _max_png()
    count = 12  # ~0.5 MB of body; 12 x 39 MB decoded
    pid = server.process.pid
    stalls: list[float] = []
    done = threading.Event()

    def probe() -> None:  # another tenant's cheap call, meanwhile
        with httpx.Client(base_url=server.url, timeout=30.0) as other:
            while not done.is_set():
                started = time.perf_counter()
                other.get("/v2/health/live")
                stalls.append(time.perf_counter() - started)
                time.sleep(0.05)

    with server.client() as c:
        base = _reset_peak(pid)
        cpu = _proc_cpu(pid)
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            r = _post_framed(c, FACES, *_faces_binary(*([image] * count)))
        finally:
            done.set()
            prober.join()
        spent = _proc_cpu(pid) - cpu
        peak = _proc_status(pid, "VmHWM") - base
    worst = max(stalls, default=0.0)  # none: the answer came before the first probe
    print(
        f"{count} images of 13 MP ({len(image)} bytes each): {r.status_code}, {spent:.2f} CPU-s, "
        f"peak +{peak / MB:.0f} MB, worst health probe meanwhile {worst:.2f} s"
    )
    assert r.status_code in (200, 400, 413, 503), r.text
    # One request's budget is 200 MB (images.py); be generous.
    assert peak < 300 * MB, f"peak RSS +{peak / MB:.0f} MB for one request"
    # The event loop is never held by one request's decoding (generous: seconds of CPU run here).
    assert worst < 1.5, f"a health probe waited {worst:.2f} s"


def _temperature_rows(rows: int) -> tuple[bytes, str]:
    blob = struct.pack("<60d", *SEED) * rows
    return framed(
        {
            "inputs": [
                {
                    "name": "temperaturas",
                    "datatype": "FP64",
                    "shape": [rows, 60],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )


def test_rows_per_request_are_capped_like_the_native_batch(server: ServerProcess) -> None:
    rows = 10_000
    body, n = _temperature_rows(rows)
    pid = server.process.pid
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=60.0) as c:  # unmetered
        base = _reset_peak(pid)
        cpu = _proc_cpu(pid)
        r = _post_framed(c, TEMP, body, n)
        spent = _proc_cpu(pid) - cpu
        peak = _proc_status(pid, "VmHWM") - base
    print(f"{rows} rows: {r.status_code} {r.text[:200]!r}, {spent:.2f} CPU-s, peak +{peak / MB:.0f} MB")
    assert r.status_code == 400 and "at most" in r.text, (r.status_code, r.text[:300])


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "x", "datatype": "FP64", "shape": [1, 0, 1_000_000_000_000], "data": []},
        {"name": "x", "datatype": "FP64", "shape": [], "data": 1.0},
        {"name": "x", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b"]},
        {"name": "x", "datatype": "BOOL", "shape": [1], "data": [True]},
        {"name": "x", "datatype": "UINT64", "shape": [1], "data": [2**64 - 1]},
        {"name": "x", "datatype": "FP16", "shape": [1], "data": [65504.0]},
    ],
    ids=["zero-width", "scalar", "bytes-2d", "bool", "uint64-max", "fp16-max"],
)
def test_odd_tensors_into_a_model_that_declares_no_inputs_are_a_400(
    client: httpx.Client, tensor: dict[str, Any]
) -> None:
    assert_oip_error(client.post(SLEEPY, json={"inputs": [tensor]}), 400)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_a_1d_bytes_tensor_into_a_model_that_declares_no_inputs_is_a_400(
    client: httpx.Client, binary: bool
) -> None:
    if binary:
        blob = bytes_tensor(b"a", b"b")
        body, n = framed(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "BYTES",
                        "shape": [2],
                        "parameters": {"binary_data_size": len(blob)},
                    }
                ]
            },
            blob,
        )
        r = _post_framed(client, SLEEPY, body, n)
    else:
        r = client.post(
            SLEEPY, json={"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]}
        )
    assert_oip_error(r, 400)


def test_two_tensors_into_a_model_that_declares_no_inputs_are_a_400(client: httpx.Client) -> None:
    tensor = {"datatype": "FP64", "shape": [1], "data": [0.0]}
    r = client.post(SLEEPY, json={"inputs": [{"name": "a", **tensor}, {"name": "b", **tensor}]})
    assert_oip_error(r, 400)


# -- output amplification -------------------------------------------------------------------------


def test_an_output_named_twice_is_refused(client: httpx.Client) -> None:
    copies = 2000
    r = client.post(
        TEMP, json={"inputs": [temp_input(data=SEED)], "outputs": [{"name": "prediccion"}] * copies}
    )
    print(f"outputs x{copies}: {r.status_code}, answer {len(r.content)} bytes")
    assert_oip_error(r, 400)


def test_output_amplification_figure(client: httpx.Client) -> None:
    """Not an assertion of the fix (see above): how far one image's output multiplies."""
    good = next(s for s in corpus() if s.name == "jpeg_baseline").data
    copies = 200
    body, n = _faces_binary(good, outputs=[{"name": "output"}] * copies)
    r = _post_framed(client, FACES, body, n)
    print(
        f"intrusos outputs x{copies}: request {len(body)} bytes, {r.status_code}, "
        f"answer {len(r.content)} bytes"
    )
    assert r.status_code in (200, 400), r.text


def test_binary_outputs_are_framed_consistently(client: httpx.Client) -> None:
    good = next(s for s in corpus() if s.name == "jpeg_baseline").data
    body, n = _faces_binary(
        good, outputs=[{"name": "output", "parameters": {"binary_data": True}}, {"name": "height"}]
    )
    r = _post_framed(client, FACES, body, n)
    assert r.status_code == 200, r.text
    length = int(r.headers[HL])
    head = json.loads(r.content[:length])
    sizes = [o.get("parameters", {}).get("binary_data_size", 0) for o in head["outputs"]]
    assert sum(sizes) == len(r.content) - length
    assert [o["name"] for o in head["outputs"]] == ["output", "height"]


# -- metering -------------------------------------------------------------------------------------


def _quota_key(server: ServerProcess) -> dict[str, str]:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=100, quota_period="DAY")
        return {"x-api-key": create_key(c, plan=plan)["key"]}


def test_each_image_and_row_costs_one_unit(server: ServerProcess) -> None:
    key = _quota_key(server)
    good = next(s for s in corpus() if s.name == "jpeg_baseline").data
    with httpx.Client(base_url=server.url, headers=key, timeout=30.0) as c:
        first = c.post(TEMP, json={"inputs": [temp_input(data=SEED)]})
        assert first.status_code == 200, first.text
        left = int(first.headers["X-Quota-Remaining"])
        r = _post_framed(c, FACES, *_faces_binary(*([good] * 5)))
        assert r.status_code == 200, r.text
        assert int(r.headers["X-Quota-Remaining"]) == left - 5
        r = c.post(FACES, json=_faces_json(*([good] * 3)))
        assert r.status_code == 200, r.text
        assert int(r.headers["X-Quota-Remaining"]) == left - 8
        r = c.post(
            TEMP,
            json={
                "inputs": [{"name": "temperaturas", "datatype": "FP64", "shape": [4, 60], "data": SEED * 4}]
            },
        )
        assert r.status_code == 200, r.text
        assert int(r.headers["X-Quota-Remaining"]) == left - 12
        # A [1, N, ...] trick does not help: the model's batch dimension is the first one.
        r = c.post(
            TEMP,
            json={
                "inputs": [{"name": "temperaturas", "datatype": "FP64", "shape": [1, 240], "data": SEED * 4}]
            },
        )
        assert_oip_error(r, 400)
        # Refused requests cost nothing.
        after = c.post(TEMP, json={"inputs": [temp_input(data=SEED)]})
        assert int(after.headers["X-Quota-Remaining"]) == left - 13


def test_a_request_costing_more_than_the_quota_left_is_a_429(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=3, quota_period="DAY")
        key = {"x-api-key": create_key(c, plan=plan)["key"]}
    good = next(s for s in corpus() if s.name == "jpeg_baseline").data
    with httpx.Client(base_url=server.url, headers=key, timeout=30.0) as c:
        r = _post_framed(c, FACES, *_faces_binary(*([good] * 5)))
        assert_oip_error(r, 429)


def _invocations(server: ServerProcess, model: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=ADMIN, timeout=30.0).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlgate_model_invocations_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_request_over_the_models_queue_runs_nothing_for_free(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=10_000, quota_period="DAY")
        key = {"x-api-key": create_key(c, plan=plan)["key"]}
    rows = 600  # temperatura's queue holds 512
    body, n = _temperature_rows(rows)
    before = _invocations(server, "temperatura")
    with httpx.Client(base_url=server.url, headers=key, timeout=60.0) as c:
        r = _post_framed(c, TEMP, body, n)
        with server.client() as other:  # another tenant, right after
            theirs = other.post(TEMP, json={"inputs": [temp_input(data=SEED)]})
        after = c.post(TEMP, json={"inputs": [temp_input(data=SEED)]})
    charged = 10_000 - 1 - int(after.headers["X-Quota-Remaining"])
    ran = 0.0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and ran <= charged:  # the queued rows may run after the answer
        ran = _invocations(server, "temperatura") - before - (theirs.status_code == 200) - 1
        time.sleep(0.2)
    print(
        f"{rows} rows: {r.status_code} {r.text[:80]!r}; other tenant {theirs.status_code} in "
        f"{theirs.elapsed.total_seconds():.1f} s; model ran {ran:.0f}, charged {charged}"
    )
    assert r.status_code in (200, 400, 413, 503), r.text
    # Charged = served: no model work beyond what the caller paid for; nobody else refused.
    assert ran <= charged, f"the model ran {ran:.0f} rows, {charged} charged"
    assert theirs.status_code == 200, theirs.text


# -- authentication before work -------------------------------------------------------------------


def test_an_anonymous_caller_is_refused_before_its_tensors_are_parsed(server: ServerProcess) -> None:
    body, n = framed(
        {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 5}}]},
        b"\x00",
    )
    with server.client(key=False) as c:
        r = _post_framed(c, "/v2/models/nosuchmodel/infer", body, n)
    assert_oip_error(r, (401, 403))


def test_many_tiny_bytes_elements_cost_bounded_memory(server: ServerProcess) -> None:
    """1.5 M empty BYTES elements in 6 MB (4 bytes each): the per-element overhead of Python
    objects is the amplification; sent anonymously and with a key, to a model that refuses BYTES."""
    count = 1_400_000
    blob = b"\x00\x00\x00\x00" * count
    body, n = framed(
        {
            "inputs": [
                {
                    "name": "temperaturas",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
        },
        blob,
    )
    pid = server.process.pid
    results = []
    for key in (False, True):
        with server.client(key=key) as c:
            base = _reset_peak(pid)
            cpu = _proc_cpu(pid)
            r = _post_framed(c, TEMP, body, n)
            spent = _proc_cpu(pid) - cpu
            peak = _proc_status(pid, "VmHWM") - base
        results.append((key, r.status_code, spent, peak))
        print(f"{count} tiny BYTES key={key}: {r.status_code}, {spent:.2f} CPU-s, peak +{peak / MB:.0f} MB")
        assert_oip_error(r, (400, 401, 403))
        assert peak < 400 * MB


# -- refusals have the protocol's shape -----------------------------------------------------------


def test_gateway_refusals_on_v2_are_the_protocols_error(server: ServerProcess) -> None:
    body = {"inputs": [temp_input(data=SEED)]}
    with server.client(key=False) as c:
        assert_oip_error(c.post(TEMP, json=body), (401, 403))
        assert_oip_error(c.post(TEMP, json=body, headers={"x-api-key": "mlg_forged_" + "x" * 40}), (401, 403))
        assert_oip_error(c.post(TEMP, json=body, headers={"authorization": "Bearer not.a.jwt"}), (401, 403))
        assert_oip_error(c.get("/v2/models/temperatura"), (401, 403))
    with server.client() as c:
        assert_oip_error(c.post("/v2/models/nosuchmodel/infer", json=body), 404)
        assert_oip_error(c.post("/v2/models/temperatura/versions/999/infer", json=body), 404)
        assert_oip_error(c.get("/v2/models/temperatura/config"), 404)
        assert_oip_error(c.get("/v2/repository/index"), 404)
        assert_oip_error(c.post("/v2/systemsharedmemory/register"), (404, 405))
        assert_oip_error(c.get(TEMP), 405)
        assert_oip_error(c.delete("/v2/models/temperatura"), 405)
        assert_oip_error(c.post(TEMP, content=b"", headers={"content-type": "application/json"}), 400)
        assert_oip_error(c.post(TEMP, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
        assert_oip_error(c.post("/v2/models/temperatura/versions/abc/infer", json=body), (400, 404))
        assert_oip_error(c.post("/v2/models/" + "a" * 300 + "/infer", json=body), (400, 404))
        for version in ("-1", "0", "99999999999999999999999", "1.5", "%00", "latest%2F..%2F1"):
            assert_oip_error(
                c.post(f"/v2/models/temperatura/versions/{version}/infer", json=body), (400, 404)
            )
        for name in ("%2e%2e", "..%2Fv1", "temperatura%00", "TEMPERATURA", "temperatura%20"):
            assert_oip_error(c.post(f"/v2/models/{name}/infer", json=body), (400, 404))


def test_rate_limit_refusal_on_v2(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30.0) as c:
        plan = create_plan(c, rate=0.001, burst=1)
        key = {"x-api-key": create_key(c, plan=plan)["key"]}
    with httpx.Client(base_url=server.url, headers=key, timeout=30.0) as c:
        assert c.post(TEMP, json={"inputs": [temp_input(data=SEED)]}).status_code == 200
        r = c.post(TEMP, json={"inputs": [temp_input(data=SEED)]})
        assert_oip_error(r, 429)
        assert "retry-after" in r.headers


def test_huge_headers_on_v2_are_a_431_in_the_protocols_shape(server: ServerProcess) -> None:
    head = (
        f"POST {TEMP} HTTP/1.1\r\nHost: x\r\nx-api-key: {server.api_key}\r\n"
        f"X-Big: {'a' * 40_000}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode()
    assert_oip_error(raw_request(server, head), 431)


def test_nothing_leaked_and_no_500_in_the_servers_answers(server: ServerProcess) -> None:
    """After everything above: the server is alive and serves."""
    with server.client() as c:
        assert c.get("/v2/health/live").status_code == 200
        assert c.post(TEMP, json={"inputs": [temp_input(data=SEED)]}).status_code == 200
    _ = time.monotonic()
