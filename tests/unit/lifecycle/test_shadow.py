"""Shadow versions (lifecycle/shadow.py): the comparison's math and bounds, the merge of several
processes' rows, and the runner's behaviour — after the caller's task, capped, timed out,
never raising — against a fake dataplane and a real SQLite registry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
from sqlalchemy import Engine, select

from mlgate.dataplane import Prediction
from mlgate.db.tables import shadow_stats
from mlgate.errors import PredictionFailed
from mlgate.lifecycle import shadow as shadow_module
from mlgate.lifecycle.shadow import (
    MAX_LABELS,
    MAX_PATHS,
    OTHER,
    Comparison,
    ShadowRunner,
    compare_outputs,
    summarize,
)
from mlgate.monitoring.capture import SHADOW_PAIR
from mlgate.monitoring.capture_format import build_record
from mlgate.policies import AliasPolicy, ShadowOptions
from mlgate.repository import Repository
from mlgate.telemetry.metrics import Metrics


def policy(
    *, shadow: int = 2, since: float = 100.0, timeout_s: float = 5.0, max_concurrency: int = 4
) -> AliasPolicy:
    return AliasPolicy(
        "m",
        "production",
        1,
        shadow=shadow,
        shadow_sample=1.0,
        shadow_options=ShadowOptions(timeout_s=timeout_s, max_concurrency=max_concurrency),
        shadow_since=since,
    )


# -- comparing answers ----------------------------------------------------------------------------


def test_compare_walks_both_answers_generically() -> None:
    primary = {
        "prediccion": 15.5,
        "unidad": "Celsius",
        "ok": True,
        "class": 3,
        "top": [{"clase": "car", "p": 0.9}, {"clase": "bus", "p": 0.1}],
        "gone": None,
    }
    shadow = {
        "prediccion": 15.0,
        "unidad": "Celsius",
        "ok": False,
        "class": 4,
        "top": [{"clase": "car", "p": 0.8}],
        "extra": "x",
    }
    numeric, categorical = compare_outputs(primary, shadow)
    assert numeric == [
        ("prediccion", 15.5, 15.0),
        ("top[*].p", 0.9, 0.8),
        ("top[*].p", 0.1, shadow_module._ABSENT),
    ]
    assert categorical == [
        ("unidad", "Celsius", "Celsius"),
        ("ok", "true", "false"),
        ("class", "3", "4"),  # an int under a label-like key is a label
        ("top[*].clase", "car", "car"),
        ("top[*].clase", "bus", "<missing>"),
        ("gone", "null", "<missing>"),
        ("extra", "<missing>", "x"),
    ]
    assert compare_outputs(2.0, 2.5) == ([("$", 2.0, 2.5)], [])
    assert compare_outputs([1, 2], [1, 3]) == ([("[*]", 1.0, 1), ("[*]", 2.0, 3)], [])
    assert compare_outputs("a", "b") == ([], [("$", "a", "b")])


def test_compare_is_bounded() -> None:
    numeric, _ = compare_outputs(list(range(5000)), list(range(5000)))
    assert len(numeric) == shadow_module.MAX_LEAVES
    deep: Any = 1.0
    for _ in range(100):
        deep = {"a": deep}
    numeric, categorical = compare_outputs(deep, deep)
    assert numeric == [] and len(categorical) == 1  # stops at MAX_DEPTH: the rest is one label


# -- one process's figures ------------------------------------------------------------------------


def test_figures_are_exact() -> None:
    c = Comparison(policy())
    pairs = [(10.0, 11.0), (-4.0, -4.5), (0.0, 0.25), (2.0, 2.0), (5.0, "x")]
    for i, (p, s) in enumerate(pairs):
        c.record({"v": p, "u": "C"}, {"v": s, "u": "C" if i else "F"}, 0.010 + i / 1000, 0.020 + i / 1000)
    c.outcome("error")
    c.outcome("timeout")
    c.outcome("busy")
    f = c.figures()
    assert f["calls"] == {"ok": 5, "error": 1, "timeout": 1, "busy": 1}
    assert f["pairs"] == 5
    v = f["outputs"]["v"]
    deltas = [1.0, 0.5, 0.25, 0.0]
    rel = [0.1, 0.125, 0.0]  # |Δ| / |primary|; primary 0: undefined
    assert v["pairs"] == 5 and v["mismatched"] == 1
    assert v["abs_delta"] == {
        "p50": float(np.quantile(deltas, 0.5)),
        "p95": float(np.quantile(deltas, 0.95)),
        "n": 4,
    }
    assert v["rel_delta"] == {
        "p50": float(np.quantile(rel, 0.5)),
        "p95": float(np.quantile(rel, 0.95)),
        "n": 3,
        "undefined": 1,
    }
    u = f["outputs"]["u"]
    assert (u["pairs"], u["agree"], u["agreement"]) == (5, 4, 0.8)
    assert u["confusion"] == {"C": {"C": 4, "F": 1}}
    assert f["agreement"] == 0.8
    lat = f["latency_s"]
    assert lat["primary"]["p50"] == pytest.approx(0.012)
    assert lat["delta"]["p50"] == pytest.approx(0.010)
    assert lat["delta"]["p95"] == pytest.approx(0.010)
    assert f["errors"]["shadow_rate"] == pytest.approx(2 / 7)  # errors + timeouts over calls, skips excluded
    assert f["errors"]["shadow_failed"] == 2


def test_samples_paths_and_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mlgate.lifecycle.shadow_compare.SAMPLE", 100)  # the bounds live there
    c = Comparison(policy())
    for i in range(250):
        c.record(float(i), float(i) + i, 0.0, 0.0)
    out = c.figures()["outputs"]["$"]
    assert out["pairs"] == 250
    assert out["abs_delta"]["n"] == 100  # the last 100
    assert out["abs_delta"]["p50"] == float(np.quantile(np.arange(150, 250), 0.5))
    assert len(c.primary_latency) == 100

    wide = Comparison(policy())
    wide.record({f"k{i:02}": 1.0 for i in range(MAX_PATHS + 4)}, {}, 0.0, 0.0)
    figures = wide.figures()
    assert len(figures["outputs"]) == MAX_PATHS and figures["paths_dropped"] == 4

    labels = Comparison(policy())
    for i in range(MAX_LABELS + 30):
        labels.record({"c": f"l{i}"}, {"c": f"l{i}" if i % 2 else "z"}, 0.0, 0.0)
    table = labels.figures()["outputs"]["c"]["confusion"]
    assert len(table) <= shadow_module.TOP_LABELS + 1 and OTHER in table
    assert sum(sum(row.values()) for row in table.values()) == MAX_LABELS + 30
    assert sum(table[OTHER].values()) > 0


def test_merge_of_processes() -> None:
    a, b = Comparison(policy()), Comparison(policy())
    for i in range(10):
        a.record({"v": float(i), "u": "x"}, {"v": i + 1.0, "u": "x"}, 0.001, 0.002)
    for i in range(5):
        b.record({"v": float(i), "u": "x"}, {"v": i + 3.0, "u": "y"}, 0.003, 0.004)
    b.outcome("timeout")
    merged = summarize([orjson.loads(orjson.dumps(a.to_data())), orjson.loads(orjson.dumps(b.to_data()))])
    assert merged["processes"] == 2 and merged["pairs"] == 15
    deltas = [1.0] * 10 + [3.0] * 5
    assert merged["outputs"]["v"]["abs_delta"]["p50"] == float(np.quantile(deltas, 0.5))
    assert merged["outputs"]["v"]["abs_delta"]["p95"] == float(np.quantile(deltas, 0.95))
    assert merged["outputs"]["u"]["confusion"] == {"x": {"x": 10, "y": 5}}
    assert merged["agreement"] == pytest.approx(10 / 15)
    assert merged["calls"] == {"ok": 15, "error": 0, "timeout": 1, "busy": 0}
    assert summarize([])["pairs"] == 0 and summarize([])["agreement"] is None


def test_capture_record_takes_a_given_event_id() -> None:
    record = build_record(
        request_body=b"{}",
        request_type="application/json",
        response_body=b"{}",
        response_type="application/json",
        when=1.0,
        attributes={"role": "shadow"},
        event_id="e-1",
    )
    assert record["eventMetadata"]["eventId"] == "e-1"
    fresh = build_record(
        request_body=b"{}",
        request_type="application/json",
        response_body=b"{}",
        response_type="application/json",
        when=1.0,
        attributes={},
    )
    assert len(fresh["eventMetadata"]["eventId"]) == 36


# -- the runner --------------------------------------------------------------------------------


class FakePlane:
    """The dataplane's pinned predict: answers ``{"v": x * factor}``, or fails, or hangs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []
        self.mode = "ok"
        self.release = asyncio.Event()

    async def predict(self, name: str, payload: Any, *, version: Any = None, who: Any = None) -> Prediction:
        self.calls.append((name, payload, version))
        if self.mode == "hang":
            await self.release.wait()
        if self.mode == "fail":
            raise PredictionFailed("the model failed on this input")
        if self.mode == "bug":
            raise RuntimeError("a bug")
        return Prediction(name, version, {"v": payload["x"] * 2.0, "u": "C"})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'shadow.db'}")
    yield repo.engine
    repo.close()


