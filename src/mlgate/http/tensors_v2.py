"""Open Inference Protocol tensors: the request's JSON and binary forms, checked against the model.

An inference request is JSON, or — Triton's *binary tensor data* extension, which
tritonclient uses by default — a JSON header followed by raw tensor bytes: the request
header ``Inference-Header-Content-Length: <n>`` gives the JSON's length in bytes, each input
sent in binary has ``parameters.binary_data_size`` instead of ``data``, and the inputs' bytes
follow the JSON in the inputs' order. Numbers are little-endian, row-major; a ``BYTES`` tensor
is its elements each prefixed by its length (4 bytes, little-endian). An answer uses the same
framing (``Content-Type: application/octet-stream``) when an output is asked for in binary
(``outputs[i].parameters.binary_data: true``, or ``parameters.binary_data_output: true`` for
every output).

Everything is bounded before it is allocated: the sizes are checked against the body (itself
within the edge's body limit), a tensor's element count (at most :data:`MAX_ELEMENTS`) times
its datatype's size against its ``binary_data_size``, and a ``BYTES`` tensor's element count
against its bytes (4 per element at least) before its elements are read.

:func:`check_inputs` holds the request to the model's metadata (``GET /v2/models/{name}``):
no unknown or missing input, each input's datatype and shape as declared (``-1`` is any size),
no unknown requested output. A model that declares no inputs (a ``python`` model without a
``metadata`` method) is not checked there; its runtime still validates what it decodes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from mlgate.errors import InvalidInput, PredictionFailed
from mlgate.payloads import parse_json

__all__ = [
    "BINARY_CONTENT_TYPE",
    "DTYPES",
    "HEADER_LENGTH",
    "MAX_ELEMENTS",
    "MAX_ROWS",
    "InferRequest",
    "Requested",
    "check_inputs",
    "check_outputs",
    "datatype_of",
    "encode_response",
    "parse_request",
    "rows_of",
    "serialize_bytes",
]

#: The request and response header of the binary tensor data extension.
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"
#: The numeric datatypes (``BYTES`` is the one other).
DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*sorted(DTYPES), "BYTES")
_NAMES = {np.dtype(t).name: n for n, t in DTYPES.items()}
#: The most elements one tensor may declare (its shape's product).
MAX_ELEMENTS = 16_000_000
#: The most rows (first dimension) one request may hold: the native batch route's cap.
MAX_ROWS = 1024
_MAX_RANK = 32
_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class Requested:
    """An output the request names (``outputs``): its name, and whether it goes back in binary."""

    name: str
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    """A parsed request: its tensors (in order), their datatypes, the outputs asked for."""

    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    outputs: list[Requested] | None = None
    #: ``parameters.binary_data_output``: every output in binary unless it says otherwise
    binary_output: bool = False
    id: str | None = None


# -- the request ---------------------------------------------------------------------------------


def parse_request(body: bytes, header_length: str | list[str] | None) -> InferRequest:
    """The request in ``body``; ``header_length`` is the ``Inference-Header-Content-Length``
    header's value, or its values (None or none: the body is all JSON; more than one: 400, the
    framing would be ambiguous)."""
    if isinstance(header_length, list):
        if len(header_length) > 1:
            raise InvalidInput(f"the request has {len(header_length)} {HEADER_LENGTH} headers: send one")
        header_length = header_length[0] if header_length else None
    binary = memoryview(b"")
    if header_length is None:
        head = parse_json(body)
    else:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 12:
            raise InvalidInput(f"{HEADER_LENGTH} must be the JSON header's length in bytes")
        n = int(text)
        if not 0 < n <= len(body):
            raise InvalidInput(
                f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes: "
                "the JSON header is the first part of the body"
            )
        try:
            head = parse_json(body[:n])
        except InvalidInput as exc:
            what = f"the body's first {n} bytes ({HEADER_LENGTH})"
            raise InvalidInput(f"{what} are not a JSON inference request: {exc.message}") from None
        binary = memoryview(body)[n:]
    if not isinstance(head, dict) or not isinstance(head.get("inputs"), list) or not head["inputs"]:
        raise InvalidInput('an inference request is {"inputs": [{name, shape, datatype, data}, ...]}')
    request = InferRequest()
    if isinstance(head.get("id"), str):
        request.id = head["id"]
    parameters = _parameters(head.get("parameters"), "the request")
    request.binary_output = _flag(parameters.get("binary_data_output"), "parameters.binary_data_output")
    offset = 0
    for spec in head["inputs"]:
        name, datatype, array, used = _input(spec, binary, offset)
        if name in request.tensors:
            raise InvalidInput(f"input '{name}' is given twice")
        request.tensors[name], request.datatypes[name] = array, datatype
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the JSON header that no input's "
            "parameters.binary_data_size accounts for"
        )
    outputs = head.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise InvalidInput('"outputs" is a list of {"name", "parameters"}')
        request.outputs = []
        seen: set[str] = set()
        for spec in outputs:
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
                raise InvalidInput('each requested output is {"name": "<output>"[, "parameters"]}')
            if spec["name"] in seen:  # each copy would be rendered again: an amplification
                raise InvalidInput(f"output '{spec['name'][:100]}' is requested twice")
            seen.add(spec["name"])
            params = _parameters(spec.get("parameters"), f"output '{spec['name']}'")
            if "classification" in params:
                raise InvalidInput("the classification extension is not supported: ask for the raw output")
            binary_data = params.get("binary_data")
            request.outputs.append(
                Requested(spec["name"], None if binary_data is None else _flag(binary_data, "binary_data"))
            )
    return request


def rows_of(request: InferRequest) -> int:
    """The request's rows (its first tensor's first dimension; a scalar is one): each is one item
    for the model's batcher and one unit. 400 for none, or more than :data:`MAX_ROWS`."""
    first = next(iter(request.tensors.values()))
    rows = int(first.shape[0]) if first.ndim else 1
    if rows < 1:
        raise InvalidInput("an inference request needs at least one row (the first dimension is 0)")
    if rows > MAX_ROWS:
        raise InvalidInput(
            f"an inference request holds at most {MAX_ROWS} rows (the first dimension), not {rows}: split it"
        )
    return rows


