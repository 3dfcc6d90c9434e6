"""Safe image decoding shared by the image runtimes (``opencv-dnn``, ``tflite``, ``yolo``).

Only JPEG, PNG and WebP are accepted, recognised by their magic bytes (GIF, TIFF, BMP and
the rest are refused from their first bytes)::

    bgr = decode_image(request_bytes, max_pixels=12_000_000)   # HxWx3 uint8, BGR
    bgr = decode_image("data:image/png;base64,iVBORw0...")     # base64 text works too

**The work per image is bounded by a budget checked from the header, before any pixel is
decoded.** Pillow's ``Image.open`` parses the header only; from it (size, mode, frame count,
JPEG scans and sampling) :func:`decode_cost` works out the peak bytes the decode will hold,
phase by phase, and the image is refused (400) when it exceeds ``max_decode_bytes``:

- *decode*: Pillow's image (1 byte per pixel for ``1``/``L``/``P``, 2 for 16-bit grayscale
  ``I;16``, 4 for everything else: Pillow keeps RGB as RGBX) plus the decoder's own buffers:
  a progressive JPEG's coefficients (2 bytes per sample of every component, at its sampling:
  6 B/px for 4:4:4 RGB, 3 for 4:2:0, 8 for CMYK) and libwebp's canvases (8 B/px);
- *convert*: Pillow's image plus the HxWx3 output (3 B/px), converted band by band (~4 MiB
  per band: palette, transparency flattened onto white, 16-bit scaled to 8, CMYK, grayscale),
  so no whole-image intermediate copy exists;
- *orient*: the output and its EXIF-transposed copy (6 B/px), once Pillow's image is freed.

The peak is the largest phase. The defaults come from the target of **at most 200 MB of peak
memory and 1 CPU-second per request**: keeping ~70 MB for the body (a 6 MiB image arrives as
8 MiB of base64, is parsed and decoded: ~25 MB), the model's forward pass and allocator slack
leaves :data:`DEFAULT_MAX_DECODE_BYTES` = 128 MiB for the decode. The worst accepted 8-bit
layout costs 10 B/px (a progressive 4:4:4 JPEG: 4 + 6), so 128 MiB / 10 B/px = 13.4 MP, rounded
down to :data:`DEFAULT_MAX_PIXELS` = 13 MP (a 4032x3024 phone photo is 12.2 MP; the reference
models take 300x300 or 640x640). Within that cap, only the costlier layouts meet the byte budget
(progressive CMYK, WebP: 12 B/px, refused above 11 MP).

PNG text chunks (``tEXt``/``zTXt``/``iTXt``, never read by mlgate) are capped at
:data:`MAX_PNG_TEXT_BYTES` in all by lowering Pillow's process-wide ``MAX_TEXT_MEMORY``
(64 MB by default: 60 zTXt chunks of 1 MB fit in a 60 KB file).

Also refused from the header: animations of more than ``max_frames`` frames (only the first
frame is ever decoded; the count comes from the header, frames are never iterated) and JPEGs
of more than :data:`MAX_JPEG_SCANS` scans (each scan of a progressive JPEG walks the whole
image again: thousands of empty scans would cost seconds of CPU in a small file). Truncated
or corrupt files are a 400, never a 500.

**Concurrent decodes are capped per process** (:func:`set_decode_concurrency`; default: one
per two CPUs, at least 1 and at most 4 — the other CPUs run the models), so N parallel
requests cannot multiply the peak: a decode waits for a
slot at most ``wait_s`` (2 s) and is then refused with :class:`~mlgate.errors.Overloaded`
(503 + ``Retry-After``). A decode called on an event loop's own thread takes no slot and
never waits (blocking the loop would stall every request; the loop runs one decode at a time,
so the process's bound is ``slots + 1``).

A request of many images (the Open Inference Protocol's BYTES tensor) is checked whole from
the headers by :func:`check_request_images` before any is decoded: each image within its
budgets, and all of them together within ``max_pixels`` (one image's), since the request holds
every decoded image until the model runs.

Every other failure raises :class:`~mlgate.errors.InvalidInput` (or its
:class:`~mlgate.errors.PayloadTooLarge` subclass for ``max_bytes``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.errors import InvalidInput, Overloaded, PayloadTooLarge
from mlgate.runtimes.base import import_optional

__all__ = [
    "DEFAULT_DECODE_WAIT_S",
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_PIXELS",
    "MAX_JPEG_SCANS",
    "MAX_PNG_TEXT_BYTES",
    "DecodeCost",
    "check_request_images",
    "decode_concurrency",
    "decode_cost",
    "decode_image",
    "decode_image_input",
    "image_tensor_metadata",
    "set_decode_concurrency",
    "sniff_image_format",
]

#: Pixels (width x height) an image may have; see the module docstring for the arithmetic.
DEFAULT_MAX_PIXELS = 13_000_000
#: Peak bytes one decode may hold (the largest phase of :func:`decode_cost`).
DEFAULT_MAX_DECODE_BYTES = 128 * 1024 * 1024
#: Frames an animated PNG/WebP may declare (only the first is decoded).
DEFAULT_MAX_FRAMES = 256
#: Scans (SOS markers) a JPEG may have: baseline has 1, libjpeg's progressive script 10.
MAX_JPEG_SCANS = 64
#: Decompressed bytes of text chunks a PNG may carry (Pillow's own default is 64 MB).
MAX_PNG_TEXT_BYTES = 1024 * 1024
#: How long a decode waits for a slot before it is refused as overloaded.
DEFAULT_DECODE_WAIT_S = 2.0

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")
_WHITE = (255, 255, 255, 255)
_BAND_BYTES = 4 * 1024 * 1024
_SOS = b"\xff\xda"
_DEEP = ("I", "I;16", "I;16B", "I;16L", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
#: Bytes per pixel of Pillow's in-memory image, by mode (4 unless listed).
_STORAGE = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}
#: The modes Pillow can open a JPEG/PNG/WebP in (anything else is refused before decoding).
_MODES = frozenset(("1", "L", "P", "LA", "PA", "RGB", "RGBA", "CMYK", "YCbCr", *_DEEP))
#: libwebp's animation decoder keeps two RGBA canvases besides Pillow's image.
_WEBP_EXTRA = 8
_REFUSED_FORMATS = (
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x01\x00", "ICO"),
)


def sniff_image_format(data: bytes) -> str | None:
    """Return the Pillow format name ("JPEG", "PNG", "WEBP") from the magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


