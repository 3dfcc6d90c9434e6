"""The AWS Step Functions API (``POST /``, ``X-Amz-Target: AWSStepFunctions.<Op>``) against a
hostile client that has only network access, over a real ``mlgate serve``.

- Admin-only operations (Create/Update/DeleteStateMachine) refuse a user's key, no credentials,
  a wrong key and a SigV4 signature (not a credential here) — and change nothing.
- Tenants: a user's key never describes, stops, pages the history of, or lists another key's
  executions — by ARN, by execution id in the ARN's name part, or by guessing names; one
  tenant's execution names never collide with another's.
- Metering: StartExecution / StartSyncExecution go through the gateway like the native start
  (a throttled key is throttled, a spent quota is spent — shared with the native route).
- Page tokens: another operation's, another caller's, another execution's, non-base64, huge,
  negative, non-integer, 64-bit-overflowing, far-beyond-the-end — all a clean 4xx or an
  empty page, fast.
- Bodies: not JSON, not an object, deep, over the body limit, wrong Content-Type, missing /
  unknown ``X-Amz-Target``; inputs not JSON, over 256 KiB, too deep; names and ARNs with
  unicode, NUL, path traversal; ``maxResults`` out of range. Never a 5xx, never a traceback
  or a server path.
- StartSyncExecution gives up after ``MLGATE_SFN__SYNC_TIMEOUT_S`` (the execution is stopped);
  a state machine that loops forever is ended by the history cap; the server stays responsive.
- The unauthenticated emulator mode opens the Step Functions API only, for loopback peers only
  (a trusted proxy's ``X-Forwarded-For`` naming a remote client is not loopback); a key, when
  sent, is still checked.

The review's findings, fixed and asserted here: a reverse history token far past the end spun a
core for ever (page tokens are now signed and bounded by the history); 64-bit-overflowing history
tokens and offset-less ListExecutions token times were 500s; the emulator trusted any ``Host``
(DNS rebinding); a Choice / Pass loop froze the whole server. The emulator's starts being
unrecorded is documented behaviour (a local test emulator), asserted as such.
Waits poll with deadlines; nothing asserts a ratio of durations.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, create_key, create_plan
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = [pytest.mark.e2e]

CT = "application/x-amz-json-1.0"
PREFIX = "arn:aws:states:us-east-1:123456789012:"
ROLE = "arn:aws:iam::123456789012:role/x"
PASS = {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}}
WAIT = {"StartAt": "w", "States": {"w": {"Type": "Wait", "Seconds": 600, "End": True}}}
SYNC_TIMEOUT_S = 3
#: never ends on its own: the history cap (25 000 events) or a stop ends it
LOOP = {
    "StartAt": "a",
    "States": {"a": {"Type": "Pass", "Next": "b"}, "b": {"Type": "Pass", "Next": "a"}},
}
#: a countdown on the caller's own input: a loop with no Task or Wait in it
COUNTDOWN = {
    "StartAt": "mira",
    "States": {
        "mira": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 0, "Next": "resta"}],
            "Default": "fin",
        },
        "resta": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, -1)"}, "Next": "mira"},
        "fin": {"Type": "Succeed"},
    },
}


def machine(name: str) -> str:
    return f"{PREFIX}stateMachine:{name}"


def execution(workflow: str, name: str) -> str:
    return f"{PREFIX}execution:{workflow}:{name}"


_CLIENTS: dict[str, httpx.Client] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def call(
    server: ServerProcess,
    op: str | None,
    body: Any = None,
    *,
    key: str | None = ADMIN_KEY,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    timeout: float = 30.0,
) -> httpx.Response:
    """One Step Functions call over a fresh connection."""
    sent = {"content-type": CT}
    if op is not None:
        sent["x-amz-target"] = f"AWSStepFunctions.{op}"
    if key is not None:
        sent["x-api-key"] = key
    sent.update(headers or {})
    data = content if content is not None else json.dumps({} if body is None else body).encode()
    client = _CLIENTS.get(server.url)
    if client is None:
        client = _CLIENTS[server.url] = httpx.Client(base_url=server.url)
    return client.post("/", content=data, headers=sent, timeout=timeout)


def _clean(r: httpx.Response, server: ServerProcess) -> None:
    text = r.text
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    assert str(server.data_dir) not in text and "/site-packages/" not in text, text[:500]
    assert "/work/" not in text and "/tmp/" not in text, text[:500]


def _aws_4xx(r: httpx.Response, server: ServerProcess, *types: str) -> dict[str, Any]:
    """A clean AWS-shaped 4xx (``__type`` one of ``types`` when given)."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:400])
    _clean(r, server)
    body = r.json()
    assert isinstance(body, dict) and body.get("__type") and body.get("message"), r.text[:400]
    if types:
        assert body["__type"] in types, r.text[:400]
    assert r.headers.get("x-amzn-requestid"), r.headers
    return body


def _ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, (r.status_code, r.text[:400])
    body: dict[str, Any] = r.json()
    return body


MAC = 16  # the server signs page tokens: HMAC-SHA256 truncated to 16 bytes, then the JSON


def _token(op: str, resource: str, position: Any) -> str:
    """A forged token: the JSON a real one carries, under a MAC the client cannot compute."""
    raw = json.dumps({"o": op, "r": resource, "p": position}).encode()
    return base64.urlsafe_b64encode(b"\0" * MAC + raw).decode().rstrip("=")


def _untoken(token: str) -> dict[str, Any]:
    """What a real token carries (readable: signed, not encrypted)."""
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[MAC:])
    return data


