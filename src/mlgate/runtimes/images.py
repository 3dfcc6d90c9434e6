"""Safe image decoding shared by the image runtimes (``opencv-dnn``, ``tflite``).

Only JPEG, PNG and WebP are accepted, recognised by their magic bytes. The pixel count
is read from the header and checked *before* any pixel is decoded, so a tiny
decompression bomb costs microseconds, not gigabytes::

    bgr = decode_image(request_bytes, max_pixels=20_000_000)   # HxWx3 uint8, BGR
    bgr = decode_image("data:image/png;base64,iVBORw0...")     # base64 text works too

Every failure raises :class:`~mlgate.errors.InvalidInput` (or its
:class:`~mlgate.errors.PayloadTooLarge` subclass for ``max_bytes``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

import numpy as np

from mlgate.errors import InvalidInput, PayloadTooLarge
from mlgate.runtimes.base import import_optional

__all__ = ["DEFAULT_MAX_PIXELS", "decode_image", "decode_image_input", "sniff_image_format"]

DEFAULT_MAX_PIXELS = 40_000_000

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")
_WHITE = (255, 255, 255, 255)


def sniff_image_format(data: bytes) -> str | None:
    """Return the Pillow format name ("JPEG", "PNG", "WEBP") from the magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_image(
    data: bytes | str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None
) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes (or base64 text) into an HxWx3 uint8 BGR array.

    EXIF orientation is applied, transparency is flattened onto white and grayscale is
    expanded to three channels.
    """
    raw = _as_bytes(data, max_bytes=max_bytes)
    fmt = sniff_image_format(raw)
    if fmt is None:
        raise InvalidInput("image must be JPEG, PNG or WebP")
    pil_image: Any = import_optional("PIL.Image", extra="runtimes")
    image_ops: Any = import_optional("PIL.ImageOps", extra="runtimes")
    bombs = (pil_image.DecompressionBombError, pil_image.DecompressionBombWarning)
    try:
        # Image.open only parses the header: nothing is decoded until load().
        im = pil_image.open(io.BytesIO(raw), formats=[fmt])
    except bombs as exc:
        raise InvalidInput("image has too many pixels (decompression-bomb guard)") from exc
    except Exception as exc:
        raise InvalidInput(f"image is corrupt or not a valid {fmt}") from exc
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise InvalidInput("image is empty")
        if width * height > max_pixels:
            raise InvalidInput(f"image is {width}x{height}, more than {max_pixels} pixels")
        try:
            im.load()
            upright = image_ops.exif_transpose(im)
            rgb = _to_rgb(upright, pil_image)
        except bombs as exc:
            raise InvalidInput("image has too many pixels (decompression-bomb guard)") from exc
        except Exception as exc:
            raise InvalidInput(f"image is truncated or corrupt ({fmt})") from exc
    array = np.asarray(rgb, dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, ::-1])


def decode_image_input(payload: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
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
        return decode_image(payload, max_pixels=max_pixels)
    if isinstance(payload, bytearray | memoryview):
        return decode_image(bytes(payload), max_pixels=max_pixels)
    raise InvalidInput(f"expected an image (bytes or base64 text), not {type(payload).__name__}")


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


def _to_rgb(im: Any, pil_image: Any) -> Any:
    """RGB copy of ``im``: alpha (or palette/tRNS transparency) flattened onto white."""
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = pil_image.new("RGBA", rgba.size, _WHITE)
        return pil_image.alpha_composite(background, rgba).convert("RGB")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit/float grayscale: scale to 8 bits instead of clipping.
        values = np.asarray(im, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        scaled = values * (255.0 / peak) if peak > 255 else values
        im = pil_image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    return im.convert("RGB")
