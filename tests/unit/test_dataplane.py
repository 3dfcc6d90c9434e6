"""DataPlane against a real registry (SQLite), file store, artifact cache and skops models."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlgate.cache import ArtifactCache
from mlgate.dataplane import DataPlane, Prediction
from mlgate.errors import (
    Conflict,
    InvalidArtifact,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    UnsafeArtifact,
    VersionNotFound,
)
from mlgate.registration import Registrar
from mlgate.repository import Repository
from mlgate.settings import Settings
from mlgate.store import FileArtifactStore
from mlgate.telemetry.metrics import Metrics
from mlgate.types import Manifest, Processor, VersionInfo
from tests.unit.fakes import SAFETY_S

# Two exact linear models on two features: v1 is y = 1 + 2a + 3b, v2 is y = 10 + a + b.
X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
V1_AT_11 = 6.0
V2_AT_11 = 12.0


def linear(intercept: float, coef: tuple[float, float]) -> Any:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(X, intercept + X @ np.asarray(coef))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import joblib
    import skops.io as sio

    folder = tmp_path_factory.mktemp("artifacts")
    v1, v2 = linear(1.0, (2.0, 3.0)), linear(10.0, (1.0, 1.0))
    sio.dump(v1, folder / "v1.skops")
    sio.dump(v2, folder / "v2.skops")
    joblib.dump(v1, folder / "v1.pkl")
    return {"v1": folder / "v1.skops", "v2": folder / "v2.skops", "pkl": folder / "v1.pkl"}


@dataclass
class Env:
    tmp: Path
    repository: Repository
    store: FileArtifactStore
    artifacts: dict[str, Path]

    def settings(self, **overrides: Any) -> Settings:
        return Settings(data_dir=self.tmp, log={"access_stdout": False}, **overrides)

    def registrar(self, **settings: Any) -> Registrar:
        return Registrar(repository=self.repository, store=self.store, settings=self.settings(**settings))

    def register(self, name: str, artifact: str, *, aliases: tuple[str, ...] = ()) -> VersionInfo:
        manifest = Manifest(runtime="sklearn", artifact="model.skops")
        files = {"model.skops": self.artifacts[artifact]}
        return self.registrar().register_files(name, files, manifest, aliases=aliases)

    def dataplane(
        self, *, processors: Mapping[str, Processor] | None = None, **settings: Any
    ) -> tuple[DataPlane, Metrics]:
        metrics = Metrics()
        plane = DataPlane(
            settings=self.settings(**settings),
            repository=self.repository,
            cache=ArtifactCache(self.tmp / "cache", store=self.store),
            metrics=metrics,
            processors=processors,
        )
        return plane, metrics


@pytest.fixture
def env(tmp_path: Path, artifacts: dict[str, Path]) -> Iterator[Env]:
    repository = Repository.open("sqlite:///" + str(tmp_path / "r.db"))
    try:
        yield Env(tmp_path, repository, FileArtifactStore(tmp_path / "store"), artifacts)
    finally:
        repository.close()


@pytest.fixture
def lin(env: Env) -> Env:
    """Model ``lin``: v1 (production) and v2 (no alias)."""
    env.register("lin", "v1", aliases=("production",))
    env.register("lin", "v2")
    return env


def serve(plane: DataPlane, scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``scenario`` on a fresh loop, always stopping the dataplane (and its worker threads)."""

    async def main() -> Any:
        try:
            return await asyncio.wait_for(scenario(), 3 * SAFETY_S)
        finally:
            await plane.stop()

    return asyncio.run(main())


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- resolution and versions ---------------------------------------------------------------


def test_predict_goes_through_the_production_alias(lin: Env) -> None:
    plane, _ = lin.dataplane()

    async def scenario() -> tuple[Prediction, Prediction]:
        plain = await plane.predict("lin", [1, 1])
        wrapped = await plane.predict("lin", {"inputs": [1.0, 1.0]})
        assert [(m.info.model, m.info.version) for m in plane.loaded()] == [("lin", 1)]
        return plain, wrapped

    plain, wrapped = serve(plane, scenario)
    assert (plain.model, plain.version) == ("lin", 1)
    assert plain.output == pytest.approx(V1_AT_11)
    assert wrapped.version == 1
    assert wrapped.output == pytest.approx(V1_AT_11)


