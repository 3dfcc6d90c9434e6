"""The parity table: one request lifecycle, whichever way a request is driven.

The same requests — normal, oversize by Content-Length, oversize chunked, truncated body and
close, malformed chunk, ``Expect: 100-continue`` and close, a disconnect while the model runs,
proxy headers, CORS (preflight and a cross-origin call), HTTP/1.0, a pipelined mix — go to the
real application (``create_app``: the temperature service and a model that sleeps) served by
``mlgate serve``'s protocol with its predict lane on, and with it off (every request through
the ASGI driver); the FastAPI batch route where it applies. Both must give the same status,
body, headers, access-log line, metric labels and usage, and afterwards nothing in flight. The
request-level cases also run under another ASGI server (uvicorn's h11 protocol), where the
ASGI driver opens every exchange itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlgate.http import create_app
from mlgate.http.app import MlgateApp
from mlgate.http.protocol import HttpProtocol
from mlgate.settings import Settings
from tests.security.conftest import SLEEPY_MODEL
from tests.unit.http.harness import read_response, running

pytestmark = pytest.mark.slow  # three servers with the real application: ~10 s (not in make unit)

ADMIN = "mlg_parityad_" + "p" * 40
SEED = [round(20 + (i % 24) / 4, 2) for i in range(60)]
PROD = json.dumps({"temperaturas": SEED}).encode()
LIMIT = 4096
ORIGIN = "http://ui.example"


@dataclass
class Outcome:
    """What a client saw: each answer (status, headers, body) and whether the server closed."""

    answers: list[tuple[int, dict[str, str], Any]]
    closed: bool


Case = Callable[[int, str], Awaitable[Outcome]]
CASES: dict[str, Case] = {}
#: the cases whose outcome is HTTP's own business (the protocol), not the application's
PROTOCOL_CASES = {
    "truncated-close",
    "malformed-chunk",
    "expect-100-close",
    "proxy-headers",
    "model-disconnect",
}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def _request(
    method: str, path: str, body: bytes, key: str, rid: str, extra: str = "", version: str = "1.1"
) -> bytes:
    head = (
        f"{method} {path} HTTP/{version}\r\nhost: t\r\ncontent-length: {len(body)}\r\n"
        f"content-type: application/json\r\nx-api-key: {key}\r\nx-request-id: {rid}\r\n{extra}\r\n"
    )
    return head.encode() + body


async def _talk(port: int, data: bytes, answers: int, *, close_after: float | None = None) -> Outcome:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if close_after is not None:
        await asyncio.sleep(close_after)
        writer.close()
        return Outcome([], closed=False)
    got = []
    for _ in range(answers):
        status, headers, body = await read_response(reader)
        got.append((status, _comparable(headers), _decoded(body)))
    try:
        closed = await asyncio.wait_for(reader.read(), 0.3) == b""
    except TimeoutError:
        closed = False
    writer.close()
    return Outcome(got, closed)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("latin-1")


def _comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k not in ("date",)}


@case("normal")
async def _normal(port: int, key: str) -> Outcome:
    return await _talk(port, _request("POST", "/v1/models/temperatura/predict", PROD, key, "normal"), 1)


@case("seed-route")
async def _seed(port: int, key: str) -> Outcome:
    return await _talk(port, _request("POST", "/prod", PROD, key, "seed-route"), 1)


@case("bad-input")
async def _bad_input(port: int, key: str) -> Outcome:
    return await _talk(port, _request("POST", "/prod", b'{"temperaturas": [1]}', key, "bad-input"), 1)


@case("oversize-length")
async def _oversize_length(port: int, key: str) -> Outcome:
    return await _talk(
        port, _request("POST", "/v1/models/temperatura/predict", b" " * (LIMIT + 1), key, "ol"), 1
    )


@case("oversize-chunked")
async def _oversize_chunked(port: int, key: str) -> Outcome:
    head = _request(
        "POST", "/v1/models/temperatura/predict", b"", key, "oc", "transfer-encoding: chunked\r\n"
    )
    head = head.replace(b"content-length: 0\r\n", b"")
    chunk = b"%x\r\n%s\r\n" % (LIMIT + 1, b" " * (LIMIT + 1))
    return await _talk(port, head + chunk + b"0\r\n\r\n", 1)


@case("truncated-close")
async def _truncated(port: int, key: str) -> Outcome:
    data = _request("POST", "/v1/models/temperatura/predict", PROD, key, "truncated")
    return await _talk(port, data[: len(data) - 100], 0, close_after=0.2)


@case("malformed-chunk")
async def _malformed(port: int, key: str) -> Outcome:
    head = _request(
        "POST", "/v1/models/temperatura/predict", b"", key, "malformed", "transfer-encoding: chunked\r\n"
    )
    head = head.replace(b"content-length: 0\r\n", b"")
    return await _talk(port, head + b"zz\r\nhello\r\n", 1)


@case("expect-100-close")
async def _expect(port: int, key: str) -> Outcome:
    data = _request("POST", "/v1/models/temperatura/predict", PROD, key, "expect", "expect: 100-continue\r\n")
    head = data[: data.index(b"\r\n\r\n") + 4]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    return Outcome([(100 if continued.startswith(b"HTTP/1.1 100") else 0, {}, None)], closed=False)


@case("model-disconnect")
async def _disconnect(port: int, key: str) -> Outcome:
    data = _request("POST", "/v1/models/sleepy/predict", b'{"sleep": 3}', key, "disconnect")
    return await _talk(port, data, 0, close_after=0.5)


@case("proxy-headers")
async def _proxy(port: int, key: str) -> Outcome:
    data = _request("POST", "/prod", PROD, key, "proxy", "x-forwarded-for: 203.0.113.9\r\n")
    return await _talk(port, data, 1)


@case("cors-preflight")
async def _preflight(port: int, key: str) -> Outcome:
    data = (
        b"OPTIONS /v1/models/temperatura/predict HTTP/1.1\r\nhost: t\r\nx-request-id: preflight\r\n"
        b"origin: " + ORIGIN.encode() + b"\r\naccess-control-request-method: POST\r\n"
        b"access-control-request-headers: x-api-key\r\n\r\n"
    )
    return await _talk(port, data, 1)


@case("cors-call")
async def _cors_call(port: int, key: str) -> Outcome:
    return await _talk(port, _request("POST", "/prod", PROD, key, "cors-call", f"origin: {ORIGIN}\r\n"), 1)


@case("http-1.0")
async def _http10(port: int, key: str) -> Outcome:
    return await _talk(port, _request("POST", "/prod", PROD, key, "http10", version="1.0"), 1)


@case("pipelined-mix")
async def _pipelined(port: int, key: str) -> Outcome:
    batch = json.dumps({"inputs": [{"temperaturas": SEED}] * 2}).encode()
    data = (
        _request("POST", "/prod", PROD, key, "pipe-1")
        + _request("POST", "/v1/models/temperatura/batch", batch, key, "pipe-2")
        + _request("GET", "/healthz", b"", key, "pipe-3")
        + _request("POST", "/v1/models/temperatura/predict", PROD, key, "pipe-4")
    )
    return await _talk(port, data, 4)


@case("fastapi-route")
async def _fastapi(port: int, key: str) -> Outcome:
    batch = json.dumps({"inputs": [{"temperaturas": SEED}]}).encode()
    return await _talk(port, _request("POST", "/v1/models/temperatura/batch", batch, key, "fastapi"), 1)


@case("fastapi-oversize")
async def _fastapi_oversize(port: int, key: str) -> Outcome:
    return await _talk(
        port, _request("POST", "/v1/models/temperatura/batch", b" " * (LIMIT + 1), key, "fo"), 1
    )


@case("fastapi-truncated-close")
async def _fastapi_truncated(port: int, key: str) -> Outcome:
    data = _request("POST", "/v1/models/temperatura/batch", b'{"inputs": [' + PROD + b"]}", key, "ft")
    return await _talk(port, data[:-50], 0, close_after=0.2)


@dataclass
class Run:
    outcomes: dict[str, Outcome]
    log: dict[str, list[dict[str, Any]]]  # by request id
    usage: dict[str, dict[str, int]]  # by case: requests, errors, throttled
    labels: set[tuple[str, str, str]]
    inflight: int


def _run(tmp_path: Path, http: Any, *, lane: bool = True, cases: list[str]) -> Run:
    settings = Settings(
        data_dir=tmp_path,
        admin_key=ADMIN,
        services=["temperatura"],
        max_body_bytes=LIMIT,
        http={"lane": lane},  # type: ignore[arg-type]
        cors={"origins": [ORIGIN]},  # type: ignore[arg-type]
        log={"access_stdout": False},  # type: ignore[arg-type]
    )
    app = create_app(settings)
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}
    outcomes: dict[str, Outcome] = {}

    async def main() -> None:
        async with running(app, http=http) as (_, port):
            await _prepare(app, port, keys, ids, cases)
            for name in cases:
                outcomes[name] = await CASES[name](port, keys[name])
            for _ in range(500):  # the disconnected and truncated requests end on their own
                if app.edge.inflight == 0:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(main())
    log: dict[str, list[dict[str, Any]]] = {}
    for line in (tmp_path / "logs" / "access.log").read_text().splitlines():
        entry = json.loads(line)
        log.setdefault(entry["request_id"], []).append(entry)
    assert app.server is not None
    rows = app.server.usage.report(key_ids=list(ids.values()))
    usage: dict[str, dict[str, int]] = {}
    for row in rows:
        name = next(n for n, i in ids.items() if i == row["key_id"])
        into = usage.setdefault(name, {"requests": 0, "errors": 0, "throttled": 0})
        for field in into:
            into[field] += row[field]
    labels = {
        (s.labels["route"], s.labels["method"], s.labels["status"])
        for metric in app.metrics.registry.collect()
        if metric.name == "mlgate_http_requests"
        for s in metric.samples
        if s.name == "mlgate_http_requests_total"
    }
    return Run(outcomes, log, usage, labels, app.edge.inflight)


async def _prepare(
    app: MlgateApp, port: int, keys: dict[str, str], ids: dict[str, str], cases: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": ADMIN}) as c:
        manifest = {
            "runtime": "python",
            "artifact": "sleepy.py",
            "trusted": True,
            "batching": {"max_batch_size": 1},
        }
        r = await c.post(
            "/v1/models/sleepy/versions",
            files={"files": ("sleepy.py", SLEEPY_MODEL.encode())},
            data={"manifest": json.dumps(manifest), "aliases": "production"},
        )
        assert r.status_code == 201, r.text
        for name in cases:
            r = await c.post("/v1/keys", json={"name": name})
            assert r.status_code == 201, r.text
            keys[name], ids[name] = r.json()["key"], r.json()["id"]


def _line(entry: dict[str, Any]) -> tuple[Any, ...]:
    """An access-log line without what differs between runs (date, duration, ids of keys)."""
    return (
        entry["method"],
        entry["url"],
        entry["status"],
        entry["model"],
        entry["version"],
        entry["client"],
        entry.get("reason"),
        entry["key_id"] is not None,
    )


def _answers(outcome: Outcome) -> list[tuple[int, dict[str, str], Any]]:
    out = []
    for status, headers, body in outcome.answers:
        headers = {k: v for k, v in headers.items() if k != "x-quota-reset"}
        out.append((status, headers, body))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    names = list(CASES)
    request_level = [n for n in names if n not in PROTOCOL_CASES]
    return {
        "lane": _run(tmp_path_factory.mktemp("lane"), HttpProtocol, lane=True, cases=names),
        "asgi": _run(tmp_path_factory.mktemp("asgi"), HttpProtocol, lane=False, cases=names),
        "h11": _run(tmp_path_factory.mktemp("h11"), "h11", cases=request_level),
    }


@pytest.mark.parametrize("name", list(CASES))
def test_the_lane_and_the_asgi_driver_agree(runs: dict[str, Run], name: str) -> None:
    lane, asgi = runs["lane"], runs["asgi"]
    assert _answers(lane.outcomes[name]) == _answers(asgi.outcomes[name])
    assert lane.outcomes[name].closed == asgi.outcomes[name].closed
    assert lane.usage.get(name) == asgi.usage.get(name)


def test_the_access_log_lines_agree(runs: dict[str, Run]) -> None:
    lane, asgi = runs["lane"], runs["asgi"]
    ours = {rid for rid in lane.log if len(rid) != 32}  # the request ids the cases sent
    assert ours == {rid for rid in asgi.log if len(rid) != 32}
    for rid in sorted(ours):
        assert [_line(e) for e in lane.log[rid]] == [_line(e) for e in asgi.log[rid]], rid


@pytest.mark.parametrize("name", [n for n in CASES if n not in PROTOCOL_CASES])
def test_another_asgi_server_gives_the_same_answers(runs: dict[str, Run], name: str) -> None:
    lane, h11 = runs["lane"], runs["h11"]
    assert _answers(lane.outcomes[name]) == _answers(h11.outcomes[name])
    assert lane.usage.get(name) == h11.usage.get(name)


def test_metric_labels_agree_and_nothing_is_left_in_flight(runs: dict[str, Run]) -> None:
    assert runs["lane"].labels == runs["asgi"].labels
    assert all(run.inflight == 0 for run in runs.values())


def test_what_each_case_shows(runs: dict[str, Run]) -> None:
    """The lifecycle's answers themselves (the same on both drivers, checked above)."""
    lane = runs["lane"]
    outcome = lane.outcomes

    def status(name: str) -> list[int]:
        return [a[0] for a in outcome[name].answers]

    assert status("normal") == status("seed-route") == status("proxy-headers") == [200]
    assert status("oversize-length") == status("oversize-chunked") == status("fastapi-oversize") == [413]
    assert status("malformed-chunk") == [400]
    assert status("pipelined-mix") == [200, 200, 200, 200]
    assert outcome["http-1.0"].closed and outcome["malformed-chunk"].closed
    assert outcome["cors-call"].answers[0][1]["access-control-allow-origin"] == ORIGIN
    by_rid = {rid: [(e["status"], e.get("reason")) for e in lines] for rid, lines in lane.log.items()}
    assert by_rid["truncated"] == [(499, "client_closed")]
    assert by_rid["expect"] == [(499, "client_closed")]
    assert by_rid["disconnect"] == [(499, "client_closed")]
    assert by_rid["ft"] == [(499, "client_closed")]
    assert by_rid["malformed"] == [(400, "bad_request")]
    assert by_rid["ol"] == [(413, "body_too_large")]
    assert [e["client"] for e in lane.log["proxy"]] == ["203.0.113.9"]
    # Admitted, then gone: counted as an error, the token and quota stay taken.
    assert lane.usage["model-disconnect"] == {"requests": 1, "errors": 1, "throttled": 0}
    assert lane.usage["normal"] == {"requests": 1, "errors": 0, "throttled": 0}
    assert "truncated-close" not in lane.usage  # never admitted: nothing to count