def _ended(server: ServerProcess, arn: str, key: str = ADMIN_KEY, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        d = _ok(call(server, "DescribeExecution", {"executionArn": arn}, key=key))
        if d["status"] != "RUNNING" or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def _responsive(server: ServerProcess) -> None:
    r = httpx.get(f"{server.url}/readyz", timeout=10.0)
    assert r.status_code == 200, r.text


# -- the servers ---------------------------------------------------------------------------------


@contextmanager
def throwaway(tmp: Path) -> Iterator[ServerProcess]:
    """A server of its own for an attack that may leave it spinning: killed at the end."""
    with run_server(tmp / "data", env={"MLGATE_SERVICES": "[]"}) as s:
        try:
            yield s
        finally:
            s.process.kill()  # ours; do not wait for a drain that may never end
            s.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MLGATE_SERVICES": "[]", "MLGATE_SFN__SYNC_TIMEOUT_S": str(SYNC_TIMEOUT_S)}
    with run_server(tmp_path_factory.mktemp("sfn-hostile") / "data", env=env) as s:
        for name, definition in (("hola", PASS), ("espera", WAIT)):
            r = call(
                s,
                "CreateStateMachine",
                {"name": name, "definition": json.dumps(definition), "roleArn": ROLE},
            )
            assert r.status_code == 200, r.text
        yield s


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> dict[str, str]:
    """Two tenants' user keys (alice, bob)."""
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        return {who: create_key(c, name=who, role="user")["key"] for who in ("alice", "bob")}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"MLGATE_SERVICES": "[]", "MLGATE_SFN__UNAUTHENTICATED": "true"}
    with run_server(tmp_path_factory.mktemp("sfn-emulator") / "data", env=env) as s:
        yield s


# -- admin-only operations -------------------------------------------------------------------------


def test_admin_operations_refuse_everyone_else(server: ServerProcess, keys: dict[str, str]) -> None:
    sigv4 = {
        "authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/states/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
        "x-amz-date": "20260101T000000Z",
    }
    bodies = {
        "CreateStateMachine": {"name": "intrusa", "definition": json.dumps(PASS), "roleArn": ROLE},
        "UpdateStateMachine": {"stateMachineArn": machine("hola"), "definition": json.dumps(WAIT)},
        "DeleteStateMachine": {"stateMachineArn": machine("hola")},
    }
    for op, body in bodies.items():
        _aws_4xx(call(server, op, body, key=keys["alice"]), server, "AccessDeniedException")
        assert call(server, op, body, key=keys["alice"]).status_code == 403
        r = call(server, op, body, key=None)
        _aws_4xx(r, server, "UnrecognizedClientException")
        assert r.status_code == 401
        r = call(server, op, body, key=None, headers=sigv4)
        _aws_4xx(r, server, "UnrecognizedClientException")
        r = call(server, op, body, key="mlg_" + "x" * 40)
        _aws_4xx(r, server, "AccessDeniedException", "UnrecognizedClientException")
        r = call(server, op, body, key=None, headers={"authorization": "Bearer not-a-token"})
        _aws_4xx(r, server, "AccessDeniedException", "UnrecognizedClientException")
        # a user's key with the admin's key as a bearer token: the key header decides
        r = call(server, op, body, key=keys["alice"], headers={"authorization": f"Bearer {ADMIN_KEY}"})
        _aws_4xx(r, server, "AccessDeniedException")
        # a user's key as a bearer token is still a user's key
        r = call(server, op, body, key=None, headers={"authorization": f"Bearer {keys['alice']}"})
        _aws_4xx(r, server, "AccessDeniedException")
    # nothing changed
    described = _ok(call(server, "DescribeStateMachine", {"stateMachineArn": machine("hola")}))
    assert json.loads(described["definition"]) == PASS and described["revisionId"] == "1"
    _aws_4xx(
        call(server, "DescribeStateMachine", {"stateMachineArn": machine("intrusa")}),
        server,
        "StateMachineDoesNotExist",
    )


def test_reads_need_a_credential(server: ServerProcess) -> None:
    ops = {
        "ListStateMachines": {},
        "DescribeStateMachine": {"stateMachineArn": machine("hola")},
        "ListExecutions": {"stateMachineArn": machine("hola")},
        "DescribeExecution": {"executionArn": execution("hola", "x")},
        "GetExecutionHistory": {"executionArn": execution("hola", "x")},
        "StopExecution": {"executionArn": execution("hola", "x")},
        "StartExecution": {"stateMachineArn": machine("hola")},
        "StartSyncExecution": {"stateMachineArn": machine("hola")},
    }
    got = {op: call(server, op, body, key=None) for op, body in ops.items()}
    for r in got.values():
        _aws_4xx(r, server)
    # (starts are refused by the gateway as the native start is: 403 "Forbidden")
    assert all(r.status_code in (401, 403) for r in got.values()), {op: r.text for op, r in got.items()}
    # an anonymous caller learns nothing: a machine that does not exist gets the same answer
    for op in ("StartExecution", "StartSyncExecution", "DescribeStateMachine", "ListExecutions"):
        r = call(server, op, {"stateMachineArn": machine("nadie")}, key=None)
        assert (r.status_code, r.json()) == (got[op].status_code, got[op].json()), (op, r.text)


# -- tenant isolation ------------------------------------------------------------------------------