async def hook(r: ShadowRunner, pol: AliasPolicy, x: float) -> None:
    """The dataplane's call of the hook, inside a request task of its own."""
    r.on_shadow(pol, Prediction("m", 1, {"v": 1.0}), {"x": x}, 0.001)


def runner(engine: Engine, plane: FakePlane, process: str = "p1") -> ShadowRunner:
    r = ShadowRunner(dataplane=cast(Any, plane), engine=engine, metrics=Metrics(), flush_s=3600)
    r.process = process
    return r


def test_runner_compares_after_the_caller_ends_and_stores(engine: Engine) -> None:
    plane = FakePlane()
    r = runner(engine, plane)
    pol = policy()
    order: list[str] = []

    async def request(x: float) -> None:
        r.on_shadow(pol, Prediction("m", 1, {"v": x, "u": "C"}), {"x": x}, 0.001)
        order.append(f"answered {x}")
        await asyncio.sleep(0)  # the caller still has work after the hook: the shadow waits
        await asyncio.sleep(0)
        order.append(f"done {x}")

    async def main() -> dict[str, Any]:
        for x in (1.0, 2.0, 4.0):
            await asyncio.create_task(request(x))
        await r.drain()
        order.append(f"shadowed {len(plane.calls)}")
        assert await r.flush() == 1
        assert await r.flush() == 0  # nothing changed
        return r.figures(pol)

    figures = asyncio.run(main())
    assert order[:2] == ["answered 1.0", "done 1.0"]
    assert order[-1] == "shadowed 3"
    assert [c[2] for c in plane.calls] == [2, 2, 2]  # the shadow version, pinned
    assert figures["pairs"] == 3 and figures["processes"] == 1
    abs_delta = figures["outputs"]["v"]["abs_delta"]
    assert (abs_delta["p50"], abs_delta["n"]) == (2.0, 3)  # |2x - x| for 1, 2, 4
    assert figures["outputs"]["u"]["agreement"] == 1.0
    assert (figures["primary_version"], figures["shadow_version"], figures["since"]) == (1, 2, 100.0)
    metrics = r.metrics.render().decode()
    assert (
        'mlgate_shadow_requests_total{alias="production",model="m",outcome="ok",shadow_version="2"} 3.0'
        in metrics
    )
    assert 'mlgate_shadow_agreement_ratio{alias="production",model="m",shadow_version="2"} 1.0' in metrics
    assert (
        'mlgate_shadow_abs_delta{alias="production",model="m",path="v",quantile="0.5",shadow_version="2"} 2.0'
        in metrics
    )


