"""The ``cardiaco`` service: processor around the onnx runtime, response shapes, original routes."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import numpy as np
import pytest

from mlgate.errors import InvalidInput, PredictionFailed, Unprocessable
from mlgate.runtimes import create_runtime
from mlgate.runtimes.base import LoadContext, ModelRuntime
from mlgate.types import Caller, InfoContext, InfoRoute, Service
from mlgate_services.cardiaco import generator
from mlgate_services.cardiaco.processing import STATES
from mlgate_services.cardiaco.service import MODEL, CardiacProcessor, service


@pytest.fixture(scope="module")
def svc() -> Service:
    return service()


@pytest.fixture(scope="module")
def runtime(svc: Service) -> ModelRuntime:
    [bundled] = svc.models
    rt = create_runtime(bundled.manifest.runtime)
    rt.load(LoadContext(bundled.artifact_dir, bundled.manifest))
    return rt


def _serve(processor: Any, runtime: ModelRuntime, payload: Any) -> Any:
    """What the dataplane does for one request (without batching)."""
    x = runtime.decode(processor.decode(payload))
    [y] = runtime.predict([x])
    return processor.encode(runtime.encode(y))


def test_service_shape(svc: Service) -> None:
    assert svc.name == "cardiaco"
    [bundled] = svc.models
    assert bundled.name == MODEL
    assert bundled.manifest.runtime == "onnx" and bundled.manifest.artifact == "model.onnx"
    assert bundled.manifest.timeout_s == 60
    assert 0.85 < bundled.manifest.metrics["accuracy"] < 1
    assert isinstance(svc.processors[MODEL], CardiacProcessor)
    [route] = svc.routes
    assert (route.method, route.path, route.model, route.auth) == ("POST", "/predict", MODEL, "user")
    info = {r.path: r for r in svc.info_routes}
    assert info["/home"].auth == "public" and info["/"].auth == "user"


def test_one_patient_answers_one_object(svc: Service, runtime: ModelRuntime) -> None:
    patient = generator.generate(4, seed=77)[0]
    out = _serve(svc.processors[MODEL], runtime, generator.to_record([patient]))
    assert isinstance(out, dict)
    assert set(out) == {"idAtencion", "inferences", "State"}
    assert out["idAtencion"] == patient.id
    assert list(out["inferences"]) == list(STATES)
    assert all(round(p, 2) == p and 0 <= p <= 1 for p in out["inferences"].values())
    assert sum(out["inferences"].values()) == pytest.approx(1, abs=0.03)
    assert out["State"] == max(out["inferences"], key=out["inferences"].get)


def test_several_patients_answer_a_list_in_order(svc: Service, runtime: ModelRuntime) -> None:
    patients = generator.generate(8, seed=78)
    out = _serve(svc.processors[MODEL], runtime, generator.to_record(patients))
    assert isinstance(out, list) and len(out) == 8
    assert [o["idAtencion"] for o in out] == [p.id for p in patients]
    correct = sum(o["State"] == p.state for o, p in zip(out, patients, strict=True))
    assert correct >= 6
    # Each patient gets the same answer alone as inside the group.
    alone = _serve(svc.processors[MODEL], runtime, generator.to_record(patients[3:4]))
    assert alone == out[3]


def test_requests_with_different_patient_counts_share_a_batch(svc: Service, runtime: ModelRuntime) -> None:
    processor = svc.processors[MODEL]
    patients = generator.generate(5, seed=79)
    one, two, other_two = patients[:1], patients[1:3], patients[3:5]
    xs = [runtime.decode(processor.decode(generator.to_record(p))) for p in (one, two, other_two)]
    outputs = runtime.predict(xs)
    assert [np.asarray(o).shape for o in outputs] == [(1, 4), (2, 4), (2, 4)]


def test_decode_errors_are_4xx(svc: Service) -> None:
    processor = svc.processors[MODEL]
    p = generator.generate(1, seed=1)[0]
    short = generator.Patient(p.id, p.state, p.start, p.values[:19], p.extra[:19])
    with pytest.raises(Unprocessable, match=f"too few readings.*{p.id} has 19"):
        processor.decode(generator.to_record([short]))
    with pytest.raises(InvalidInput, match="columnar record"):
        processor.decode([[0.0] * 9] * 20)


def test_encode_checks_what_it_is_given() -> None:
    processor = CardiacProcessor()

    def check() -> None:
        with pytest.raises(PredictionFailed, match="without a decoded request"):
            processor.encode([[0.1, 0.2, 0.3, 0.4]])
        processor.decode(generator.to_record(generator.generate(2, seed=2)))
        with pytest.raises(PredictionFailed, match=r"expected \[2, 4\]"):
            processor.encode([[0.1, 0.2, 0.3, 0.4]])
        with pytest.raises(PredictionFailed, match="without a decoded request"):  # the ids were consumed
            processor.encode([[0.1, 0.2, 0.3, 0.4]] * 2)

    contextvars.Context().run(check)  # a fresh context, as each request's task has


def test_concurrent_requests_keep_their_own_patient_ids(svc: Service, runtime: ModelRuntime) -> None:
    """Like the dataplane: decode, await the batcher (others interleave), encode — one task each."""
    processor = svc.processors[MODEL]
    groups = [generator.generate(n, seed=100 + n, first_id=10_000 * n) for n in (1, 2, 3, 1, 2)]

    async def one(patients: list[generator.Patient], delay: float) -> Any:
        x = runtime.decode(processor.decode(generator.to_record(patients)))
        await asyncio.sleep(delay)
        [y] = runtime.predict([x])
        return processor.encode(runtime.encode(y))

    async def main() -> list[Any]:
        delays = [0.03, 0.0, 0.02, 0.01, 0.0]
        return await asyncio.gather(*(one(g, d) for g, d in zip(groups, delays, strict=True)))

    results = asyncio.run(main())
    for patients, out in zip(groups, results, strict=True):
        answers = out if isinstance(out, list) else [out]
        assert [a["idAtencion"] for a in answers] == [p.id for p in patients]


# -- original routes -------------------------------------------------------------------------------


def test_predict_route_parse_render_and_errors(svc: Service) -> None:
    [route] = svc.routes
    assert route.parse(b'{"idAtencion": 1}', "application/json") == {"idAtencion": 1}
    with pytest.raises(InvalidInput):
        route.parse(b'{"valor": NaN}', "application/json")
    body = [{"idAtencion": 1, "inferences": {}, "State": "Sano"}]
    assert route.render(body) == (200, body)
    assert route.render_error(422, "too few readings") == (422, {"detail": "too few readings"})


def _info(svc: Service, path: str) -> InfoRoute:
    return next(r for r in svc.info_routes if r.path == path)


def test_home_reports_the_served_version(svc: Service) -> None:
    home = _info(svc, "/home")
    anonymous = Caller(kind="anonymous")
    assert home.respond(InfoContext(anonymous, {MODEL: 3})) == (
        200,
        {"health_check": "OK", "model_version": "cardiaco v3"},
    )
    status, body = home.respond(InfoContext(anonymous, {}))
    assert status == 503 and "not available" in body["detail"]


def test_root_shows_the_user_or_401(svc: Service) -> None:
    root = _info(svc, "/")
    user = Caller(kind="user", id="ana", username="ana", role="user", claims={"id": 4})
    assert root.respond(InfoContext(user, {MODEL: 1})) == (
        200,
        {"User": {"username": "ana", "id": 4, "role": "user"}},
    )
    assert root.respond(InfoContext(Caller(kind="anonymous"), {})) == (
        401,
        {"detail": "Authentication Failed"},
    )
    assert root.render_error is not None
    assert root.render_error(401, "missing bearer token") == (401, {"detail": "Authentication Failed"})
    assert root.render_error(429, "slow down") == (429, {"detail": "slow down"})
