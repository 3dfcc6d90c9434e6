"""Data capture (mlgate.monitoring.capture): record format, partitions, redaction, sampling, the
bounded queue, flushing, write failures, retention, per-model settings and the readers."""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from mlgate.errors import InvalidInput, StoreError
from mlgate.http import capturing
from mlgate.monitoring import capture as capture_module
from mlgate.monitoring.capture import (
    REDACTED,
    Capture,
    ModelCapture,
    build_record,
    capture_prefix,
    list_files,
    parse_when,
    read_page,
    read_records,
    read_review,
    redact,
)
from mlgate.repository import Repository
from mlgate.settings import Settings
from mlgate.store import FileArtifactStore
from mlgate.telemetry.metrics import Metrics

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(range(64))
KEY_NAME = re.compile(
    r"^capture/temperatura/1/(\d{4})/(\d{2})/(\d{2})/(\d{2})/\d{8}T\d{9}Z-\d+-[0-9a-f]{8}-\d{6}\.jsonl$"
)


class Env:
    def __init__(self, tmp: Path, repository: Repository) -> None:
        self.tmp = tmp
        self.repository = repository
        self.store = FileArtifactStore(tmp / "store")
        self.metrics = Metrics()

    def capture(self, store: Any = None, **capture: Any) -> Capture:
        settings = Settings(data_dir=self.tmp, capture={"flush_s": 3600, **capture})  # type: ignore[arg-type]
        self.metrics = Metrics()
        return Capture(
            settings=settings, store=store or self.store, engine=self.repository.engine, metrics=self.metrics
        )

    def dropped(self, model: str, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "mlgate_capture_dropped_total", {"model": model, "reason": reason}
        )
        return value or 0.0

    def written(self, model: str) -> float:
        return self.metrics.registry.get_sample_value("mlgate_capture_records_total", {"model": model}) or 0.0


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    repository = Repository.open("sqlite:///" + str(tmp_path / "r.db"))
    try:
        yield Env(tmp_path, repository)
    finally:
        repository.close()


def offer(c: Capture, i: int = 0, *, model: str = "temperatura", body: bytes | None = None) -> bool:
    return c.offer(
        model,
        "1",
        body if body is not None else orjson.dumps({"temperaturas": [i]}),
        "application/json",
        orjson.dumps({"prediccion": i * 2.5}),
        "application/json",
        route="/prod",
        request_id=f"req-{i}",
        key_id="abcd1234",
    )


WIDE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
NOW_WINDOW = timedelta(hours=2)


def recent(env: Env, model: str = "temperatura", version: int | None = 1) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return read_records(env.store, model, version, now - NOW_WINDOW, now + NOW_WINDOW)


# -- the record ----------------------------------------------------------------------------------


def test_record_format_field_by_field() -> None:
    when = datetime(2026, 12, 3, 8, 15, 6, 123456, tzinfo=UTC).timestamp()
    record = build_record(
        request_body=b'{"temperaturas": [60, 61]}',
        request_type="application/json",
        response_body=b'{"prediccion":185.08,"unidad":"W"}',
        response_type="application/json",
        when=when,
        attributes={"model": "temperatura", "version": "1", "route": "/prod", "requestId": "r1"},
        inference_id="r1",
    )
    assert list(record) == ["captureData", "eventMetadata", "eventVersion"]
    assert record["eventVersion"] == "0"
    inp, out = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert inp == {
        "observedContentType": "application/json",
        "mode": "INPUT",
        "data": '{"temperaturas": [60, 61]}',  # the text as sent when nothing was redacted
        "encoding": "JSON",
    }
    assert out == {
        "observedContentType": "application/json",
        "mode": "OUTPUT",
        "data": '{"prediccion":185.08,"unidad":"W"}',
        "encoding": "JSON",
    }
    meta = record["eventMetadata"]
    assert str(uuid.UUID(meta["eventId"])) == meta["eventId"]
    assert meta["inferenceId"] == "r1"
    assert meta["inferenceTime"] == "2026-12-03T08:15:06.123Z"
    assert meta["customAttributes"] == {
        "model": "temperatura",
        "version": "1",
        "route": "/prod",
        "requestId": "r1",
    }
    orjson.dumps(record)  # one JSON line


