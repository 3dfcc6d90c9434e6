"""Task actions: store.get (file and S3), model.invoke through a real DataPlane, functions, dispatch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane
from mlgate.errors import InvalidInput
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.settings import LogSettings, Settings
from mlgate.store import FileArtifactStore
from mlgate.store.s3 import S3ArtifactStore
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Manifest
from mlgate.workflows.actions import Actions, ChildOutcome, DataBuckets
from mlgate.workflows.engine import TaskCall, TaskFailure
from mlgate.workflows.mapping import ResourceMapping, parse_mapping
from tests.conftest import MotoServer

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg bytes" * 10
NONE = ResourceMapping()


def call(resource: str, data: Any, state: str = "S") -> TaskCall:
    return TaskCall(resource=resource, input=data, state_name=state, execution_id="e" * 32, context={})


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def failure(coro: Awaitable[Any]) -> TaskFailure:
    with pytest.raises(TaskFailure) as err:
        run(coro)
    return err.value


# -- store.get on a file store --------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> FileArtifactStore:
    store = FileArtifactStore(tmp_path / "store")
    store.put_bytes("buckets/imagenes/motos/moto.jpg", JPEG)
    store.put_bytes("buckets/imagenes/notes.txt", b"hola")
    store.put_bytes("blobs/sha256/" + "a" * 64, b"model bytes")
    return store


def test_store_get_reads_a_bucket_folder(files: FileArtifactStore) -> None:
    actions = Actions(dataplane=None, buckets=DataBuckets(files))
    got = run(actions.store_get({"s3_bucket": "imagenes", "s3_key": "motos/moto.jpg"}))
    assert got == {
        "body": base64.b64encode(JPEG).decode(),
        "content_type": "image/jpeg",
        "size": len(JPEG),
        "sha256": hashlib.sha256(JPEG).hexdigest(),
        "s3_bucket": "imagenes",
        "s3_key": "motos/moto.jpg",
    }
    text = run(actions.store_get({"bucket": "imagenes", "key": "notes.txt"}))
    assert (text["content_type"], base64.b64decode(text["body"])) == ("text/plain", b"hola")
    # the native resource goes through the same action
    native = run(
        actions.run(call("mlgate:store:get", {"s3_bucket": "imagenes", "s3_key": "notes.txt"}), NONE)
    )
    assert native["size"] == 4


def test_store_get_errors_are_named(files: FileArtifactStore) -> None:
    actions = Actions(dataplane=None, buckets=DataBuckets(files), max_object_bytes=50)
    cases = {
        "Store.NoSuchKey": {"s3_bucket": "imagenes", "s3_key": "ghost.jpg"},
        "Store.NoSuchBucket": {"s3_bucket": "ghost", "s3_key": "x.jpg"},
        "Store.InvalidBucket": {"s3_bucket": "../blobs", "s3_key": "x"},
        "Store.InvalidKey": {"s3_bucket": "imagenes", "s3_key": "../../blobs/sha256/" + "a" * 64},
        "Store.ObjectTooLarge": {"s3_bucket": "imagenes", "s3_key": "motos/moto.jpg"},
        "Mlgate.InvalidParameters": {"s3_bucket": "imagenes"},
    }
    for error, params in cases.items():
        assert failure(actions.store_get(params)).error == error, params
    assert failure(actions.store_get("not an object")).error == "Mlgate.InvalidParameters"
    # model files are outside every bucket: "blobs" is just a bucket that does not exist
    assert failure(actions.store_get({"s3_bucket": "blobs", "s3_key": "sha256/" + "a" * 64})).error == (
        "Store.NoSuchBucket"
    )
    assert failure(Actions(dataplane=None, buckets=None).store_get({"bucket": "b", "key": "k"})).error == (
        "Store.Error"
    )


# -- store.get on S3 (moto) -----------------------------------------------------------------


@pytest.fixture
def s3(moto_server: MotoServer) -> tuple[MotoServer, str, S3ArtifactStore]:
    models = moto_server.ensure_bucket("mlgate-wf-models")
    data = moto_server.ensure_bucket("mlgate-wf-data")
    prefix = f"t-{uuid.uuid4().hex}"
    client = moto_server.client()
    try:
        client.put_object(Bucket=data, Key=f"{prefix}/moto.jpg", Body=JPEG)
        client.put_object(Bucket=models, Key=f"{prefix}-images/cat.jpg", Body=JPEG)
    finally:
        client.close()
    return moto_server, prefix, S3ArtifactStore(models, prefix, s3=moto_server.settings)


def test_store_get_reads_any_bucket_with_the_server_s3_settings(
    s3: tuple[MotoServer, str, S3ArtifactStore],
) -> None:
    server, prefix, default = s3
    actions = Actions(dataplane=None, buckets=DataBuckets(default, s3=server.settings))
    got = run(actions.store_get({"s3_bucket": "mlgate-wf-data", "s3_key": f"{prefix}/moto.jpg"}))
    assert base64.b64decode(got["body"]) == JPEG
    assert got["content_type"] == "image/jpeg"
    # the model store's own bucket outside its prefix is readable; its prefix never is
    other = run(actions.store_get({"s3_bucket": "mlgate-wf-models", "s3_key": f"{prefix}-images/cat.jpg"}))
    assert other["size"] == len(JPEG)
    denied = failure(actions.store_get({"s3_bucket": "mlgate-wf-models", "s3_key": f"{prefix}/blobs/x"}))
    assert denied.error == "Store.AccessDenied"
    assert failure(actions.store_get({"s3_bucket": "mlgate-wf-data", "s3_key": "ghost.jpg"})).error == (
        "Store.NoSuchKey"
    )
    missing = failure(actions.store_get({"s3_bucket": f"no-such-{uuid.uuid4().hex[:12]}", "s3_key": "x.jpg"}))
    assert missing.error in ("Store.NoSuchBucket", "Store.NoSuchKey")


def test_a_whole_bucket_model_store_is_never_readable(moto_server: MotoServer) -> None:
    bucket = moto_server.ensure_bucket("mlgate-wf-whole")
    actions = Actions(
        dataplane=None,
        buckets=DataBuckets(S3ArtifactStore(bucket, "", s3=moto_server.settings), s3=moto_server.settings),
    )
    assert (
        failure(actions.store_get({"s3_bucket": bucket, "s3_key": "anything.jpg"})).error
        == "Store.AccessDenied"
    )


# -- model.invoke through a real DataPlane ----------------------------------------------------

X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])


class Features:
    """``{"a", "b"}`` in, ``{"y"}`` out: the model's own envelope around the sklearn runtime."""

    def decode(self, payload: Any) -> Any:
        if not isinstance(payload, dict) or set(payload) != {"a", "b"}:
            raise InvalidInput("expected {'a': number, 'b': number}")
        return [payload["a"], payload["b"]]

    def encode(self, output: Any) -> Any:
        return {"y": round(float(output), 6)}