def test_a_tenant_never_reaches_another_tenants_execution(
    server: ServerProcess, keys: dict[str, str]
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    name = f"secreta-{uuid.uuid4().hex[:8]}"
    started = _ok(
        call(
            server,
            "StartExecution",
            {"stateMachineArn": machine("espera"), "name": name, "input": '{"pin": "pin-zq-secreto"}'},
            key=alice,
        )
    )
    arn = started["executionArn"]
    assert arn == execution("espera", name)
    # the execution's id (as the native API names it), found as the admin
    listed = httpx.get(
        f"{server.url}/v1/executions", headers=ADMIN, params={"workflow": "espera"}, timeout=10
    )
    assert listed.status_code == 200, listed.text
    ids = [e["executionId"] for e in listed.json()["executions"] if e.get("name") == name]
    assert len(ids) == 1, listed.text
    by_id = execution("espera", ids[0])
    for target in (arn, by_id, arn.replace(":execution:", ":express:"), arn + ":1"):
        for op in ("DescribeExecution", "GetExecutionHistory", "StopExecution"):
            r = call(server, op, {"executionArn": target}, key=bob)
            body = _aws_4xx(r, server, "ExecutionDoesNotExist")
            assert "pin-zq" not in r.text, body
    # bob's listing does not show it; alice's does; the admin's does
    bob_list = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("espera")}, key=bob))
    assert all(e["name"] != name for e in bob_list["executions"])
    alice_list = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("espera")}, key=alice))
    assert [e["name"] for e in alice_list["executions"]].count(name) == 1
    admin_list = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("espera")}))
    assert [e["name"] for e in admin_list["executions"]].count(name) == 1
    # bob's same name is bob's own (no collision, no reveal of alice's input)
    mine = _ok(
        call(
            server,
            "StartExecution",
            {"stateMachineArn": machine("espera"), "name": name, "input": '{"pin": "pin-zq-secreto"}'},
            key=bob,
        )
    )
    assert mine["executionArn"] == arn and mine["startDate"] != started["startDate"]
    _ok(call(server, "StopExecution", {"executionArn": arn}, key=bob))  # bob's own
    assert _ok(call(server, "DescribeExecution", {"executionArn": arn}, key=alice))["status"] == "RUNNING"
    stopped = _ok(call(server, "StopExecution", {"executionArn": arn}, key=alice))
    assert stopped["stopDate"]
    assert _ended(server, arn, key=alice)["status"] == "ABORTED"
    # guessing: names that do not exist, or a real name under another machine, are all the same answer
    for guess in (execution("espera", "x" * 80), execution("hola", name), execution("nadie", name)):
        _aws_4xx(call(server, "DescribeExecution", {"executionArn": guess}, key=bob), server)