def test_runner_cap_timeout_and_failures_never_raise(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most GROUP_MAX calls wait to start (beyond: skipped, "busy"), at most max_concurrency
    groups run; a group that hangs times out; failures and bugs are counted, never raised."""
    monkeypatch.setattr(shadow_module, "GROUP_MAX", 2)
    plane = FakePlane()
    r = runner(engine, plane)
    pol = policy(timeout_s=0.05, max_concurrency=1)

    async def main() -> dict[str, Any]:
        plane.mode = "hang"
        for x in range(5):  # 2 accepted, 3 skipped at once
            await asyncio.create_task(hook(r, pol, float(x)))
        assert r._pending == {("m", "production"): 2}
        await asyncio.sleep(r.gather_s * 2)  # the group of 2 runs (and hangs)
        assert r._groups == {("m", "production"): 1} and r._pending == {}
        for x in range(2):  # gathered while the only allowed group runs: they wait for it
            await asyncio.create_task(hook(r, pol, float(x)))
        await asyncio.sleep(r.gather_s * 2)
        assert len(plane.calls) == 2 and r._pending == {("m", "production"): 2}
        await r.drain()  # the first group times out, then the second one runs and times out
        assert len(plane.calls) == 4
        plane.mode = "fail"
        await asyncio.create_task(hook(r, pol, 1.0))
        await r.drain()
        plane.mode = "bug"
        await asyncio.create_task(hook(r, pol, 1.0))
        await r.drain()
        assert r._pending == {} and r._groups == {} and not r._tasks
        await r.flush()
        return r.figures(pol)

    figures = asyncio.run(main())
    assert figures["calls"] == {"ok": 0, "error": 2, "timeout": 4, "busy": 3}
    assert figures["errors"]["shadow_rate"] == 1.0 and figures["pairs"] == 0


def test_runner_merges_processes_and_resets_on_a_new_shadow(engine: Engine) -> None:
    plane = FakePlane()
    one, two = runner(engine, plane, "p1"), runner(engine, plane, "p2")

    async def call(r: ShadowRunner, pol: AliasPolicy, x: float) -> None:
        r.on_shadow(pol, Prediction("m", 1, {"v": x}), {"x": x}, 0.001)  # a request task's hook

    async def main() -> None:
        for r, xs in ((one, (1.0, 2.0)), (two, (3.0,))):
            for x in xs:
                await asyncio.create_task(call(r, policy(), x))
            await r.drain()
            await r.flush()

    asyncio.run(main())
    merged = one.figures(policy())
    assert merged["processes"] == 2 and merged["pairs"] == 3
    assert merged["outputs"]["v"]["abs_delta"]["p95"] == float(np.quantile([1.0, 2.0, 3.0], 0.95))

    newer = policy(shadow=3, since=200.0)

    async def again() -> None:
        await asyncio.create_task(call(one, newer, 5.0))
        await one.drain()
        await one.flush()

    asyncio.run(again())
    assert one.figures(newer)["pairs"] == 1  # a new comparison
    with engine.connect() as conn:
        assert conn.execute(select(shadow_stats.c.since)).scalars().all() == [200.0]  # older rows gone
    assert one.figures(policy())["pairs"] == 0


def test_runner_pairs_capture_through_the_context(engine: Engine) -> None:
    """The hook leaves a pair in the caller's context when capture is on for the model; the edge's
    capture fills its event id; the shadow's record is offered with the same id."""
    plane = FakePlane()
    offered: list[dict[str, Any]] = []

    class FakeCapture:
        default = 0.0
        rates = {"m": 1.0}

        def offer(self, *args: Any, **kwargs: Any) -> bool:
            offered.append({"args": args, **kwargs})
            return True

    r = ShadowRunner(
        dataplane=cast(Any, plane), engine=engine, metrics=Metrics(), capture=cast(Any, FakeCapture())
    )

    async def request() -> None:
        r.on_shadow(policy(), Prediction("m", 1, {"v": 1.0}), {"x": 1.0}, 0.001)
        pair = SHADOW_PAIR.get()
        assert pair is not None and (pair.primary, pair.shadow) == (1, 2)
        pair.event_id, pair.request_body, pair.route, pair.request_id = "e-7", b'{"x": 1.0}', "/r", "rid"

    async def main() -> None:
        await asyncio.create_task(request())
        await r.drain()

    asyncio.run(main())
    assert len(offered) == 1
    shadow = offered[0]
    assert shadow["args"][:3] == ("m", 2, b'{"x": 1.0}')
    assert orjson.loads(shadow["args"][4]) == {
        "model_name": "m",
        "model_version": 2,
        "outputs": {"v": 2.0, "u": "C"},
    }
    assert shadow["event_id"] == "e-7" and shadow["request_id"] == "rid"
    assert dict(shadow["extra"]) == {"role": "shadow", "primaryVersion": "1"}
    assert SHADOW_PAIR.get() is None  # the caller's own context only