# -- concurrency ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slots:
    size: int
    wait_s: float
    semaphore: threading.BoundedSemaphore


def _default_slots() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus // 2, 4))


_slots = _Slots(_default_slots(), DEFAULT_DECODE_WAIT_S, threading.BoundedSemaphore(_default_slots()))


def set_decode_concurrency(slots: int | None = None, *, wait_s: float = DEFAULT_DECODE_WAIT_S) -> None:
    """At most ``slots`` image decodes at once in this process (None: one per two CPUs, 1-4);
    a decode waits ``wait_s`` seconds for a slot, then is refused with ``Overloaded``.
    Decodes already running keep the slot they hold."""
    global _slots
    size = _default_slots() if slots is None else slots
    if size < 1 or wait_s < 0:
        raise ValueError("decode slots must be >= 1 and wait_s >= 0")
    _slots = _Slots(size, float(wait_s), threading.BoundedSemaphore(size))


def decode_concurrency() -> tuple[int, float]:
    """The current ``(slots, wait_s)`` of :func:`set_decode_concurrency`."""
    return _slots.size, _slots.wait_s


@contextmanager
def _decode_slot() -> Iterator[None]:
    slots = _slots
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # on an event loop's thread: never block the loop (it runs one decode at a time)
        yield
        return
    if not slots.semaphore.acquire(timeout=slots.wait_s):
        raise Overloaded(
            f"too many images are being decoded at once ({slots.size}); retry shortly",
            retry_after=1.0,
        )
    try:
        yield
    finally:
        slots.semaphore.release()


# -- the budget ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodeCost:
    """What decoding an image will hold, from its header (see the module docstring)."""

    width: int
    height: int
    mode: str
    frames: int
    #: bytes held while the pixels are decoded, converted to BGR and EXIF-transposed
    decode_bytes: int
    convert_bytes: int
    orient_bytes: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def peak_bytes(self) -> int:
        return max(self.decode_bytes, self.convert_bytes, self.orient_bytes)


