"""The Open Inference Protocol's tensors (:mod:`mlgate.http.tensors_v2`) and its error shape.

The binary tensor data extension's framing both ways (built here byte by byte, as tritonclient
builds it), its bounds (sizes against the body, element counts against sizes, before any
allocation), the checks against a model's metadata, and the one rendering rule: errors on
``/v2`` paths are ``{"error": "<message>"}`` whatever raised them.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from mlgate.batching import Batcher
from mlgate.errors import InvalidInput, Overloaded, PredictionFailed, Throttled
from mlgate.http import create_app
from mlgate.http.edge import OIP_SHED_BODY, SHED_BODY, Edge
from mlgate.http.errors import error_parts, is_oip_path
from mlgate.http.gateway import GatewayRejected
from mlgate.http.tensors_v2 import (
    HEADER_LENGTH,
    MAX_ROWS,
    InferRequest,
    check_inputs,
    check_outputs,
    encode_response,
    parse_request,
    rows_of,
    serialize_bytes,
)
from mlgate.runtimes.base import ModelRuntime
from mlgate.runtimes.images import check_request_images
from mlgate.settings import Settings
from mlgate.types import BatchingConfig

SEED = [20.0 + (i % 24) / 4 for i in range(60)]
TEMPERATURA = {
    "inputs": [{"name": "temperaturas", "datatype": "FP64", "shape": [-1, 60]}],
    "outputs": [{"name": "prediccion", "datatype": "FP64", "shape": [-1, 1]}],
}
IMAGE = {
    "inputs": [
        {
            "name": "image",
            "datatype": "BYTES",
            "shape": [-1],
            "parameters": {
                "content_type": "image",
                "also_accepts": [{"datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            },
        }
    ],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 1, -1, 7]}],
}


def framed(head: dict[str, Any], *blobs: bytes) -> tuple[bytes, str]:
    """A binary request as tritonclient sends it: the JSON header, then the inputs' bytes."""
    text = orjson.dumps(head)
    return text + b"".join(blobs), str(len(text))


def bytes_tensor(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# -- parsing ---------------------------------------------------------------------------------------


def test_json_request() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": [SEED]}],
            "outputs": [{"name": "prediccion", "parameters": {"binary_data": True}}],
        }
    )
    request = parse_request(body, None)
    assert request.id == "r1"
    assert request.tensors["temperaturas"].shape == (1, 60)
    assert request.tensors["temperaturas"].dtype == np.float64
    assert request.outputs is not None and request.outputs[0].binary is True


def test_binary_request_numbers_and_bytes() -> None:
    values = np.asarray([SEED, SEED[::-1]], dtype="<f8")
    text = bytes_tensor(b"\xff\xd8jpeg", b"")
    body, length = framed(
        {
            "inputs": [
                {"name": "a", "shape": [2, 60], "datatype": "FP64", "parameters": {"binary_data_size": 960}},
                {
                    "name": "b",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(text)},
                },
                {"name": "c", "shape": [1], "datatype": "INT32", "data": [7]},
            ],
            "parameters": {"binary_data_output": True},
        },
        values.tobytes(),
        text,
    )
    request = parse_request(body, length)
    np.testing.assert_array_equal(request.tensors["a"], values)
    assert request.tensors["b"].tolist() == [b"\xff\xd8jpeg", b""]
    assert request.tensors["c"].tolist() == [7]
    assert request.binary_output is True and request.datatypes["b"] == "BYTES"


def _binary_input(size: int, datatype: str = "FP32", shape: list[int] | None = None) -> dict[str, Any]:
    spec = {
        "name": "x",
        "shape": shape or [2],
        "datatype": datatype,
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [spec]}