def test_list_tokens_are_bound_to_their_caller_and_operation(
    server: ServerProcess, keys: dict[str, str]
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    for _ in range(3):
        _ok(call(server, "StartExecution", {"stateMachineArn": machine("hola")}, key=alice))
    page = _ok(
        call(server, "ListExecutions", {"stateMachineArn": machine("hola"), "maxResults": 1}, key=alice)
    )
    token = page["nextToken"]
    decoded = _untoken(token)
    # alice's token is alice's: bob gets InvalidToken, not alice's next page
    r = call(
        server,
        "ListExecutions",
        {"stateMachineArn": machine("hola"), "maxResults": 1, "nextToken": token},
        key=bob,
    )
    _aws_4xx(r, server, "InvalidToken")
    # the admin's listing is another resource too
    _aws_4xx(
        call(server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": token}),
        server,
        "InvalidToken",
    )
    # another operation, another machine, another status filter
    _aws_4xx(call(server, "ListStateMachines", {"nextToken": token}, key=alice), server, "InvalidToken")
    _aws_4xx(
        call(server, "ListExecutions", {"stateMachineArn": machine("espera"), "nextToken": token}, key=alice),
        server,
        "InvalidToken",
    )
    _aws_4xx(
        call(
            server,
            "ListExecutions",
            {"stateMachineArn": machine("hola"), "statusFilter": "RUNNING", "nextToken": token},
            key=alice,
        ),
        server,
        "InvalidToken",
    )
    # tampered positions: never a 500
    resource = decoded["r"]
    for position in (
        None,
        "x",
        ["not a date", "x"],
        [1, 2],
        ["2026-01-01T00:00:00+00:00", {"a": 1}],
        ["9999-12-31T23:59:59+00:00", "f" * 32],
        ["0001-01-01T00:00:00+00:00", ""],
        {"a": 1, "b": 2},
        [[[[]]]],
        12345678901234567890,
        -1,
    ):
        tampered = _token("ListExecutions", resource, position)
        r = call(
            server,
            "ListExecutions",
            {"stateMachineArn": machine("hola"), "nextToken": tampered},
            key=alice,
        )
        assert r.status_code in (200, 400), (position, r.status_code, r.text[:300])
        _clean(r, server)
        if r.status_code == 200:
            assert all(e["stateMachineArn"] == machine("hola") for e in r.json()["executions"])
    # bob forging alice's resource gets nothing of alice's
    forged = _token("ListExecutions", resource, decoded["p"])
    _aws_4xx(
        call(server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": forged}, key=bob),
        server,
        "InvalidToken",
    )
    # garbage tokens
    for garbage in (
        "!!!",
        "%%%%",
        "a",
        "=" * 10,
        "\u00e9" * 10,
        "A" * 3096,
        base64.b64encode(b"\xff\xfe").decode(),
    ):
        r = call(
            server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": garbage}, key=alice
        )
        _aws_4xx(r, server, "InvalidToken", "ValidationException")
    r = call(
        server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": "A" * 5000}, key=alice
    )
    _aws_4xx(r, server, "ValidationException")
    for bad in (1, [], {}, True):
        r = call(server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": bad}, key=alice)
        _aws_4xx(r, server)
    for op, extra in (("ListStateMachines", {}), ("ListExecutions", {"stateMachineArn": machine("hola")})):
        for garbage in ("!!!", _token(op, "", None), _token(op, "", 5), _token(op, "", [1])):
            r = call(server, op, {**extra, "nextToken": garbage}, key=alice)
            assert r.status_code in (200, 400), (op, garbage, r.status_code, r.text[:300])
            _clean(r, server)


def test_list_token_with_a_naive_time_is_a_4xx(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["alice"]
    for _ in range(2):
        _ok(call(server, "StartExecution", {"stateMachineArn": machine("hola")}, key=key))
    resource = _untoken(
        _ok(
            call(
                server,
                "ListExecutions",
                {"stateMachineArn": machine("hola"), "maxResults": 1},
                key=key,
            )
        )["nextToken"]
    )["r"]
    for at in ("2026-01-01T00:00:00", "2026-01-01"):
        tampered = _token("ListExecutions", resource, [at, "x"])
        r = call(
            server, "ListExecutions", {"stateMachineArn": machine("hola"), "nextToken": tampered}, key=key
        )
        assert r.status_code < 500, (at, r.text)
        _aws_4xx(r, server, "InvalidToken")


def _history_token(server: ServerProcess, key: str, arn: str, reverse: bool) -> dict[str, Any]:
    page = _ok(
        call(
            server,
            "GetExecutionHistory",
            {"executionArn": arn, "maxResults": 1, "reverseOrder": reverse},
            key=key,
        )
    )
    assert len(page["events"]) == 1 and page.get("nextToken"), page
    return _untoken(page["nextToken"])


@pytest.fixture(scope="module")
def finished(server: ServerProcess, keys: dict[str, str]) -> dict[str, str]:
    """One ended execution each for alice and bob (ARNs)."""
    arns = {}
    for who in ("alice", "bob"):
        r = call(
            server, "StartExecution", {"stateMachineArn": machine("hola"), "name": f"h-{who}"}, key=keys[who]
        )
        arns[who] = _ok(r)["executionArn"]
        assert _ended(server, arns[who], key=keys[who])["status"] == "SUCCEEDED"
    return arns


def test_history_tokens_are_bound_and_validated(
    server: ServerProcess, keys: dict[str, str], finished: dict[str, str]
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    forward = _history_token(server, alice, finished["alice"], reverse=False)
    backward = _history_token(server, alice, finished["alice"], reverse=True)
    # a forward token in reverse order, and alice's token on bob's execution, are InvalidToken
    r = call(
        server,
        "GetExecutionHistory",
        {"executionArn": finished["alice"], "reverseOrder": True, "nextToken": _token(**_as(forward))},
        key=alice,
    )
    _aws_4xx(r, server, "InvalidToken")
    r = call(
        server,
        "GetExecutionHistory",
        {"executionArn": finished["bob"], "nextToken": _token(**_as(forward))},
        key=bob,
    )
    _aws_4xx(r, server, "InvalidToken")
    # bob with alice's execution: it does not exist for bob, whatever the token
    r = call(
        server,
        "GetExecutionHistory",
        {"executionArn": finished["alice"], "nextToken": _token(**_as(forward))},
        key=bob,
    )
    _aws_4xx(r, server, "ExecutionDoesNotExist")
    for position in (-1, -(2**63), True, False, 1.5, "1", None, [1], {"p": 1}, 10**30):
        for token in (forward, backward):
            tampered = _token(token["o"], token["r"], position)
            r = call(
                server,
                "GetExecutionHistory",
                {
                    "executionArn": finished["alice"],
                    "reverseOrder": token["r"].endswith(":r"),
                    "nextToken": tampered,
                },
                key=alice,
            )
            _aws_4xx(r, server, "InvalidToken")
    # past the end, forward: a forged position is refused like any other
    tampered = _token(forward["o"], forward["r"], 10_000)
    r = call(
        server, "GetExecutionHistory", {"executionArn": finished["alice"], "nextToken": tampered}, key=alice
    )
    _aws_4xx(r, server, "InvalidToken")


def _as(token: dict[str, Any]) -> dict[str, Any]:
    return {"op": token["o"], "resource": token["r"], "position": token["p"]}


def test_history_token_past_int64_is_a_4xx(
    server: ServerProcess, keys: dict[str, str], finished: dict[str, str]
) -> None:
    forward = _history_token(server, keys["alice"], finished["alice"], reverse=False)
    tampered = _token(forward["o"], forward["r"], 2**64 - 1)
    r = call(
        server,
        "GetExecutionHistory",
        {"executionArn": finished["alice"], "nextToken": tampered},
        key=keys["alice"],
    )
    assert r.status_code < 500, r.text
    _aws_4xx(r, server, "InvalidToken")


def test_reverse_history_token_far_past_the_end_answers_at_once(tmp_path: Path) -> None:
    with throwaway(tmp_path) as victim:
        with httpx.Client(base_url=victim.url, timeout=30.0) as c:
            user = create_key(c, name="rev", role="user")["key"]
        r = call(
            victim, "CreateStateMachine", {"name": "hola", "definition": json.dumps(PASS), "roleArn": ROLE}
        )
        assert r.status_code == 200, r.text
        arn = _ok(call(victim, "StartExecution", {"stateMachineArn": machine("hola")}, key=user))[
            "executionArn"
        ]
        assert _ended(victim, arn, key=user)["status"] == "SUCCEEDED"
        backward = _history_token(victim, user, arn, reverse=True)
        tampered = _token(backward["o"], backward["r"], 10**15)
        body = {"executionArn": arn, "reverseOrder": True, "nextToken": tampered}
        try:
            r = call(victim, "GetExecutionHistory", body, key=user, timeout=5.0)
        except httpx.TimeoutException:
            pytest.fail("a tampered reverse token held the request (and a core) past 5 s")
        assert r.status_code in (200, 400), r.text
        _clean(r, victim)


# -- metering --------------------------------------------------------------------------------------


def test_starts_are_throttled_like_the_native_start(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        plan = create_plan(c, rate=0.001, burst=1)
        key = create_key(c, name="throttled", role="user", plan=plan)["key"]
    first = call(server, "StartExecution", {"stateMachineArn": machine("hola")}, key=key)
    _ok(first)
    for op in ("StartExecution", "StartSyncExecution"):
        r = call(server, op, {"stateMachineArn": machine("hola")}, key=key)
        _aws_4xx(r, server, "ThrottlingException")
        assert int(r.headers["retry-after"]) >= 1
    # the native route shares the bucket
    native = httpx.post(
        f"{server.url}/v1/workflows/hola/executions",
        params={"mode": "async"},
        headers={"x-api-key": key},
        json={},
        timeout=10,
    )
    assert native.status_code == 429, native.text
    # nothing but the first one started
    listed = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("hola")}, key=key))
    assert len(listed["executions"]) == 1


def test_starts_spend_the_quota_shared_with_the_native_start(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=3, quota_period="DAY")
        key = create_key(c, name="quota", role="user", plan=plan)["key"]
    native = httpx.post(
        f"{server.url}/v1/workflows/hola/executions",
        params={"mode": "async"},
        headers={"x-api-key": key},
        json={},
        timeout=10,
    )
    assert native.status_code == 202, native.text
    _ok(call(server, "StartExecution", {"stateMachineArn": machine("hola")}, key=key))
    _ok(call(server, "StartSyncExecution", {"stateMachineArn": machine("hola")}, key=key))
    for op in ("StartExecution", "StartSyncExecution"):
        r = call(server, op, {"stateMachineArn": machine("hola")}, key=key)
        _aws_4xx(r, server, "ServiceQuotaExceededException", "ThrottlingException")
    # refusals before the check (a bad input, a machine that does not exist) spend nothing, and
    # a spent key learns nothing new about machines either
    listed = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("hola")}, key=key))
    assert len(listed["executions"]) == 3


def test_concurrent_starts_never_exceed_the_quota(server: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=5, quota_period="DAY")
        key = create_key(c, name="race", role="user", plan=plan)["key"]

    def start(i: int) -> int:
        op = "StartExecution" if i % 2 else "StartSyncExecution"
        with httpx.Client(base_url=server.url, timeout=30.0) as c:
            r = c.post(
                "/",
                content=json.dumps({"stateMachineArn": machine("hola")}).encode(),
                headers={"x-amz-target": f"AWSStepFunctions.{op}", "content-type": CT, "x-api-key": key},
            )
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(start, range(14)))
    assert statuses.count(200) == 5 and statuses.count(400) == 9, statuses
    listed = _ok(call(server, "ListExecutions", {"stateMachineArn": machine("hola")}, key=key))
    assert len(listed["executions"]) == 5


