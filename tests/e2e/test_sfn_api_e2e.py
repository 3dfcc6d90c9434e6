"""End to end over real HTTP: AWS's own tools drive mlgate's workflows through the Step Functions
API (``POST /``, awsJson1_0) of a real ``mlgate serve`` — boto3 (with the event hook that adds
the API key) for every operation, its typed exceptions and paginators, and the AWS CLI v1
against a server in the unauthenticated-emulator mode."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ADMIN_KEY, ServerProcess, run_server
from tests.services import missing_service

boto3 = pytest.importorskip("boto3")
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
PREFIX = "arn:aws:states:us-east-1:123456789012:"
ROLE = "arn:aws:iam::123456789012:role/StepFunctions"
PASS = {"StartAt": "hola", "States": {"hola": {"Type": "Pass", "Result": {"saludo": "hola"}, "End": True}}}
STEPS = {
    "Comment": "a Task (caught), a Choice, a Pass",
    "StartAt": "invoke",
    "States": {
        "invoke": {
            "Type": "Task",
            "Resource": "mlgate:model:invoke",
            "Parameters": {"model": "nadie", "input.$": "$"},
            "ResultPath": "$.error",
            "Catch": [{"ErrorEquals": ["Model.NotFound"], "ResultPath": "$.error", "Next": "check"}],
            "Next": "check",
        },
        "check": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.n", "NumericGreaterThan": 10, "Next": "too big"}],
            "Default": "done",
        },
        "done": {"Type": "Pass", "Parameters": {"n.$": "$.n", "error.$": "$.error.Error"}, "End": True},
        "too big": {"Type": "Fail", "Error": "TooBig", "Cause": "n > 10"},
    },
}
WAIT = {"StartAt": "espera", "States": {"espera": {"Type": "Wait", "Seconds": 600, "End": True}}}


def machine(name: str) -> str:
    return f"{PREFIX}stateMachine:{name}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("e2e-sfn"), env={"MLGATE_SERVICES": "[]"}) as s:
        yield s


def sfn(
    server: ServerProcess, key: str | None = ADMIN_KEY, event: str = "before-send.sfn.*", **config: Any
) -> Any:
    """boto3's Step Functions client on mlgate; the documented event hook adds the key."""
    client = boto3.client(
        "stepfunctions",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"max_attempts": 1}, **config),
    )
    if key is not None:

        def add_key(request: Any, **_: Any) -> None:
            request.headers["x-api-key"] = key

        client.meta.events.register(event, add_key)
    return client


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Any:
    return sfn(server)


def user_key(server: ServerProcess, name: str) -> str:
    with httpx.Client(base_url=server.url, timeout=10, headers={"x-api-key": ADMIN_KEY}) as c:
        r = c.post("/v1/keys", json={"name": name, "role": "user"})
        assert r.status_code == 201, r.text
        secret: str = r.json()["key"]
        return secret


