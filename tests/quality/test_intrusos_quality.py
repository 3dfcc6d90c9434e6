"""The bundled ``intrusos`` detector on real photos that packages ship (offline; see conftest.py).

Each photo must yield its object at the service's threshold (0.5) as the most confident
detection, and the intruder flag must follow: person, cat, dog and bear are intruders, a
motorcycle is not. The measured confidences are recorded in the model card.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.quality.conftest import Detector

#: photo -> (expected top class, intruder?)
PACKAGE_PHOTOS = {
    "astronaut": ("person", True),
    "camera": ("person", True),
    "chelsea": ("cat", True),
    "stereo_motorcycle": ("motorcycle", False),
    "grace_hopper": ("person", True),
}
STAMPS = {"dog": ("dog", True), "bear": ("bear", True)}


def _check(result: dict[str, Any], expected: str, intruder: bool, *, size: tuple[int, int]) -> None:
    objects = result["objetos"]
    assert result["detectado"] is True
    assert result["total_objetos"] == len(objects) >= 1
    top = objects[0]
    assert top["clase"] == expected, objects
    assert top["confianza"] >= 0.5
    assert result["intruso_detectado"] is intruder, objects
    width, height = size
    box = top["bbox"]
    assert 0 <= box["xmin"] < box["xmax"] <= width and 0 <= box["ymin"] < box["ymax"] <= height
    # The object fills a good part of each of these photos.
    assert (box["xmax"] - box["xmin"]) * (box["ymax"] - box["ymin"]) > 0.1 * width * height


def _size(data: bytes) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


@pytest.mark.parametrize("name", sorted(PACKAGE_PHOTOS))
def test_package_photos(name: str, package_photos: dict[str, bytes], intrusos_detector: Detector) -> None:
    data = package_photos[name]
    result = intrusos_detector.detect({"body": {"image": base64.b64encode(data).decode()}})
    _check(result, *PACKAGE_PHOTOS[name], size=_size(data))


@pytest.mark.parametrize("name", sorted(STAMPS))
def test_tuxpaint_stamps(name: str, tuxpaint_stamps: dict[str, bytes], intrusos_detector: Detector) -> None:
    data = tuxpaint_stamps[name]
    result = intrusos_detector.detect({"body": {"image": base64.b64encode(data).decode()}})
    _check(result, *STAMPS[name], size=_size(data))
