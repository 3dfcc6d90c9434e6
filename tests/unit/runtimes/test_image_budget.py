"""The decode budget of mlgate.runtimes.images: each hostile kind refused from its header with a
clear error, and legitimate images decoded to exactly the arrays the previous decoder gave."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from mlgate.errors import InvalidInput, Overloaded
from mlgate.runtimes import images
from mlgate.runtimes.images import (
    DEFAULT_MAX_DECODE_BYTES,
    DEFAULT_MAX_PIXELS,
    MAX_JPEG_SCANS,
    decode_concurrency,
    decode_cost,
    decode_image,
    decode_image_input,
    set_decode_concurrency,
)
from tests.security.hostile_images import _exif, _gradient, _scan_bomb, _webp_canvas, _ztxt_bomb, corpus, png

# -- the previous decoder, kept as the reference for "the same arrays as before" ------------------


def _reference(data: bytes) -> np.ndarray:
    """The decoder before the budget: whole-image exif_transpose, convert, composite, asarray."""
    im = Image.open(io.BytesIO(data))
    im.load()
    upright: Any = ImageOps.exif_transpose(im)
    has_alpha = upright.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in upright.info
    if has_alpha:
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
    elif upright.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(upright, dtype=np.float64)
        peak = float(values.max()) if values.size else 0.0
        scaled = values * (255.0 / peak) if peak > 255 else values
        rgb = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8)).convert("RGB")
    else:
        rgb = upright.convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])


def _save(im: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def _legitimate() -> dict[str, bytes]:
    rgb = Image.fromarray(_gradient(300, 200))
    rgba = Image.fromarray(_gradient(300, 200, 4))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    # Tall enough for several 4 MiB bands (2200 rows of 600 px at 4 B/px = 5.3 MB).
    tall = Image.fromarray(_gradient(600, 2200, 4))
    deep = Image.fromarray(np.arange(120 * 80, dtype=np.uint16).reshape(80, 120) * 7)
    out = {
        "png_rgb": _save(rgb, "PNG"),
        "png_gray": _save(rgb.convert("L"), "PNG"),
        "png_1bit": _save(rgb.convert("1"), "PNG"),
        "png_rgba": _save(rgba, "PNG"),
        "png_rgba_tall_bands": _save(tall, "PNG"),
        "png_la": _save(rgba.convert("LA"), "PNG"),
        "png_palette": _save(palette, "PNG"),
        "png_palette_transparent": _save(transparent, "PNG"),
        "png_16bit_gray": _save(deep, "PNG"),
        "png_16bit_rgba": png(
            50, 40, depth=16, color=6, rows=[bytes(1) + bytes(i % 256 for i in range(50 * 8))] * 40
        ),
        "jpeg_baseline": _save(rgb, "JPEG", quality=90),
        "jpeg_progressive": _save(rgb, "JPEG", quality=90, progressive=True),
        "jpeg_gray": _save(rgb.convert("L"), "JPEG"),
        "jpeg_cmyk": _save(rgb.convert("CMYK"), "JPEG"),
        "webp_lossy": _save(rgb, "WEBP", quality=80),
        "webp_alpha": _save(rgba, "WEBP", lossless=True),
    }
    for orientation in range(1, 9):
        out[f"jpeg_exif{orientation}"] = _save(rgb, "JPEG", exif=_exif(orientation))
        out[f"png_exif{orientation}"] = _save(rgba, "PNG", exif=_exif(orientation))
    return out


LEGITIMATE = _legitimate()


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_legitimate_images_decode_to_the_same_arrays_as_before(name: str) -> None:
    data = LEGITIMATE[name]
    got = decode_image(data)
    assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3
    assert got.flags.c_contiguous and got.flags.writeable
    np.testing.assert_array_equal(got, _reference(data))


def test_exif_orientations_turn_the_image_upright() -> None:
    # Stored 40 wide x 20 high; orientations 5-8 swap the sides.
    for orientation in range(1, 9):
        shape = decode_image(LEGITIMATE[f"jpeg_exif{orientation}"]).shape
        assert shape == ((300, 200, 3) if orientation >= 5 else (200, 300, 3)), orientation


# -- the budget, from the header ------------------------------------------------------------------


def _opened(data: bytes) -> Any:
    return Image.open(io.BytesIO(data))


def test_decode_cost_counts_each_phase() -> None:
    w, h = 320, 240
    px = w * h
    rgb = Image.fromarray(_gradient(w, h))
    baseline = decode_cost(_opened(_save(rgb, "JPEG")), "JPEG")
    assert (baseline.decode_bytes, baseline.orient_bytes) == (4 * px, 6 * px)
    assert baseline.convert_bytes == 7 * px + images._BAND_BYTES
    full = decode_cost(_opened(_save(rgb, "JPEG", progressive=True, subsampling=0)), "JPEG")
    assert full.decode_bytes == 4 * px + 6 * px  # 3 components x 2 bytes of coefficients
    sub = decode_cost(_opened(_save(rgb, "JPEG", progressive=True, subsampling=2)), "JPEG")
    assert sub.decode_bytes == 4 * px + 3 * px  # 4:2:0: Y + a quarter each of Cb and Cr
    cmyk = decode_cost(_opened(_save(rgb.convert("CMYK"), "JPEG", progressive=True)), "JPEG")
    assert cmyk.decode_bytes == 4 * px + 8 * px
    webp = decode_cost(_opened(_save(rgb, "WEBP")), "WEBP")
    assert webp.decode_bytes == 4 * px + 8 * px
    gray = decode_cost(_opened(_save(rgb.convert("L"), "PNG")), "PNG")
    assert gray.decode_bytes == px and gray.peak_bytes == px + 3 * px + images._BAND_BYTES
    deep = decode_cost(_opened(png(w, h, depth=16, color=0)), "PNG")
    assert deep.mode == "I;16" and deep.decode_bytes == 2 * px


def test_the_defaults_fit_the_worst_8_bit_layout() -> None:
    # The module docstring's arithmetic: 10 B/px (progressive 4:4:4) x the pixel cap <= the budget.
    assert DEFAULT_MAX_PIXELS * 10 <= DEFAULT_MAX_DECODE_BYTES
    assert DEFAULT_MAX_DECODE_BYTES <= 128 * 1024 * 1024


def test_over_the_byte_budget_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _save(Image.fromarray(_gradient(400, 300)), "JPEG", progressive=True, subsampling=0)
    loads: list[Any] = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self))
    with pytest.raises(
        InvalidInput,
        match=r"400x300 JPEG in mode RGB: decoding it would take ~\d+ MiB, more than the 1 MiB budget",
    ):
        decode_image(data, max_decode_bytes=1024 * 1024)
    assert loads == []


def test_pixel_cap_applies_to_bytes_and_arrays() -> None:
    data = _save(Image.new("L", (40, 30)), "PNG")
    with pytest.raises(InvalidInput, match="40x30, more than 1000 pixels"):
        decode_image(data, max_pixels=1000)
    with pytest.raises(InvalidInput, match=r"decoding it would take"):
        decode_image_input(data, max_decode_bytes=100)


def test_16_bit_grayscale_at_the_cap_costs_a_fraction_of_before() -> None:
    # The input, at the new cap: 16-bit grayscale was 5 float64 copies of the image.
    width, height = 4000, 3000
    from tests.security.hostile_images import _png16_rows

    data = png(width, height, depth=16, color=0, rows=_png16_rows(width, height, 1))
    started = time.process_time()
    bgr = decode_image(data)
    assert time.process_time() - started < 2.0
    assert bgr.shape == (height, width, 3)
    assert bgr[0, 0].tolist() == [0, 0, 0] and bgr[-1, -1].tolist() == [255, 255, 255]


def test_animations_use_the_first_frame_and_huge_frame_counts_are_refused() -> None:
    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(5)]
    for fmt, params in (("WEBP", {"lossless": True}), ("PNG", {})):
        data = _save(frames[0], fmt, save_all=True, append_images=frames[1:], **params)
        assert decode_image(data)[0, 0].tolist() == [0, 0, 0]  # frame 0 is black
        with pytest.raises(InvalidInput, match="animation of 5 frames, more than 4"):
            decode_image(data, max_frames=4)


def test_jpeg_scan_bomb_is_refused_from_its_markers() -> None:
    flat = _save(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG", progressive=True)
    assert decode_image(_scan_bomb(flat, MAX_JPEG_SCANS - 10)).shape == (64, 64, 3)
    with pytest.raises(
        InvalidInput, match=f"JPEG has {MAX_JPEG_SCANS + 1} scans, more than {MAX_JPEG_SCANS}"
    ):
        decode_image(_scan_bomb(flat, MAX_JPEG_SCANS - 9))


def test_png_text_chunks_are_capped() -> None:
    assert decode_image(_ztxt_bomb(1)).shape == (16, 16, 3)
    with pytest.raises(InvalidInput, match="more than 1048576 bytes of text chunks"):
        decode_image(_ztxt_bomb(3))


def test_huge_canvas_claims_are_refused_without_decoding() -> None:
    frames = [Image.new("RGB", (16, 16), (i, 0, 0)) for i in range(3)]
    webp = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    started = time.process_time()
    with pytest.raises(InvalidInput, match=r"10000x10000, more than|too many pixels"):
        decode_image(_webp_canvas(webp, 10000, 10000))
    assert time.process_time() - started < 0.5


@pytest.mark.parametrize(
    ("magic", "name"), [(b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP")]
)
def test_other_formats_are_named_in_the_refusal(magic: bytes, name: str) -> None:
    with pytest.raises(
        InvalidInput, match=f"^{name} images are not accepted: the image must be JPEG, PNG or WebP$"
    ):
        decode_image(magic + b"\0" * 64)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_hostile_corpus_verdicts() -> None:
    wrong = []
    for sample in corpus():
        started = time.process_time()
        try:
            decode_image(sample.data)
            verdict = "ok"
        except InvalidInput as exc:
            verdict = "refused" if exc.status == 400 else f"status {exc.status}"
        cpu = time.process_time() - started
        if verdict != sample.verdict or cpu > 3.0:  # generous: a shared machine; the soak run measures
            wrong.append((sample.name, verdict, round(cpu, 2)))
    assert wrong == []


# -- concurrency ----------------------------------------------------------------------------------


@pytest.fixture
def one_slot() -> Iterator[None]:
    before = decode_concurrency()
    set_decode_concurrency(1, wait_s=0.05)
    try:
        yield
    finally:
        set_decode_concurrency(before[0], wait_s=before[1])


def _hold_slot(release: threading.Event, held: threading.Event) -> None:
    with images._decode_slot():
        held.set()
        release.wait(10)


@pytest.mark.usefixtures("one_slot")
def test_decodes_past_the_cap_wait_then_are_overloaded() -> None:
    data = LEGITIMATE["png_rgb"]
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_slot, args=(release, held))
    holder.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(Overloaded, match="too many images are being decoded at once") as info:
            decode_image(data)
        assert 0.04 <= time.monotonic() - started < 2.0
        assert info.value.status == 503 and info.value.retry_after > 0
        # Refusals from the header never wait for a slot.
        with pytest.raises(InvalidInput):
            decode_image(data, max_pixels=10)

        async def on_the_loop() -> np.ndarray:
            return decode_image(data)  # never blocks the event loop: no slot taken

        assert asyncio.run(on_the_loop()).shape == (200, 300, 3)
    finally:
        release.set()
        holder.join()
    assert decode_image(data).shape == (200, 300, 3)


def test_concurrency_defaults_and_validation() -> None:
    slots, wait_s = decode_concurrency()
    assert 1 <= slots <= 4 and wait_s > 0
    for bad in (0, -1):
        with pytest.raises(ValueError, match="slots"):
            set_decode_concurrency(bad)
    assert decode_concurrency() == (slots, wait_s)