def test_versions_can_be_pinned_by_number_and_by_alias(lin: Env) -> None:
    lin.repository.set_alias("lin", "canary", 2)
    plane, _ = lin.dataplane()

    async def scenario() -> list[Prediction]:
        results = [
            await plane.predict("lin", [1, 1], version=2),
            await plane.predict("lin", [1, 1], version="2"),
            await plane.predict("lin", [1, 1], version=1),
            await plane.predict("lin", [1, 1], version="canary"),
            await plane.predict("lin", [1, 1], version="production"),
        ]
        assert plane.is_loaded("lin", 1)
        assert plane.is_loaded("lin", 2)
        return results

    results = serve(plane, scenario)
    assert [p.version for p in results] == [2, 2, 1, 2, 1]
    assert [p.output for p in results] == pytest.approx([V2_AT_11, V2_AT_11, V1_AT_11, V2_AT_11, V1_AT_11])


def test_with_a_zero_alias_ttl_an_alias_move_is_seen_by_the_next_request(lin: Env) -> None:
    plane, _ = lin.dataplane(alias_ttl_s=0)

    async def scenario() -> list[int]:
        before = await plane.predict("lin", [1, 1])
        await asyncio.to_thread(lin.repository.set_alias, "lin", "production", 2)
        after = await plane.predict("lin", [1, 1])
        return [before.version, after.version, (await plane.resolve("lin")).version]

    assert serve(plane, scenario) == [1, 2, 2]


def test_with_a_long_alias_ttl_an_alias_move_is_seen_only_after_invalidate(lin: Env) -> None:
    plane, _ = lin.dataplane(alias_ttl_s=3600)

    async def scenario() -> list[int]:
        versions = [(await plane.predict("lin", [1, 1])).version]
        await asyncio.to_thread(lin.repository.set_alias, "lin", "production", 2)
        versions.append((await plane.predict("lin", [1, 1])).version)
        versions.append((await plane.resolve("lin", "production")).version)  # another key: fresh
        versions.append((await plane.resolve("lin")).version)
        plane.invalidate()
        versions.append((await plane.predict("lin", [1, 1])).version)
        return versions

    assert serve(plane, scenario) == [1, 1, 2, 1, 2]


def test_an_unknown_model_or_version_is_not_found(lin: Env) -> None:
    plane, _ = lin.dataplane()

    async def scenario() -> None:
        with pytest.raises(ModelNotFound) as err:
            await plane.predict("ghost", [1, 1])
        assert err.value.status == 404
        with pytest.raises(VersionNotFound):
            await plane.predict("lin", [1, 1], version=9)
        with pytest.raises(VersionNotFound):
            await plane.predict("lin", [1, 1], version="nope")

    serve(plane, scenario)
    assert plane.loaded() == []


# -- errors and metrics --------------------------------------------------------------------


def test_decode_errors_raise_invalid_input_and_are_counted(lin: Env) -> None:
    plane, metrics = lin.dataplane()

    async def scenario() -> None:
        for bad in ("not a list", [1, 2, 3], [1, "x"], {"rows": [1, 1]}):
            with pytest.raises(InvalidInput) as err:
                await plane.predict("lin", bad)
            assert err.value.status == 400

    serve(plane, scenario)
    labels = {"model": "lin", "version": "1"}
    assert sample(metrics, "mlgate_model_errors_total", **labels, code="invalid_input") == 4
    assert sample(metrics, "mlgate_model_invocations_total", **labels) == 0
    assert sample(metrics, "mlgate_model_batch_size_count", **labels) == 0  # never reached a batch


def test_invocations_latency_cold_starts_and_load_time_are_recorded(lin: Env) -> None:
    plane, metrics = lin.dataplane()

    async def scenario() -> list[Prediction]:
        first = await plane.predict("lin", [1, 1])
        rest = await asyncio.gather(*(plane.predict("lin", [0, 0]) for _ in range(4)))
        return [first, *rest]

    results = serve(plane, scenario)
    assert [p.output for p in results] == pytest.approx([V1_AT_11] + [1.0] * 4)
    labels = {"model": "lin", "version": "1"}
    assert sample(metrics, "mlgate_model_invocations_total", **labels) == 5
    assert sample(metrics, "mlgate_model_latency_seconds_count", **labels) == 5
    assert sample(metrics, "mlgate_model_latency_seconds_sum", **labels) > 0
    assert sample(metrics, "mlgate_model_batch_size_sum", **labels) == 5  # warm-up is not a request
    assert sample(metrics, "mlgate_model_cold_starts_total", **labels) == 1
    assert sample(metrics, "mlgate_model_load_seconds", **labels) > 0
    assert sample(metrics, "mlgate_model_queue_depth", **labels) == 0
    assert sample(metrics, "mlgate_model_errors_total", **labels, code="invalid_input") is None


