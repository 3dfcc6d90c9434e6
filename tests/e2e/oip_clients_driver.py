"""Drive a running mlgate with NVIDIA's tritonclient and KServe's InferenceRESTClient.

Run by ``tests/e2e/test_oip_clients_e2e.py`` with the tools venv's Python (the clients are
test-only tools, installed there: kserve pins what the project's venv must not change). It
imports neither mlgate nor pytest: it makes every call the two HTTP clients offer that mlgate
supports, plus the refusals, and prints one JSON object ``{check: {"ok", "detail", ...}}``.

    python oip_clients_driver.py <url> <api key> <jpeg for vehiculos> <jpeg for intrusos>
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

SEED = [round(22.1 - i * 0.1, 1) for i in range(60)]
RESULTS: dict[str, dict[str, Any]] = {}


def check(name: str, fn: Callable[[], Any]) -> None:
    """Run one check: ``fn`` returns a detail dict (ok) or raises (not ok, with the error)."""
    try:
        detail = fn()
        RESULTS[name] = {"ok": True, **(detail if isinstance(detail, dict) else {"value": detail})}
    except Exception as exc:  # reported, not raised: the test names every failing call
        RESULTS[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }


def expect_error(
    fn: Callable[[], Any], status: str, fragment: str, exc_type: type[Exception]
) -> dict[str, Any]:
    """``fn`` must raise ``exc_type`` whose message carries mlgate's text ``fragment``."""
    try:
        fn()
    except exc_type as exc:
        message = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
        got_status = exc.status() if hasattr(exc, "status") and callable(exc.status) else None
        if status and got_status is not None and str(got_status) != status:
            raise AssertionError(f"status {got_status}, expected {status}: {message}") from None
        if fragment not in str(message):
            raise AssertionError(f"{fragment!r} not in the client's message {message!r}") from None
        return {"message": str(message), "status": got_status}
    raise AssertionError("no error raised")