@pytest.fixture(scope="module")
def skops_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import skops.io as sio
    from sklearn.linear_model import LinearRegression

    folder = tmp_path_factory.mktemp("wf-models")
    out = {}
    for name, (intercept, coef) in {"v1": (1.0, (2.0, 3.0)), "v2": (10.0, (1.0, 1.0))}.items():
        model = LinearRegression().fit(X, intercept + X @ np.asarray(coef))
        sio.dump(model, folder / f"{name}.skops")
        out[name] = folder / f"{name}.skops"
    return out


@pytest.fixture
def plane(tmp_path: Path, skops_models: dict[str, Path]) -> Iterator[Callable[[], DataPlane]]:
    repository = Repository.open(f"sqlite:///{tmp_path / 'r.db'}")
    store = FileArtifactStore(tmp_path / "store")
    settings = Settings(data_dir=tmp_path, log=LogSettings(access_stdout=False))
    registrar = Registrar(repository=repository, store=store, settings=settings)
    manifest = Manifest(runtime="sklearn", artifact="model.skops")
    registrar.register_files("lin", {"model.skops": skops_models["v1"]}, manifest, aliases=("production",))
    registrar.register_files("lin", {"model.skops": skops_models["v2"]}, manifest, aliases=("canary",))

    def make() -> DataPlane:
        return DataPlane(
            settings=settings,
            repository=repository,
            cache=ArtifactCache(tmp_path / "cache", store=store),
            metrics=Metrics(),
            processors={"lin": Features()},
        )

    yield make
    repository.close()