def test_concurrent_first_requests_load_the_version_once(lin: Env) -> None:
    plane, metrics = lin.dataplane()

    async def scenario() -> list[Prediction]:
        return await asyncio.gather(*(plane.predict("lin", [1, 1], version=2) for _ in range(5)))

    assert [p.output for p in serve(plane, scenario)] == pytest.approx([V2_AT_11] * 5)
    assert sample(metrics, "mlgate_model_cold_starts_total", model="lin", version="2") == 1


# -- processors, many items, tensors ---------------------------------------------------------


class Features:
    """A model-specific envelope: ``{"a": .., "b": ..}`` in, ``{"y": ..}`` out."""

    def __init__(self) -> None:
        self.decoded: list[Any] = []
        self.encoded: list[Any] = []

    def decode(self, payload: Any) -> Any:
        if not isinstance(payload, dict) or set(payload) != {"a", "b"}:
            raise InvalidInput("expected {'a': number, 'b': number}")
        self.decoded.append(payload)
        return [payload["a"], payload["b"]]

    def encode(self, output: Any) -> Any:
        self.encoded.append(output)
        return {"y": output}


def test_a_processor_wraps_the_runtime(lin: Env) -> None:
    proc = Features()
    plane, metrics = lin.dataplane(processors={"lin": proc})

    async def scenario() -> Prediction:
        with pytest.raises(InvalidInput):
            await plane.predict("lin", [1, 1])  # the runtime's own shape is not the model's API
        return await plane.predict("lin", {"a": 1, "b": 1})

    prediction = serve(plane, scenario)
    assert prediction.output == {"y": pytest.approx(V1_AT_11)}
    assert proc.decoded == [{"a": 1, "b": 1}]
    assert proc.encoded == [pytest.approx(V1_AT_11)]
    assert sample(metrics, "mlgate_model_errors_total", model="lin", version="1", code="invalid_input") == 1


def test_predict_many_answers_in_order_with_per_item_errors(lin: Env) -> None:
    plane, _ = lin.dataplane()

    async def scenario() -> tuple[VersionInfo, list[Any]]:
        return await plane.predict_many("lin", [[1, 1], "bad", [0, 0], [1, 2, 3], [2, 1]], version=2)

    info, results = serve(plane, scenario)
    assert info.version == 2
    assert len(results) == 5
    ok = [results[i] for i in (0, 2, 4)]
    assert all(isinstance(r, Prediction) and r.version == 2 for r in ok)
    assert [r.output for r in ok] == pytest.approx([12.0, 10.0, 13.0])
    assert isinstance(results[1], InvalidInput)
    assert isinstance(results[3], InvalidInput)
    assert "expected 2 features" in results[3].message


def test_infer_tensors_splits_rows_and_stacks_outputs(lin: Env) -> None:
    plane, metrics = lin.dataplane()
    rows = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])

    async def scenario() -> tuple[VersionInfo, dict[str, np.ndarray]]:
        with pytest.raises(InvalidInput):
            await plane.infer_tensors("lin", {"x": rows, "y": rows})
        return await plane.infer_tensors("lin", {"x": rows})

    info, out = serve(plane, scenario)
    assert info.version == 1
    assert list(out) == ["output_0"]
    assert out["output_0"].shape == (3,)
    np.testing.assert_allclose(out["output_0"], [V1_AT_11, 1.0, 3.0])
    assert sample(metrics, "mlgate_model_invocations_total", model="lin", version="1") == 3


# -- lifecycle -----------------------------------------------------------------------------


