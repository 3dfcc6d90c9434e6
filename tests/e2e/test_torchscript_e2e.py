"""End to end: a TorchScript model pushed over HTTP serves; a pickled PyTorch model is refused."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.server_process import ADMIN_KEY, run_server

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]+` is deprecated:DeprecationWarning"),
]
ADMIN = {"x-api-key": ADMIN_KEY}
MANIFEST = {"runtime": "torchscript", "artifact": "model.pt", "params": {"input_shape": [3]}}


def _net() -> torch.nn.Module:  # type: ignore[name-defined]
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).eval()


def _push(c: httpx.Client, name: str, path: Path, manifest: dict[str, object]) -> httpx.Response:
    return c.post(
        f"/v1/models/{name}/versions",
        files={"files": ("model.pt", path.read_bytes())},
        data={"manifest": json.dumps(manifest), "aliases": "production"},
        headers=ADMIN,
    )


def test_torchscript_push_and_predict(tmp_path: Path) -> None:
    net = _net()
    scripted = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(scripted))
    pickled = tmp_path / "pickled.pt"
    torch.save(net, pickled)
    with run_server(tmp_path / "data", env={"MLGATE_SERVICES": "[]"}) as s, s.client() as c:
        assert _push(c, "ts", scripted, MANIFEST).status_code == 201
        rows = [[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]]
        with torch.no_grad():
            expected = net(torch.tensor(rows)).numpy()
        for row, want in zip(rows, expected, strict=True):
            r = c.post("/v1/models/ts/predict", json=row)
            assert r.status_code == 200, r.text
            # one number per item: a row of one value is that value (the native API's rule)
            assert r.json()["outputs"] == pytest.approx(float(want[0]), rel=1e-5)
        assert c.post("/v1/models/ts/predict", json=[1.0, 2.0]).status_code == 400  # wrong shape
        meta = c.get("/v2/models/ts").json()
        assert meta["platform"] == "torchscript" and meta["inputs"][0]["shape"] == [-1, 3]
        refused = _push(c, "pickled", pickled, MANIFEST)
        assert refused.status_code in (400, 422), refused.text
        assert "torch.jit.script" in refused.text or "trusted" in refused.text
