"""JSONata workflows (``QueryLanguage: "JSONata"``) against a hostile tenant, over a real
``mlgate serve``.

Who can do what: deploying a definition is admin-only (``PUT /v1/workflows/{name}``, and
``CreateStateMachine`` on the Step Functions API); a user key can only *start* an existing
workflow, and its input reaches the expressions as ``$states.input``. So two attackers:

- an admin deploying a hostile definition (CPU and memory bombs, recursion, ``$eval``, hook
  tampering, huge Map fan-out, reserved names, malformed expressions);
- a user supplying hostile *input* to an ordinary-looking JSONata workflow (a validation
  regex, ``$distinct`` over a list it sends, ``{% %}`` text in its data).

Secure behaviour asserted: a bad definition is a clean 400 at deploy; a bad evaluation ends
its execution FAILED with a ``States.*`` error (``States.QueryEvaluationError`` where the
expression is at fault), never a 5xx, never a traceback, a Python exception name or a server
path; the server keeps answering other tenants (``/readyz`` and another key's request) while
an attack runs; the server's peak RSS (``VmHWM``) stays bounded.

Attacks that could wedge a server (if a bound regressed) run on a server of their own, shared by
them and killed by its own PID; the one that measures peak memory gets a fresh one. Bounds are
generous ("answers within 5 s"); nothing asserts a ratio of durations. ``MLGATE_SOAK=1`` probes
the bystander for longer while each attack runs.
Findings (product wrong today) are ``xfail(strict=True, reason="FINDING: …")``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import ADMIN, SOAK, create_key
from tests.server_process import ADMIN_KEY, ServerProcess, run_server

pytestmark = [pytest.mark.e2e]

QEE = "States.QueryEvaluationError"
CT = "application/x-amz-json-1.0"


def ja_pass(output: Any, **extra: Any) -> dict[str, Any]:
    """A JSONata machine of one Pass state whose Output is ``output``."""
    state = {"Type": "Pass", "Output": output, "End": True, **extra}
    return {"QueryLanguage": "JSONata", "StartAt": "S", "States": {"S": state}}


def _clean_text(text: str, server: ServerProcess) -> None:
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    assert str(server.data_dir) not in text and "site-packages" not in text, text[:500]
    assert "/work/" not in text and "/tmp/" not in text, text[:500]


#: Python exception names that must not reach a client as an execution's error or cause
_PYTHON_ERRORS = ("RecursionError", "MemoryError")


def deploy(server: ServerProcess, name: str, definition: Any, *, key: str = ADMIN_KEY) -> httpx.Response:
    return httpx.put(
        f"{server.url}/v1/workflows/{name}",
        json={"definition": definition},
        headers={"x-api-key": key},
        timeout=30.0,
    )


def deployed(server: ServerProcess, name: str, definition: Any) -> None:
    r = deploy(server, name, definition)
    assert r.status_code in (200, 201), r.text


def start(
    server: ServerProcess, name: str, data: Any, *, key: str, mode: str = "sync", timeout: float = 60.0
) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/workflows/{name}/executions",
        content=json.dumps(data, separators=(",", ":")),
        params={"mode": mode},
        headers={"x-api-key": key, "content-type": "application/json"},
        timeout=timeout,
    )


def ended(server: ServerProcess, name: str, data: Any, *, key: str) -> dict[str, Any]:
    """Run to the end (sync); the answer is a clean 200 with a final status."""
    r = start(server, name, data, key=key)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    _clean_text(r.text, server)
    body: dict[str, Any] = r.json()
    assert body["status"] in ("SUCCEEDED", "FAILED"), body
    return body


def failed_with(body: dict[str, Any], error: str = QEE) -> None:
    assert body["status"] == "FAILED", body
    assert body["error"] == error, (body["error"], (body["cause"] or "")[:400])
    for name in _PYTHON_ERRORS:
        assert name not in (body["cause"] or ""), body["cause"][:400]


def responsive(server: ServerProcess, key: str, within: float = 10.0) -> None:
    """``/readyz`` and another tenant's authenticated request both answer within ``within`` s."""
    r = httpx.get(f"{server.url}/readyz", timeout=within)
    assert r.status_code == 200, r.text
    r = httpx.get(f"{server.url}/v1/executions", headers={"x-api-key": key}, timeout=within)
    assert r.status_code == 200, r.text


