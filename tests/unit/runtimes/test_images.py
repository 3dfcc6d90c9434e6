from __future__ import annotations

import base64
import io
import struct
import time
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlgate.errors import InvalidInput, PayloadTooLarge
from mlgate.runtimes.images import decode_image, decode_image_input, sniff_image_format
from tests.unit.runtimes.artifacts import image_bytes


def _png(im: Image.Image) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG")
    return buffer.getvalue()


def _blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, streamed row by row (never allocating the full image)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """20000x20000 1-bit PNG: about 48 KB on disk, 400 megapixels decoded."""
    data = _blank_png(20000, 20000)
    assert len(data) < 100_000
    return data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_decodes_accepted_formats_to_bgr(fmt: str) -> None:
    save: dict[str, Any] = {"lossless": True} if fmt == "WEBP" else {}
    data = image_bytes(fmt, size=(24, 16), color=(255, 0, 0), **save)
    assert sniff_image_format(data) == fmt
    bgr = decode_image(data)
    assert bgr.shape == (16, 24, 3)
    assert bgr.dtype == np.uint8
    assert bgr.flags.c_contiguous
    b, g, r = bgr[8, 12].tolist()
    assert r > 240 and g < 15 and b < 15


@pytest.mark.parametrize(
    "data",
    [
        image_bytes("GIF", size=(8, 8)),
        image_bytes("BMP", size=(8, 8)),
        image_bytes("TIFF", size=(8, 8)),
        b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>',
        b"%PDF-1.7",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
    ids=["gif", "bmp", "tiff", "svg", "pdf", "wav"],
)
def test_formats_are_sniffed_from_magic_bytes(data: bytes) -> None:
    assert sniff_image_format(data) is None
    with pytest.raises(InvalidInput, match="JPEG, PNG or WebP"):
        decode_image(data)


def test_decompression_bomb_is_refused_fast_without_decoding(bomb_png: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="pixels"):
        decode_image(bomb_png)
    assert time.perf_counter() - started < 0.2


def test_pillow_bomb_warning_range_becomes_invalid_input() -> None:
    # 100 megapixels: above Pillow's warning threshold, below its error threshold.
    data = _blank_png(10000, 10000)
    with pytest.raises(InvalidInput, match="pixels"):
        decode_image(data, max_pixels=200_000_000)


def test_our_pixel_limit_applies_below_pillows() -> None:
    data = _blank_png(8000, 8000)
    with pytest.raises(InvalidInput, match="8000x8000"):
        decode_image(data)
    with pytest.raises(InvalidInput, match="more than 1000 pixels"):
        decode_image(image_bytes("PNG", size=(48, 32)), max_pixels=1000)


def test_truncated_jpeg_is_invalid_input() -> None:
    data = image_bytes("JPEG", size=(256, 256))
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_is_invalid_input() -> None:
    data = bytearray(image_bytes("PNG", size=(32, 32)))
    data[60:80] = b"\xff" * 20
    with pytest.raises(InvalidInput):
        decode_image(bytes(data))
    with pytest.raises(InvalidInput):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 8)


def test_base64_with_and_without_data_url() -> None:
    data = image_bytes("PNG", size=(10, 6))
    text = base64.b64encode(data).decode()
    assert decode_image(text).shape == (6, 10, 3)
    assert decode_image("data:image/png;base64," + text).shape == (6, 10, 3)


@pytest.mark.parametrize("text", ["not base64!", "iVBORw0KGgo=\n====", "YWJj ZA==", "a", "Zm9v\x00"])
def test_invalid_base64_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="image is not valid base64"):
        decode_image(text)


@pytest.mark.parametrize("value", [None, 12, 1.5, ["a"], {"b": 1}, b"", ""])
def test_wrong_types_and_empty_input_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput):
        decode_image(value)  # type: ignore[arg-type]


def test_max_bytes_is_payload_too_large() -> None:
    data = image_bytes("PNG", size=(64, 64))
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_bytes=100)
    with pytest.raises(PayloadTooLarge):
        decode_image(base64.b64encode(data).decode(), max_bytes=100)
    assert decode_image(data, max_bytes=len(data)).shape == (64, 64, 3)


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 = rotate 90° clockwise.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    bgr = decode_image(buffer.getvalue())
    assert bgr.shape == (40, 20, 3)
    top, bottom = bgr[5, 10], bgr[35, 10]
    assert top[2] > 200 and top[0] < 60  # red on top
    assert bottom[0] > 200 and bottom[2] < 60  # blue at the bottom


def test_rgba_is_flattened_onto_white() -> None:
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[:, 4:] = (255, 0, 0, 255)  # opaque red on the right, transparent black on the left
    bgr = decode_image(_png(Image.fromarray(rgba)))
    assert bgr[0, 0].tolist() == [255, 255, 255]
    assert bgr[0, 7].tolist() == [0, 0, 255]


def test_la_and_palette_transparency_are_flattened() -> None:
    la = Image.new("LA", (4, 4), (0, 0))
    assert decode_image(_png(la))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30])
    palette.info["transparency"] = 0
    assert decode_image(_png(palette))[0, 0].tolist() == [255, 255, 255]


def test_grayscale_becomes_three_channels() -> None:
    gray = decode_image(_png(Image.new("L", (5, 3), 77)))
    assert gray.shape == (3, 5, 3)
    assert gray[1, 1].tolist() == [77, 77, 77]
    deep = decode_image(_png(Image.fromarray(np.full((3, 5), 65535, np.uint16))))
    assert deep[0, 0].tolist() == [255, 255, 255]


def test_decode_image_input_accepts_arrays_and_checks_them() -> None:
    array = np.zeros((6, 4, 3), np.uint8)
    assert decode_image_input(array) is array
    for bad in (np.zeros((6, 4), np.uint8), np.zeros((6, 4, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(InvalidInput):
            decode_image_input(bad)
    with pytest.raises(InvalidInput, match="pixels"):
        decode_image_input(array, max_pixels=10)
    assert decode_image_input(bytearray(image_bytes("PNG", size=(4, 6)))).shape == (6, 4, 3)
