from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from mlgate.errors import ConfigurationError, InvalidInput, MlgateError, ModelLoadError, UnsafeArtifact
from mlgate.runtimes.python import PythonRuntime
from tests.unit.runtimes.artifacts import load_context

MODEL_PY = """
from pathlib import Path
Path({canary!r}).write_text("uploaded code ran")

class Model:
    def load(self, artifact_dir):
        self.offset = 10

    def predict(self, batch):
        return [x + self.offset for x in batch]
"""


class Miscounting:
    def predict(self, batch: list[Any]) -> list[Any]:
        return [0]


class Passthrough:
    def predict(self, batch: list[Any]) -> list[Any]:
        return [{"echo": x} for x in batch]

    def encode(self, output: Any) -> Any:
        return {"wrapped": output}


class FailingLoad:
    def load(self, artifact_dir: Path) -> None:
        raise RuntimeError("weights missing")

    def predict(self, batch: list[Any]) -> list[Any]:
        return batch


def _loaded(
    folder: Path, artifact: str = "model.py", *, trusted: bool = False, **params: Any
) -> PythonRuntime:
    """``params`` are the manifest's; ``class`` is passed as ``cls``."""
    if "cls" in params:
        params["class"] = params.pop("cls")
    runtime = PythonRuntime()
    runtime.load(load_context(folder, "python", artifact, params=params, trusted=trusted))
    return runtime


def test_py_artifact_is_refused_without_trust_and_never_executed(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "model.py").write_text(MODEL_PY.format(canary=str(canary)))
    with pytest.raises(UnsafeArtifact, match="trusted"):
        _loaded(tmp_path)
    assert not canary.exists()


def test_trusted_py_artifact_loads_and_unloads(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (tmp_path / "model.py").write_text(MODEL_PY.format(canary=str(canary)))
    runtime = _loaded(tmp_path, trusted=True)
    assert canary.exists()
    assert runtime.predict([runtime.decode(1), runtime.decode(2)]) == [11, 12]
    module = runtime._module_name
    assert module in sys.modules
    runtime.close()
    assert module not in sys.modules
    with pytest.raises(ConfigurationError, match="Missing"):
        _loaded(tmp_path, trusted=True, class_name="Missing")


def test_installed_class_needs_no_trust(tmp_path: Path) -> None:
    runtime = _loaded(tmp_path, "none", cls=f"{__name__}:Passthrough")
    [out] = runtime.predict([runtime.decode({"any": "json"})])
    assert runtime.encode(out) == {"wrapped": {"echo": {"any": "json"}}}
    assert runtime.metadata() == {"inputs": [], "outputs": []}
    assert runtime.warmup_input() is None


@pytest.mark.parametrize(
    "target",
    ["no_such_module_xyz:Model", f"{__name__}:Nope", f"{__name__}:MODEL_PY", "os.path:join", ":Model"],
)
def test_bad_class_params(tmp_path: Path, target: str) -> None:
    with pytest.raises(ConfigurationError):
        _loaded(tmp_path, "none", cls=target)


def test_without_class_or_py_artifact(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="params"):
        _loaded(tmp_path, "model.bin")


def test_output_count_is_checked(tmp_path: Path) -> None:
    runtime = _loaded(tmp_path, "none", cls=f"{__name__}:Miscounting")
    with pytest.raises(MlgateError, match="1 outputs for 2 inputs"):
        runtime.predict([1, 2])


def test_load_failure_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="weights missing"):
        _loaded(tmp_path, "none", cls=f"{__name__}:FailingLoad")


def test_decode_errors_become_invalid_input(tmp_path: Path) -> None:
    from tests.contract.test_runtimes_contract import ScaleModel

    (tmp_path / "factor.txt").write_text("3")
    runtime = _loaded(tmp_path, "factor.txt", cls=f"{ScaleModel.__module__}:ScaleModel")
    with pytest.raises(InvalidInput, match="numbers"):
        runtime.decode(["a"])
    assert runtime.predict([runtime.decode([1, 2])]) == [[3.0, 6.0]]
