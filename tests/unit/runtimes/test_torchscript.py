"""The torchscript runtime: TorchScript archives load untrusted; pickled models only if trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlgate.errors import InvalidInput, UnsafeArtifact
from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext
from mlgate.runtimes.torchscript import is_torchscript
from mlgate.types import Manifest

torch = pytest.importorskip("torch")

# torch 2.13 deprecates *making* TorchScript (torch.jit.script/trace) in favour of torch.export;
# the archives users already have are what this runtime serves.
_MAKING = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]+` is deprecated:DeprecationWarning")


class Net(torch.nn.Module):  # type: ignore[misc,name-defined]
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[name-defined]
        return torch.tanh(self.linear(x))


def _load(path: Path, *, trusted: bool = False, params: dict[str, object] | None = None) -> object:
    runtime = create_runtime("torchscript")
    manifest = Manifest(runtime="torchscript", artifact=path.name, params=params or {"input_shape": [3]})
    runtime.load(LoadContext(path.parent, manifest, trusted=trusted))
    return runtime


@_MAKING
def test_a_scripted_model_serves_batched_and_matches_torch(tmp_path: Path) -> None:
    net = Net().eval()
    torch.jit.script(net).save(str(tmp_path / "model.pt"))
    assert is_torchscript(tmp_path / "model.pt")
    runtime = _load(tmp_path / "model.pt")
    rows = [[0.1, 0.2, 0.3], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0]]
    outputs = runtime.predict([runtime.decode(r) for r in rows])  # type: ignore[attr-defined]
    with torch.no_grad():
        expected = net(torch.tensor(rows, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(np.stack(outputs), expected, rtol=1e-6)
    assert runtime.encode(outputs[0]) == pytest.approx(expected[0].tolist())  # type: ignore[attr-defined]
    assert runtime.metadata()["inputs"][0]["shape"] == [-1, 3]  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match=r"shape \[3\]"):
        runtime.decode([1.0, 2.0])  # type: ignore[attr-defined]


@_MAKING
def test_a_traced_model_with_a_tuple_output_gives_one_list_per_item(tmp_path: Path) -> None:
    class Two(torch.nn.Module):  # type: ignore[misc,name-defined]
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[name-defined]
            return x.sum(dim=1), x * 2

    torch.jit.trace(Two(), torch.zeros(2, 3)).save(str(tmp_path / "two.pt"))
    runtime = _load(tmp_path / "two.pt")
    first, second = runtime.predict([runtime.decode([1, 2, 3]), runtime.decode([0, 0, 1])])  # type: ignore[attr-defined]
    assert runtime.encode(first) == [6.0, [2.0, 4.0, 6.0]]  # type: ignore[attr-defined]
    assert runtime.encode(second) == [1.0, [0.0, 0.0, 2.0]]  # type: ignore[attr-defined]


def test_a_pickled_model_is_refused_unless_trusted(tmp_path: Path) -> None:
    torch.save(Net(), tmp_path / "pickled.pt")
    assert not is_torchscript(tmp_path / "pickled.pt")
    with pytest.raises(UnsafeArtifact, match=r"torch\.jit\.script"):
        _load(tmp_path / "pickled.pt")
    runtime = _load(tmp_path / "pickled.pt", trusted=True)
    assert len(runtime.predict([runtime.decode([0.0, 0.0, 0.0])])) == 1  # type: ignore[attr-defined]


def test_garbage_is_a_load_error_without_paths(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UnsafeArtifact):  # not TorchScript, so treated as a pickle: refused untrusted
        _load(tmp_path / "junk.pt")
    with pytest.raises(Exception) as exc:
        _load(tmp_path / "junk.pt", trusted=True)
    assert str(tmp_path) not in getattr(exc.value, "message", "")