def test_binary_bodies_are_base64_and_csv_is_text() -> None:
    record = build_record(
        request_body=JPEG,
        request_type="image/jpeg",
        response_body=b"0.25,0.75\n",
        response_type="text/csv",
        when=time.time(),
        attributes={},
    )
    inp, out = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert (inp["encoding"], inp["observedContentType"]) == ("BASE64", "image/jpeg")
    assert base64.b64decode(inp["data"]) == JPEG
    assert (out["encoding"], out["data"]) == ("CSV", "0.25,0.75\n")
    # JSON content type but not JSON: kept exactly, as BASE64
    bad = build_record(
        request_body=b"\xff{nope",
        request_type="application/json",
        response_body=b"{}",
        response_type="application/json",
        when=time.time(),
        attributes={},
    )
    assert bad["captureData"]["endpointInput"]["encoding"] == "BASE64"


# -- redaction -----------------------------------------------------------------------------------


def test_secret_names_are_redacted_at_any_depth_case_insensitive() -> None:
    value = {
        "Password": "p1",
        "user": {"API_KEY": "k", "profile": {"Authorization": "Bearer x", "name": "ana"}},
        "items": [{"token": "t"}, {"x-api-key": "mlg_1"}, {"client_secret": "s"}],
        "s3_key": "fotos/moto.jpg",  # not a secret: a key *name* in a bucket
        "secret": {"nested": "whole object goes"},
    }
    cleaned, changed = redact(value)
    assert changed
    assert cleaned == {
        "Password": REDACTED,
        "user": {"API_KEY": REDACTED, "profile": {"Authorization": REDACTED, "name": "ana"}},
        "items": [{"token": REDACTED}, {"x-api-key": REDACTED}, {"client_secret": REDACTED}],
        "s3_key": "fotos/moto.jpg",
        "secret": REDACTED,
    }
    assert value["Password"] == "p1"  # the input is not modified


def test_camel_and_kebab_case_secret_names_are_redacted() -> None:
    value = {
        "accessToken": "a",
        "user-password": "b",
        "apiKey": "c",
        "X-Api-Key": "d",
        "CLIENT_SECRET": "e",
        "nested": [{"refreshToken": "f"}, {"privateApiKey": "g"}],
        "tokens": [1, 2],  # a list of token ids, not a token
        "max_tokens": 10,
        "s3_key": "fotos/moto.jpg",
        "monkey": "kept",
    }
    cleaned, _ = redact(value)
    assert cleaned == {
        "accessToken": REDACTED,
        "user-password": REDACTED,
        "apiKey": REDACTED,
        "X-Api-Key": REDACTED,
        "CLIENT_SECRET": REDACTED,
        "nested": [{"refreshToken": REDACTED}, {"privateApiKey": REDACTED}],
        "tokens": [1, 2],
        "max_tokens": 10,
        "s3_key": "fotos/moto.jpg",
        "monkey": "kept",
    }


def test_json_sent_with_another_content_type_is_still_redacted() -> None:
    for ctype in ("text/plain", "application/x-whatever", "text/csv"):
        record = build_record(
            request_body=b' \n{"password": "hunter2", "x": [1]}',
            request_type=ctype,
            response_body=b"[]",
            response_type="text/plain",
            when=time.time(),
            attributes={},
        )
        inp = record["captureData"]["endpointInput"]
        assert (inp["encoding"], inp["observedContentType"]) == ("JSON", ctype)
        assert orjson.loads(inp["data"]) == {"password": REDACTED, "x": [1]}
        assert "hunter2" not in orjson.dumps(record).decode()


def test_configured_names_and_dotted_paths() -> None:
    value = {
        "email": "a@b.c",
        "customer": {"card": {"number": "4111", "brand": "visa"}, "Email": "x@y.z"},
        "orders": [{"card": {"number": "1"}}, {"card": {"number": "2"}}],
        "card": {"number": "top"},
    }
    cleaned, changed = redact(value, ["email", "customer.card.number", "orders.card.number"])
    assert changed
    assert cleaned["email"] == REDACTED
    assert cleaned["customer"] == {"card": {"number": REDACTED, "brand": "visa"}, "Email": REDACTED}
    assert cleaned["orders"] == [{"card": {"number": REDACTED}}, {"card": {"number": REDACTED}}]
    assert cleaned["card"] == {"number": "top"}  # a path is from the root, not any depth
    untouched, changed = redact({"a": [1, 2], "b": None}, ["c.d"])
    assert (untouched, changed) == ({"a": [1, 2], "b": None}, False)