def serve(plane: DataPlane, scenario: Callable[[Actions], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await scenario(Actions(dataplane=plane, buckets=None))
        finally:
            await plane.stop()

    return asyncio.run(main())


def test_model_invoke_goes_through_processor_runtime_and_versions(plane: Callable[[], DataPlane]) -> None:
    async def scenario(actions: Actions) -> list[Any]:
        return [
            await actions.run(call("mlgate:model:invoke", {"model": "lin", "input": {"a": 1, "b": 1}}), NONE),
            await actions.run(
                call("mlgate:model:invoke", {"model": "lin", "version": 2, "input": {"a": 1, "b": 1}}), NONE
            ),
            await actions.model_invoke("lin", {"a": 1, "b": 1}, version="canary"),
            await actions.model_invoke("lin", {"a": 1, "b": 1}, version="1"),
        ]

    assert serve(plane(), scenario) == [{"y": 6.0}, {"y": 12.0}, {"y": 12.0}, {"y": 6.0}]


def test_model_errors_become_named_task_failures(plane: Callable[[], DataPlane]) -> None:
    async def scenario(actions: Actions) -> list[tuple[str, str]]:
        out = []
        for args in (
            ("lin", [1, 1], None),  # the runtime's shape is not the model's API: 400
            ("ghost", {"a": 1, "b": 1}, None),
            ("lin", {"a": 1, "b": 1}, 9),
            ("lin", {"a": 1, "b": 1}, "nope"),
        ):
            try:
                await actions.model_invoke(args[0], args[1], version=args[2])
            except TaskFailure as exc:
                out.append((exc.error, exc.cause))
        bad_params: list[Any] = [{"input": {}}, {"model": "lin"}, [1]]
        for bad in bad_params:
            try:
                await actions.run(call("mlgate:model:invoke", bad), NONE)
            except TaskFailure as exc:
                out.append((exc.error, ""))
        return out

    errors = serve(plane(), scenario)
    assert [e for e, _ in errors] == [
        "Model.InvalidInput",
        "Model.NotFound",
        "Model.NotFound",
        "Model.NotFound",
        "Mlgate.InvalidParameters",
        "Mlgate.InvalidParameters",
        "Mlgate.InvalidParameters",
    ]
    assert "expected {'a': number, 'b': number}" in errors[0][1]
    assert failure(Actions(dataplane=None, buckets=None).model_invoke("lin", {})).error == "Model.NotFound"


class Busy:
    """A dataplane stand-in that is always overloaded."""

    async def predict(self, name: str, payload: Any, *, version: Any = None, who: Any = None) -> Any:
        from mlgate.errors import Overloaded

        raise Overloaded("queue full", retry_after=1.0)


def test_overload_is_lambda_throttling_for_mapped_lambdas() -> None:
    actions = Actions(dataplane=Busy(), buckets=None)  # type: ignore[arg-type]
    mapping = parse_mapping({"resources": {"classify": {"action": "model.invoke", "model": "m"}}})
    native = failure(actions.run(call("mlgate:model:invoke", {"model": "m", "input": 1}), NONE))
    assert native.error == "Model.Overloaded"
    arn = "arn:aws:lambda:us-east-1:123456789012:function:classify"
    assert failure(actions.run(call(arn, {}), mapping)).error == "Lambda.TooManyRequestsException"


class Recorder:
    """A dataplane stand-in that records who each prediction was for."""

    def __init__(self) -> None:
        self.callers: list[Any] = []

    async def predict(self, name: str, payload: Any, *, version: Any = None, who: Any = None) -> Any:
        from mlgate.dataplane import Prediction

        self.callers.append(who)
        return Prediction(name, 1, 0)


def test_a_model_task_is_dealt_its_version_as_its_execution() -> None:
    """A routed alias (a canary split) deals each execution one sticky version."""
    plane = Recorder()
    actions = Actions(dataplane=plane, buckets=None)  # type: ignore[arg-type]
    run(actions.run(call("mlgate:model:invoke", {"model": "m", "input": 1}), NONE))
    assert plane.callers == [f"execution:{call('x', None).execution_id}"]


# -- python functions -----------------------------------------------------------------------


def test_python_functions_sync_async_and_errors() -> None:
    async def double(x: Any) -> Any:
        return {"n": x["n"] * 2}

    def boom(_: Any) -> Any:
        raise ValueError("bad value")

    actions = Actions(
        dataplane=None, buckets=None, functions={"inc": lambda x: x + 1, "double": double, "boom": boom}
    )
    assert run(actions.run(call("mlgate:python:inc", 41), NONE)) == 42
    assert run(actions.run(call("mlgate:python:double", {"n": 2}), NONE)) == {"n": 4}
    err = failure(actions.run(call("mlgate:python:boom", {}), NONE))
    assert (err.error, err.cause) == ("ValueError", "bad value")  # Lambda's errorType
    assert (
        failure(actions.run(call("mlgate:python:os.system", "ls"), NONE)).error == "Mlgate.UnmappedResource"
    )


# -- workflow.start and startExecution ------------------------------------------------------


def test_child_workflows_native_and_aws_forms() -> None:
    started: list[tuple[str, Any]] = []

    async def start_child(workflow: str, data: Any, _call: TaskCall) -> ChildOutcome:
        started.append((workflow, data))
        if workflow == "broken":
            return ChildOutcome("c2", "FAILED", None, "Custom.Error", "it broke")
        return ChildOutcome("c1", "SUCCEEDED", {"child": data})

    actions = Actions(dataplane=None, buckets=None)
    mapping = parse_mapping(
        {
            "resources": {
                "arn:aws:states:us-east-1:1:stateMachine:Child": {
                    "action": "workflow.start",
                    "workflow": "kid",
                }
            }
        }
    )
    invoke = actions.invoker(mapping, start_child=start_child)
    assert run(invoke(call("mlgate:workflow:start", {"workflow": "kid", "input": {"a": 1}}))) == {
        "child": {"a": 1}
    }
    sync2 = run(
        invoke(
            call(
                "arn:aws:states:::states:startExecution.sync:2",
                {"StateMachineArn": "arn:aws:states:us-east-1:1:stateMachine:Child", "Input": {"b": 2}},
            )
        )
    )
    assert sync2 == {  # AWS names the child by its execution ARN
        "ExecutionArn": "arn:aws:states:us-east-1:123456789012:execution:kid:c1",
        "Output": {"child": {"b": 2}},
        "Status": "SUCCEEDED",
    }
    sync1 = run(
        invoke(
            call(
                "arn:aws:states:::states:startExecution.sync",
                {"StateMachineArn": "arn:aws:states:us-east-1:1:stateMachine:other", "Input": '{"c": 3}'},
            )
        )
    )
    assert sync1["Output"] == '{"child":{"c":3}}'  # .sync gives the output as JSON text
    assert started[-1] == ("other", {"c": 3})  # unmapped: the ARN's name is the workflow
    err = failure(invoke(call("mlgate:workflow:start", {"workflow": "broken", "input": {}})))
    assert (err.error, err.cause) == ("Custom.Error", "it broke")
    assert failure(
        actions.run(call("mlgate:workflow:start", {"workflow": "kid"}), NONE, start_child=None)
    ).error