def _parameters(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"the parameters of {what} are an object")
    return value


def _flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} is true or false")
    return value


def _input(spec: Any, binary: memoryview, offset: int) -> tuple[str, str, np.ndarray, int]:
    """One input: ``(name, datatype, array, binary bytes used)``."""
    if not isinstance(spec, dict):
        raise InvalidInput("each input is an object {name, shape, datatype, data}")
    name, shape, datatype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise InvalidInput("input.name must be a non-empty string")
    if (
        not isinstance(shape, list)
        or len(shape) > _MAX_RANK
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidInput(f"input '{name}': shape must be a list of non-negative integers")
    if any(d > MAX_ELEMENTS for d in shape):  # [0, 2**62, 2**62] has no elements, but no array has it
        raise InvalidInput(f"input '{name}': each dimension is at most {MAX_ELEMENTS}")
    if datatype not in DATATYPES:
        raise InvalidInput(f"input '{name}': datatype must be one of {', '.join(DATATYPES)}")
    count = math.prod(shape)  # Python integers: no overflow
    if count > MAX_ELEMENTS:
        raise InvalidInput(f"input '{name}': at most {MAX_ELEMENTS} elements")
    params = _parameters(spec.get("parameters"), f"input '{name}'")
    for unsupported in ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"):
        if unsupported in params:
            raise InvalidInput(f"input '{name}': the shared-memory extensions are not supported")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise InvalidInput(f"input '{name}' has neither data nor parameters.binary_data_size")
        array = _from_json(name, datatype, shape, count, spec["data"])
        return name, datatype, array, 0
    if "data" in spec:
        raise InvalidInput(f"input '{name}' has both data and parameters.binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input '{name}': parameters.binary_data_size is a number of bytes")
    if not binary and offset == 0 and size > 0:
        raise InvalidInput(
            f"input '{name}' is binary (parameters.binary_data_size) but the request has no "
            f"{HEADER_LENGTH} header and no binary data after its JSON"
        )
    if offset + size > len(binary):
        raise InvalidInput(
            f"input '{name}': parameters.binary_data_size is {size} but only "
            f"{len(binary) - offset} bytes of binary data are left"
        )
    array = _from_binary(name, datatype, shape, count, binary[offset : offset + size])
    return name, datatype, array, size


def _from_json(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    if datatype == "BYTES":
        flat = _flatten(data, name)
        if not all(isinstance(v, str) for v in flat):
            raise InvalidInput(
                f"input '{name}': a BYTES tensor in JSON holds strings (an image: its base64 text)"
            )
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
    else:
        flat = _flatten(data, name)
        array = _numbers(name, datatype, flat)
    if array.size != count:
        raise InvalidInput(f"input '{name}': {array.size} values do not fill shape {shape}")
    return array.reshape(shape)


def _flatten(data: Any, name: str) -> list[Any]:
    """The row-major elements of ``data`` (a flat or nested list, or one value)."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > _MAX_RANK:
                    raise InvalidInput(f"input '{name}': data is nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _numbers(name: str, datatype: str, flat: list[Any]) -> np.ndarray:
    dtype = DTYPES[datatype]
    if datatype == "BOOL":
        if not all(type(v) is bool for v in flat):
            raise InvalidInput(f"input '{name}': data does not match datatype BOOL (true or false)")
        return np.asarray(flat, dtype=np.bool_)
    if dtype.kind in "iu":
        if not all(type(v) is int for v in flat):
            raise InvalidInput(f"input '{name}': data does not match datatype {datatype} (integers)")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise InvalidInput(f"input '{name}': values outside the {datatype} range")
        return np.asarray(flat, dtype=dtype)
    if not all(type(v) is float or type(v) is int for v in flat):
        raise InvalidInput(f"input '{name}': data does not match datatype {datatype} (numbers)")
    with np.errstate(over="ignore"):
        array = np.asarray(flat, dtype=dtype)
    if not np.isfinite(array).all():
        raise InvalidInput(
            f"input '{name}': values out of the {datatype} range (NaN and infinity are refused)"
        )
    return array


def _from_binary(name: str, datatype: str, shape: list[int], count: int, raw: memoryview) -> np.ndarray:
    if datatype == "BYTES":
        return np.asarray(_bytes_elements(name, raw, count), dtype=object).reshape(shape)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input '{name}': shape {shape} of {datatype} is {count * dtype.itemsize} bytes, "
            f"parameters.binary_data_size says {len(raw)}"
        )
    if datatype == "BOOL":
        values = np.frombuffer(raw, dtype=np.uint8)
        if values.size and values.max() > 1:
            raise InvalidInput(f"input '{name}': BOOL bytes are 0 or 1")
        return values.astype(np.bool_).reshape(shape)
    array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"input '{name}': NaN and infinite values are refused")
    return array


def _bytes_elements(name: str, raw: memoryview, count: int) -> list[bytes]:
    """The ``count`` length-prefixed elements of a binary BYTES tensor (all of ``raw``)."""
    if count * _LENGTH.size > len(raw):
        raise InvalidInput(
            f"input '{name}': {count} BYTES elements need at least {count * _LENGTH.size} bytes, "
            f"parameters.binary_data_size says {len(raw)}"
        )
    elements: list[bytes] = []
    offset = 0
    for _ in range(count):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInput(f"input '{name}': the BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInput(f"input '{name}': a BYTES element's length runs past its data")
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    if offset != len(raw):
        raise InvalidInput(f"input '{name}': {len(raw) - offset} bytes after its {count} BYTES elements")
    return elements


# -- the request against the model's metadata -----------------------------------------------------------


def _describe(spec: dict[str, Any]) -> str:
    return f"{spec.get('datatype')} {spec.get('shape')}"


def _alternatives(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The declared form of an input and the other forms it accepts (``parameters.also_accepts``:
    an image input's decoded pixels)."""
    forms = [spec]
    params = spec.get("parameters")
    also = params.get("also_accepts") if isinstance(params, dict) else None
    if isinstance(also, list):
        forms += [a for a in also if isinstance(a, dict)]
    return forms


def _shape_fits(shape: tuple[int, ...], declared: Any) -> bool:
    if not isinstance(declared, list):
        return True
    return len(shape) == len(declared) and all(
        not isinstance(d, int) or d < 0 or d == s for d, s in zip(declared, shape, strict=True)
    )


def check_inputs(model: str, metadata: dict[str, Any], request: InferRequest) -> None:
    """Hold the request's inputs to the model's declared ones (nothing to check when none are
    declared); image inputs in BYTES become text only where the model does not take images."""
    declared = {s["name"]: s for s in metadata.get("inputs") or [] if isinstance(s, dict) and "name" in s}
    if not declared:
        return
    takes = ", ".join(f"'{n}' ({_describe(s)})" for n, s in declared.items())
    for name in request.tensors:
        if name not in declared:
            raise InvalidInput(f"unknown input '{name}' for model '{model}': it takes {takes}")
    missing = [n for n in declared if n not in request.tensors]
    if missing:
        raise InvalidInput(
            f"model '{model}' needs the input(s) {', '.join(map(repr, missing))}: it takes {takes}"
        )
    for name, array in request.tensors.items():
        spec = declared[name]
        datatype = request.datatypes[name]
        forms = [f for f in _alternatives(spec) if f.get("datatype") == datatype]
        if not forms:
            accepted = " or ".join(_describe(f) for f in _alternatives(spec))
            raise InvalidInput(
                f"input '{name}': datatype {datatype} does not match the model, which takes {accepted}"
            )
        if not any(_shape_fits(array.shape, f.get("shape")) for f in forms):
            shapes = " or ".join(str(f.get("shape")) for f in forms)
            raise InvalidInput(
                f"input '{name}': shape {list(array.shape)} does not match the model's {shapes} "
                "(-1: any size)"
            )
        if datatype == "BYTES" and not _is_image(spec):
            request.tensors[name] = _as_text(name, array)


def _is_image(spec: dict[str, Any]) -> bool:
    params = spec.get("parameters")
    return isinstance(params, dict) and params.get("content_type") == "image"


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    """A BYTES tensor's binary elements as text (UTF-8), as its JSON form gives them."""
    flat = array.reshape(-1)
    if not any(isinstance(v, bytes) for v in flat):
        return array
    out = np.empty(flat.size, dtype=object)
    try:
        out[:] = [v.decode("utf-8") if isinstance(v, bytes) else v for v in flat]
    except UnicodeDecodeError:
        raise InvalidInput(f"input '{name}': BYTES elements must be UTF-8 text") from None
    return out.reshape(array.shape)


def check_outputs(model: str, metadata: dict[str, Any], request: InferRequest) -> None:
    """Refuse requested outputs the model does not declare (before inference when it declares them);
    each is named once (:func:`parse_request`), so at most as many as the model declares."""
    if request.outputs is None:
        return
    declared = [s["name"] for s in metadata.get("outputs") or [] if isinstance(s, dict) and "name" in s]
    if not declared:
        return
    returns = ", ".join(map(repr, declared))
    for out in request.outputs:
        if out.name not in declared:
            raise InvalidInput(f"unknown output '{out.name}' for model '{model}': it returns {returns}")


# -- the answer --------------------------------------------------------------------------------------


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype of an output array (text and bytes are ``BYTES``; anything else not
    numeric is ``FP64`` if it converts, see :func:`_tensor_of`)."""
    if array.dtype.kind in "SU":
        return "BYTES"
    if array.dtype.kind == "O":
        flat = array.reshape(-1)
        return "BYTES" if all(isinstance(v, str | bytes) for v in flat) else "FP64"
    return _NAMES.get(array.dtype.name, "FP64")


def _tensor_of(model: str, name: str, value: Any) -> tuple[np.ndarray, str]:
    """An output as a protocol tensor: numbers, booleans or text — a model's output of anything
    else (objects, mixed lists) is its failure, answered without its repr (no addresses leak)."""
    array = np.asarray(value)
    datatype = datatype_of(array)
    if datatype == "FP64" and array.dtype != np.float64:
        try:
            with np.errstate(all="ignore"):
                array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise PredictionFailed(
                f"model '{model}' returned output '{name}' that is not a tensor of numbers or text"
            ) from None
        if not np.isfinite(array).all():  # JSON has no inf/NaN (as the data plane checks numbers)
            raise InvalidInput("input drives the model to a non-finite output (values out of range)")
    return array, datatype


def serialize_bytes(values: np.ndarray) -> bytes:
    """A BYTES tensor in binary: each element (text as UTF-8) prefixed by its length."""
    parts: list[bytes] = []
    for value in values.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def _json_values(array: np.ndarray, datatype: str) -> list[Any]:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return flat.tolist()


def encode_response(
    model: str, head: dict[str, Any], outputs: dict[str, np.ndarray], request: InferRequest
) -> tuple[bytes, dict[str, str], str]:
    """``(body, headers, content type)`` of the answer: ``head`` (model name, version, id) with the
    outputs asked for (all of them when none is named), each in JSON or in binary as asked."""
    if request.outputs is None:
        chosen = [(name, request.binary_output) for name in outputs]
    else:
        chosen = []
        for out in request.outputs:
            if out.name not in outputs:  # a model that declares no outputs: checked here, after
                raise InvalidInput(
                    f"unknown output '{out.name}' for model '{model}': it returns "
                    f"{', '.join(map(repr, outputs))}"
                )
            if any(name == out.name for name, _ in chosen):  # parse_request refuses it already
                raise InvalidInput(f"output '{out.name}' is requested twice")
            chosen.append((out.name, request.binary_output if out.binary is None else out.binary))
    rendered: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in chosen:
        array, datatype = _tensor_of(model, name, outputs[name])
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = (
                serialize_bytes(array)
                if datatype == "BYTES"
                else np.ascontiguousarray(array, dtype=DTYPES[datatype]).tobytes()
            )
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = _json_values(array, datatype)
        rendered.append(tensor)
    body = orjson.dumps({**head, "outputs": rendered}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return body, {}, "application/json"
    return body + b"".join(blobs), {HEADER_LENGTH: str(len(body))}, BINARY_CONTENT_TYPE
