"""The Step Functions API's wire (mlgate.http.routes_sfn): error mapping, and GetExecutionHistory's
pagination over long histories (across the store's read chunks, both directions)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlgate.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Overloaded,
    PredictionFailed,
    QuotaExceeded,
    Throttled,
    Unauthorized,
)
from mlgate.http import routes_sfn
from mlgate.repository import Repository
from mlgate.settings import SfnSettings
from mlgate.types import Caller
from mlgate.workflows.actions import Actions
from mlgate.workflows.service import WorkflowService
from mlgate.workflows.sfn_api import Arns, SfnError, SfnQueries
from mlgate.workflows.store import WorkflowStore

ADMIN = Caller(kind="key", id="k", role="admin")
MAP = {
    "StartAt": "each",
    "States": {
        "each": {
            "Type": "Map",
            "ItemsPath": "$.items",
            "Iterator": {"StartAt": "i", "States": {"i": {"Type": "Pass", "End": True}}},
            "End": True,
        }
    },
}


def test_mlgate_errors_become_aws_errors() -> None:
    cases = [
        (Unauthorized("x"), ("UnrecognizedClientException", 401)),
        (Forbidden("x"), ("AccessDeniedException", 403)),
        (Throttled("x", retry_after=1.0), ("ThrottlingException", 400)),
        (QuotaExceeded("x", retry_after=1.0), ("ServiceQuotaExceededException", 400)),
        (Overloaded("x", retry_after=1.0), ("ServiceUnavailable", 503)),
        (InvalidInput("x"), ("ValidationException", 400)),
        (NotFound("x"), ("ResourceNotFound", 400)),
        (Conflict("x"), ("ConflictException", 400)),
        (PredictionFailed("x"), ("InternalFailure", 500)),
    ]
    for error, expected in cases:
        assert routes_sfn._mlgate_error(error) == expected, error
    assert routes_sfn._REJECTIONS[429] == ("ThrottlingException", 400)


@pytest.mark.parametrize("size", [1000, 7, 200, 201])
def test_history_pages_cover_a_long_history_exactly_both_ways(tmp_path: Path, size: int) -> None:
    repo = Repository.open(f"sqlite:///{tmp_path / 'wf.db'}")
    store = WorkflowStore(repo.engine)
    service = WorkflowService(
        store, actions=Actions(dataplane=None, buckets=None, functions={}), flush_interval_s=0.02
    )

    async def pages(execution_arn: str, reverse: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        token = None
        for _ in range(1000):
            body: dict[str, Any] = {
                "executionArn": execution_arn,
                "maxResults": size,
                "reverseOrder": reverse,
            }
            if token:
                body["nextToken"] = token
            call = routes_sfn._Call(
                None,  # type: ignore[arg-type]  # no request: the caller is given
                service,
                SfnQueries(repo.engine),
                Arns(),
                SfnSettings(),
                body,
                token_key=b"k" * 32,
                _caller=ADMIN,
            )
            page = await routes_sfn.get_execution_history(call)
            assert len(page["events"]) <= size
            events += page["events"]
            token = page.get("nextToken")
            if token is None:
                return events
        raise AssertionError("no end")

    async def go() -> None:
        await service.start()
        try:
            service.deploy_sync("mapa", MAP)
            record = await service.start_execution("mapa", {"items": list(range(150))}, name="larga")
            assert record.status == "SUCCEEDED"
            arn = Arns().execution("mapa", "larga")
            forward = await pages(arn, reverse=False)
            ids = [e["id"] for e in forward]
            assert ids == sorted(ids) and len(ids) == len(set(ids)) > 600
            assert forward[0]["type"] == "ExecutionStarted" and forward[-1]["type"] == "ExecutionSucceeded"
            assert await pages(arn, reverse=True) == forward[::-1]
            call = routes_sfn._Call(
                None,  # type: ignore[arg-type]
                service,
                SfnQueries(repo.engine),
                Arns(),
                SfnSettings(),
                {"executionArn": Arns().execution("mapa", "nunca")},
                token_key=b"k" * 32,
                _caller=ADMIN,
            )
            with pytest.raises(SfnError) as exc:
                await routes_sfn.get_execution_history(call)
            assert exc.value.code == "ExecutionDoesNotExist"
        finally:
            await service.stop()

    asyncio.run(go())