def test_start_loads_every_aliased_version_and_sets_ready(lin: Env) -> None:
    lin.repository.set_alias("lin", "canary", 2)
    lin.register("solo", "v2")  # no alias: its latest version is loaded
    plane, metrics = lin.dataplane()

    async def scenario() -> bool:
        assert not plane.ready
        await plane.start()
        assert sorted((m.info.model, m.info.version) for m in plane.loaded()) == [
            ("lin", 1),
            ("lin", 2),
            ("solo", 1),
        ]
        return plane.ready

    assert serve(plane, scenario)
    assert not plane.ready  # stopped again by serve()
    for model, version in (("lin", "1"), ("lin", "2"), ("solo", "1")):
        assert sample(metrics, "mlgate_model_cold_starts_total", model=model, version=version) == 1


def test_start_without_load_on_start_loads_nothing_but_is_ready(lin: Env) -> None:
    plane, metrics = lin.dataplane(load_on_start=False)

    async def scenario() -> tuple[bool, int]:
        await plane.start()
        return plane.ready, len(plane.loaded())

    assert serve(plane, scenario) == (True, 0)
    assert sample(metrics, "mlgate_model_cold_starts_total", model="lin", version="1") is None


# -- pickle trust --------------------------------------------------------------------------

PKL_MANIFEST = Manifest(runtime="sklearn", artifact="model.pkl")


def test_an_untrusted_pickle_can_never_be_registered(env: Env) -> None:
    digest = hashlib.sha256(env.artifacts["pkl"].read_bytes()).hexdigest()
    registrar = env.registrar()
    with pytest.raises(UnsafeArtifact) as err:
        registrar.check(PKL_MANIFEST, {"model.pkl": digest})
    assert err.value.status == 422
    with pytest.raises(UnsafeArtifact):
        registrar.register_files("pickled", {"model.pkl": env.artifacts["pkl"]}, PKL_MANIFEST)
    with pytest.raises(ModelNotFound):
        env.repository.get_model("pickled")  # nothing was written
    assert env.store.list() == []


def test_a_pickle_written_around_the_registrar_still_refuses_to_load(env: Env) -> None:
    digest = hashlib.sha256(env.artifacts["pkl"].read_bytes()).hexdigest()
    env.store.put_file(ArtifactCache.blob_key(digest), env.artifacts["pkl"])
    env.repository.ensure_model("pickled")
    manifest = PKL_MANIFEST.model_copy(update={"files": {"model.pkl": digest}})
    env.repository.add_version("pickled", manifest)
    plane, _ = env.dataplane()

    async def scenario() -> None:
        with pytest.raises(UnsafeArtifact):
            await plane.predict("pickled", [1, 1])
        assert not plane.is_loaded("pickled", 1)

    serve(plane, scenario)


def test_a_pickle_whose_sha256_is_pinned_in_settings_is_allowed(env: Env) -> None:
    digest = hashlib.sha256(env.artifacts["pkl"].read_bytes()).hexdigest()
    registrar = env.registrar(trusted_sha256=[digest])
    registrar.check(PKL_MANIFEST, {"model.pkl": digest})
    info = registrar.register_files(
        "pickled", {"model.pkl": env.artifacts["pkl"]}, PKL_MANIFEST, aliases=("production",)
    )
    assert info.manifest.files == {"model.pkl": digest}
    assert not info.manifest.trusted
    plane, _ = env.dataplane(trusted_sha256=[digest])

    async def scenario() -> Prediction:
        return await plane.predict("pickled", [1, 1])

    prediction = serve(plane, scenario)
    assert (prediction.model, prediction.version) == ("pickled", 1)
    assert prediction.output == pytest.approx(V1_AT_11)


# -- safe versions: failed loads, trial loads, deletion (issue 14) ---------------------------


def _corrupt_blob(env: Env, info: VersionInfo) -> None:
    (sha,) = info.manifest.files.values()
    (env.store.root / ArtifactCache.blob_key(sha)).write_bytes(b"not a model")