def triton(url: str, key: str, vehicle: bytes, scene: bytes) -> None:
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    client = th.InferenceServerClient(url.removeprefix("http://"), connection_timeout=30, network_timeout=60)

    def auth() -> dict[str, str]:  # a new dict per call: infer() adds its framing header to the one given
        return {"x-api-key": key}

    check("triton.is_server_live", lambda: {"value": client.is_server_live()})
    check("triton.is_server_ready", lambda: {"value": client.is_server_ready()})

    def server_metadata() -> dict[str, Any]:
        meta = client.get_server_metadata()
        assert "binary_tensor_data" in meta["extensions"], meta
        return {"value": meta}

    check("triton.get_server_metadata", server_metadata)

    def model_metadata() -> dict[str, Any]:
        models = ("temperatura", "cardiaco", "vehiculos", "intrusos")
        metas = {m: client.get_model_metadata(m, headers=auth()) for m in models}
        metas["temperatura_v1"] = client.get_model_metadata("temperatura", model_version="1", headers=auth())
        return {"value": metas}

    check("triton.get_model_metadata", model_metadata)
    check("triton.is_model_ready", lambda: {"value": client.is_model_ready("temperatura", headers=auth())})
    check(
        "triton.is_model_ready_version",
        lambda: {"value": client.is_model_ready("temperatura", model_version="1", headers=auth())},
    )
    check(
        "triton.get_model_config",
        lambda: expect_error(
            lambda: client.get_model_config("temperatura", headers=auth()),
            "404",
            "model_configuration extension",
            InferenceServerException,
        ),
    )

    rows = np.asarray([SEED, SEED[::-1]], dtype=np.float64)

    def temperatura(binary_in: bool, binary_out: bool | None) -> Callable[[], Any]:
        def run() -> dict[str, Any]:
            x = th.InferInput("temperaturas", list(rows.shape), "FP64")
            x.set_data_from_numpy(rows, binary_data=binary_in)
            outputs = (
                None
                if binary_out is None
                else [th.InferRequestedOutput("prediccion", binary_data=binary_out)]
            )
            result = client.infer("temperatura", [x], outputs=outputs, headers=auth(), request_id="r1")
            y = result.as_numpy("prediccion")
            assert y is not None and y.shape == (2, 1) and y.dtype == np.float64, y
            response = result.get_response()
            assert response["id"] == "r1" and response["model_name"] == "temperatura", response
            return {"value": y.reshape(-1).tolist()}

        return run

    check("triton.infer_json_in_json_out", temperatura(False, False))
    check("triton.infer_binary_in_binary_out", temperatura(True, True))
    check("triton.infer_binary_in_default_out", temperatura(True, None))  # binary_data_output
    check("triton.infer_json_in_binary_out", temperatura(False, True))

    def cardiaco() -> dict[str, Any]:
        vitals = np.zeros((1, 2, 20, 9), dtype=np.float32)
        x = th.InferInput("vitals", list(vitals.shape), "FP32")
        x.set_data_from_numpy(vitals)
        y = client.infer("cardiaco", [x], headers=auth()).as_numpy("probabilities")
        assert y is not None and y.shape == (1, 2, 4) and y.dtype == np.float32, y
        return {"value": y.tolist()}

    check("triton.infer_cardiaco_fp32", cardiaco)

    def image(model: str, data: bytes, output: str, binary: bool) -> Callable[[], Any]:
        def run() -> dict[str, Any]:
            element = data if binary else base64.b64encode(data)
            images = np.asarray([element], dtype=np.object_)
            x = th.InferInput("images" if model == "vehiculos" else "image", [1], "BYTES")
            x.set_data_from_numpy(images, binary_data=binary)
            result = client.infer(model, [x], headers=auth())
            y = result.as_numpy(output)
            assert y is not None, result.get_response()
            return {"value": y.tolist(), "outputs": [o["name"] for o in result.get_response()["outputs"]]}

        return run

    check("triton.infer_vehiculos_bytes_binary", image("vehiculos", vehicle, "Softmax", True))
    check("triton.infer_vehiculos_bytes_base64_json", image("vehiculos", vehicle, "Softmax", False))
    check("triton.infer_intrusos_bytes_binary", image("intrusos", scene, "output", True))

    def requested(name: str, fragment: str, status: str = "400") -> Callable[[], Any]:
        def run() -> dict[str, Any]:
            x = th.InferInput("temperaturas", list(rows.shape), "FP64")
            x.set_data_from_numpy(rows)
            out = [th.InferRequestedOutput(name)]
            return expect_error(
                lambda: client.infer("temperatura", [x], outputs=out, headers=auth()),
                status,
                fragment,
                InferenceServerException,
            )

        return run

    check("triton.error_unknown_output", requested("nope", "unknown output 'nope'"))

    def wrong(
        model: str, name: str, datatype: str, array: np.ndarray, status: str, fragment: str, **kw: Any
    ) -> Any:
        def run() -> dict[str, Any]:
            x = th.InferInput(name, list(array.shape), datatype)
            x.set_data_from_numpy(array, binary_data=kw.get("binary", True))
            return expect_error(
                lambda: client.infer(model, [x], headers=kw.get("headers", auth())),
                status,
                fragment,
                InferenceServerException,
            )

        return run

    ints = rows.astype(np.int32)
    check("triton.error_int32_into_fp64", wrong("temperatura", "temperaturas", "INT32", ints, "400", "INT32"))
    check(
        "triton.error_int32_into_fp64_json",
        wrong("temperatura", "temperaturas", "INT32", ints, "400", "INT32", binary=False),
    )
    check("triton.error_unknown_input", wrong("temperatura", "x", "FP64", rows, "400", "unknown input 'x'"))
    check(
        "triton.error_wrong_shape",
        wrong("temperatura", "temperaturas", "FP64", rows[:, :59], "400", "[-1, 60]"),
    )
    check("triton.error_unknown_model", wrong("nosuchmodel", "x", "FP64", rows, "404", "nosuchmodel"))
    check(
        "triton.error_no_key",
        wrong("temperatura", "temperaturas", "FP64", rows, "403", "Forbidden", headers={}),
    )
    check(
        "triton.error_bad_key",
        wrong(
            "temperatura", "temperaturas", "FP64", rows, "403", "Forbidden", headers={"x-api-key": "mlg_x_y"}
        ),
    )
    check(
        "triton.error_metadata_unknown_model",
        lambda: expect_error(
            lambda: client.get_model_metadata("nosuchmodel", headers=auth()),
            "404",
            "nosuchmodel",
            InferenceServerException,
        ),
    )
    check(
        "triton.error_not_an_image",
        wrong("vehiculos", "images", "BYTES", np.asarray([b"not an image"], dtype=np.object_), "400", "JPEG"),
    )
    # Triton-only extensions: a clear error the client can print (the protocol's {"error": "..."}).
    unsupported: dict[str, Callable[[], Any]] = {
        "get_model_repository_index": lambda: client.get_model_repository_index(headers=auth()),
        "load_model": lambda: client.load_model("temperatura", headers=auth()),
        "unload_model": lambda: client.unload_model("temperatura", headers=auth()),
        "get_inference_statistics": lambda: client.get_inference_statistics("temperatura", headers=auth()),
        "get_trace_settings": lambda: client.get_trace_settings(headers=auth()),
        "update_trace_settings": lambda: client.update_trace_settings(settings={}, headers=auth()),
        "get_log_settings": lambda: client.get_log_settings(headers=auth()),
        "update_log_settings": lambda: client.update_log_settings(settings={}, headers=auth()),
        "get_system_shared_memory_status": lambda: client.get_system_shared_memory_status(headers=auth()),
        "get_cuda_shared_memory_status": lambda: client.get_cuda_shared_memory_status(headers=auth()),
        "unregister_system_shared_memory": lambda: client.unregister_system_shared_memory(headers=auth()),
    }
    for name, call in unsupported.items():
        check(
            f"triton.unsupported.{name}",
            lambda call=call: expect_error(call, "", "not", InferenceServerException),  # type: ignore[misc]
        )

    def compressed() -> dict[str, Any]:
        x = th.InferInput("temperaturas", list(rows.shape), "FP64")
        x.set_data_from_numpy(rows)
        return expect_error(
            lambda: client.infer("temperatura", [x], headers=auth(), request_compression_algorithm="gzip"),
            "400",
            "Content-Encoding gzip is not supported",
            InferenceServerException,
        )

    check("triton.unsupported.request_compression", compressed)

    def compressed_answer() -> dict[str, Any]:  # asked, not required: the answer comes uncompressed
        x = th.InferInput("temperaturas", list(rows.shape), "FP64")
        x.set_data_from_numpy(rows)
        result = client.infer("temperatura", [x], headers=auth(), response_compression_algorithm="gzip")
        return {"value": result.as_numpy("prediccion").reshape(-1).tolist()}

    check("triton.infer_response_compression_asked", compressed_answer)

    def async_infer() -> dict[str, Any]:  # the greenlet pool's path: the same request
        x = th.InferInput("temperaturas", list(rows.shape), "FP64")
        x.set_data_from_numpy(rows)
        y = client.async_infer("temperatura", [x], headers=auth()).get_result().as_numpy("prediccion")
        return {"value": y.reshape(-1).tolist()}

    check("triton.async_infer", async_infer)

    def offline_body() -> dict[str, Any]:  # generate_request_body / parse_response_body, sent by httpx
        import httpx

        x = th.InferInput("temperaturas", list(rows.shape), "FP64")
        x.set_data_from_numpy(rows)
        body, json_size = th.InferenceServerClient.generate_request_body([x])
        headers = {**auth(), "Inference-Header-Content-Length": str(json_size)}
        r = httpx.post(f"{url}/v2/models/temperatura/infer", content=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        length = r.headers.get("Inference-Header-Content-Length")
        result = th.InferenceServerClient.parse_response_body(
            r.content, header_length=None if length is None else int(length)
        )
        return {"value": result.as_numpy("prediccion").reshape(-1).tolist()}

    check("triton.generate_request_body_parse_response_body", offline_body)
    client.close()
    asyncio.run(triton_aio(url, key, rows))


async def triton_aio(url: str, key: str, rows: np.ndarray) -> None:
    """tritonclient.http.aio (aiohttp): the same calls, asynchronously."""
    import tritonclient.http.aio as ta
    from tritonclient.utils import InferenceServerException

    async with ta.InferenceServerClient(url.removeprefix("http://")) as client:
        for name, call in (
            ("is_server_live", client.is_server_live()),
            ("is_server_ready", client.is_server_ready()),
            ("get_server_metadata", client.get_server_metadata()),
            ("get_model_metadata", client.get_model_metadata("temperatura", headers={"x-api-key": key})),
            ("is_model_ready", client.is_model_ready("temperatura", headers={"x-api-key": key})),
        ):
            try:
                RESULTS[f"triton.aio.{name}"] = {"ok": bool(await call), "value": "ok"}
            except Exception as exc:
                RESULTS[f"triton.aio.{name}"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        for binary in (True, False):
            x = ta.InferInput("temperaturas", list(rows.shape), "FP64")
            x.set_data_from_numpy(rows, binary_data=binary)
            name = f"triton.aio.infer_{'binary' if binary else 'json'}"
            try:
                result = await client.infer("temperatura", [x], headers={"x-api-key": key})
                RESULTS[name] = {"ok": True, "value": result.as_numpy("prediccion").reshape(-1).tolist()}
            except Exception as exc:
                RESULTS[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            x = ta.InferInput("temperaturas", list(rows.shape), "INT32")
            x.set_data_from_numpy(rows.astype(np.int32))
            await client.infer("temperatura", [x], headers={"x-api-key": key})
            RESULTS["triton.aio.error_int32_into_fp64"] = {"ok": False, "error": "no error raised"}
        except InferenceServerException as exc:
            ok = exc.status() == "400" and "INT32" in str(exc.message())
            RESULTS["triton.aio.error_int32_into_fp64"] = {
                "ok": ok,
                "message": exc.message(),
                "status": exc.status(),
            }


def kserve(url: str, key: str, vehicle: bytes) -> None:
    import httpx
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput

    auth = {"x-api-key": key}
    rows = np.asarray([SEED, SEED[::-1]], dtype=np.float64)

    async def main() -> None:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60, retries=1))

        async def call(name: str, coro: Any) -> None:
            try:
                value = await coro
                RESULTS[name] = {"ok": True, "value": value}
            except Exception as exc:
                RESULTS[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

        async def error(name: str, coro: Any, status: int, fragment: str) -> None:
            try:
                await coro
            except httpx.HTTPStatusError as exc:
                ok = exc.response.status_code == status and fragment in str(exc)
                RESULTS[name] = {"ok": ok, "message": str(exc), "status": exc.response.status_code}
                return
            except Exception as exc:
                RESULTS[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                return
            RESULTS[name] = {"ok": False, "error": "no error raised"}

        await call("kserve.is_server_live", client.is_server_live(url))
        await call("kserve.is_server_ready", client.is_server_ready(url))
        await call("kserve.is_model_ready", client.is_model_ready(url, "temperatura", headers=dict(auth)))

        async def infer(binary: bool, outputs: list[Any] | None = None) -> Any:
            x = InferInput("temperaturas", list(rows.shape), "FP64")
            x.set_data_from_numpy(rows, binary_data=binary)
            request = InferRequest("temperatura", [x], request_id="k1", request_outputs=outputs)
            response = await client.infer(url, request, model_name="temperatura", headers=dict(auth))
            assert response.id == "k1", response.id
            out = response.outputs[0]
            assert out.name == "prediccion" and out.datatype == "FP64" and out.shape == [2, 1], out
            return out.as_numpy().reshape(-1).tolist()

        await call("kserve.infer_json", infer(False))
        await call("kserve.infer_binary_in", infer(True))
        await call(
            "kserve.infer_binary_out",
            infer(False, [RequestedOutput("prediccion", {"binary_data": True})]),
        )

        async def dict_infer() -> Any:
            body = {"inputs": [{"name": "temperaturas", "shape": [1, 60], "datatype": "FP64", "data": SEED}]}
            response = await client.infer(url, body, model_name="temperatura", headers=dict(auth))
            return response.outputs[0].as_numpy().reshape(-1).tolist()

        await call("kserve.infer_dict", dict_infer())

        async def image() -> Any:
            x = InferInput("images", [1], "BYTES")
            x.set_data_from_numpy(np.asarray([vehicle], dtype=np.object_), binary_data=True)
            request = InferRequest("vehiculos", [x])
            response = await client.infer(url, request, model_name="vehiculos", headers=dict(auth))
            return response.outputs[0].as_numpy().tolist()

        await call("kserve.infer_vehiculos_bytes_binary", image())

        async def bad(
            name: str, datatype: str, array: np.ndarray, model: str = "temperatura", **kw: Any
        ) -> Any:
            x = InferInput(name, list(array.shape), datatype)
            x.set_data_from_numpy(array, binary_data=False)
            request = InferRequest(model, [x], request_outputs=kw.get("outputs"))
            return await client.infer(url, request, model_name=model, headers=kw.get("headers", dict(auth)))

        ints = rows.astype(np.int32)
        await error("kserve.error_int32_into_fp64", bad("temperaturas", "INT32", ints), 400, "INT32")
        await error("kserve.error_unknown_input", bad("x", "FP64", rows), 400, "unknown input 'x'")
        await error(
            "kserve.error_unknown_output",
            bad("temperaturas", "FP64", rows, outputs=[RequestedOutput("nope")]),
            400,
            "unknown output 'nope'",
        )
        await error(
            "kserve.error_unknown_model", bad("x", "FP64", rows, model="nosuchmodel"), 404, "nosuchmodel"
        )
        await error("kserve.error_no_key", bad("temperaturas", "FP64", rows, headers={}), 403, "Forbidden")
        await client.close()

    asyncio.run(main())


if __name__ == "__main__":
    base, api_key, vehicle_path, scene_path = sys.argv[1:5]
    with open(vehicle_path, "rb") as f:
        vehicle_jpeg = f.read()
    with open(scene_path, "rb") as f:
        scene_jpeg = f.read()
    try:
        triton(base, api_key, vehicle_jpeg, scene_jpeg)
    except Exception as exc:
        RESULTS["triton"] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    try:
        kserve(base, api_key, vehicle_jpeg)
    except Exception as exc:
        RESULTS["kserve"] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    json.dump(RESULTS, sys.stdout, default=str)