def peak_rss_mb(server: ServerProcess) -> float:
    """The server's peak resident set (``VmHWM``), in MiB."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _user_key(server: ServerProcess, name: str) -> str:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        key: str = create_key(c, name=name, plan="roomy")["key"]  # never throttled
    return key


# -- the servers ---------------------------------------------------------------------------------


@contextmanager
def throwaway(tmp: Path) -> Iterator[ServerProcess]:
    """A server of its own for an attack that may wedge it: killed by its PID at the end."""
    with run_server(tmp / "data", env={"MLGATE_SERVICES": "[]"}) as s:
        try:
            yield s
        finally:
            s.process.kill()  # ours; a wedged loop would never drain
            s.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("ja-hostile") / "data", env={"MLGATE_SERVICES": "[]"}) as s:
        yield s


@pytest.fixture(scope="module")
def keys(server: ServerProcess) -> tuple[str, str]:
    """(eve: the hostile tenant, bob: the bystander)."""
    return _user_key(server, "eve"), _user_key(server, "bob")


# -- who may deploy ------------------------------------------------------------------------------


def test_a_user_cannot_deploy_a_definition(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, _ = keys
    bomb = ja_pass("{% $reduce($range(0, 999999, 1), function($a, $b){$a + $b}) %}")
    r = deploy(server, "ja-eve", bomb, key=eve)
    assert r.status_code == 403, r.text
    _clean_text(r.text, server)
    r = httpx.post(f"{server.url}/v1/workflows", json={"definition": bomb}, headers={"x-api-key": eve})
    assert 400 <= r.status_code < 500, r.text
    body = {"name": "ja-eve", "definition": json.dumps(bomb), "roleArn": "arn:aws:iam::123456789012:role/x"}
    r = httpx.post(
        f"{server.url}/",
        content=json.dumps(body),
        headers={"x-api-key": eve, "content-type": CT, "x-amz-target": "AWSStepFunctions.CreateStateMachine"},
    )
    assert 400 <= r.status_code < 500, r.text
    _clean_text(r.text, server)
    r = httpx.get(f"{server.url}/v1/workflows/ja-eve", headers=ADMIN)
    assert r.status_code == 404, r.text


# -- hostile definitions refused at deploy -------------------------------------------------------

_BAD_DEFINITIONS: dict[str, Any] = {
    "unclosed": ja_pass("{% $states.input.( %}"),
    "empty": ja_pass("{%%}"),
    "blank": ja_pass("{%   %}"),
    "garbage": ja_pass("{% ]]]][[[[ %}"),
    "unicode garbage": ja_pass("{% $€€€ ( ☃ %}"),
    "deep parens": ja_pass("{% " + "(" * 5000 + "1" + ")" * 5000 + " %}"),
    "deep arrays": ja_pass("{% " + "[" * 5000 + "1" + "]" * 5000 + " %}"),
    "long chain": ja_pass("{% " + "+".join(["1"] * 20000) + " %}"),
    "bind a bound hook": ja_pass(
        "{% ($__evaluate_entry := $nope; $__evaluate_exit := $nope; $f := function($n){$f($n + 1)}; $f(0)) %}"
    ),
    "read a bound hook": ja_pass("{% $__evaluate_entry %}"),
    "hook as a parameter": ja_pass("{% (function($__evaluate_exit){$__evaluate_exit})(1) %}"),
    "hook as a position variable": ja_pass("{% [1, 2]#$__evaluate_entry.$__evaluate_entry %}"),
    "hook as a focus variable": ja_pass("{% [1, 2]@$__evaluate_exit.$__evaluate_exit %}"),
    "jsonpath field": ja_pass("{% 1 %}", InputPath="$.x"),
    "parameters": ja_pass("{% 1 %}", Parameters={"a.$": "$.x"}),
    "assign states": ja_pass("{% 1 %}", Assign={"states": 1}),
    "assign bad name": ja_pass("{% 1 %}", Assign={"a-b": 1}),
    "assign dollar": ja_pass("{% 1 %}", Assign={"$x": 1}),
    "assign unicode": ja_pass("{% 1 %}", Assign={"ñandú": 1}),
    "assign not object": ja_pass("{% 1 %}", Assign="{% {'x': 1} %}"),
    "condition variable": {
        "QueryLanguage": "JSONata",
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": True, "Next": "E"}]},
            "E": {"Type": "Succeed"},
        },
    },
    "jsonpath state in jsonata machine": {
        "QueryLanguage": "JSONata",
        "StartAt": "P",
        "States": {"P": {"Type": "Pass", "QueryLanguage": "JSONPath", "End": True}},
    },
    "items not array": {
        "QueryLanguage": "JSONata",
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "Items": 7,
                "ItemProcessor": {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}},
                "End": True,
            }
        },
    },
    "wait negative": {
        "QueryLanguage": "JSONata",
        "StartAt": "W",
        "States": {"W": {"Type": "Wait", "Seconds": -5, "End": True}},
    },
}


@pytest.mark.parametrize("case", sorted(_BAD_DEFINITIONS))
def test_a_malformed_or_forbidden_definition_is_a_clean_400(server: ServerProcess, case: str) -> None:
    r = deploy(server, "ja-bad", _BAD_DEFINITIONS[case])
    assert r.status_code == 400, (r.status_code, r.text[:500])
    _clean_text(r.text, server)
    assert "RecursionError" not in r.text, r.text[:500]


# -- hostile definitions: each evaluation bounded ------------------------------------------------

#: expressions that must end FAILED with States.QueryEvaluationError, fast, on the module server
_BOMBS: dict[str, str] = {
    "reduce over a huge range": "{% $reduce($range(0, 999999, 1), function($a, $b){$a + $b}) %}",
    "map over a huge range": "{% $sum($map($range(0, 999999, 1), function($v){$v * 2})) %}",
    "range too long": "{% $range(0, 1e9, 1) %}",
    "range of floats": "{% $range(0, 1.5, 0.1) %}",
    "range step 0": "{% $range(0, 10, 0) %}",
    "infinite tail recursion": "{% ($f := function($n){$f($n + 1)}; $f(0)) %}",
    "deep recursion": "{% ($f := function($n){$n = 0 ? 0 : 1 + $f($n - 1)}; $f(100000)) %}",
    "mutual recursion": "{% ($a := function($n){$b($n)}; $b := function($n){$a($n)}; $a(1)) %}",
    "Y combinator": "{% (function($f){$f($f)})(function($g){$g($g)}) %}",
    "string doubling with &": "{% $reduce($range(1, 40, 1), function($s, $i){$s & $s}, 'xy') %}",
    "string doubling with join": "{% $reduce($range(1, 40, 1), function($s, $i){$join([$s, $s])}, 'xy') %}",
    "pad huge": "{% $pad('x', 1e12) %}",
    "pad negative huge": "{% $pad('x', -1e12, 'yz') %}",
    "replace blowup": "{% $replace($pad('', 4000000, 'a'), 'a', 'bbbbbbbbbbbbbbbb') %}",
    "replace regex blowup": "{% $replace($pad('', 4000000, 'a'), /a/, 'bbbbbbbbbbbbbbbb') %}",
    "string of a big array": "{% $string($range(0, 999999, 1)) %}",
    "pretty string": "{% $string($map($range(0, 300000, 1), function($v){{'k': $v}}), true) %}",
    "sort with a comparator": "{% $sort($range(0, 999999, 1), function($a, $b){$a < $b}) %}",
    "eval refused": "{% $eval('1 + 1') %}",
    "eval via lookup": "{% $lookup({'f': $eval}, 'f')('1') %}",
    "parse not json": "{% $parse('{not json') %}",
    "parse deep json": "{% $parse($join($map($range(1, 2000, 1), function($i){'['})) & "
    "$join($map($range(1, 2000, 1), function($i){']'}))) %}",
    "hash bad algorithm": "{% $hash('x', 'CRC32') %}",
    "partition zero": "{% $partition([1, 2, 3], 0) %}",
    "undefined result": "{% $states.input.nothing.here %}",
    "division by zero": "{% 1 / 0 %}",
    "number overflow": "{% $power(10, 400) %}",
    "error function": "{% $error('boom') %}",
    "split to a huge array": "{% $count($split($pad('', 8000000, 'a'), '')) %}",
    "flatten many big arrays": "{% ($a := $range(0, 999999, 1); $count($range(1, 4, 1).$a)) %}",
    "formatNumber weird picture": "{% $formatNumber(1e300, '#' & $pad('', 100000, '0')) %}",
    "fromMillis huge": "{% $fromMillis(1e300) %}",
}


@pytest.mark.parametrize("case", sorted(_BOMBS))
def test_a_definition_bomb_fails_its_execution_only(
    server: ServerProcess, keys: tuple[str, str], case: str
) -> None:
    eve, bob = keys
    name = "ja-bomb-" + str(sorted(_BOMBS).index(case))
    deployed(server, name, ja_pass(_BOMBS[case]))
    body = ended(server, name, {"x": 1}, key=eve)
    if case in ("formatNumber weird picture",) and body["status"] == "SUCCEEDED":
        pass  # a long but bounded string is an answer, not an attack
    else:
        failed_with(body)
    responsive(server, bob)


def test_a_bomb_is_catchable_as_a_query_evaluation_error(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    eve, _ = keys
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "P",
        "States": {
            "P": {
                "Type": "Parallel",
                "Branches": [
                    {
                        "StartAt": "B",
                        "States": {
                            "B": {
                                "Type": "Pass",
                                "Output": "{% ($f := function($n){$f($n + 1)}; $f(0)) %}",
                                "End": True,
                            }
                        },
                    }
                ],
                "Catch": [
                    {
                        "ErrorEquals": [QEE],
                        "Output": "{% {'caught': $states.errorOutput.Error} %}",
                        "Next": "E",
                    }
                ],
                "Next": "E",
            },
            "E": {"Type": "Succeed"},
        },
    }
    deployed(server, "ja-caught", definition)
    body = ended(server, "ja-caught", {}, key=eve)
    assert body["status"] == "SUCCEEDED", body
    assert body["output"] == {"caught": QEE}, body


def test_every_field_takes_the_bound(server: ServerProcess, keys: tuple[str, str]) -> None:
    """Condition, Items, ItemSelector, MaxConcurrency, Seconds, Timestamp, Error, Cause, Assign."""
    eve, bob = keys
    spin = "{% ($f := function($n){$f($n + 1)}; $f(0)) %}"  # runs into the 1 s bound
    deep = "{% ($f := function($n){1 + $f($n + 1)}; $f(0)) %}"  # runs into the depth bound, fast
    inner = {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}}
    states: dict[str, dict[str, Any]] = {
        "condition": {"Type": "Choice", "Choices": [{"Condition": spin, "Next": "end"}], "Default": "end"},
        "items": {"Type": "Map", "Items": spin, "ItemProcessor": inner, "End": True},
        "selector": {
            "Type": "Map",
            "Items": [1, 2],
            "ItemSelector": spin,
            "ItemProcessor": inner,
            "End": True,
        },
        "concurrency": {
            "Type": "Map",
            "Items": [1],
            "MaxConcurrency": spin,
            "ItemProcessor": inner,
            "End": True,
        },
        "seconds": {"Type": "Wait", "Seconds": spin, "End": True},
        "timestamp": {"Type": "Wait", "Timestamp": spin, "End": True},
        "error": {"Type": "Fail", "Error": spin, "Cause": "c"},
        "cause": {"Type": "Fail", "Error": "E", "Cause": spin},
        "assign": {"Type": "Pass", "Assign": {"v": spin}, "End": True},
    }
    timed = set(states) if SOAK else {"condition", "assign"}  # the 1 s spin in a few fields only
    for field, state in states.items():
        if field not in timed:
            state = json.loads(json.dumps(state).replace(json.dumps(spin), json.dumps(deep)))
        machine = {"QueryLanguage": "JSONata", "StartAt": "s", "States": {"s": state}}
        if field == "condition":
            machine["States"]["end"] = {"Type": "Succeed"}
        deployed(server, f"ja-field-{field}", machine)
        body = ended(server, f"ja-field-{field}", {}, key=eve)
        failed_with(body)
    responsive(server, bob)


# -- values from expressions that steer the engine ----------------------------------------------


def test_hostile_numbers_for_wait_and_map(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, bob = keys
    inner = {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}}

    def machine(state: dict[str, Any]) -> dict[str, Any]:
        return {"QueryLanguage": "JSONata", "StartAt": "s", "States": {"s": state}}

    wait = {"Type": "Wait", "Seconds": "{% $states.input.s %}", "End": True}
    stamp = {"Type": "Wait", "Timestamp": "{% $states.input.t %}", "End": True}
    mapped = {
        "Type": "Map",
        "Items": "{% $states.input.items %}",
        "MaxConcurrency": "{% $states.input.c %}",
        "ItemProcessor": inner,
        "End": True,
    }
    deployed(server, "ja-wait", machine(wait))
    deployed(server, "ja-stamp", machine(stamp))
    deployed(server, "ja-map", machine(mapped))
    for seconds in (-1, -1e300, "5", None, [1], {"a": 1}, True):
        failed_with(ended(server, "ja-wait", {"s": seconds}, key=eve))
    for stamp_value in ("not a time", "9999-99-99T00:00:00Z", "", 12, "1969-13-01T00:00:00Z"):
        failed_with(ended(server, "ja-stamp", {"t": stamp_value}, key=eve))
    for limit in (-1, 1.5, "3", True, None):
        failed_with(ended(server, "ja-map", {"items": [1, 2], "c": limit}, key=eve))
    for limit in (0, 1, 2**62, 10**18):
        body = ended(server, "ja-map", {"items": [1, 2, 3], "c": limit}, key=eve)
        assert body["status"] == "SUCCEEDED" and body["output"] == [1, 2, 3], body
    for items in ("abc", 5, {"a": 1}, None):
        failed_with(ended(server, "ja-map", {"items": items, "c": 0}, key=eve))
    responsive(server, bob)


def test_a_wait_of_a_huge_number_of_seconds_can_be_stopped(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    eve, bob = keys
    for seconds in (1e12, 1.7e308, 2**62):
        r = start(server, "ja-wait", {"s": seconds}, key=eve, mode="async")
        assert r.status_code == 202, r.text
        execution_id = r.json()["executionId"]
        time.sleep(0.3)
        d = httpx.get(f"{server.url}/v1/executions/{execution_id}", headers={"x-api-key": eve}, timeout=10)
        assert d.status_code == 200, d.text
        assert d.json()["status"] in ("RUNNING", "FAILED"), d.json()
        if d.json()["status"] == "FAILED":
            failed_with(d.json())
            continue
        r = httpx.post(
            f"{server.url}/v1/executions/{execution_id}/stop", json={}, headers={"x-api-key": eve}, timeout=10
        )
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while True:
            d = httpx.get(
                f"{server.url}/v1/executions/{execution_id}", headers={"x-api-key": eve}, timeout=10
            )
            if d.json()["status"] != "RUNNING" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert d.json()["status"] == "ABORTED", d.json()
    responsive(server, bob)


# -- hostile input against an ordinary JSONata workflow ------------------------------------------


def test_input_is_data_never_code(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, _ = keys
    deployed(server, "ja-echo", ja_pass("{% $states.input %}"))
    deployed(
        server,
        "ja-args",
        ja_pass({"copy": "{% $states.input.x %}", "n": "{% $count($keys($states.input)) %}"}),
    )
    poison = {
        "x": "{% $eval('1+1') %}",
        "y": "{% ($f := function($n){$f($n)}; $f(0)) %}",
        "z": ["{%", "%}", "{% %}"],
        "w": "\u0000{% \ud7ff %}\u202e",
    }
    body = ended(server, "ja-echo", poison, key=eve)
    assert body["status"] == "SUCCEEDED" and body["output"] == poison, body
    body = ended(server, "ja-args", poison, key=eve)
    assert body["status"] == "SUCCEEDED", body
    assert body["output"] == {"copy": poison["x"], "n": 4}, body


def test_input_cannot_reach_the_context_or_other_variables(
    server: ServerProcess, keys: tuple[str, str]
) -> None:
    eve, _ = keys
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"secret": "s3cr3t"}, "Next": "B"},
            "B": {
                "Type": "Pass",
                "Output": "{% {'name': $states.input.states, 'sec': $states.input.secret,"
                " 'ctx': $states.context.Execution.Input = $states.input} %}",
                "End": True,
            },
        },
    }
    deployed(server, "ja-scope", definition)
    body = ended(server, "ja-scope", {"states": {"context": "forged"}, "secret": "mine"}, key=eve)
    assert body["status"] == "SUCCEEDED", body
    assert body["output"] == {"name": {"context": "forged"}, "sec": "mine", "ctx": True}, body


def test_input_sized_bombs_against_ordinary_expressions(server: ServerProcess, keys: tuple[str, str]) -> None:
    """Ordinary expressions (sort, group, string, join, keys, filter, parse) over the biggest and
    deepest input the cap allows: each ends, FAILED or not, and the bystander is served."""
    eve, bob = keys
    definitions = {
        "ja-in-sort": ja_pass("{% $sort($states.input.v, function($a, $b){$a > $b}) %}"),
        "ja-in-group": ja_pass("{% $states.input.v{$string($): $count($)} %}"),
        "ja-in-string": ja_pass("{% $length($string($states.input)) %}"),
        "ja-in-join": ja_pass("{% $length($join($states.input.v.$string($), ',')) %}"),
        "ja-in-parse": ja_pass("{% $parse($states.input.text) %}"),
        "ja-in-filter": ja_pass("{% $count($states.input.v[$ % 7 = 0]) %}"),
        "ja-in-desc": ja_pass("{% $count($states.input.**) %}"),
    }
    for name, definition in definitions.items():
        deployed(server, name, definition)
    wide = {"v": list(range(30_000)), "text": "[" * 20_000 + "]" * 20_000}
    deep: Any = 1
    for _ in range(25):  # the API takes JSON nested at most 64 deep
        deep = {"a": [deep, 1], "b": 0}
    inputs = [wide, {"v": deep, "text": json.dumps(deep)}]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(ended, server, name, data, key=eve) for name in definitions for data in inputs]
        for _ in range(5):
            responsive(server, bob)
            time.sleep(0.2)
        for f in futures:
            body = f.result()
            if body["status"] == "FAILED":
                assert body["error"].startswith("States."), body
                for name in _PYTHON_ERRORS:
                    assert name not in (body["cause"] or ""), body["cause"][:400]


def test_variables_over_256_kib_are_refused(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, _ = keys
    grow = {
        "QueryLanguage": "JSONata",
        "StartAt": "loop",
        "States": {
            "loop": {
                "Type": "Choice",
                "Assign": {"acc": "{% $append($exists($acc) ? $acc : [], $pad('', 20000, 'x')) %}"},
                "Choices": [{"Condition": "{% $exists($acc) and $count($acc) > 30 %}", "Next": "done"}],
                "Default": "loop",
            },
            "done": {"Type": "Succeed"},
        },
    }
    deployed(server, "ja-grow", grow)
    failed_with(ended(server, "ja-grow", {}, key=eve), "States.DataLimitExceeded")
    # Map iterations assign inside their own scope: they cannot pool into the parent's
    fan = {
        "QueryLanguage": "JSONata",
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "Items": "{% $range(1, 40, 1) %}",
                "ItemProcessor": {
                    "StartAt": "a",
                    "States": {
                        "a": {"Type": "Pass", "Assign": {"big": "{% $pad('', 200000, 'y') %}"}, "End": True}
                    },
                },
                "Output": "{% $exists($big) %}",
                "End": True,
            }
        },
    }
    deployed(server, "ja-fan", fan)
    body = ended(server, "ja-fan", {}, key=eve)
    assert body["status"] == "SUCCEEDED" and body["output"] is False, body


def test_an_assign_field_over_256_kib_in_all_is_refused(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, _ = keys
    many = {f"v{i}": "{% $pad('', 200000, 'z') %}" for i in range(40)}
    deployed(server, "ja-many-vars", ja_pass("{% 'ok' %}", Assign=many))
    failed_with(ended(server, "ja-many-vars", {}, key=eve), "States.DataLimitExceeded")


def test_a_deep_result_is_a_query_evaluation_error(server: ServerProcess, keys: tuple[str, str]) -> None:
    eve, _ = keys
    deep = "{% $reduce($range(1, 30000, 1), function($a, $b){{'a': $a}}, 1) %}"
    deployed(server, "ja-deep", ja_pass(deep))
    failed_with(ended(server, "ja-deep", {}, key=eve))


# -- attacks that could wedge a server: a server of their own ------------------------------------

#: how long a bystander is probed at least while an attack runs (SOAK: long after it should have
#: ended too), and how soon each probe must answer
PROBE_FOR = 10.0 if SOAK else 0.0
PROBE_WITHIN = 5.0


def _probe_while(
    server: ServerProcess, key: str, execution_ids: list[str], seconds: float = PROBE_FOR
) -> None:
    """Probe the server as a bystander while the executions run (at least once, and for at least
    ``seconds``, at most 20 s): every probe answers within PROBE_WITHIN."""
    started = time.monotonic()
    while True:
        responsive(server, key, PROBE_WITHIN)
        elapsed = time.monotonic() - started
        if elapsed > 20:
            return
        if elapsed >= seconds and all(
            _status(server, execution_id, within=0)["status"] != "RUNNING" for execution_id in execution_ids
        ):
            return
        time.sleep(0.1)


def _status(server: ServerProcess, execution_id: str, within: float = 20.0) -> dict[str, Any]:
    """The execution once it has ended (or after ``within`` s)."""
    deadline = time.monotonic() + within
    while True:
        d: dict[str, Any] = httpx.get(
            f"{server.url}/v1/executions/{execution_id}", headers=ADMIN, timeout=PROBE_WITHIN
        ).json()
        if d["status"] != "RUNNING" or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


@pytest.fixture(scope="module")
def wedgeable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with throwaway(tmp_path_factory.mktemp("ja-wedgeable")) as s:
        yield s


@pytest.fixture(scope="module")
def wedge_keys(wedgeable: ServerProcess) -> tuple[str, str]:
    """(eve, bob) on the shared throwaway server."""
    return _user_key(wedgeable, "eve"), _user_key(wedgeable, "bob")


def test_the_bounds_cannot_be_unbound_from_inside_an_expression(
    wedgeable: ServerProcess, wedge_keys: tuple[str, str]
) -> None:
    """Names starting with ``__`` are refused in expressions and as ``Assign`` variables (the
    evaluator also ignores such bindings, and its bounds do not depend on them)."""
    s = wedgeable
    r = deploy(
        s,
        "ja-unhook",
        ja_pass(
            "{% ($__evaluate_entry := $nope; $__evaluate_exit := $nope;"
            " $f := function($n){$f($n + 1)}; $f(0)) %}"
        ),
    )
    assert r.status_code == 400, r.text
    _clean_text(r.text, s)
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Assign": {"__evaluate_entry": 0, "__evaluate_exit": "x"}, "Next": "B"},
            "B": {"Type": "Pass", "Output": "{% ($f := function($n){$f($n + 1)}; $f(0)) %}", "End": True},
        },
    }
    r = deploy(s, "ja-unhook-assign", definition)  # a variable under a hook's name: refused too
    assert r.status_code == 400, r.text
    assert "__" in r.text
    _clean_text(r.text, s)


def test_a_user_input_cannot_make_a_regex_backtrack_for_ever(
    wedgeable: ServerProcess, wedge_keys: tuple[str, str]
) -> None:
    s = wedgeable
    eve, bob = wedge_keys
    deployed(s, "ja-valida", ja_pass("{% $contains($states.input.name, /^(\\w+\\s?)*$/) %}"))
    deployed(s, "ja-valida2", ja_pass("{% $contains($states.input.name, /^(a|a)*$/) %}"))
    assert ended(s, "ja-valida", {"name": "hola mundo"}, key=eve)["output"] is True
    assert ended(s, "ja-valida2", {"name": "aaaa"}, key=eve)["output"] is True
    ids = []
    for name in ("ja-valida", "ja-valida2"):
        r = start(s, name, {"name": "a" * 36 + "!"}, key=eve, mode="async")
        assert r.status_code == 202, r.text
        ids.append(r.json()["executionId"])
    _probe_while(s, bob, ids)
    d = _status(s, ids[0])  # the regex module does not backtrack on this one
    assert d["status"] in ("SUCCEEDED", "FAILED"), d
    if d["status"] == "FAILED":
        failed_with(d)
    d = _status(s, ids[1])  # this one backtracks for ever: stopped at the evaluation's bound
    failed_with(d)
    assert "regular expression" in d["cause"] or "ran longer" in d["cause"], d


def test_a_user_input_cannot_make_distinct_quadratic(
    wedgeable: ServerProcess, wedge_keys: tuple[str, str]
) -> None:
    s = wedgeable
    eve, bob = wedge_keys
    deployed(s, "ja-tags", ja_pass("{% $distinct($states.input.tags) %}"))
    assert ended(s, "ja-tags", {"tags": [1, 2, 2, 3]}, key=eve)["output"] == [1, 2, 3]
    tags = list(range(44_000))
    assert len(json.dumps({"tags": tags}, separators=(",", ":"))) < 256 * 1024 - 100
    ids = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(start, s, "ja-tags", {"tags": tags}, key=eve, mode="async") for _ in range(2)]
        for f in futures:
            r = f.result()
            assert r.status_code == 202, r.text
            ids.append(r.json()["executionId"])
    _probe_while(s, bob, ids)
    for execution_id in ids:
        d = _status(s, execution_id)
        assert d["status"] in ("SUCCEEDED", "FAILED"), d


def test_a_map_over_a_million_items_is_bounded(wedgeable: ServerProcess, wedge_keys: tuple[str, str]) -> None:
    """``Items`` may be an array of up to 1,000,000 items: a Map refuses more than it could
    record (25,000), before starting any iteration."""
    s = wedgeable
    _, bob = wedge_keys
    definition = {
        "QueryLanguage": "JSONata",
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "Items": "{% $split($pad('', 999999, 'a'), '') %}",
                "ItemProcessor": {"StartAt": "p", "States": {"p": {"Type": "Pass", "End": True}}},
                "End": True,
            }
        },
    }
    deployed(s, "ja-fanout", definition)
    before = peak_rss_mb(s)
    r = start(s, "ja-fanout", {}, key=ADMIN_KEY, mode="async")
    assert r.status_code == 202, r.text
    _probe_while(s, bob, [r.json()["executionId"]])
    failed_with(_status(s, r.json()["executionId"]))
    grew = peak_rss_mb(s) - before
    assert grew < 512, f"peak RSS grew by {grew:.0f} MiB"


def test_one_expression_cannot_take_hundreds_of_megabytes(tmp_path: Path) -> None:
    with throwaway(tmp_path) as s:  # a fresh server: its peak RSS is this attack's alone
        deployed(s, "ja-flat", ja_pass("{% ($a := $range(0, 999999, 1); $count($range(1, 60, 1).$a)) %}"))
        before = peak_rss_mb(s)
        failed_with(ended(s, "ja-flat", {}, key=ADMIN_KEY))
        grew = peak_rss_mb(s) - before
        assert grew < 256, f"peak RSS grew by {grew:.0f} MiB"
