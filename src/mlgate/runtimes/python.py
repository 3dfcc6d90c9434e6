"""Plain Python model classes.

Either ``params["class"] = "package.module:ClassName"`` names a class of code that is
already installed (nothing uploaded is executed), or the artifact is a ``.py`` file
defining the class (``params["class_name"]``, default ``Model``) — that runs uploaded
code, so it needs a trusted version. The class looks like::

    class Model:
        def load(self, artifact_dir: Path) -> None: ...        # optional
        def decode(self, payload: Any) -> Any: ...             # optional; raise ValueError/InvalidInput
        def predict(self, batch: list[Any]) -> list[Any]: ...  # same length, same order
        def encode(self, output: Any) -> Any: ...              # optional
        def metadata(self) -> dict[str, Any]: ...              # optional
        def warmup_input(self) -> Any: ...                     # optional, a decoded item
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlgate.errors import ConfigurationError, InvalidInput, MlgateError, UnsafeArtifact
from mlgate.runtimes.base import LoadContext, ModelRuntime, load_failed, to_jsonable

__all__ = ["PythonRuntime"]

_PY_REFUSAL = (
    "a .py artifact executes uploaded code; mark the version trusted (models push --trusted) "
    "or pin its sha256 in MLGATE_TRUSTED_SHA256, or name an installed class in params['class']"
)


class PythonRuntime(ModelRuntime):
    """Delegates to an instance of a user class (see the module docstring)."""

    name = "python"

    def __init__(self) -> None:
        self._model: Any = None
        self._module_name: str | None = None

    def load(self, ctx: LoadContext) -> None:
        target = ctx.params.get("class")
        if isinstance(target, str) and ":" in target:
            cls = _installed_class(target)
        elif ctx.artifact_path.suffix == ".py":
            if not ctx.trusted:
                raise UnsafeArtifact(_PY_REFUSAL)
            name = ctx.params.get("class_name", target or "Model")
            cls = self._file_class(ctx.artifact_path, str(name))
        else:
            raise ConfigurationError(
                "python runtime needs params['class'] = 'package.module:ClassName' or a .py artifact"
            )
        if not isinstance(cls, type) or not callable(getattr(cls, "predict", None)):
            what = target or f"{ctx.artifact_path.name}'s {ctx.params.get('class_name', 'Model')}"
            raise ConfigurationError(
                f"{what} is not a class with a predict(batch) method (found {type(cls).__name__})"
            )
        try:
            model = cls()
            if callable(getattr(model, "load", None)):
                model.load(ctx.artifact_dir)
        except MlgateError:
            raise
        except Exception as exc:
            raise load_failed(self.name, exc) from exc
        self._model = model

    def _file_class(self, path: Path, class_name: str) -> Any:
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        module_name = f"mlgate_user_model_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise load_failed(self.name, ImportError(f"cannot import {path.name}"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickling look classes up here
        self._module_name = module_name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            self.close()
            raise load_failed(self.name, exc) from exc
        cls = getattr(module, class_name, None)
        if cls is None:
            self.close()
            raise ConfigurationError(f"{path.name} defines no class {class_name!r}")
        return cls

    def decode(self, payload: Any) -> Any:
        decode = getattr(self._model, "decode", None)
        if not callable(decode):
            return payload
        try:
            return decode(payload)
        except InvalidInput:
            raise
        except Exception as exc:  # the user's validation errors are the client's fault
            raise InvalidInput(f"invalid input: {exc}") from exc

    def predict(self, batch: list[Any]) -> list[Any]:
        if not batch:
            return []
        outputs = self._model.predict(batch)
        if not isinstance(outputs, Sequence) or isinstance(outputs, str | bytes):
            outputs = list(outputs)
        if len(outputs) != len(batch):
            raise MlgateError(f"python model returned {len(outputs)} outputs for {len(batch)} inputs")
        return list(outputs)

    def encode(self, output: Any) -> Any:
        encode = getattr(self._model, "encode", None)
        return to_jsonable(encode(output) if callable(encode) else output)

    def metadata(self) -> dict[str, Any]:
        metadata = getattr(self._model, "metadata", None)
        if callable(metadata):
            return dict(metadata())
        return super().metadata()

    def warmup_input(self) -> Any:
        warmup = getattr(self._model, "warmup_input", None)
        return warmup() if callable(warmup) else None

    def close(self) -> None:
        close = getattr(self._model, "close", None)
        if callable(close):
            close()
        if self._module_name is not None:
            sys.modules.pop(self._module_name, None)
            self._module_name = None


def _installed_class(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"params['class'] must look like 'package.module:ClassName', not {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for params['class']: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(f"{module_name!r} has no {attr!r}")
    return obj
