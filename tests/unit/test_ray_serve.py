"""The Ray Serve seam without Ray (CI): errors across the boundary, the replicas' settings and
deployment options, and the dataplane serving through a remote model (:attr:`DataPlane.remote`).

The real two-node cluster is tests/ray_cluster (``make soak-ray``)."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate import errors
from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane
from mlgate.errors import (
    InvalidInput,
    MlgateError,
    ModelLoadError,
    Overloaded,
    PredictionFailed,
    PredictionTimeout,
    QuotaExceeded,
    Throttled,
    VersionNotFound,
)
from mlgate.ray_serve import (
    REPLICA_DEFAULTS,
    REPLICA_SERVE_ENV,
    RayModel,
    RemoteRuntime,
    _ray_failure,
    connect,
    deployment_options,
    error_envelope,
    rebuild_error,
    replica_environment,
)
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.settings import RaySettings, Settings
from mlgate.store import FileArtifactStore
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Manifest, VersionInfo

# -- errors across the boundary ---------------------------------------------------------------------


def _every_error_class() -> list[type[MlgateError]]:
    found, stack = [], [MlgateError]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return [c for c in found if c.__module__ == errors.__name__ and not c.__name__.startswith("_")]


@pytest.mark.parametrize("cls", _every_error_class(), ids=lambda c: c.__name__)
def test_every_error_crosses_as_the_same_class_and_answer(cls: type[MlgateError]) -> None:
    kwargs: dict[str, Any] = {"details": {"model": "m", "path": ["a", 1]}}
    if "retry_after" in cls.__init__.__code__.co_varnames:
        kwargs |= {"retry_after": 2.5, "headers": {"X-RateLimit-Limit": "10"}}
    original = cls("went wrong", **kwargs)
    rebuilt = rebuild_error(error_envelope(original))
    assert type(rebuilt) is cls
    assert (rebuilt.status, rebuilt.code, rebuilt.message) == (
        original.status,
        original.code,
        original.message,
    )
    assert rebuilt.to_dict() == original.to_dict()
    assert getattr(rebuilt, "retry_after", None) == getattr(original, "retry_after", None)
    assert getattr(rebuilt, "headers", None) == getattr(original, "headers", None)


def test_the_envelope_is_plain_data_with_public_text_only() -> None:
    envelope = error_envelope(Throttled("slow down", retry_after=3.0))
    assert envelope == {
        "code": "throttled",
        "status": 429,
        "message": "slow down",
        "details": {},
        "retry_after": 3.0,
        "headers": {},
    }
    assert "/tmp/secret" not in error_envelope(InvalidInput("bad file /tmp/secret/x.bin"))["message"]


def test_an_unknown_code_keeps_its_code_and_status() -> None:
    rebuilt = rebuild_error({"code": "teapot", "status": 418, "message": "short and stout", "details": {}})
    assert isinstance(rebuilt, MlgateError)
    assert (rebuilt.status, rebuilt.code, rebuilt.to_dict()) == (
        418,
        "teapot",
        {"code": "teapot", "message": "short and stout"},
    )
    again = rebuild_error({"code": "teapot", "status": 418, "message": "x"})
    assert type(again) is type(rebuilt)


def test_ray_failures_are_503s_or_a_clear_500() -> None:
    def named(name: str) -> Exception:
        return type(name, (Exception,), {})("boom")

    busy = _ray_failure("m", named("BackPressureError"))
    assert isinstance(busy, Overloaded) and busy.retry_after == 1.0
    for name in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "DeploymentUnavailableError"):
        gone = _ray_failure("m", named(name))
        assert isinstance(gone, ModelLoadError) and "mlgate-m" in gone.message
    other = _ray_failure("m", named("WeirdError"))
    assert isinstance(other, PredictionFailed) and other.status == 500


# -- what replicas run with -------------------------------------------------------------------------


def test_replicas_get_the_registry_not_the_secrets(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        database_url="postgresql+psycopg://u:p@db/reg",
        store_url="s3://bucket/models",
    )
    environ = {
        "MLGATE_DATABASE_URL": "postgresql+psycopg://u:p@db/reg",
        "MLGATE_S3__REGION": "eu-west-1",
        "MLGATE_ADMIN_KEY": "a" * 40,
        "MLGATE_AUTH__JWT_SECRET": "s" * 40,
        "MLGATE_RAY__ADDRESS": "head:6379",
        "MLGATE_LIMITER__URL": "redis://r:6379/0",
        "MLGATE_CAPTURE__SAMPLE": "0.5",
        "HOME": "/root",
    }
    env = replica_environment(settings, environ)
    assert env["MLGATE_DATABASE_URL"] == "postgresql+psycopg://u:p@db/reg"
    assert env["MLGATE_STORE_URL"] == "s3://bucket/models"
    assert env["MLGATE_S3__REGION"] == "eu-west-1"
    assert env["MLGATE_DATA_DIR"] == str((tmp_path / "d" / "ray").resolve())
    for withheld in ("MLGATE_ADMIN_KEY", "MLGATE_AUTH__JWT_SECRET", "MLGATE_RAY__ADDRESS", "HOME"):
        assert withheld not in env
    for name, value in REPLICA_DEFAULTS.items():
        assert env[name] == value  # no limiter, capture, alerts or stats of a replica's own
    assert env["MLGATE_LOAD_ON_START"] == "false"
    chosen = Settings(data_dir=tmp_path, ray=RaySettings(replica_data_dir=Path("/srv/mlgate-replica")))
    assert replica_environment(chosen, {})["MLGATE_DATA_DIR"] == "/srv/mlgate-replica"


def test_deployment_options_from_settings_and_overrides() -> None:
    ray = RaySettings(num_replicas=2, num_cpus=0.5, actor_options={"memory": 10**9}, max_replicas_per_node=1)
    options = deployment_options(ray)
    assert options["num_replicas"] == 2
    assert "autoscaling_config" not in options
    assert options["ray_actor_options"] == {
        "num_cpus": 0.5,
        "memory": 10**9,
        "runtime_env": {"env_vars": REPLICA_SERVE_ENV},
    }
    assert REPLICA_SERVE_ENV["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"  # no HTTP port per replica
    mine = RaySettings(actor_options={"runtime_env": {"env_vars": {"A": "1"}, "pip": ["x"]}})
    env = deployment_options(mine)["ray_actor_options"]["runtime_env"]
    assert env == {"env_vars": {**REPLICA_SERVE_ENV, "A": "1"}, "pip": ["x"]}
    assert options["max_replicas_per_node"] == 1
    assert options["max_ongoing_requests"] == 64
    assert deployment_options(ray, num_replicas=3)["num_replicas"] == 3
    scaled = deployment_options(ray, autoscaling={"min_replicas": 1, "max_replicas": 4})
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4}
    assert "num_replicas" not in scaled  # Serve refuses both
    from_settings = deployment_options(RaySettings(autoscaling={"max_replicas": 2}))
    assert from_settings["autoscaling_config"] == {"max_replicas": 2}
    assert "max_replicas_per_node" not in from_settings


def test_ray_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_RAY__ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("MLGATE_RAY__AUTOSCALING", '{"min_replicas": 1, "max_replicas": 8}')
    monkeypatch.setenv("MLGATE_RAY__NUM_CPUS", "0.5")
    settings = Settings()
    assert settings.ray.address == "10.0.0.5:6379"
    assert settings.ray.autoscaling == {"min_replicas": 1, "max_replicas": 8}
    assert settings.ray.num_cpus == 0.5
    assert Settings().ray.num_replicas == 1


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed here")
def test_without_ray_the_gateway_says_which_extra(tmp_path: Path) -> None:
    from mlgate.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"mlgate\[ray\]"):
        connect(Settings(data_dir=tmp_path, ray=RaySettings(address="127.0.0.1:1")))


# -- the gateway's remote model ---------------------------------------------------------------------


class _Response:
    def __init__(self, answer: Any = None, *, delay: float = 0.0, error: BaseException | None = None) -> None:
        self.answer, self.delay, self.error, self.cancelled = answer, delay, error, False

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.answer

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, response: _Response) -> None:
        self.response = response
        self.calls: list[tuple[Any, ...]] = []

    def remote(self, *args: Any) -> _Response:
        self.calls.append(args)
        return self.response


class _Handle:
    def __init__(self, **methods: _Response) -> None:
        for name, response in methods.items():
            setattr(self, name, _Method(response))


def _info(version: int = 3) -> VersionInfo:
    from datetime import UTC, datetime

    manifest = Manifest(runtime="onnx", artifact="model.onnx")
    return VersionInfo("m", version, manifest, "", datetime.now(UTC))


def test_a_remote_answer_or_the_replicas_error() -> None:
    ok = RayModel(_info(), _Handle(predict=_Response((True, {"y": 1}))), RemoteRuntime({}, None), 5.0)
    assert asyncio.run(ok.predict({"x": 1}, timeout=1.0)) == {"y": 1}
    assert ok.handle.predict.calls == [(3, {"x": 1})]  # the resolved version, the raw payload
    envelope = error_envelope(VersionNotFound("no version 3"))
    failing = RayModel(_info(), _Handle(predict=_Response((False, envelope))), RemoteRuntime({}, None), 5.0)
    with pytest.raises(VersionNotFound, match="no version 3"):
        asyncio.run(failing.predict({}, timeout=1.0))


def test_a_silent_replica_is_a_504_and_its_call_cancelled() -> None:
    response = _Response((True, 1), delay=5.0)
    model = RayModel(_info(), _Handle(predict=response), RemoteRuntime({}, None), 0.05)
    with pytest.raises(PredictionTimeout):
        asyncio.run(model.predict({}, timeout=0.05))
    assert response.cancelled


def test_ray_errors_become_mlgate_errors() -> None:
    dead = type("RayActorError", (Exception,), {})("the actor died")
    model = RayModel(_info(), _Handle(infer=_Response(error=dead)), RemoteRuntime({}, None), 5.0)
    with pytest.raises(ModelLoadError):
        asyncio.run(model.infer({"x": np.zeros((1, 2))}, timeout=1.0))


def test_the_stand_in_runtime_prices_like_the_replicas() -> None:
    class Table:
        def units(self, payload: Any) -> int:
            return len(payload)

    assert RemoteRuntime({}, None).units([{"a": 1}] * 5) == 1
    assert RemoteRuntime({}, Table()).units([{"a": 1}] * 5) == 5
    meta = {"inputs": [{"name": "x"}], "outputs": []}
    assert RemoteRuntime(meta, None).metadata() == meta
    with pytest.raises(MlgateError):
        RemoteRuntime({}, None).decode([1])


# -- the dataplane's seam ---------------------------------------------------------------------------


class FakeRemoteModel:
    def __init__(self, info: VersionInfo, fail: MlgateError | Exception | None) -> None:
        self.info = info
        self.runtime = RemoteRuntime({"inputs": [], "outputs": [{"name": "y"}]}, None)
        self.fail = fail
        self.payloads: list[Any] = []

    async def predict(self, payload: Any, *, timeout: float) -> Any:
        self.payloads.append(payload)
        if self.fail is not None:
            raise self.fail
        return {"remote": self.info.version, "echo": payload}

    async def infer(self, tensors: dict[str, np.ndarray], *, timeout: float) -> dict[str, np.ndarray]:
        return {"y": np.asarray(tensors["x"]) * 2}


class FakeRemote:
    def __init__(self) -> None:
        self.opened: list[tuple[str, int]] = []
        self.models: dict[tuple[str, int], FakeRemoteModel] = {}
        self.refuse: MlgateError | Exception | None = None
        self.fail: MlgateError | Exception | None = None
        self.closed = False

    async def open(self, info: VersionInfo) -> FakeRemoteModel:
        self.opened.append((info.model, info.version))
        if self.refuse is not None:
            raise self.refuse
        model = self.models[(info.model, info.version)] = FakeRemoteModel(info, self.fail)
        return model

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[DataPlane, FakeRemote, Metrics]]:
    """A dataplane whose model ``m`` (an ONNX manifest over files that never load here) is remote."""
    repository = Repository.open("sqlite:///" + str(tmp_path / "r.db"))
    store = FileArtifactStore(tmp_path / "store")
    settings = Settings(data_dir=tmp_path, log={"access_stdout": False})
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"not an onnx model: it is never loaded in the gateway")
    registrar = Registrar(repository=repository, store=store, settings=settings)
    manifest = Manifest(runtime="onnx", artifact="model.onnx")
    registrar.register_files("m", {"model.onnx": artifact}, manifest, aliases=("production",))
    metrics = Metrics()
    dataplane = DataPlane(
        settings=settings,
        repository=repository,
        cache=ArtifactCache(tmp_path / "cache", store=store),
        metrics=metrics,
    )
    remote = FakeRemote()
    dataplane.remote = remote
    try:
        yield dataplane, remote, metrics
    finally:
        repository.close()


def _run(dataplane: DataPlane, scenario: Any) -> Any:
    async def main() -> Any:
        try:
            return await scenario()
        finally:
            await dataplane.stop()

    return asyncio.run(main())


def test_predictions_go_to_the_remote_model_with_the_raw_payload(
    plane: tuple[DataPlane, FakeRemote, Metrics],
) -> None:
    dataplane, remote, metrics = plane

    async def scenario() -> Any:
        await dataplane.start()  # load_on_start: the aliased version is opened remotely
        first = await dataplane.predict("m", {"temperaturas": [1, 2]})
        second = await dataplane.predict("m", [3], version=1)
        return first, second

    first, second = _run(dataplane, scenario)
    assert (first.model, first.version, first.output) == (
        "m",
        1,
        {"remote": 1, "echo": {"temperaturas": [1, 2]}},
    )
    assert second.output == {"remote": 1, "echo": [3]}
    assert remote.opened == [("m", 1)]  # opened once, like a load
    assert remote.closed
    labels = {"model": "m", "version": "1"}
    assert metrics.registry.get_sample_value("mlgate_model_invocations_total", labels) == 2.0


def test_the_remote_models_error_is_the_answer(plane: tuple[DataPlane, FakeRemote, Metrics]) -> None:
    dataplane, remote, metrics = plane
    remote.fail = InvalidInput("se requieren 60 valores")

    async def scenario() -> list[MlgateError]:
        raised = []
        for fail in (InvalidInput("se requieren 60 valores"), RuntimeError("a bug in the remote layer")):
            remote.fail = fail
            for model in remote.models.values():
                model.fail = fail
            try:
                await dataplane.predict("m", {})
            except MlgateError as exc:
                raised.append(exc)
        return raised

    invalid, failed = _run(dataplane, scenario)
    assert isinstance(invalid, InvalidInput) and invalid.message == "se requieren 60 valores"
    assert isinstance(failed, PredictionFailed) and "remote model call failed" in failed.message
    errors = {"model": "m", "version": "1"}
    assert (
        metrics.registry.get_sample_value("mlgate_model_errors_total", {**errors, "code": "invalid_input"})
        == 1
    )


def test_a_model_that_cannot_be_opened_is_a_503_and_recorded(
    plane: tuple[DataPlane, FakeRemote, Metrics],
) -> None:
    dataplane, remote, _ = plane
    remote.refuse = ModelLoadError("m is not deployed on the Ray cluster")
    with pytest.raises(ModelLoadError, match="not deployed"):
        _run(dataplane, lambda: dataplane.predict("m", {}))
    assert dataplane.failed() == {("m", 1): "m is not deployed on the Ray cluster"}
    remote.refuse = ConnectionError("no route")
    with pytest.raises(ModelLoadError, match="remotely"):
        _run(dataplane, lambda: dataplane.ensure_loaded(dataplane.repository.get_version("m", 1), retry=True))


def test_tensors_many_and_metadata_are_served_remotely(plane: tuple[DataPlane, FakeRemote, Metrics]) -> None:
    dataplane, _, _ = plane

    async def scenario() -> Any:
        info, outputs = await dataplane.infer_tensors("m", {"x": np.array([[1.0, 2.0]])})
        _, many = await dataplane.predict_many("m", [[1], [2]])
        loaded = await dataplane.ensure_loaded(info)
        return outputs, many, loaded

    outputs, many, loaded = _run(dataplane, scenario)
    assert outputs["y"].tolist() == [[2.0, 4.0]]
    assert [p.output["echo"] for p in many] == [[1], [2]]
    assert loaded.remote is not None
    assert loaded.runtime.metadata() == {"inputs": [], "outputs": [{"name": "y"}]}
    assert loaded.runtime.units([{"a": 1}, {"a": 2}]) == 1


def test_non_finite_tensors_from_a_replica_are_refused(plane: tuple[DataPlane, FakeRemote, Metrics]) -> None:
    dataplane, _, _ = plane
    with pytest.raises(InvalidInput, match="non-finite"):
        _run(dataplane, lambda: dataplane.infer_tensors("m", {"x": np.array([[np.inf]])}))


def test_quota_errors_keep_retry_after_across() -> None:
    rebuilt = rebuild_error(error_envelope(QuotaExceeded("used up", retry_after=3600.0)))
    assert isinstance(rebuilt, QuotaExceeded) and rebuilt.retry_after == 3600.0


def test_a_tabular_models_columns_cross_and_price_its_rows() -> None:
    import pickle

    from mlgate.runtimes.tabular import Column, Table

    table = Table([Column("a"), Column("b", kind="str", allowed=frozenset({"x", "y"}))], max_rows=10)
    table.sample = table.decode({"a": 1.0, "b": "x"})
    stand_in = RemoteRuntime({}, pickle.loads(pickle.dumps(table)))  # as Ray carries it
    for payload in ([{"a": 1, "b": "x"}] * 3, {"inputs": {"a": [1, 2, 3, 4], "b": ["x"] * 4}}, {"a": 1}):
        assert stand_in.units(payload) == table.units(payload)
    assert stand_in.units([{"a": 1, "b": "x"}] * 50) == 11  # at most max_rows + 1: decode refuses more