def test_records_are_redacted_with_global_and_model_rules(env: Env) -> None:
    c = env.capture(redact=["email"])
    asyncio.run(c.configure("temperatura", ModelCapture(redact=("profile.phone",))))
    body = orjson.dumps({"temperaturas": [1], "email": "e", "password": "pw", "profile": {"phone": "555"}})
    assert offer(c, 1, body=body)
    asyncio.run(c.flush())
    [record] = recent(env)
    data = orjson.loads(record["captureData"]["endpointInput"]["data"])
    assert data == {
        "temperaturas": [1],
        "email": REDACTED,
        "password": REDACTED,
        "profile": {"phone": REDACTED},
    }
    raw = b"".join(path.read_bytes() for path in (env.tmp / "store").rglob("*.jsonl"))
    assert b"pw" not in raw and b"555" not in raw


# -- sampling ------------------------------------------------------------------------------------


def _exchange(c: Capture) -> Any:
    return SimpleNamespace(
        model="temperatura",
        version="1",
        label="/prod",
        request_id="r",
        key_id="k",
        server=SimpleNamespace(capture=c),
    )


def test_sampling_zero_never_one_always_and_a_seeded_fraction(env: Env) -> None:
    c = env.capture(queue_size=100_000)
    x = _exchange(c)
    assert c.rate("temperatura") == 0.0  # the global default: off
    assert not any(capturing.capture_bodies(x, 0.0, b"{}", "application/json", b"{}", "") for _ in range(500))
    assert all(capturing.capture_bodies(x, 1.0, b"{}", "application/json", b"{}", "") for _ in range(500))
    capturing._draws.seed(20261203)
    taken = sum(capturing.capture_bodies(x, 0.25, b"{}", "application/json", b"{}", "") for _ in range(4000))
    assert 850 <= taken <= 1150  # 1000 expected; the seed makes it the same number every run
    assert c.queued == 500 + taken


def test_rate_is_the_model_setting_else_the_global_one(env: Env) -> None:
    c = env.capture(sample=0.1)
    assert c.rate("temperatura") == 0.1
    asyncio.run(c.configure("temperatura", ModelCapture(sample=0.5)))
    assert c.rate("temperatura") == 0.5  # this process: at once
    assert c.rate("otro") == 0.1
    other = env.capture(sample=0.1)  # another worker process on the same database
    assert other.rate("temperatura") == 0.1
    asyncio.run(other.refresh())  # what its background task does every 5 s
    assert other.rate("temperatura") == 0.5
    asyncio.run(c.configure("temperatura", ModelCapture(sample=None)))  # back to the global one
    asyncio.run(other.refresh())
    assert other.rate("temperatura") == 0.1


# -- the bounded queue ---------------------------------------------------------------------------


def test_queue_full_drops_and_counts_and_offer_returns_at_once(env: Env) -> None:
    c = env.capture(queue_size=3)
    assert [offer(c, i) for i in range(3)] == [True, True, True]
    results = [offer(c, i) for i in range(1000)]  # returns at once: nothing is written here
    assert not any(results)
    assert env.dropped("temperatura", "queue_full") == 1000
    assert c.queued == 3
    assert env.store.list("capture/") == []  # offer does no I/O: the writer task does


def test_queue_bytes_and_too_large_records_are_dropped(env: Env) -> None:
    c = env.capture(queue_bytes=4096, max_record_bytes=2048)
    assert not offer(c, body=b'{"x": "' + b"a" * 3000 + b'"}')
    assert env.dropped("temperatura", "too_large") == 1
    big = b'{"x": "' + b"a" * 1500 + b'"}'
    assert offer(c, body=big) and offer(c, body=big)
    assert not offer(c, body=big)
    assert env.dropped("temperatura", "queue_bytes") == 1


# -- writing -------------------------------------------------------------------------------------