def test_a_version_that_fails_to_load_at_start_is_reported_and_the_rest_serves(lin: Env) -> None:
    broken = lin.register("broken", "v2")
    _corrupt_blob(lin, broken)
    plane, metrics = lin.dataplane()

    async def scenario() -> None:
        await plane.start()
        assert plane.ready
        assert [(m.info.model, m.info.version) for m in plane.loaded()] == [("lin", 1)]
        assert list(plane.failed()) == [("broken", 1)]
        assert "could not load broken v1" in plane.failed()[("broken", 1)]
        assert (await plane.predict("lin", [1, 1])).output == pytest.approx(V1_AT_11)
        with pytest.raises(ModelLoadError) as failed:
            await plane.predict("broken", [1, 1])
        assert str(lin.tmp) not in failed.value.message
        # Not tried again by every request; an explicit retry (an alias move) tries.
        assert sample(metrics, "mlgate_model_load_failures_total", model="broken", version="1") == 1
        with pytest.raises(ModelLoadError):
            await plane.ensure_loaded(broken, retry=True)
        assert sample(metrics, "mlgate_model_load_failures_total", model="broken", version="1") == 2
        await plane.unload("broken")
        assert plane.failed() == {}

    serve(plane, scenario)


def test_a_version_that_loads_again_is_no_longer_reported(lin: Env) -> None:
    info = lin.repository.get_version("lin", 2)
    good = (lin.store.root / ArtifactCache.blob_key(info.manifest.files["model.skops"])).read_bytes()
    _corrupt_blob(lin, info)
    plane, _ = lin.dataplane()

    async def scenario() -> None:
        with pytest.raises(ModelLoadError):
            await plane.ensure_loaded(info)
        assert list(plane.failed()) == [("lin", 2)]
        (lin.store.root / ArtifactCache.blob_key(info.manifest.files["model.skops"])).write_bytes(good)
        await plane.ensure_loaded(info, retry=True)
        assert plane.failed() == {} and plane.is_loaded("lin", 2)
        await plane.unload("lin", 2)
        assert not plane.is_loaded("lin", 2)

    serve(plane, scenario)


def test_trial_load_refuses_what_does_not_load_and_counts_it(env: Env, tmp_path: Path) -> None:
    plane, metrics = env.dataplane()
    folder = tmp_path / "push"
    folder.mkdir()
    (folder / "model.skops").write_bytes(b"garbage")
    manifest = Manifest(runtime="sklearn", artifact="model.skops")
    with pytest.raises(InvalidArtifact, match="not registered") as refused:
        plane.trial_load("pushed", manifest, folder)
    assert str(folder) not in refused.value.message
    assert sample(metrics, "mlgate_model_load_failures_total", model="pushed", version="push") == 1
    (folder / "model.skops").write_bytes(env.artifacts["v1"].read_bytes())
    plane.trial_load("pushed", manifest, folder)  # loads: no error


def test_register_files_with_a_failing_verify_stores_and_registers_nothing(env: Env) -> None:
    manifest = Manifest(runtime="sklearn", artifact="model.skops")
    seen: list[tuple[Manifest, Path]] = []

    def refuse(m: Manifest, root: Path) -> None:
        seen.append((m, root))
        assert (root / "model.skops").read_bytes() == env.artifacts["v1"].read_bytes()
        raise InvalidArtifact("no")

    with pytest.raises(InvalidArtifact):
        env.registrar().register_files("nope", {"model.skops": env.artifacts["v1"]}, manifest, verify=refuse)
    assert seen and seen[0][0].files  # called with the computed hashes
    assert env.store.list() == []
    assert env.repository.list_models() == []


def test_deleting_versions_and_models_releases_only_unreferenced_blobs(lin: Env) -> None:
    registrar = lin.registrar()
    v1, v2 = lin.repository.get_version("lin", 1), lin.repository.get_version("lin", 2)
    blob1 = lin.store.root / ArtifactCache.blob_key(v1.manifest.files["model.skops"])
    blob2 = lin.store.root / ArtifactCache.blob_key(v2.manifest.files["model.skops"])
    lin.register("other", "v1")  # shares v1's blob
    with pytest.raises(Conflict):
        registrar.delete_version("lin", 1)  # production points at it
    assert registrar.delete_version("lin", 2).version == 2
    assert not blob2.exists() and blob1.exists()
    with pytest.raises(VersionNotFound):
        lin.repository.get_version("lin", 2)
    assert [v.version for v in registrar.delete_model("lin")] == [1]
    with pytest.raises(ModelNotFound):
        lin.repository.get_model("lin")
    assert blob1.exists()  # "other" still references it
    registrar.delete_model("other")
    assert not blob1.exists()