def decode_cost(im: Any, fmt: str) -> DecodeCost:
    """The :class:`DecodeCost` of an opened (header-only) Pillow image of format ``fmt``."""
    width, height = im.size
    pixels = width * height
    stored = pixels * _STORAGE.get(im.mode, 4)
    extra = 0
    if fmt == "JPEG" and im.info.get("progressive"):
        extra = _jpeg_coefficient_bytes(im, pixels)
    elif fmt == "WEBP":
        extra = pixels * _WEBP_EXTRA
    output = pixels * 3
    return DecodeCost(
        width=width,
        height=height,
        mode=im.mode,
        frames=int(getattr(im, "n_frames", 1) or 1),
        decode_bytes=stored + extra,
        convert_bytes=stored + output + _BAND_BYTES,
        orient_bytes=2 * output,
    )


def _jpeg_coefficient_bytes(im: Any, pixels: int) -> int:
    """A progressive JPEG's whole-image coefficient buffers: 2 bytes per sample per component."""
    layers = getattr(im, "layer", None) or []
    try:
        h_max = max(int(h) for _, h, _, _ in layers)
        v_max = max(int(v) for _, _, v, _ in layers)
        share = sum(int(h) * int(v) for _, h, v, _ in layers) / (h_max * v_max)
    except (TypeError, ValueError, ZeroDivisionError):
        share = 4.0  # unknown sampling: assume four full-size components
    return int(pixels * 2 * share)


def _check_budget(
    cost: DecodeCost, fmt: str, *, max_pixels: int, max_decode_bytes: int, max_frames: int
) -> None:
    if cost.width <= 0 or cost.height <= 0:
        raise InvalidInput("image is empty")
    if cost.pixels > max_pixels:
        raise InvalidInput(f"image is {cost.width}x{cost.height}, more than {max_pixels} pixels")
    if cost.mode not in _MODES:
        raise InvalidInput(f"{fmt} images in mode {cost.mode} are not supported")
    if cost.frames > max_frames:
        raise InvalidInput(
            f"image is an animation of {cost.frames} frames, more than {max_frames} "
            "(only the first frame is used)"
        )
    if cost.peak_bytes > max_decode_bytes:
        mib = 1024 * 1024
        raise InvalidInput(
            f"image is {cost.width}x{cost.height} {fmt} in mode {cost.mode}: decoding it would take "
            f"~{cost.peak_bytes // mib} MiB, more than the {max_decode_bytes // mib} MiB budget; "
            "send a smaller image"
        )


# -- decoding ------------------------------------------------------------------------------------