@pytest.mark.parametrize(
    ("head", "blob", "length", "fragment"),
    [
        (_binary_input(8), b"\0" * 8, "abc", "JSON header's length"),
        (_binary_input(8), b"\0" * 8, "99999", "the body has"),
        (_binary_input(8), b"\0" * 8, "0", "the body has"),
        (_binary_input(8), b"\0" * 4, None, "only 4 bytes"),
        (_binary_input(4, "FP32", [1]), b"\0" * 8, None, "4 bytes of binary data"),
        (_binary_input(4), b"\0" * 4, None, "8 bytes, parameters.binary_data_size says 4"),
        (_binary_input(-1), b"", None, "binary_data_size is a number"),
        (_binary_input(8, "BYTES", [3]), b"\0" * 8, None, "need at least 12 bytes"),
        (_binary_input(8, "BYTES", [1]), struct.pack("<I", 100) + b"abcd", None, "runs past"),
        (_binary_input(9, "BYTES", [1]), struct.pack("<I", 4) + b"abcde", None, "1 bytes after"),
        (_binary_input(2, "BOOL"), b"\0\2", None, "0 or 1"),
        (_binary_input(8, "FP32"), struct.pack("<ff", 1.0, float("nan")), None, "NaN"),
        (
            _binary_input(8, "FP64", [100_000, 100_000]),
            b"\0" * 8,
            None,
            "at most",
        ),  # refused from its shape: nothing allocated for 80 GB
    ],
)
def test_binary_framing_is_bounded(
    head: dict[str, Any], blob: bytes, length: str | None, fragment: str
) -> None:
    body, real = framed(head, blob)
    with pytest.raises(InvalidInput) as raised:
        parse_request(body, real if length is None else length)
    assert fragment in raised.value.message


def test_binary_input_needs_the_header() -> None:
    body, _ = framed(_binary_input(8), b"\0" * 8)
    with pytest.raises(InvalidInput, match=r"not valid JSON|Inference-Header-Content-Length"):
        parse_request(body, None)
    plain = orjson.dumps(_binary_input(8))
    with pytest.raises(InvalidInput, match=HEADER_LENGTH):
        parse_request(plain, None)


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        ({"name": "x", "shape": [2], "datatype": "INT32", "data": [1, 2.5]}, "integers"),
        ({"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}, "range"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": ["1.0"]}, "numbers"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1e300]}, "range"),
        ({"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}, "true or false"),
        ({"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}, "strings"),
        ({"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0]}, "do not fill"),
        ({"name": "x", "shape": [1], "datatype": "FP32"}, "neither data"),
        (
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "data": [1.0],
                "parameters": {"binary_data_size": 4},
            },
            "both",
        ),
        (
            {
                "name": "x",
                "shape": [1],
                "datatype": "FP32",
                "data": [1.0],
                "parameters": {"shared_memory_region": "r"},
            },
            "shared-memory",
        ),
    ],
)
def test_json_tensors_are_strict(tensor: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_request(orjson.dumps({"inputs": [tensor]}), None)
    assert fragment in raised.value.message


def test_nested_json_data_is_row_major() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]}]}
    )
    assert parse_request(body, None).tensors["x"].tolist() == [[1, 2], [3, 4]]


# -- against the model's metadata ---------------------------------------------------------------------


def _request(name: str, datatype: str, data: Any, shape: list[int]) -> InferRequest:
    body = orjson.dumps({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]})
    return parse_request(body, None)


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (_request("x", "FP64", SEED, [1, 60]), "unknown input 'x'"),
        (_request("temperaturas", "INT32", [1] * 60, [1, 60]), "datatype INT32 does not match"),
        (_request("temperaturas", "FP64", SEED[:59], [1, 59]), "[-1, 60]"),
        (_request("temperaturas", "FP64", SEED, [60]), "[-1, 60]"),
    ],
)
def test_inputs_are_held_to_the_metadata(request_: InferRequest, fragment: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        check_inputs("temperatura", TEMPERATURA, request_)
    assert fragment in raised.value.message


def test_missing_input_and_unknown_output() -> None:
    two = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1]},
            {"name": "b", "datatype": "FP32", "shape": [-1]},
        ]
    }
    with pytest.raises(InvalidInput, match="needs the input"):
        check_inputs("m", two, _request("a", "FP32", [1.0], [1]))
    request = parse_request(
        orjson.dumps(
            {
                "inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": SEED}],
                "outputs": [{"name": "nope"}],
            }
        ),
        None,
    )
    check_inputs("temperatura", TEMPERATURA, request)
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        check_outputs("temperatura", TEMPERATURA, request)
    check_outputs("python-model", {"inputs": [], "outputs": []}, request)  # undeclared: checked after