def test_a_declared_input_schema_is_enforced_before_the_model(env: Env) -> None:
    manifest = Manifest(
        runtime="sklearn",
        artifact="model.skops",
        input_schema={"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    )
    env.registrar().register_files("schemed", {"model.skops": env.artifacts["v1"]}, manifest)
    plane, metrics = env.dataplane()

    async def scenario() -> None:
        assert (await plane.predict("schemed", [1, 1])).output == pytest.approx(V1_AT_11)
        with pytest.raises(InvalidInput, match=r"input_schema at 1: 'x' is not of type 'number'"):
            await plane.predict("schemed", [1, "x"])
        with pytest.raises(InvalidInput, match="input_schema"):
            await plane.predict("schemed", {"inputs": [1, 1]})  # the schema says: a bare array
        assert (
            sample(metrics, "mlgate_model_errors_total", model="schemed", version="1", code="invalid_input")
            == 2
        )

    serve(plane, scenario)


def test_a_deleted_number_registered_again_elsewhere_is_never_served_by_the_old_model(lin: Env) -> None:
    """Another process deletes v2 and a new push takes the number: this process, which had the
    old v2 loaded, answers with the new one once its resolution cache expires."""
    plane, _ = lin.dataplane(alias_ttl_s=0)

    async def scenario() -> list[float]:
        before = (await plane.predict("lin", [1, 1], version=2)).output
        lin.registrar().delete_version("lin", 2)  # "elsewhere": this dataplane is not told
        lin.register("lin", "v1")  # the number 2 again, v1's weights
        after = (await plane.predict("lin", [1, 1], version=2)).output
        return [before, after]

    assert serve(plane, scenario) == pytest.approx([V2_AT_11, V1_AT_11])


# -- routed aliases (canary splits, shadows) ----------------------------------------------------


def test_a_split_alias_deals_each_caller_one_version_and_counts_for_the_guard(lin: Env) -> None:
    from mlgate.policies import CanaryGuard, Policies

    Policies(lin.repository.engine).set_split("lin", "production", {1: 50, 2: 50}, CanaryGuard(), actor=None)
    plane, metrics = lin.dataplane(alias_ttl_s=0.0)

    async def scenario() -> tuple[dict[str, set[int]], set[int], int]:
        seen: dict[str, set[int]] = {}
        for i in range(40):
            who = f"key-{i % 10}"
            prediction = await plane.predict("lin", [1, 1], who=who)
            seen.setdefault(who, set()).add(prediction.version)
        info, results = await plane.predict_many("lin", [[1, 1], [2, 2]], who="key-3")
        batch = {r.version for r in results if isinstance(r, Prediction)}
        assert info.version in batch
        window = next(iter(plane.router.windows.values()))
        counted = sum(c.requests for c in window.counts.values())
        # Anonymous callers are dealt by chance: over 100 of them both versions answer.
        anonymous = {(await plane.predict("lin", [1, 1])).version for _ in range(100)}
        return seen, anonymous, counted

    seen, anonymous, counted = serve(plane, scenario)
    assert all(len(versions) == 1 for versions in seen.values())
    assert {v for versions in seen.values() for v in versions} == {1, 2}
    assert sum(1 for versions in seen.values() if versions == {2}) == 5  # balanced: 5 of 10 callers
    assert counted == 40
    assert anonymous == {1, 2}
    assert (
        sample(metrics, "mlgate_canary_rollbacks_total", model="lin", alias="production", version="2") == 0.0
    )


def test_a_shadowed_alias_hands_sampled_answers_to_the_hook(lin: Env) -> None:
    from mlgate.policies import Policies, ShadowOptions

    Policies(lin.repository.engine).set_shadow("lin", "production", 2, 1.0, ShadowOptions(), actor=None)
    plane, _ = lin.dataplane()
    handed: list[tuple[int | None, int, Any]] = []
    plane.on_shadow = lambda policy, prediction, payload, seconds: handed.append(
        (policy.shadow, prediction.version, payload)
    )

    async def scenario() -> Prediction:
        await plane.predict("lin", [1, 1], version=1)  # a pinned version is never shadowed
        return await plane.predict("lin", [1, 1], who="k")

    answered = serve(plane, scenario)
    assert answered.version == 1
    assert handed == [(2, 1, [1, 1])]