def decode_image(
    data: bytes | str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    max_frames: int = DEFAULT_MAX_FRAMES,
) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes (or base64 text) into an HxWx3 uint8 BGR array.

    EXIF orientation is applied, transparency is flattened onto white, grayscale is expanded
    to three channels, 16-bit grayscale is scaled to 8 bits and only an animation's first
    frame is decoded — within the budget of the module docstring, checked before decoding.
    """
    raw = _as_bytes(data, max_bytes=max_bytes)
    fmt = sniff_image_format(raw)
    if fmt is None:
        raise InvalidInput(_unsupported(raw))
    if fmt == "JPEG":
        scans = raw.count(_SOS)
        if scans > MAX_JPEG_SCANS:
            raise InvalidInput(f"JPEG has {scans} scans, more than {MAX_JPEG_SCANS}")
    pil_image = _pillow()
    bombs = (pil_image.DecompressionBombError, pil_image.DecompressionBombWarning)
    try:
        # Image.open only parses the header: nothing is decoded until load().
        im = pil_image.open(io.BytesIO(raw), formats=[fmt])
    except bombs as exc:
        raise InvalidInput("image has too many pixels (decompression-bomb guard)") from exc
    except Exception as exc:
        raise InvalidInput(_corrupt(fmt, exc)) from exc
    with im:
        try:
            cost = decode_cost(im, fmt)
        except Exception as exc:
            raise InvalidInput(f"image is corrupt or not a valid {fmt}") from exc
        _check_budget(
            cost, fmt, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, max_frames=max_frames
        )
        with _decode_slot():
            try:
                im.load()  # the first frame only
                orientation = _orientation(im)
                bgr = _to_bgr(im, pil_image)
            except bombs as exc:
                raise InvalidInput("image has too many pixels (decompression-bomb guard)") from exc
            except Exception as exc:
                raise InvalidInput(_corrupt(fmt, exc, truncated=True)) from exc
            finally:
                im.close()
            return _orient(bgr, orientation)


def check_request_images(
    payloads: list[Any],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_total_pixels: int | None = None,
) -> int:
    """Check a request's encoded images from their headers, before any is decoded: each within
    the per-image budgets of :func:`decode_image`, and all of them together within
    ``max_total_pixels`` (default: ``max_pixels``) — a request that decodes its images before the
    first reaches the model holds them all, so N images must not cost N budgets. Items that are
    not encoded images (decoded pixels, already in memory) are left to the decoder. Returns the
    request's pixels; raises :class:`InvalidInput`. Blocking (base64, headers): off the loop."""
    budget = max_pixels if max_total_pixels is None else max_total_pixels
    total = 0
    for payload in payloads:
        if not isinstance(payload, bytes | str | bytearray | memoryview):
            continue
        raw = _as_bytes(payload, max_bytes=None)
        fmt = sniff_image_format(raw)
        if fmt is None:
            raise InvalidInput(_unsupported(raw))
        if fmt == "JPEG" and raw.count(_SOS) > MAX_JPEG_SCANS:
            raise InvalidInput(f"JPEG has {raw.count(_SOS)} scans, more than {MAX_JPEG_SCANS}")
        pil_image = _pillow()
        bombs = (pil_image.DecompressionBombError, pil_image.DecompressionBombWarning)
        try:
            im = pil_image.open(io.BytesIO(raw), formats=[fmt])  # the header only
        except bombs as exc:
            raise InvalidInput("image has too many pixels (decompression-bomb guard)") from exc
        except Exception as exc:
            raise InvalidInput(_corrupt(fmt, exc)) from exc
        with im:
            try:
                cost = decode_cost(im, fmt)
            except Exception as exc:
                raise InvalidInput(f"image is corrupt or not a valid {fmt}") from exc
        _check_budget(
            cost, fmt, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes, max_frames=max_frames
        )
        total += cost.pixels
        if total > budget:
            raise InvalidInput(
                f"the request's images have more than {budget} pixels in all (this one is "
                f"{cost.width}x{cost.height}): send fewer or smaller images per request"
            )
    return total