def test_image_inputs_take_bytes_or_pixels_and_text_inputs_get_text() -> None:
    check_inputs("intrusos", IMAGE, _request("image", "BYTES", ["aGVsbG8="], [1]))
    check_inputs("intrusos", IMAGE, _request("image", "UINT8", [0] * 12, [1, 2, 2, 3]))
    with pytest.raises(InvalidInput, match="BYTES \\[-1\\] or UINT8"):
        check_inputs("intrusos", IMAGE, _request("image", "FP32", [0.0] * 12, [1, 2, 2, 3]))
    column = {"inputs": [{"name": "Origin", "datatype": "BYTES", "shape": [-1]}]}
    body, length = framed(
        {
            "inputs": [
                {"name": "Origin", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}}
            ]
        },
        bytes_tensor(b"USA"),
    )
    request = parse_request(body, length)
    check_inputs("cars", column, request)
    assert request.tensors["Origin"].tolist() == ["USA"]  # as its JSON form gives it


def test_undeclared_models_are_not_checked() -> None:
    check_inputs("python-model", {"inputs": [], "outputs": []}, _request("anything", "FP32", [1.0], [1]))


# -- the answer -----------------------------------------------------------------------------------------


def test_answer_in_json_and_binary() -> None:
    outputs = {"prediccion": np.asarray([[1.5], [2.5]]), "label": np.asarray(["a", "bé"], dtype=object)}
    head = {"model_name": "m", "model_version": "1"}
    body, headers, content_type = encode_response("m", head, outputs, InferRequest())
    assert content_type == "application/json" and not headers
    assert orjson.loads(body)["outputs"] == [
        {"name": "prediccion", "datatype": "FP64", "shape": [2, 1], "data": [1.5, 2.5]},
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "bé"]},
    ]
    body, headers, content_type = encode_response("m", head, outputs, InferRequest(binary_output=True))
    assert content_type == "application/octet-stream"
    n = int(headers[HEADER_LENGTH])
    meta = orjson.loads(body[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in meta["outputs"]]
    assert sizes == [16, 4 + 1 + 4 + 3] and len(body) == n + sum(sizes)
    assert np.frombuffer(body[n : n + 16], "<f8").tolist() == [1.5, 2.5]
    assert body[n + 16 :] == serialize_bytes(np.asarray(["a", "bé"], dtype=object))


def test_outputs_that_are_not_tensors_fail_without_their_repr() -> None:
    outputs = {"output_0": np.asarray([{"value": object()}], dtype=object)}
    with pytest.raises(PredictionFailed) as failed:
        encode_response("m", {}, outputs, InferRequest())
    assert "0x" not in failed.value.message and "output_0" in failed.value.message
    mixed = {"output_0": np.asarray([1, 2.5], dtype=object)}
    body, _, _ = encode_response("m", {}, mixed, InferRequest())
    assert orjson.loads(body)["outputs"][0] == {
        "name": "output_0",
        "datatype": "FP64",
        "shape": [2],
        "data": [1.0, 2.5],
    }


def test_requested_outputs_choose_and_order() -> None:
    outputs = {"a": np.asarray([1], np.int32), "b": np.asarray([2.0], np.float32)}
    request = parse_request(
        orjson.dumps(
            {
                "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
                "outputs": [{"name": "b", "parameters": {"binary_data": True}}],
            }
        ),
        None,
    )
    body, headers, _ = encode_response("m", {}, outputs, request)
    n = int(headers[HEADER_LENGTH])
    assert [o["name"] for o in orjson.loads(body[:n])["outputs"]] == ["b"]
    assert np.frombuffer(body[n:], "<f4").tolist() == [2.0]
    request.outputs = [type(request.outputs[0])("zzz")] if request.outputs else None
    with pytest.raises(InvalidInput, match="unknown output 'zzz'"):
        encode_response("m", {}, outputs, request)


# -- the error shape on /v2 -------------------------------------------------------------------------------


def test_one_rendering_rule_by_path() -> None:
    assert is_oip_path("/v2") and is_oip_path("/v2/models/x/infer")
    assert not is_oip_path("/v1/models") and not is_oip_path("/v20") and not is_oip_path("/prod")
    refused = GatewayRejected(403, {"message": "Forbidden"}, {})
    assert error_parts(refused, method="POST", path="/v2/models/m/infer") == (403, {"error": "Forbidden"}, {})
    assert error_parts(refused, method="POST", path="/v1/models/m/predict")[1] == {
        "error": {"code": "forbidden", "message": "Forbidden"},
        "message": "Forbidden",
    }
    assert error_parts(refused, method="POST", path="/prod")[1] == {"message": "Forbidden"}  # a seed route
    status, body, headers = error_parts(
        Throttled("slow down", retry_after=2.5), method="GET", path="/v2/models/m"
    )
    assert (status, body, headers["Retry-After"]) == (429, {"error": "slow down"}, "3")
    assert (
        error_parts(InvalidInput("bad"), method="POST", path="/v1/x")[1]["error"]["code"] == "invalid_input"
    )
    seed = GatewayRejected(429, {"error": "Too Many Requests"}, {"Retry-After": "1"})
    assert error_parts(seed, method="POST", path="/v2/models/m/infer")[1] == {"error": "Too Many Requests"}
    assert error_parts(RuntimeError("boom"), method="POST", path="/v2/models/m/infer")[1] == {
        "error": "internal server error"
    }


def test_shed_answer_on_v2() -> None:
    assert orjson.loads(OIP_SHED_BODY) == {"error": orjson.loads(SHED_BODY)["error"]["message"]}
    edge = Edge.__new__(Edge)
    edge._shed_raw = edge._oip_shed_raw = None
    defaults = [(b"date", b"today")]
    raw = edge.shed_response(defaults, True, "/v2/models/m/infer")
    assert raw.startswith(b"HTTP/1.1 503") and raw.endswith(OIP_SHED_BODY) and b"retry-after: 1" in raw
    assert edge.shed_response(defaults, True, "/v1/models/m/predict").endswith(SHED_BODY)
    assert edge.shed_response(defaults, True, "/v2/models/m/infer") is raw  # cached per shape


# -- in process, through the app ---------------------------------------------------------------------------


ADMIN = "mlg_unitadmn_" + "z" * 40


def _app_run(tmp_path: Path, body: Any, **overrides: Any) -> None:
    overrides.setdefault("services", ["temperatura"])
    settings = Settings(data_dir=tmp_path, admin_key=ADMIN, log={"access_stdout": False}, **overrides)
    app = create_app(settings)

    async def main() -> None:
        async with app.lifespan_context():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                await body(client)

    asyncio.run(main())


def test_binary_infer_through_the_app(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        rows = np.asarray([SEED], dtype="<f8")
        content, length = framed(
            {
                "inputs": [
                    {
                        "name": "temperaturas",
                        "shape": [1, 60],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 480},
                    }
                ],
                "parameters": {"binary_data_output": True},
            },
            rows.tobytes(),
        )
        headers = {HEADER_LENGTH: length, "content-type": "application/octet-stream"}
        r = await c.post("/v2/models/temperatura/infer", content=content, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        n = int(r.headers[HEADER_LENGTH])
        [out] = orjson.loads(r.content[:n])["outputs"]
        assert out["name"] == "prediccion" and out["shape"] == [1, 1]
        binary = np.frombuffer(r.content[n:], "<f8")
        as_json = await c.post(
            "/v2/models/temperatura/infer",
            json={"inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": SEED}]},
        )
        assert binary.tolist() == as_json.json()["outputs"][0]["data"]
        gzip = await c.post(
            "/v2/models/temperatura/infer", content=content, headers={**headers, "content-encoding": "gzip"}
        )
        assert gzip.status_code == 400 and "Content-Encoding" in gzip.json()["error"]
        assert (await c.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
        assert "model_configuration" in (await c.get("/v2/models/temperatura/config")).json()["error"]

    _app_run(tmp_path, body, auth={"model_routes": "public"})


def test_refusals_on_v2_in_process(tmp_path: Path) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        # authenticated first: an anonymous caller's malformed request learns nothing of its tensors
        r = await c.post("/v2/models/temperatura/infer", json={"inputs": []})
        assert r.status_code == 403 and r.json() == {"error": "Forbidden"}
        r = await c.get("/v2/models/temperatura")
        assert r.status_code == 403 and r.json() == {"error": "Forbidden"}
        r = await c.get("/v1/models/temperatura/predict")
        assert r.status_code != 403 or r.json()["error"] == {"code": "forbidden", "message": "Forbidden"}
        r = await c.post("/v2/models/temperatura/infer", content=b"x" * 5000)
        assert r.status_code == 413 and isinstance(r.json()["error"], str)
        r = await c.post("/v1/models/temperatura/predict", content=b"x" * 5000)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    _app_run(tmp_path, body, max_body_bytes=4096)


# -- the hostile review's findings (tests/security/test_v2_hostile.py), in process ----------------


def test_outputs_are_named_once_dimensions_bounded_and_one_header_length() -> None:
    inputs = [{"name": "temperaturas", "datatype": "FP64", "shape": [1, 60], "data": SEED}]
    twice = orjson.dumps({"inputs": inputs, "outputs": [{"name": "prediccion"}] * 2})
    with pytest.raises(InvalidInput, match="requested twice"):
        parse_request(twice, None)
    huge = [{"name": "x", "datatype": "FP64", "shape": [0, 2**62, 2**62], "data": []}]
    with pytest.raises(InvalidInput, match="each dimension is at most"):
        parse_request(orjson.dumps({"inputs": huge}), None)
    body, length = framed({"inputs": inputs})
    assert parse_request(body, [length]).tensors["temperaturas"].shape == (1, 60)
    with pytest.raises(InvalidInput, match="2 Inference-Header-Content-Length headers"):
        parse_request(body, [length, str(int(length) + 8)])


def test_rows_are_capped() -> None:
    def rows(n: int) -> InferRequest:
        return parse_request(
            orjson.dumps({"inputs": [{"name": "x", "datatype": "INT8", "shape": [n, 1], "data": [0] * n}]}),
            None,
        )

    assert rows_of(rows(MAX_ROWS)) == MAX_ROWS
    with pytest.raises(InvalidInput, match=f"at most {MAX_ROWS} rows"):
        rows_of(rows(MAX_ROWS + 1))
    with pytest.raises(InvalidInput, match="at least one row"):
        rows_of(rows(0))


def test_a_request_is_queued_whole_or_not_at_all() -> None:
    ran: list[Any] = []

    def predict(batch: list[Any]) -> list[Any]:
        ran.extend(batch)
        if "bad" in batch:
            raise ValueError("bad")
        return [v * 2 for v in batch]

    async def main() -> None:
        batcher = Batcher(predict, BatchingConfig(max_batch_size=1, max_queue=4), name="t")
        batcher.start()
        try:
            assert batcher.free == 4
            with pytest.raises(Overloaded):
                await batcher.submit_all([1, 2, 3, 4, 5], timeout=5.0)
            assert batcher.free == 4 and ran == []  # nothing was queued
            assert await batcher.submit_all([1, 2, 3], timeout=5.0) == [2, 4, 6]
            ran.clear()
            with pytest.raises(ValueError):
                await batcher.submit_all(["bad", 1, 2, 3], timeout=5.0)
            await asyncio.sleep(0.05)
            # the rows still queued behind the failure were dropped (one batch may have started)
            assert ran[0] == "bad" and len(ran) <= 2, ran
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_a_1d_bytes_tensor_reaches_decode_as_its_elements() -> None:
    class Echo(ModelRuntime):
        name = "echo"

        def load(self, ctx: Any) -> None: ...

        def decode(self, payload: Any) -> Any:
            return payload

        def predict(self, batch: list[Any]) -> list[Any]:
            return batch

    texts = np.array(["a", b"b"], dtype=object)
    assert Echo().decode_tensors({"x": texts}) == ["a", b"b"]
    assert Echo().decode_tensors({"x": np.array([[1.0, 2.0]])}) == [[1.0, 2.0]]
    assert Echo().decode_tensors({"x": np.array([3, 4])}) == [3, 4]


def test_a_requests_images_are_bounded_together_before_decoding() -> None:
    pytest.importorskip("PIL")
    from tests.security.hostile_images import png

    small = png(100, 100, depth=8, color=2)
    assert check_request_images([small, small, np.zeros((2, 2, 3), np.uint8)], max_pixels=20_000) == 20_000
    with pytest.raises(InvalidInput, match="more than 20000 pixels in all"):
        check_request_images([small, small, small], max_pixels=20_000)
    with pytest.raises(InvalidInput, match="more than 5000 pixels"):  # one image over its own cap
        check_request_images([small], max_pixels=5_000)
    with pytest.raises(InvalidInput, match="JPEG, PNG or WebP"):
        check_request_images([b"GIF89a"], max_pixels=5_000)


def test_the_native_api_has_one_envelope_for_gateway_refusals_too() -> None:
    """/v1: ``{"error": {"code", "message"}}`` everywhere — a gateway refusal keeps API Gateway's
    ``message`` beside it (SPEC §3.1's shapes), with the code of the error it stands for."""
    from mlgate.errors import Forbidden, QuotaExceeded, Unauthorized
    from mlgate.http.gateway import _rejection

    cases = [
        (Forbidden("Forbidden"), 403, "forbidden"),
        (Unauthorized("Authentication Failed"), 401, "unauthorized"),
        (Throttled("Too Many Requests", retry_after=0.2), 429, "throttled"),
        (QuotaExceeded("Limit Exceeded", retry_after=60.0), 429, "quota_exceeded"),
    ]
    for exc, status, code in cases:
        rejected = _rejection(exc, {}, None)
        got, body, headers = error_parts(rejected, method="POST", path="/v1/models/m/predict")
        assert got == status
        assert body == {"error": {"code": code, "message": exc.message}, "message": exc.message}
        if status == 429:
            assert "Retry-After" in headers and "Retry-After-Ms" in headers
        # the seed routes (their own renderer) and /v2 keep theirs
        assert error_parts(rejected, method="POST", path="/prod")[1] == {"message": exc.message}
        assert error_parts(rejected, method="POST", path="/v2/models/m/infer")[1] == {"error": exc.message}
    # a route's own refusal without a code: from its status; other shapes untouched
    assert error_parts(GatewayRejected(404, {"message": "no"}, {}), method="GET", path="/v1/x")[1] == {
        "error": {"code": "not_found", "message": "no"},
        "message": "no",
    }
    detail = GatewayRejected(401, {"detail": "Authentication Failed"}, {})
    assert error_parts(detail, method="GET", path="/v1/x")[1] == {"detail": "Authentication Failed"}
