"""Real photos for the image services' drift baselines and quality tests (build time only).

The photos ship with scikit-image (a dev dependency): :func:`photo` loads one as RGB,
:func:`crops` cuts seeded crops of it as PNG bytes — the reference traffic of
``intrusos/drift_baseline.py`` and ``vehiculos/drift_baseline.py``. Serving never imports this.
"""

from __future__ import annotations

import importlib
import io
from typing import Any

import numpy as np

__all__ = ["crops", "photo"]


def photo(name: str) -> np.ndarray:
    """An RGB photo that ships with scikit-image (``astronaut``, ``camera`` — grey, stacked to
    RGB —, ``chelsea``, ``cat``…; ``motorcycle_left``/``_right``: the ``stereo_motorcycle`` pair)."""
    data: Any = importlib.import_module("skimage.data")
    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        rgb = np.asarray(left if name == "motorcycle_left" else right)
    else:
        rgb = np.asarray(getattr(data, name)())
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    return rgb[..., :3]


def crops(rgb: np.ndarray, n: int, *, seed: int) -> list[bytes]:
    """``n`` seeded crops of ``rgb`` (50-100 % of each side, half mirrored), as PNG bytes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    height, width = rgb.shape[:2]
    out = []
    for _ in range(n):
        h = int(height * rng.uniform(0.5, 1.0))
        w = int(width * rng.uniform(0.5, 1.0))
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        part = rgb[top : top + h, left : left + w]
        if rng.random() < 0.5:
            part = part[:, ::-1]
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(part)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out
