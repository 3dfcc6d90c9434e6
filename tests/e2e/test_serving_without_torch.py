"""Serving needs neither torch nor TensorFlow (nor Keras): every reference service answers
from a server process in which importing them is impossible."""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from mlgate_services.cardiaco import generator
from tests.server_process import ServerProcess, run_server

pytestmark = pytest.mark.e2e

BLOCKED = ("torch", "tensorflow", "keras", "tf_keras", "jax")
# A meta-path finder that makes these packages unimportable, as if they were not installed.
LAUNCHER = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    f"        if name.split('.')[0] in {BLOCKED!r}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r} (blocked)', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Block())\n"
    "from mlgate.cli import main\n"
    "sys.argv = ['mlgate', 'serve']\n"
    "main()\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-notorch"), command=[sys.executable, "-c", LAUNCHER]) as s:
        yield s


def _jpeg() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((120, 160, 3), 128, dtype=np.uint8)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def test_every_reference_service_serves_without_torch(server: ServerProcess) -> None:
    with server.client() as c:
        loaded = c.get("/readyz").json()["loaded"]
        assert {m.split(":")[0] for m in loaded} >= {"temperatura", "intrusos", "vehiculos", "cardiaco"}
        assert c.post("/prod", json={"temperaturas": [20.0] * 60}).status_code == 200
        assert c.post("/prodfaces", json={"body": {"image": _jpeg()}}).json()["statusCode"] == 200
        assert (
            len(
                c.post("/v1/models/vehiculos/predict", json={"image": _jpeg()}).json()["outputs"][
                    "inferences"
                ]
            )
            == 2
        )
        record = generator.to_record(generator.generate(1, seed=7))
        r = c.post("/v1/models/cardiaco/predict", json=record)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"]["State"] in generator.STATES
