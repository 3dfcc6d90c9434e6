"""A corpus of hostile (and a few legitimate) images, generated deterministically at test time.

Nothing is downloaded: every file is made with Pillow/NumPy or written byte by byte (PNG
chunks, patched JPEG/WebP headers). Each :class:`Sample` says what a server must answer:
``ok`` (decodes within the budget of :mod:`mlgate.runtimes.images`: a 200) or ``refused``
(a clear 400, cheaply). Sizes are chosen against the module's defaults (13 MP, 128 MiB), and
every file fits the 6 MiB body limit.

    for sample in corpus():
        ...  # sample.name, sample.data, sample.verdict
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["MAX_SIDE", "Sample", "corpus", "legitimate", "png"]

#: A 4160x3120 image (12.98 MP) is the largest 4:3 image under the 13 MP cap.
MAX_SIDE = (4160, 3120)
Verdict = Literal["ok", "refused"]


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    verdict: Verdict
    why: str

    @property
    def media_type(self) -> str:
        if self.data.startswith(b"\xff\xd8"):
            return "image/jpeg"
        if self.data.startswith(b"RIFF"):
            return "image/webp"
        return "image/png"


# -- building blocks ------------------------------------------------------------------------------


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(
    width: int,
    height: int,
    *,
    depth: int,
    color: int,
    rows: Iterable[bytes] | None = None,
    extra: bytes = b"",
    palette: bytes = b"",
) -> bytes:
    """A PNG written chunk by chunk; ``rows`` are the filtered scanlines (default: all zero),
    streamed through zlib so a huge image never exists in memory."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    row_bytes = 1 + (width * channels * depth + 7) // 8
    compressor = zlib.compressobj(9)
    if rows is None:
        zero = b"\0" * row_bytes
        rows = (zero for _ in range(height))
    idat = b"".join(compressor.compress(r) for r in rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    plte = _chunk(b"PLTE", palette) if palette else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + extra
        + plte
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _gradient(width: int, height: int, channels: int = 3) -> np.ndarray:
    """A smooth, slightly textured picture (compresses like a photo, not like noise); uint8
    arithmetic on broadcast rows and columns, so a 13 MP one takes milliseconds."""
    x = np.arange(width)
    y = np.arange(height)
    across = (x * 127 // max(1, width - 1) + (x // 7 % 9) * 3).astype(np.uint8)
    down = (y * 127 // max(1, height - 1) + (y // 5 % 9) * 3).astype(np.uint8)
    base = down[:, None] + across[None, :]
    return np.stack([base + np.uint8(40 * c) for c in range(channels)], axis=-1)


def _save(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _png16_rows(width: int, height: int, channels: int) -> Iterable[bytes]:
    """Scanlines of a 16-bit horizontal ramp (big-endian samples 0..65535): the first row
    unfiltered, the others filter type 2 ("up", all zero): a 16-bit image of a few KB."""
    ramp = (np.arange(width, dtype=np.uint32) * 65535 // max(1, width - 1)).astype(">u2")
    yield b"\0" + np.repeat(ramp, channels).tobytes()
    same = b"\2" + bytes(width * channels * 2)
    for _ in range(height - 1):
        yield same


def _jpeg_dims(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its SOF header claiming ``width`` x ``height``."""
    out = bytearray(data)
    i = 2
    while i < len(out):
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker")


def _scan_bomb(data: bytes, copies: int) -> bytes:
    """A progressive JPEG with its last scan repeated ``copies`` times: each copy is a few bytes
    on a flat image, yet libjpeg walks every block of the image again (~5 ms per 13 MP)."""
    start = data.rfind(b"\xff\xda")
    end = data.rfind(b"\xff\xd9")
    return data[:end] + data[start:end] * copies + data[end:]


def _webp_canvas(data: bytes, width: int, height: int) -> bytes:
    """An animated WebP whose VP8X header claims a ``width`` x ``height`` canvas."""
    i = data.index(b"VP8X")
    out = bytearray(data)
    out[i + 12 : i + 18] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return bytes(out)


def _ztxt_bomb(chunks: int) -> bytes:
    """A 16x16 PNG with ``chunks`` zTXt chunks of 1,000,000 characters each (~1 KB each on disk)."""
    text = zlib.compress(b"a" * 1_000_000, 9)
    extra = b"".join(_chunk(b"zTXt", b"k%d\0\0" % i + text) for i in range(chunks))
    return png(16, 16, depth=8, color=2, extra=extra)


# -- the corpus -----------------------------------------------------------------------------------


def legitimate() -> list[Sample]:
    """Small everyday images of every accepted kind: each must decode (200)."""
    rgb = Image.fromarray(_gradient(640, 480))
    rgba = Image.fromarray(_gradient(320, 240, 4))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return [
        Sample("png_rgb", _save(rgb, "PNG"), "ok", "8-bit RGB PNG"),
        Sample("png_gray", _save(rgb.convert("L"), "PNG"), "ok", "8-bit grayscale PNG"),
        Sample("png_rgba", _save(rgba, "PNG"), "ok", "RGBA PNG (flattened onto white)"),
        Sample("png_palette", _save(palette, "PNG"), "ok", "palette PNG"),
        Sample("jpeg_baseline", _save(rgb, "JPEG", quality=90), "ok", "baseline JPEG"),
        Sample(
            "jpeg_progressive", _save(rgb, "JPEG", quality=90, progressive=True), "ok", "progressive JPEG"
        ),
        Sample("webp", _save(rgb, "WEBP", quality=80), "ok", "lossy WebP"),
        Sample("jpeg_exif6", _save(rgb, "JPEG", exif=_exif(6)), "ok", "EXIF orientation 6"),
    ]


@functools.cache
def corpus() -> tuple[Sample, ...]:
    """Every hostile kind of the issue (plus :func:`legitimate`), in a fixed order."""
    width, height = MAX_SIDE
    big = Image.fromarray(_gradient(width, height))
    small = Image.fromarray(_gradient(64, 48))
    small_png = _save(small, "PNG")
    small_jpeg = _save(small, "JPEG", quality=90)
    small_webp = _save(small, "WEBP", quality=80)
    progressive = _save(big, "JPEG", quality=85, progressive=True, subsampling=0)
    flat = _save(Image.new("RGB", MAX_SIDE, (120, 130, 140)), "JPEG", quality=90, progressive=True)
    frames = [Image.fromarray(_gradient(16, 16) + i) for i in range(8)]
    many = [frames[i % 8] for i in range(2000)]
    animated_webp = _save(frames[0], "WEBP", save_all=True, append_images=frames[1:3], lossless=True)
    cmyk = Image.fromarray(_gradient(3000, 2000, 4), "CMYK")
    hostile = [
        # 16-bit PNGs: the 87 KB, 40 MP bomb; and the largest the cap accepts
        Sample(
            "png16_gray_40mp",
            png(6000, 6600, depth=16, color=0),
            "refused",
            "16-bit grayscale, 39.6 MP of zeros (~80 KB): over the pixel cap",
        ),
        Sample(
            "png16_gray_max",
            png(width, height, depth=16, color=0, rows=_png16_rows(width, height, 1)),
            "ok",
            "16-bit grayscale gradient at the pixel cap: scaled to 8 bits band by band",
        ),
        Sample(
            "png16_rgba_max",
            png(width, height, depth=16, color=6),
            "ok",
            "16-bit RGBA at the pixel cap (transparent: flattened onto white)",
        ),
        Sample("png16_rgba_16mp", png(4000, 4000, depth=16, color=6), "refused", "16-bit RGBA, 16 MP"),
        # bombs: huge dimensions, tiny files
        Sample(
            "png_palette_huge",
            png(20000, 20000, depth=1, color=3, palette=b"\0\0\0\xff\xff\xff"),
            "refused",
            "1-bit palette PNG, 400 MP in ~50 KB",
        ),
        Sample(
            "png_bomb", png(20000, 20000, depth=1, color=0), "refused", "1-bit grayscale, 400 MP in ~50 KB"
        ),
        Sample(
            "png_header_65535",
            png(65535, 65535, depth=8, color=2, rows=[b"\0" * 16]),
            "refused",
            "IHDR claims 65535x65535 RGB",
        ),
        Sample(
            "jpeg_header_65535", _jpeg_dims(small_jpeg, 65535, 65535), "refused", "SOF claims 65535x65535"
        ),
        Sample(
            "webp_canvas_100mp",
            _webp_canvas(animated_webp, 10000, 10000),
            "refused",
            "animated WebP whose canvas claims 10000x10000 with 16x16 frames",
        ),
        # JPEG layouts
        Sample("jpeg_progressive_max", progressive, "ok", "progressive 4:4:4 JPEG at the pixel cap"),
        Sample("jpeg_cmyk", _save(cmyk, "JPEG", quality=85), "ok", "CMYK JPEG, 6 MP"),
        Sample(
            "jpeg_cmyk_progressive_max",
            _save(Image.new("CMYK", MAX_SIDE, (10, 20, 30, 40)), "JPEG", quality=70, progressive=True),
            "refused",
            "progressive CMYK at the pixel cap: 12 B/px, over the byte budget",
        ),
        Sample(
            "jpeg_scan_bomb",
            _scan_bomb(flat, 3000),
            "refused",
            "progressive JPEG at the pixel cap with 3000 repeated scans (~80 KB; each walks the image)",
        ),
        Sample("jpeg_scans_at_cap", _scan_bomb(flat, 54), "ok", "the same with 64 scans, the most allowed"),
        Sample(
            "jpeg_exif6_max",
            _save(big, "JPEG", quality=85, exif=_exif(6)),
            "ok",
            "EXIF orientation 6 on an image at the pixel cap",
        ),
        Sample(
            "jpeg_exif8_max",
            _save(big, "JPEG", quality=85, exif=_exif(8), progressive=True),
            "ok",
            "EXIF orientation 8, progressive, at the pixel cap",
        ),
        # animations: only the first frame counts; huge frame counts are refused from the header
        Sample("webp_animated", animated_webp, "ok", "animated WebP, 3 frames"),
        Sample(
            "webp_2000_frames",
            _save(many[0], "WEBP", save_all=True, append_images=many[1:], lossless=True),
            "refused",
            "animated WebP, 2000 frames",
        ),
        Sample(
            "apng_2000_frames",
            _save(many[0], "PNG", save_all=True, append_images=many[1:]),
            "refused",
            "animated PNG, 2000 frames",
        ),
        # other formats: refused from their magic bytes
        Sample("gif", _save(small.convert("P"), "GIF"), "refused", "GIF"),
        Sample(
            "gif_animated", _save(frames[0], "GIF", save_all=True, append_images=frames[1:]), "refused", "GIF"
        ),
        Sample("tiff", _save(small, "TIFF"), "refused", "TIFF (little-endian)"),
        Sample("tiff_be", b"MM\x00*" + _save(small, "TIFF")[4:], "refused", "TIFF (big-endian magic)"),
        Sample("bmp", _save(small, "BMP"), "refused", "BMP"),
        # truncated and corrupt files: a clear 400, never a 500
        Sample("png_truncated", small_png[: len(small_png) // 2], "refused", "PNG cut in half"),
        Sample("jpeg_truncated", small_jpeg[: len(small_jpeg) // 2], "refused", "JPEG cut in half"),
        Sample(
            "jpeg_progressive_truncated",
            progressive[: len(progressive) // 3],
            "refused",
            "progressive JPEG at the pixel cap, cut to a third",
        ),
        Sample("webp_truncated", small_webp[: len(small_webp) // 2], "refused", "WebP cut in half"),
        Sample("png_magic_only", b"\x89PNG\r\n\x1a\n", "refused", "PNG signature alone"),
        Sample("jpeg_magic_only", b"\xff\xd8\xff", "refused", "JPEG signature alone"),
        # ancillary chunks: Pillow caps text at 1 MB a chunk; mlgate at 1 MiB in all
        Sample("png_ztxt_bomb", _ztxt_bomb(60), "refused", "60 zTXt chunks of 1 MB each (~60 KB on disk)"),
    ]
    return tuple(legitimate() + hostile)