def test_refused_inputs_are_not_metered(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        plan = create_plan(c, quota_limit=1, quota_period="DAY")
        key = create_key(c, name="quota1", role="user", plan=plan)["key"]
    for body in (
        {"stateMachineArn": machine("hola"), "input": "{not json"},
        {"stateMachineArn": machine("hola"), "input": "x" * 300_000},
        {"stateMachineArn": machine("hola"), "name": "con espacio"},
        {"stateMachineArn": machine("nadie")},
        {"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:../../etc"},
    ):
        r = call(server, "StartExecution", body, key=key)
        _aws_4xx(r, server)
        assert r.json()["__type"] not in ("ThrottlingException", "ServiceQuotaExceededException"), r.text
    _ok(call(server, "StartExecution", {"stateMachineArn": machine("hola")}, key=key))


# -- bodies, headers, names ------------------------------------------------------------------------


def test_garbage_requests_are_clean_4xx(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["alice"]
    cases: list[tuple[str | None, bytes, dict[str, str]]] = [
        ("ListStateMachines", b"{not json", {}),
        ("ListStateMachines", b"[]", {}),
        ("ListStateMachines", b'"x"', {}),
        ("ListStateMachines", b"null", {}),
        ("ListStateMachines", b"[" * 5000 + b"]" * 5000, {}),
        ("ListStateMachines", b'{"a":' * 2000 + b"1" + b"}" * 2000, {}),
        ("ListStateMachines", b"\xff\xfe\x00", {}),
        ("ListStateMachines", b'{"a": "\\ud800"}', {}),
        ("ListStateMachines", b'{"maxResults": 1e999}', {}),
        ("ListStateMachines", b'{"maxResults": 99999999999999999999999}', {}),
        (None, b"{}", {}),
        ("Nope", b"{}", {}),
        ("", b"{}", {}),
        ("__init__", b"{}", {}),
        ("_OPERATIONS", b"{}", {}),
        ("../ListStateMachines", b"{}", {}),
        ("listStateMachines", b"{}", {}),
    ]
    for op, content, headers in cases:
        r = call(server, op, key=key, content=content, headers=headers)
        _aws_4xx(r, server)
    for target in (
        "StepFunctions.ListStateMachines",
        "AWSStepFunctions",
        "x" * 4000,
        "AWSStepFunctions." + "A" * 3000,
    ):
        r = call(server, None, key=key, headers={"x-amz-target": target})
        assert 400 <= r.status_code < 500, (target[:40], r.status_code)
        _clean(r, server)
        assert len(r.content) < 2000
    # another content type is read the same way (a preflight guards the custom header anyway)
    for content_type in ("text/plain", "application/json", "multipart/form-data; boundary=x", ""):
        r = call(server, "ListStateMachines", key=key, headers={"content-type": content_type})
        assert r.status_code in (200, 400, 415), (content_type, r.status_code, r.text[:200])
        _clean(r, server)


def test_an_oversized_body_is_refused_before_it_is_parsed(
    server: ServerProcess, keys: dict[str, str]
) -> None:
    big = b'{"name": "' + b"a" * (7 * 1024 * 1024) + b'"}'
    r = call(server, "ListStateMachines", key=keys["alice"], content=big)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    _clean(r, server)
    _responsive(server)


def test_inputs_names_and_arns(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["alice"]
    start = "StartExecution"
    hola = machine("hola")
    for bad_input in (
        "{",
        "nan",
        "NaN",
        '{"a": 1e999999}',
        "1" * 400,
        "[" * 2000 + "]" * 2000,
        "[" * 300 + "]" * 300,
        '"\\ud800"',
        "x" * (256 * 1024 + 1),
        "\u00e9" * (128 * 1024 + 1),
    ):
        r = call(server, start, {"stateMachineArn": hola, "input": bad_input}, key=key)
        _aws_4xx(r, server, "InvalidExecutionInput", "ValidationException")
    for not_a_string in (1, {"a": 1}, ["x"], True):
        r = call(server, start, {"stateMachineArn": hola, "input": not_a_string}, key=key)
        _aws_4xx(r, server, "SerializationException", "ValidationException", "InvalidExecutionInput")
    for name in (
        "../x",
        "a/b",
        "..",
        "con espacio",
        "\u00f1and\u00fa",
        "a\x00b",
        "x" * 81,
        "",
        "a:b",
        "\u0661\u0662",  # Arabic-Indic digits: isalnum() but not ASCII
        "\uff41",  # fullwidth a
    ):
        r = call(server, start, {"stateMachineArn": hola, "name": name}, key=key)
        _aws_4xx(r, server, "InvalidName", "ValidationException")
    for arn in (
        "",
        "x" * 257,
        "arn:aws:states:us-east-1:123456789012:stateMachine:",
        "arn:aws:states:us-east-1:123456789012:stateMachine:hola:1",
        "arn:aws:states:us-east-1:123456789012:stateMachine:../../etc/passwd",
        "arn:aws:states:us-east-1:123456789012:stateMachine:HOLA",
        "arn:aws:states:us-east-1:123456789012:stateMachine:h\u00f3la",
        "arn:aws:states:us-east-1:123456789012:stateMachine:hola\x00",
        "arn:aws:states:us-east-1:123456789012:stateMachine:hola\n",
        "arn:aws:states:us-east-1:12345678901:stateMachine:hola",
        "arn:aws:states:us-east-1:123456789012:execution:hola:x",
        "arn:aws:iam::123456789012:role/x",
    ):
        for op in (start, "StartSyncExecution", "DescribeStateMachine", "ListExecutions"):
            r = call(server, op, {"stateMachineArn": arn}, key=key)
            _aws_4xx(r, server, "InvalidArn", "ValidationException", "StateMachineDoesNotExist")
        r = call(server, "DeleteStateMachine", {"stateMachineArn": arn})  # admin
        assert r.status_code in (200, 400), (arn, r.text)
        _clean(r, server)
    for arn in (
        "arn:aws:states:us-east-1:123456789012:execution:hola:\u00f1",
        "arn:aws:states:us-east-1:123456789012:execution:hola:a\x00b",
        "arn:aws:states:us-east-1:123456789012:execution:../..:x",
        "arn:aws:states:us-east-1:123456789012:execution:hola:" + "f" * 32,
        "arn:aws:states:us-east-1:123456789012:execution:hola:%00",
        "arn:aws:states:us-east-1:123456789012:execution:hola:x:y",
        "arn:aws:states:us-east-1:123456789012:execution:hola",
        "arn:aws:states:us-east-1:123456789012:execution:" + "h" * 80 + ":" + "x" * 80,
    ):
        for op in ("DescribeExecution", "GetExecutionHistory", "StopExecution"):
            r = call(server, op, {"executionArn": arn}, key=key)
            _aws_4xx(r, server, "InvalidArn", "ValidationException", "ExecutionDoesNotExist")
    # the machine still works after all that
    assert _ok(call(server, "DescribeStateMachine", {"stateMachineArn": hola}))["revisionId"] == "1"


def test_field_types_and_ranges(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["alice"]
    for size in (-1, 1001, 10**20, 1.5, "10", True, [], {}):
        for op, extra in (
            ("ListStateMachines", {}),
            ("ListExecutions", {"stateMachineArn": machine("hola")}),
            ("GetExecutionHistory", {"executionArn": execution("hola", "nadie")}),
        ):
            r = call(server, op, {**extra, "maxResults": size}, key=key)
            _aws_4xx(r, server)
    for fields in (
        {"statusFilter": "X"},
        {"statusFilter": ["RUNNING"]},
        {"statusFilter": {"a": 1}},
        {"statusFilter": "PENDING_REDRIVE"},
        {"redriveFilter": ["x"]},
        {"mapRunArn": "arn:aws:states:us-east-1:123456789012:mapRun:x"},
    ):
        r = call(server, "ListExecutions", {"stateMachineArn": machine("hola"), **fields}, key=key)
        _aws_4xx(r, server)
    for fields in ({"includedData": ["ALL_DATA"]}, {"includedData": {"a": 1}}, {"includedData": 1}):
        r = call(server, "DescribeExecution", {"executionArn": execution("hola", "x"), **fields}, key=key)
        _aws_4xx(r, server)
    for fields in ({"reverseOrder": "yes"}, {"includeExecutionData": 1}, {"reverseOrder": None}):
        r = call(server, "GetExecutionHistory", {"executionArn": execution("hola", "x"), **fields}, key=key)
        _aws_4xx(r, server)
    for fields in ({"error": "e" * 257}, {"cause": "c" * 40_000}, {"error": 1}, {"cause": ["x"]}):
        r = call(server, "StopExecution", {"executionArn": execution("hola", "x"), **fields}, key=key)
        _aws_4xx(r, server)
    for fields in (
        {"type": ["STANDARD"]},
        {"type": {"a": 1}},
        {"type": "x" * 10_000},
        {"roleArn": 1},
        {"roleArn": "x" * 257},
        {"definition": 1},
        {"definition": "[" * 5000},
        {"definition": json.dumps({"StartAt": "a", "States": {"a": {"Type": "Pass", "Next": "nowhere"}}})},
        {"name": 1},
        {"name": "x" * 81},
    ):
        body = {"name": "nueva", "definition": json.dumps(PASS), "roleArn": ROLE, **fields}
        r = call(server, "CreateStateMachine", body)
        _aws_4xx(r, server)
    for fields in ({"definition": ""}, {"definition": 1}, {"roleArn": "nope"}, {"loggingConfiguration": 1}):
        r = call(server, "UpdateStateMachine", {"stateMachineArn": machine("hola"), **fields})
        assert r.status_code in (200, 400), (fields, r.text)
        _clean(r, server)
    assert (
        _ok(call(server, "DescribeStateMachine", {"stateMachineArn": machine("hola")}))["revisionId"] == "1"
    )


def test_get_root_and_other_methods(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        for method in ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = c.request(method, "/", headers={"x-amz-target": "AWSStepFunctions.ListStateMachines"})
            assert r.status_code < 500, (method, r.status_code)
            if method != "HEAD":
                _clean(r, server)
            assert "definition" not in r.text
        # no key: no machine listing on any method
        r = c.get("/", headers={"x-amz-target": "AWSStepFunctions.ListStateMachines"})
        assert "stateMachine" not in r.text


# -- StartSyncExecution ----------------------------------------------------------------------------


def test_start_sync_execution_gives_up_after_its_timeout(server: ServerProcess, keys: dict[str, str]) -> None:
    key = keys["alice"]
    r = call(
        server,
        "StartSyncExecution",
        {"stateMachineArn": machine("espera"), "name": f"sync-{uuid.uuid4().hex[:8]}"},
        key=key,
        timeout=SYNC_TIMEOUT_S + 20,
    )
    answer = _ok(r)
    assert (answer["status"], answer["error"]) == ("TIMED_OUT", "States.Timeout")
    stored = _ok(call(server, "DescribeExecution", {"executionArn": answer["executionArn"]}, key=key))
    assert stored["status"] == "ABORTED"
    _responsive(server)


def test_a_loop_without_a_task_does_not_freeze_the_server(tmp_path: Path) -> None:
    """Found by this review (a Choice/Pass loop never suspended: one user's start froze the
    whole server, /readyz too, memory growing ~30 MB/s); fixed in ``StateRunner.run_machine``.
    A throwaway server, killed at the end, in case it comes back."""
    with throwaway(tmp_path) as victim:
        for name, definition in (("cuenta", COUNTDOWN), ("gira", LOOP)):
            r = call(
                victim,
                "CreateStateMachine",
                {"name": name, "definition": json.dumps(definition), "roleArn": ROLE},
            )
            assert r.status_code == 200, r.text
        with httpx.Client(base_url=victim.url, timeout=30.0) as c:
            user = create_key(c, name="loop", role="user")["key"]
        started = [
            _ok(
                call(
                    victim,
                    "StartExecution",
                    {"stateMachineArn": machine("cuenta"), "input": '{"n": 1e9}'},
                    key=user,
                )
            ),
            _ok(call(victim, "StartExecution", {"stateMachineArn": machine("gira")}, key=user)),
        ]
        # the server keeps serving while they run, and the 25 000-event cap ends them
        _responsive(victim)
        assert _ok(call(victim, "ListStateMachines", key=user))["stateMachines"]
        for s in started:
            ended = _ended(victim, s["executionArn"], key=user, within=40.0)
            assert ended["status"] == "FAILED", ended
            assert "25000 events" in ended.get("cause", ""), ended


def test_a_sync_caller_that_leaves_does_not_outlive_the_timeout(
    server: ServerProcess, keys: dict[str, str]
) -> None:
    """StartSyncExecution's contract is "at most SYNC_TIMEOUT_S, then stopped" — also when the
    client hangs up first (else a client could leave long runs behind with the sync call)."""
    key = keys["alice"]
    name = f"leave-{uuid.uuid4().hex[:8]}"
    with pytest.raises(httpx.TimeoutException):
        call(
            server,
            "StartSyncExecution",
            {"stateMachineArn": machine("espera"), "name": name},
            key=key,
            timeout=1.0,
        )
    _CLIENTS.pop(server.url).close()  # the timed-out connection is gone
    ended = _ended(server, execution("espera", name), key=key, within=SYNC_TIMEOUT_S + 15)
    assert ended["status"] == "ABORTED", ended


def test_concurrent_sync_starts_are_answered(server: ServerProcess, keys: dict[str, str]) -> None:
    """A handful of StartSyncExecution calls held at once by one key: each answered at the
    timeout, and another tenant's calls are served meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    def hold(_: int) -> int:
        r = call(
            server,
            "StartSyncExecution",
            {"stateMachineArn": machine("espera")},
            key=keys["bob"],
            timeout=SYNC_TIMEOUT_S + 30,
        )
        return r.status_code

    with ThreadPoolExecutor(6) as pool:
        held = [pool.submit(hold, i) for i in range(6)]
        time.sleep(0.5)
        assert _ok(call(server, "ListStateMachines", key=keys["alice"]))["stateMachines"]
        statuses = [f.result() for f in held]
    assert all(s in (200, 400, 503) for s in statuses), statuses


# -- the unauthenticated emulator ------------------------------------------------------------------


def test_the_emulator_opens_the_step_functions_api_only(emulator: ServerProcess) -> None:
    created = call(
        emulator,
        "CreateStateMachine",
        {"name": "hola", "definition": json.dumps(PASS), "roleArn": ROLE},
        key=None,
    )
    assert _ok(created)["stateMachineArn"] == machine("hola")
    with httpx.Client(base_url=emulator.url, timeout=10.0) as c:
        for method, path in (
            ("GET", "/v1/executions"),
            ("GET", "/v1/workflows"),
            ("GET", "/v1/keys"),
            ("GET", "/v1/usage"),
            ("GET", "/v1/models"),
            ("POST", "/v1/keys"),
            ("PUT", "/v1/workflows/intrusa"),
            ("POST", "/v1/workflows/hola/executions"),
        ):
            r = c.request(method, path, json={"name": "x", "role": "admin"})
            assert r.status_code in (401, 403), (method, path, r.status_code, r.text[:200])
            _clean(r, emulator)
        # the custom target header on another route does not turn the emulator on there
        r = c.get("/v1/keys", headers={"x-amz-target": "AWSStepFunctions.ListStateMachines"})
        assert r.status_code in (401, 403), r.text


def test_the_emulator_still_checks_a_sent_credential(emulator: ServerProcess) -> None:
    body = {"name": "otra", "definition": json.dumps(PASS), "roleArn": ROLE}
    for headers in (
        {"x-api-key": "mlg_" + "x" * 40},
        {"x-api-key": "x"},
        {"authorization": "Bearer nope"},
        {"authorization": "Bearer mlg_" + "x" * 40},
    ):
        r = call(emulator, "CreateStateMachine", body, key=None, headers=headers)
        _aws_4xx(r, emulator, "AccessDeniedException", "UnrecognizedClientException")
    with httpx.Client(base_url=emulator.url, timeout=30.0) as c:
        user = create_key(c, name="emu-user", role="user")["key"]
    r = call(emulator, "CreateStateMachine", body, key=user)
    _aws_4xx(r, emulator, "AccessDeniedException")
    # a SigV4 header is "no credential": the emulator's admin (this is the AWS CLI's case)
    sigv4 = {"authorization": "AWS4-HMAC-SHA256 Credential=x/20260101/us-east-1/states/aws4_request"}
    _ok(call(emulator, "ListStateMachines", key=None, headers=sigv4))


def test_the_emulator_is_for_loopback_clients_only(emulator: ServerProcess) -> None:
    """The test client is a loopback peer, and 127.0.0.1 is a trusted proxy by default: a
    forwarded remote client address is what the emulator judges, and it is not loopback."""
    body = {"stateMachineArn": machine("hola")}
    for forwarded in ("203.0.113.7", "127.0.0.1, 203.0.113.7", "10.0.0.1", "::ffff:203.0.113.7"):
        r = call(emulator, "DescribeStateMachine", body, key=None, headers={"x-forwarded-for": forwarded})
        _aws_4xx(r, emulator, "UnrecognizedClientException")
    # a forwarded loopback address is still loopback (the proxy is on this host)
    _ok(call(emulator, "DescribeStateMachine", body, key=None, headers={"x-forwarded-for": "127.0.0.1"}))


def test_the_emulator_grants_no_cross_origin_preflight(emulator: ServerProcess) -> None:
    """A page on another origin cannot send X-Amz-Target (a preflight) to the emulator."""
    with httpx.Client(base_url=emulator.url, timeout=10.0) as c:
        r = c.options(
            "/",
            headers={
                "origin": "http://attacker.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-amz-target,content-type",
            },
        )
        assert r.status_code < 500
        allowed = r.headers.get("access-control-allow-origin")
        assert allowed in (None, ""), r.headers
        # a simple (no-preflight) cross-site POST cannot name an operation: nothing happens
        r = c.post(
            "/",
            content=b'{"name": "csrf", "definition": "{}", "roleArn": "arn:aws:iam::1:role/x"}',
            headers={"origin": "http://attacker.example", "content-type": "text/plain"},
        )
        _aws_4xx(r, emulator, "UnknownOperationException")
        assert "access-control-allow-origin" not in r.headers


def test_the_emulator_refuses_a_foreign_host_header(emulator: ServerProcess) -> None:
    r = call(
        emulator,
        "ListStateMachines",
        key=None,
        headers={"host": "attacker.example:8000", "origin": "http://attacker.example:8000"},
    )
    _aws_4xx(r, emulator)


def test_the_emulators_starts_run_as_its_local_admin_unrecorded(emulator: ServerProcess) -> None:
    """Documented (docs/workflows.md, the emulator): starts without credentials run as the local
    emulator admin, unmetered and not in /v1/usage; a key's starts are recorded as usual."""
    r = call(
        emulator,
        "CreateStateMachine",
        {"name": "medida", "definition": json.dumps(PASS), "roleArn": ROLE},
        key=None,
    )
    assert r.status_code == 200, r.text
    for _ in range(3):
        _ok(call(emulator, "StartExecution", {"stateMachineArn": machine("medida")}, key=None))
    # a marker: the admin's key starts one too; once its usage row is written, so are the earlier ones
    _ok(call(emulator, "StartExecution", {"stateMachineArn": machine("medida")}))
    deadline = time.monotonic() + 20
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        got = httpx.get(f"{emulator.url}/v1/usage", headers=ADMIN, timeout=10)
        assert got.status_code == 200, got.text
        rows = [u for u in got.json()["usage"] if u["scope"] == "workflow:medida"]
        if rows:
            break
        time.sleep(0.2)
    assert rows, "the admin's start was not recorded either"
    assert sum(int(u["requests"]) for u in rows) == 1, rows  # the admin key's start only