def error_of(exc: pytest.ExceptionInfo[Any]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- state machines -----------------------------------------------------------------------------


def test_state_machines_create_describe_list_update_delete(admin: Any) -> None:
    created = admin.create_state_machine(name="saludo", definition=json.dumps(PASS), roleArn=ROLE)
    assert created["stateMachineArn"] == machine("saludo")
    # the same definition again answers the same machine (AWS); another one is refused
    again = admin.create_state_machine(name="saludo", definition=json.dumps(PASS, indent=2), roleArn=ROLE)
    assert again["creationDate"] == created["creationDate"]
    with pytest.raises(admin.exceptions.StateMachineAlreadyExists):
        admin.create_state_machine(name="saludo", definition=json.dumps(WAIT), roleArn=ROLE)
    with pytest.raises(admin.exceptions.InvalidDefinition) as bad:
        admin.create_state_machine(name="roto", definition='{"StartAt": "nada", "States": {}}', roleArn=ROLE)
    assert "States: must be a non-empty object" in str(bad.value)
    with pytest.raises(admin.exceptions.InvalidName):
        admin.create_state_machine(name="HelloWorld", definition=json.dumps(PASS), roleArn=ROLE)
    with pytest.raises(admin.exceptions.InvalidArn):
        admin.create_state_machine(name="saludo2", definition=json.dumps(PASS), roleArn="not-an-arn")

    described = admin.describe_state_machine(stateMachineArn=machine("saludo"))
    assert described["name"] == "saludo" and described["status"] == "ACTIVE"
    assert json.loads(described["definition"]) == PASS and described["type"] == "STANDARD"
    assert described["revisionId"] == "1"
    with pytest.raises(admin.exceptions.StateMachineDoesNotExist):
        admin.describe_state_machine(stateMachineArn=machine("nadie"))
    with pytest.raises(admin.exceptions.InvalidArn):
        admin.describe_state_machine(stateMachineArn="arn:aws:states:us-east-1:123456789012:saludo")

    for name in ("uno", "dos", "tres"):
        admin.create_state_machine(name=f"lista-{name}", definition=json.dumps(PASS), roleArn=ROLE)
    pages = list(admin.get_paginator("list_state_machines").paginate(PaginationConfig={"PageSize": 2}))
    names = [m["name"] for p in pages for m in p["stateMachines"]]
    assert {"lista-uno", "lista-dos", "lista-tres", "saludo"} <= set(names)
    assert names == sorted(names) and len(names) == len(set(names)) and len(pages) >= 2
    assert all(len(p["stateMachines"]) <= 2 for p in pages)

    updated = admin.update_state_machine(stateMachineArn=machine("saludo"), definition=json.dumps(STEPS))
    assert updated["revisionId"] == "2"
    assert json.loads(admin.describe_state_machine(stateMachineArn=machine("saludo"))["definition"]) == STEPS
    with pytest.raises(admin.exceptions.InvalidDefinition):
        admin.update_state_machine(stateMachineArn=machine("saludo"), definition="{")
    with pytest.raises(admin.exceptions.MissingRequiredParameter):
        admin.update_state_machine(stateMachineArn=machine("saludo"))
    with pytest.raises(admin.exceptions.StateMachineDoesNotExist):
        admin.update_state_machine(stateMachineArn=machine("nadie"), definition=json.dumps(PASS))

    admin.delete_state_machine(stateMachineArn=machine("lista-uno"))
    admin.delete_state_machine(stateMachineArn=machine("lista-uno"))  # already gone: not an error (AWS)
    with pytest.raises(admin.exceptions.StateMachineDoesNotExist):
        admin.describe_state_machine(stateMachineArn=machine("lista-uno"))


# -- executions ---------------------------------------------------------------------------------


def test_executions_start_describe_list_history_stop(admin: Any) -> None:
    admin.create_state_machine(name="pasos", definition=json.dumps(STEPS), roleArn=ROLE)
    started = admin.start_execution(stateMachineArn=machine("pasos"), name="primera", input='{"n": 3}')
    assert started["executionArn"] == f"{PREFIX}execution:pasos:primera"
    with pytest.raises(admin.exceptions.ExecutionAlreadyExists):
        admin.start_execution(stateMachineArn=machine("pasos"), name="primera", input='{"n": 4}')
    with pytest.raises(admin.exceptions.InvalidExecutionInput):
        admin.start_execution(stateMachineArn=machine("pasos"), input="{not json")
    with pytest.raises(admin.exceptions.InvalidName):
        admin.start_execution(stateMachineArn=machine("pasos"), name="con espacio")
    with pytest.raises(admin.exceptions.StateMachineDoesNotExist):
        admin.start_execution(stateMachineArn=machine("nadie"))
    failed = admin.start_execution(stateMachineArn=machine("pasos"), input='{"n": 30}')

    def ended(arn: str) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while True:
            d: dict[str, Any] = admin.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING" or time.monotonic() > deadline:
                return d
            time.sleep(0.05)

    ok = ended(started["executionArn"])
    assert ok["status"] == "SUCCEEDED" and ok["name"] == "primera"
    assert json.loads(ok["output"]) == {"n": 3, "error": "Model.NotFound"}
    assert json.loads(ok["input"]) == {"n": 3} and ok["stateMachineArn"] == machine("pasos")
    assert ok["stopDate"] >= ok["startDate"]
    bad = ended(failed["executionArn"])
    assert (bad["status"], bad["error"], bad["cause"]) == ("FAILED", "TooBig", "n > 10")
    assert "output" not in bad
    meta = admin.describe_execution(executionArn=started["executionArn"], includedData="METADATA_ONLY")
    assert "input" not in meta
    with pytest.raises(admin.exceptions.ExecutionDoesNotExist):
        admin.describe_execution(executionArn=f"{PREFIX}execution:pasos:nunca")
    with pytest.raises(admin.exceptions.InvalidArn):
        admin.describe_execution(executionArn=machine("pasos"))

    # the history: AWS's events, paginated both ways
    arn = started["executionArn"]
    whole = admin.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    types = [e["type"] for e in whole]
    assert types == [
        "ExecutionStarted",
        "TaskStateEntered",
        "TaskScheduled",
        "TaskStarted",
        "TaskFailed",
        "TaskStateExited",
        "ChoiceStateEntered",
        "ChoiceStateExited",
        "PassStateEntered",
        "PassStateExited",
        "ExecutionSucceeded",
    ]
    failed_task = whole[4]["taskFailedEventDetails"]
    assert (failed_task["resourceType"], failed_task["error"]) == ("mlgate", "Model.NotFound")
    assert json.loads(whole[0]["executionStartedEventDetails"]["input"]) == {"n": 3}
    assert [e["id"] for e in whole] == list(range(1, 12))
    pages = list(
        admin.get_paginator("get_execution_history").paginate(
            executionArn=arn, PaginationConfig={"PageSize": 3}
        )
    )
    assert len(pages) == 4 and [e for p in pages for e in p["events"]] == whole
    backwards = admin.get_paginator("get_execution_history").paginate(
        executionArn=arn, reverseOrder=True, PaginationConfig={"PageSize": 4}
    )
    assert [e for p in backwards for e in p["events"]] == whole[::-1]
    lean = admin.get_execution_history(executionArn=arn, includeExecutionData=False)["events"]
    assert "input" not in lean[0]["executionStartedEventDetails"]
    with pytest.raises(admin.exceptions.InvalidToken):
        admin.get_execution_history(executionArn=arn, nextToken="bm9wZQ")
    token = admin.get_execution_history(executionArn=arn, maxResults=2)["nextToken"]
    with pytest.raises(admin.exceptions.InvalidToken):  # bound to its execution and direction
        admin.get_execution_history(executionArn=arn, nextToken=token, reverseOrder=True)

    # a running execution: idempotent start, then StopExecution
    admin.create_state_machine(name="espera", definition=json.dumps(WAIT), roleArn=ROLE)
    waiting = admin.start_execution(stateMachineArn=machine("espera"), name="larga", input="{}")
    same = admin.start_execution(stateMachineArn=machine("espera"), name="larga", input="{}")
    assert same["executionArn"] == waiting["executionArn"]  # AWS: same name and input while running
    assert admin.describe_execution(executionArn=waiting["executionArn"])["status"] == "RUNNING"
    running = admin.list_executions(stateMachineArn=machine("espera"), statusFilter="RUNNING")["executions"]
    assert [e["name"] for e in running] == ["larga"]
    stopped = admin.stop_execution(executionArn=waiting["executionArn"], error="Manual", cause="bastante")
    aborted = admin.describe_execution(executionArn=waiting["executionArn"])
    assert (aborted["status"], aborted["error"], aborted["cause"]) == ("ABORTED", "Manual", "bastante")
    assert aborted["stopDate"] == stopped["stopDate"]
    last = admin.get_execution_history(executionArn=waiting["executionArn"], reverseOrder=True, maxResults=1)
    assert last["events"][0]["type"] == "ExecutionAborted"
    assert last["events"][0]["executionAbortedEventDetails"] == {"error": "Manual", "cause": "bastante"}
    # stopping an ended execution answers its stop date
    assert admin.stop_execution(executionArn=waiting["executionArn"])["stopDate"] == stopped["stopDate"]

    # listing, paginated, newest first, filtered by status
    for i in range(4):
        admin.start_execution(stateMachineArn=machine("pasos"), name=f"lote-{i}", input=json.dumps({"n": i}))
    listed = [
        e
        for p in admin.get_paginator("list_executions").paginate(
            stateMachineArn=machine("pasos"), PaginationConfig={"PageSize": 2}
        )
        for e in p["executions"]
    ]
    assert len(listed) == 6 and len({e["executionArn"] for e in listed}) == 6
    assert [e["startDate"] for e in listed] == sorted((e["startDate"] for e in listed), reverse=True)
    failures = admin.list_executions(stateMachineArn=machine("pasos"), statusFilter="FAILED")["executions"]
    assert [e["executionArn"] for e in failures] == [failed["executionArn"]]
    with pytest.raises(admin.exceptions.StateMachineDoesNotExist):
        admin.list_executions(stateMachineArn=machine("nadie"))
    with pytest.raises(ClientError) as exc:
        admin.list_executions(stateMachineArn=machine("pasos"), maxResults=1001)
    assert error_of(exc) == ("ValidationException", 400)

    # deleting a machine stops what runs and deletes its executions
    admin.start_execution(stateMachineArn=machine("espera"), name="otra")
    admin.delete_state_machine(stateMachineArn=machine("espera"))
    with pytest.raises(admin.exceptions.ExecutionDoesNotExist):
        admin.describe_execution(executionArn=f"{PREFIX}execution:espera:otra")


def test_start_sync_execution(server: ServerProcess, admin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    admin.create_state_machine(name="sincrona", definition=json.dumps(STEPS), roleArn=ROLE)
    monkeypatch.setenv("AWS_DISABLE_HOST_PREFIX_INJECTION", "true")  # else boto3 calls sync-<host>
    client = sfn(server)
    ok = client.start_sync_execution(stateMachineArn=machine("sincrona"), input='{"n": 1}', name="s1")
    assert ok["status"] == "SUCCEEDED" and json.loads(ok["output"]) == {"n": 1, "error": "Model.NotFound"}
    assert ok["executionArn"] == f"{PREFIX}execution:sincrona:s1"
    assert ok["billingDetails"]["billedDurationInMilliseconds"] >= 100
    bad = client.start_sync_execution(stateMachineArn=machine("sincrona"), input='{"n": 11}')
    assert (bad["status"], bad["error"], bad["cause"]) == ("FAILED", "TooBig", "n > 10")
    # Config(inject_host_prefix=False) does the same per client
    other = sfn(server, inject_host_prefix=False)
    monkeypatch.delenv("AWS_DISABLE_HOST_PREFIX_INJECTION")
    assert (
        other.start_sync_execution(stateMachineArn=machine("sincrona"), input='{"n": 0}')["status"]
        == "SUCCEEDED"
    )
    # without either, boto3 sends StartSyncExecution to the host sync-127.0.0.1
    with pytest.raises(Exception, match=re.escape("sync-127.0.0.1")):
        sfn(server).start_sync_execution(stateMachineArn=machine("sincrona"))


# -- authentication -----------------------------------------------------------------------------


def test_authentication_and_ownership(server: ServerProcess, admin: Any) -> None:
    admin.create_state_machine(name="ajena", definition=json.dumps(PASS), roleArn=ROLE)
    for client, expected in (
        (sfn(server, key=None), ("UnrecognizedClientException", 401)),  # only a SigV4 signature
        (sfn(server, key="mlg_wrong"), ("AccessDeniedException", 403)),
    ):
        with pytest.raises(ClientError) as exc:
            client.list_state_machines()
        assert error_of(exc) == expected
        assert "x-api-key" in str(exc.value) or expected[1] == 403
    ana, bob = (
        sfn(server, key=user_key(server, "ana")),
        sfn(server, key=user_key(server, "bob"), event="before-sign.sfn.*"),
    )
    with pytest.raises(ClientError) as exc:
        ana.create_state_machine(name="mia", definition=json.dumps(PASS), roleArn=ROLE)
    assert error_of(exc) == ("AccessDeniedException", 403)
    with pytest.raises(ClientError):
        ana.delete_state_machine(stateMachineArn=machine("ajena"))
    run = ana.start_execution(stateMachineArn=machine("ajena"), name="de-ana")
    assert ana.describe_execution(executionArn=run["executionArn"])["name"] == "de-ana"
    # names are per caller: bob may use the same one, and never sees ana's
    bobs = bob.start_execution(stateMachineArn=machine("ajena"), name="de-ana")
    assert bobs["executionArn"] == run["executionArn"]
    assert [e["name"] for e in bob.list_executions(stateMachineArn=machine("ajena"))["executions"]] == [
        "de-ana"
    ]
    assert admin.list_executions(stateMachineArn=machine("ajena"))["executions"].__len__() == 2
    carol = sfn(server, key=user_key(server, "carol"))
    with pytest.raises(carol.exceptions.ExecutionDoesNotExist):
        carol.describe_execution(executionArn=run["executionArn"])
    with pytest.raises(carol.exceptions.ExecutionDoesNotExist):
        carol.stop_execution(executionArn=run["executionArn"])


def test_the_wire(server: ServerProcess) -> None:
    headers = {"x-api-key": ADMIN_KEY, "content-type": "application/x-amz-json-1.0"}
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.post("/", headers={**headers, "x-amz-target": "AWSStepFunctions.ListActivities"}, content=b"{}")
        assert r.status_code == 400 and r.json()["__type"] == "UnknownOperationException"
        r = c.post(
            "/", headers={**headers, "x-amz-target": "AWSStepFunctions.ListStateMachines"}, content=b"{x"
        )
        assert r.status_code == 400 and r.json()["__type"] == "SerializationException"
        r = c.post(
            "/", headers={**headers, "x-amz-target": "AWSStepFunctions.ListStateMachines"}, content=b"[]"
        )
        assert r.json()["__type"] == "SerializationException"
        r = c.post(
            "/",
            headers={**headers, "x-amz-target": "AWSStepFunctions.DescribeExecution"},
            content=json.dumps({"executionArn": "x" * 10_000}).encode(),
        )
        assert r.status_code == 400 and r.json()["__type"] == "ValidationException"
        r = c.post(
            "/", headers={**headers, "x-amz-target": "AWSStepFunctions.ListStateMachines"}, content=b""
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-amz-json-1.0"
        assert r.headers["x-amzn-requestid"]
        assert c.get("/").status_code == 405  # only POST / is served


# -- the AWS CLI, against the unauthenticated emulator -------------------------------------------


def aws_cli() -> Path:
    tools = Path(os.environ.get("MLGATE_TOOLS_VENV") or REPO / ".venv-tools")
    aws = tools / "bin" / "aws"
    if not aws.exists():
        missing_service(f"the AWS CLI is not installed in {tools} (make .venv-tools/.installed)")
    return aws


def test_aws_cli_against_the_emulator(tmp_path_factory: pytest.TempPathFactory) -> None:
    aws = aws_cli()
    data = tmp_path_factory.mktemp("e2e-sfn-cli")
    emulator = {
        "MLGATE_SERVICES": "[]",
        "MLGATE_SFN__UNAUTHENTICATED": "true",
        "MLGATE_SFN__SYNC_TIMEOUT_S": "1",
    }
    with run_server(data, env=emulator) as server:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(data),
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(data / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(data / "none"),
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
        }
        (data / "pasos.asl.json").write_text(json.dumps(STEPS))

        def cli(*args: str) -> dict[str, Any]:
            done = subprocess.run(
                [str(aws), "stepfunctions", *args, "--endpoint-url", server.url, "--output", "json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            out: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
            return out

        created = cli(
            "create-state-machine",
            "--name",
            "pasos",
            "--role-arn",
            ROLE,
            "--definition",
            f"file://{data / 'pasos.asl.json'}",
        )
        assert created["stateMachineArn"] == machine("pasos")
        started = cli(
            "start-execution", "--state-machine-arn", machine("pasos"), "--name", "cli", "--input", '{"n": 2}'
        )
        assert started["executionArn"] == f"{PREFIX}execution:pasos:cli"
        deadline = time.monotonic() + 10
        while (described := cli("describe-execution", "--execution-arn", started["executionArn"]))[
            "status"
        ] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert described["status"] == "SUCCEEDED" and json.loads(described["output"])["n"] == 2
        history = cli(
            "get-execution-history", "--execution-arn", started["executionArn"], "--max-items", "100"
        )
        assert history["events"][0]["type"] == "ExecutionStarted"
        assert history["events"][-1]["type"] == "ExecutionSucceeded"
        # boto3 without the hook works too; StartSyncExecution gives up after SYNC_TIMEOUT_S
        plain = sfn(server, key=None, inject_host_prefix=False)
        plain.create_state_machine(name="espera", definition=json.dumps(WAIT), roleArn=ROLE)
        late = plain.start_sync_execution(stateMachineArn=machine("espera"), name="tarde")
        assert (late["status"], late["error"]) == ("TIMED_OUT", "States.Timeout")
        stored = plain.describe_execution(executionArn=late["executionArn"])
        assert (stored["status"], stored["error"]) == ("ABORTED", "States.Timeout")
        # a key, when sent, is still checked
        with httpx.Client(base_url=server.url, timeout=10) as c:
            r = c.post(
                "/",
                headers={"x-api-key": "mlg_wrong", "x-amz-target": "AWSStepFunctions.ListStateMachines"},
                content=b"{}",
            )
            assert r.status_code == 403 and r.json()["__type"] == "AccessDeniedException"


def test_the_emulator_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mlgate", "serve", "--host", "0.0.0.0"],
        env={
            **os.environ,
            "MLGATE_DATA_DIR": str(tmp_path),
            "MLGATE_SFN__UNAUTHENTICATED": "true",
            "MLGATE_PORT": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "MLGATE_SFN__UNAUTHENTICATED needs a loopback bind address" in done.stdout + done.stderr