def test_partition_path_and_object_names(env: Env) -> None:
    c = env.capture()
    assert offer(c, 1)
    assert asyncio.run(c.flush()) == 1
    [key] = env.store.list("capture/")
    match = KEY_NAME.match(key)
    assert match, key
    [record] = recent(env)
    stamp = record["eventMetadata"]["inferenceTime"]
    assert "/".join(match.groups()) == f"{stamp[0:4]}/{stamp[5:7]}/{stamp[8:10]}/{stamp[11:13]}"
    assert key.startswith(capture_prefix("temperatura", 1) + "/")
    assert capture_prefix("temperatura", None) == "capture/temperatura"
    assert env.written("temperatura") == 1


def test_flush_on_stop_loses_nothing_and_splits_files(env: Env) -> None:
    c = env.capture(file_records=100, queue_size=10_000)

    async def scenario() -> None:
        await c.start()
        for i in range(250):
            assert offer(c, i)
        await c.stop()

    asyncio.run(scenario())
    records = recent(env)
    assert [r["eventMetadata"]["inferenceId"] for r in records] == [f"req-{i}" for i in range(250)]
    assert len(env.store.list("capture/")) == 3  # 100 + 100 + 50
    assert env.written("temperatura") == 250
    assert c.queued == 0


def test_objects_are_closed_at_about_file_bytes(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture_module, "FILE_BYTES", 2000)
    c = env.capture(file_records=1000)
    pad = b"x" * 900
    for i in range(6):
        assert offer(c, i, body=orjson.dumps({"temperaturas": [i], "pad": pad.decode()}))
    assert asyncio.run(c.flush()) == 6
    sizes = [len(env.store.get_bytes(k)) for k in env.store.list("capture/")]
    assert len(sizes) == 3 and all(s < 2000 + 1200 for s in sizes), sizes
    assert [r["eventMetadata"]["inferenceId"] for r in recent(env)] == [f"req-{i}" for i in range(6)]


def test_background_task_flushes_on_its_interval(env: Env) -> None:
    c = env.capture(flush_s=0.05)

    async def scenario() -> None:
        await c.start()
        try:
            assert offer(c, 7)
            deadline = time.monotonic() + 30
            while not env.store.list("capture/"):
                assert time.monotonic() < deadline, "never flushed"
                await asyncio.sleep(0.02)
        finally:
            await c.stop()

    asyncio.run(scenario())
    assert len(recent(env)) == 1