def decode_image_input(
    payload: Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
) -> np.ndarray:
    """An HxWx3 uint8 array as is, or image bytes / base64 text decoded to one."""
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8 or payload.ndim != 3 or payload.shape[2] != 3:
            raise InvalidInput(f"image array must be HxWx3 uint8, got {payload.shape} {payload.dtype}")
        height, width = payload.shape[:2]
        if height == 0 or width == 0:
            raise InvalidInput("image is empty")
        if height * width > max_pixels:
            raise InvalidInput(f"image is {width}x{height}, more than {max_pixels} pixels")
        return np.ascontiguousarray(payload)
    if isinstance(payload, bytes | str):
        return decode_image(payload, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    if isinstance(payload, bytearray | memoryview):
        return decode_image(bytes(payload), max_pixels=max_pixels, max_decode_bytes=max_decode_bytes)
    raise InvalidInput(f"expected an image (bytes or base64 text), not {type(payload).__name__}")


def image_tensor_metadata(name: str, max_pixels: int, **parameters: Any) -> dict[str, Any]:
    """An image input as ``GET /v2/models/{name}`` declares it: a ``BYTES`` tensor ``[-1]`` of
    encoded images (JPEG, PNG or WebP; in a JSON request each element is the image's base64 text,
    in binary its raw bytes), or — ``also_accepts`` — decoded ``UINT8`` pixels ``[N, H, W, 3]``
    (BGR), both within the same decode budgets as the native routes (``max_pixels``)."""
    return {
        "name": name,
        "datatype": "BYTES",
        "shape": [-1],
        "parameters": {
            "content_type": "image",
            "formats": ["jpeg", "png", "webp"],
            "json_encoding": "base64",
            "max_pixels": max_pixels,
            **parameters,
            "also_accepts": [{"datatype": "UINT8", "shape": [-1, -1, -1, 3], "layout": "NHWC BGR"}],
        },
    }


def _pillow() -> Any:
    """``PIL.Image``, with PNG text chunks capped at :data:`MAX_PNG_TEXT_BYTES`."""
    pil_image: Any = import_optional("PIL.Image", extra="runtimes")
    png: Any = import_optional("PIL.PngImagePlugin", extra="runtimes")
    if png.MAX_TEXT_MEMORY > MAX_PNG_TEXT_BYTES:
        png.MAX_TEXT_MEMORY = MAX_PNG_TEXT_BYTES
    return pil_image


def _corrupt(fmt: str, exc: Exception, *, truncated: bool = False) -> str:
    if isinstance(exc, ValueError) and "text chunks" in str(exc):
        return f"PNG has more than {MAX_PNG_TEXT_BYTES} bytes of text chunks"
    return f"image is truncated or corrupt ({fmt})" if truncated else f"image is corrupt or not a valid {fmt}"


def _unsupported(raw: bytes) -> str:
    for magic, name in _REFUSED_FORMATS:
        if raw.startswith(magic):
            return f"{name} images are not accepted: the image must be JPEG, PNG or WebP"
    return "image must be JPEG, PNG or WebP"


def _as_bytes(data: Any, *, max_bytes: int | None) -> bytes:
    if isinstance(data, str):
        text = _DATA_URL.sub("", data.strip(), count=1)
        if max_bytes is not None and len(text) * 3 // 4 > max_bytes + 3:
            raise PayloadTooLarge(f"image is larger than {max_bytes} bytes")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput("image is not valid base64") from exc
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise InvalidInput(f"image must be bytes or a base64 string, not {type(data).__name__}")
    if not raw:
        raise InvalidInput("image is empty")
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(f"image is larger than {max_bytes} bytes")
    return raw


def _orientation(im: Any) -> int:
    """The EXIF orientation (1-8; 1 = upright) of a loaded image."""
    value = im.getexif().get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _orient(bgr: np.ndarray, orientation: int) -> np.ndarray:
    """``bgr`` upright, as ``ImageOps.exif_transpose`` would turn it (one contiguous copy)."""
    if orientation == 1:
        return bgr
    view = {
        2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
        3: lambda a: a[::-1, ::-1],  # ROTATE_180
        4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
        5: lambda a: a.transpose(1, 0, 2),  # TRANSPOSE
        6: lambda a: a.transpose(1, 0, 2)[:, ::-1],  # ROTATE_270 (90° clockwise)
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # TRANSVERSE
        8: lambda a: a.transpose(1, 0, 2)[::-1],  # ROTATE_90 (90° counter-clockwise)
    }[orientation](bgr)
    return np.ascontiguousarray(view)


def _to_bgr(im: Any, pil_image: Any) -> np.ndarray:
    """HxWx3 BGR of ``im``, converted band by band: alpha (or palette/tRNS transparency)
    flattened onto white, 16-bit or float grayscale scaled to 8 bits."""
    width, height = im.size
    out = np.empty((height, width, 3), np.uint8)
    has_alpha = im.mode in _ALPHA or "transparency" in im.info
    scale: float | None = None
    if not has_alpha and im.mode in _DEEP:
        # 16-bit/float grayscale: scaled to 8 bits by the image's peak instead of clipped.
        peak = float(im.getextrema()[1])
        scale = 255.0 / peak if peak > 255 else 1.0
    rows = max(1, _BAND_BYTES // (width * 4))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = im.crop((0, top, width, bottom))
        if has_alpha:
            rgba = band.convert("RGBA")
            background = pil_image.new("RGBA", rgba.size, _WHITE)
            rgb = pil_image.alpha_composite(background, rgba).convert("RGB")
        elif scale is not None:
            values = np.asarray(band, dtype=np.float64)
            scaled = values * scale if scale != 1.0 else values
            rgb = pil_image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8)).convert("RGB")
        else:
            rgb = band.convert("RGB")
        out[top:bottom] = np.frombuffer(rgb.tobytes("raw", "BGR"), np.uint8).reshape(bottom - top, width, 3)
    return out