class FlakyStore(FileArtifactStore):
    """Fails its first ``failures`` writes."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("the bucket is down")
        super().put_bytes(key, data)


def test_a_write_failure_is_counted_and_later_records_are_written(env: Env) -> None:
    store = FlakyStore(env.tmp / "store", failures=1)
    c = env.capture(store=store)
    assert offer(c, 1) and offer(c, 2)
    assert asyncio.run(c.flush()) == 0
    assert env.dropped("temperatura", "write_failed") == 2
    assert c.stats.failures == 1 and "bucket is down" in (c.stats.last_error or "")
    assert offer(c, 3)
    assert asyncio.run(c.flush()) == 1
    assert [r["eventMetadata"]["inferenceId"] for r in recent(env)] == ["req-3"]


# -- retention -----------------------------------------------------------------------------------


def test_retention_deletes_only_expired_partitions(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    c = env.capture(retention_days=7)
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    keys = {
        "old": "capture/temperatura/1/2026/11/20/10/a.jsonl",
        "edge_old": "capture/temperatura/1/2026/11/26/07/b.jsonl",  # ends 08:00: 7 days ago
        "edge_kept": "capture/temperatura/1/2026/11/26/08/c.jsonl",  # ends 09:00: within 7 days
        "new": "capture/temperatura/1/2026/12/03/07/d.jsonl",
        "forever": "capture/keep/1/2020/01/01/00/e.jsonl",
        "review_old": "review/vehiculos/2026/11/01/00/f.jsonl",
    }
    for key in keys.values():
        env.store.put_bytes(key, b"{}\n")
    monkeypatch.setattr(
        c,
        "_roots_known",
        lambda: [
            ("capture/temperatura/1", "temperatura"),
            ("capture/keep/1", "keep"),
            ("review/vehiculos", None),
        ],
    )
    asyncio.run(c.configure("keep", ModelCapture(retention_days=0)))  # 0: kept forever
    assert asyncio.run(c.apply_retention(now)) == 3
    left = set(env.store.list("capture/"))
    assert left == {keys["edge_kept"], keys["new"], keys["forever"]}
    assert env.store.list("review/") == []
    # Later runs list only the days that just expired (cheap), and still find them.
    env.store.put_bytes("capture/temperatura/1/2026/11/26/07/g.jsonl", b"{}\n")
    assert asyncio.run(c.apply_retention(now + timedelta(hours=2))) == 2


# -- reading -------------------------------------------------------------------------------------


def _put(env: Env, model: str, version: int, when: datetime, ids: list[str]) -> None:
    lines = [
        orjson.dumps(
            build_record(
                request_body=b"{}",
                request_type="application/json",
                response_body=b"{}",
                response_type="application/json",
                when=when.timestamp() + i,
                attributes={},
                inference_id=rid,
            )
        )
        for i, rid in enumerate(ids)
    ]
    env.store.put_bytes(
        f"{capture_prefix(model, version)}/{when:%Y/%m/%d/%H}/{uuid.uuid4().hex}.jsonl", b"\n".join(lines)
    )


def test_read_records_in_time_order_within_the_window(env: Env) -> None:
    base = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    _put(env, "m", 1, base + timedelta(hours=2, minutes=10), ["c1", "c2"])
    _put(env, "m", 1, base + timedelta(minutes=30), ["a1"])
    _put(env, "m", 2, base + timedelta(hours=1, minutes=5), ["b1"])
    _put(env, "m", 1, base - timedelta(days=3), ["old"])
    since, until = base, base + timedelta(hours=3)

    def ids(records: list[dict[str, Any]]) -> list[str]:
        return [r["eventMetadata"]["inferenceId"] for r in records]

    assert ids(read_records(env.store, "m", 1, since, until)) == ["a1", "c1", "c2"]
    assert ids(read_records(env.store, "m", None, since, until)) == ["a1", "b1", "c1", "c2"]
    assert ids(read_records(env.store, "m", None, since, until, limit=2)) == ["c1", "c2"]  # the newest
    page, more = read_page(env.store, "m", None, since, until, limit=2, max_bytes=10**6)
    assert (ids(page), more) == (["a1", "b1"], True)  # the API pages from since
    inside = read_records(env.store, "m", 1, base + timedelta(hours=2, minutes=10, seconds=1), until)
    assert ids(inside) == ["c2"]  # by inference time, not only by hour
    long = read_records(env.store, "m", None, base - timedelta(days=5), until)  # day prefixes
    assert ids(long)[0] == "old"
    assert ids(read_records(env.store, "m", 1, base - timedelta(days=400), until))[0] == "old"  # whole root
    files, more = list_files(env.store, "m", None, since, until)
    assert [(f["version"], f["size"] > 0) for f in files] == [("1", True), ("2", True), ("1", True)]
    assert not more


def test_parse_when() -> None:
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    default = now - timedelta(hours=24)
    assert parse_when(None, default=default, now=now) == default
    assert parse_when("30m", default=default, now=now) == now - timedelta(minutes=30)
    assert parse_when("2d", default=default, now=now) == now - timedelta(days=2)
    assert parse_when("1h", default=default, now=now) == now - timedelta(hours=1)
    assert parse_when("2026-12-01T10:00:00Z", default=default) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_when("2026-12-01T10:00:00", default=default) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert parse_when("2026-12-01T11:00:00+01:00", default=default) == datetime(2026, 12, 1, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="ISO-8601"):
        parse_when("yesterday", default=default)
    for out_of_range in ("99999999999999999999w", "9" * 400 + "d", "0001-01-01T00:00:00+05:00"):
        with pytest.raises(InvalidInput, match="out of range"):
            parse_when(out_of_range, default=default, now=now)
    with pytest.raises(InvalidInput):
        parse_when("\u0661h", default=default, now=now)  # ASCII digits only


# -- the review loop -------------------------------------------------------------------------------


def test_failed_executions_are_kept_for_review_with_their_image(env: Env) -> None:
    c = env.capture()  # sample 0: review records are not sampled
    state = {
        "image_data": base64.b64encode(JPEG).decode(),
        "s3_bucket": "fotos",
        "s3_key": "gatos/chelsea.jpg",
        "inferences": [0.41, 0.2],
    }
    c.execution_failed(
        "vehiculos",
        "exec-1",
        execution_input={"s3_bucket": "fotos", "s3_key": "gatos/chelsea.jpg", "auth": {"token": "tk-9"}},
        state=state,
        error="THRESHOLD_CONFIDENCE_NOT_MET",
        cause="below 0.75",
    )
    asyncio.run(c.flush())
    assert env.store.list("capture/") == []  # review records are not under models' prefix
    [key] = env.store.list("review/")
    assert key.startswith("review/vehiculos/")
    now = datetime.now(UTC)
    [record], more = read_review(
        env.store, "vehiculos", now - NOW_WINDOW, now + NOW_WINDOW, limit=10, max_bytes=10**6
    )
    assert not more
    inp, out = record["captureData"]["endpointInput"], record["captureData"]["endpointOutput"]
    assert (inp["encoding"], inp["observedContentType"]) == ("BASE64", "image/jpeg")
    assert base64.b64decode(inp["data"]) == JPEG
    assert orjson.loads(out["data"]) == {
        "s3_bucket": "fotos",
        "s3_key": "gatos/chelsea.jpg",
        "inferences": [0.41, 0.2],
    }
    attrs = record["eventMetadata"]["customAttributes"]
    assert attrs["workflow"] == "vehiculos" and attrs["executionId"] == "exec-1"
    assert (attrs["error"], attrs["cause"]) == ("THRESHOLD_CONFIDENCE_NOT_MET", "below 0.75")
    assert orjson.loads(attrs["input"]) == {
        "s3_bucket": "fotos",
        "s3_key": "gatos/chelsea.jpg",
        "auth": {"token": REDACTED},
    }
    assert not any(b"tk-9" in env.store.get_bytes(k) for k in env.store.list("review/"))
    assert env.written("(review)") == 1


def test_review_records_do_not_share_a_namespace_with_models(env: Env) -> None:
    """A model named ``review`` and a workflow's review records never mix: the review records
    live under the top-level ``review/`` prefix, models under ``capture/``."""
    c = env.capture(sample=1.0)
    assert offer(c, 1, model="review")
    c.execution_failed("review", "exec-1", execution_input={}, state={}, error="E", cause="c")
    c.execution_failed("1", "exec-2", execution_input={}, state={}, error="E", cause="c")
    assert asyncio.run(c.flush()) == 3
    assert [k.split("/")[:3] for k in env.store.list("capture/")] == [["capture", "review", "1"]]
    assert sorted(k.split("/")[1] for k in env.store.list("review/")) == ["1", "review"]
    now = datetime.now(UTC)
    since, until = now - NOW_WINDOW, now + NOW_WINDOW
    [model_record] = read_records(env.store, "review", None, since, until)
    assert model_record["eventMetadata"]["customAttributes"]["model"] == "review"
    [kept], _ = read_review(env.store, "review", since, until, limit=10, max_bytes=10**6)
    assert kept["eventMetadata"]["customAttributes"]["executionId"] == "exec-1"
    files, _ = list_files(env.store, "review", None, since, until)
    assert [f["version"] for f in files] == ["1"]


def test_workflow_model_calls_are_sampled_like_http_ones(env: Env) -> None:
    c = env.capture()
    c.model_invoked("vehiculos", "temperatura", 1, {"temperaturas": [1]}, {"prediccion": 2.0})
    assert c.queued == 0  # sample 0
    asyncio.run(c.configure("temperatura", ModelCapture(sample=1.0)))
    c.model_invoked("vehiculos", "temperatura", 1, {"temperaturas": [1]}, {"prediccion": 2.0})
    asyncio.run(c.flush())
    [record] = recent(env)
    assert record["eventMetadata"]["customAttributes"]["route"] == "workflow:vehiculos"
    assert orjson.loads(record["captureData"]["endpointOutput"]["data"]) == {"prediccion": 2.0}
