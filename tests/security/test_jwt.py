"""Tokens, secrets at rest and the access log, against a real server.

- Forged and stale JWTs (``alg: none``, a wrong key, HS512 with the right key, no ``exp``,
  expired, a tampered payload, a disabled user's) are 401 on a model route configured to
  accept user tokens and on ``/v1/keys``; the genuine token is 200.
- API key secrets (and a password) appear nowhere the server writes: not in a dump of the
  whole database, not in any file of the data directory (database, WAL, access log, store,
  cache) and not in the server's stdout/stderr — checked for the full key and its secret part.
- Log lines cannot be forged: paths, queries and request ids carrying ``\\n{"injected": …}``
  produce exactly one access-log line per request, valid JSON, with the payload escaped
  inside it — in the log file and on stdout.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.security.conftest import (
    ADMIN,
    PREDICT_BODY,
    PREDICT_PATH,
    LoadClient,
    create_key,
    create_user_token,
    record_figure,
    run_async,
    start_server,
)
from tests.server_process import ADMIN_KEY, ServerProcess

pytestmark = [pytest.mark.e2e]

JWT_SECRET = secrets.token_urlsafe(48)
PASSWORD = "jwt suite passphrase 7"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "MLGATE_AUTH__ROUTES": json.dumps({"sleepy": "either"}),
        "MLGATE_AUTH__JWT_SECRET": JWT_SECRET,
        "MLGATE_LOG__ACCESS_STDOUT": "true",
    }
    with start_server(tmp_path_factory.mktemp("jwt"), env=env) as s:
        yield s


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _forgeries(genuine: str) -> dict[str, str]:
    claims = _claims(genuine)
    now = int(time.time())
    header, payload, signature = genuine.split(".")
    no_exp = {k: v for k, v in claims.items() if k != "exp"}
    expired = {**claims, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "wrong key": jwt.encode(claims, secrets.token_urlsafe(48), algorithm="HS256"),
        "HS512 with the right key": jwt.encode(claims, JWT_SECRET, algorithm="HS512"),
        "no exp": jwt.encode(no_exp, JWT_SECRET, algorithm="HS256"),
        "expired": jwt.encode(expired, JWT_SECRET, algorithm="HS256"),
        "tampered payload": f"{header}.{_b64({**claims, 'role': 'admin', 'sub': 'admin'})}.{signature}",
        "garbage": "not.a.jwt",
    }


def _call_both(c: httpx.Client, token: str) -> tuple[httpx.Response, httpx.Response]:
    auth = {"authorization": f"Bearer {token}"}
    model = c.post(PREDICT_PATH, content=PREDICT_BODY, headers={**auth, "content-type": "application/json"})
    keys = c.get("/v1/keys", headers=auth)
    return model, keys


def test_forged_expired_and_disabled_users_tokens_are_401(server: ServerProcess) -> None:
    # A client with no credentials of its own: each call carries only the token under test.
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        name = f"jwt{uuid.uuid4().hex[:8]}"
        genuine = create_user_token(c, name, PASSWORD)
        model, keys = _call_both(c, genuine)
        assert (model.status_code, keys.status_code) == (200, 200), (model.text, keys.text)

        refused: dict[str, tuple[int, int]] = {}
        for case, token in _forgeries(genuine).items():
            model, keys = _call_both(c, token)
            refused[case] = (model.status_code, keys.status_code)
            assert model.status_code == 401, (case, model.text)
            assert model.json() == {
                "error": {"code": "unauthorized", "message": "Authentication Failed"},
                "message": "Authentication Failed",
            }, case
            assert model.headers["www-authenticate"] == "Bearer"
            assert keys.status_code == 401, (case, keys.text)

        # A disabled user's (otherwise valid) token stops working at once.
        assert c.post(f"/v1/users/{name}/disable", headers=ADMIN).status_code == 200
        model, keys = _call_both(c, genuine)
        refused["disabled user"] = (model.status_code, keys.status_code)
        assert (model.status_code, keys.status_code) == (401, 401)
    record_figure("jwt", cases=sorted(refused), all_401=all(v == (401, 401) for v in refused.values()))


def _secret_part(key: str) -> str:
    return key.split("_", 2)[2]


def test_key_secrets_and_passwords_are_never_written(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        made_by_admin = create_key(c)
        owner = f"own{uuid.uuid4().hex[:8]}"
        token = create_user_token(c, owner, PASSWORD)
        auth = {"authorization": f"Bearer {token}"}
        made_by_user = c.post("/v1/keys", json={"name": "mine"}, headers=auth).json()
        rotated = c.post(f"/v1/keys/{made_by_user['id']}/rotate", headers=auth)
        assert rotated.status_code == 201, rotated.text
        secrets_seen = [
            ADMIN_KEY,
            server.api_key,
            made_by_admin["key"],
            made_by_user["key"],
            rotated.json()["key"],
        ]
        for key in secrets_seen[1:]:
            r = c.post(PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": key})
            assert r.status_code in (200, 403)  # the rotated-away secret is refused
            c.get("/v1/keys", headers={"x-api-key": key})
        # An unknown key must not be logged either.
        unknown = f"mlg_{uuid.uuid4().hex[:8]}_{secrets.token_urlsafe(32)}"
        assert c.post(PREDICT_PATH, content=PREDICT_BODY, headers={"x-api-key": unknown}).status_code == 403
        secrets_seen.append(unknown)
        usage = c.get("/v1/usage", headers=ADMIN).json()  # makes the usage recorder flush what it holds
        assert "usage" in usage
    time.sleep(1.5)  # a usage flush and the access log's writer thread have run

    dump = _database_dump(server.data_dir / "mlgate.db")
    files = {p: p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file()}
    assert any(p.name == "access.log" for p in files)
    stdout = server.log()
    for secret in [*secrets_seen, PASSWORD]:
        needles = [secret] if secret == PASSWORD else [secret, _secret_part(secret)]
        for needle in needles:
            assert needle not in dump, "a secret is in the database"
            assert needle not in stdout, "a secret is in the server's output"
            for path, data in files.items():
                assert needle.encode() not in data, f"a secret is in {path}"
    record_figure(
        "secrets_at_rest",
        secrets_checked=len(secrets_seen) + 1,
        files_scanned=len(files),
        bytes_scanned=sum(len(d) for d in files.values()) + len(dump) + len(stdout),
        found=0,
    )


def _database_dump(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


# -- log forging --------------------------------------------------------------------------------


def test_access_log_lines_cannot_be_forged(server: ServerProcess) -> None:
    injected = '\n{"injected":true,"status":200}'
    quoted = "%0A%7B%22injected%22%3Atrue%2C%22status%22%3A200%7D"
    cases: dict[str, tuple[str, dict[str, str], str]] = {}

    def add(name: str, path: str, headers: dict[str, str] | None = None, expect_in_url: str = "") -> str:
        marker = uuid.uuid4().hex
        marked = {k: v.replace("MARK", marker) for k, v in (headers or {}).items()}
        cases[marker] = (path.replace("MARK", marker), marked, expect_in_url.replace("MARK", marker))
        return marker

    add("newline in the path", f"/v1/models/MARK{quoted}/predict", expect_in_url=f"MARK{injected}")
    add("CR LF in the path", "/MARK%0D%0A%7B%22injected%22%3A1%7D", expect_in_url='MARK\r\n{"injected":1}')
    add("unicode line separators", "/MARK%E2%80%A8%C2%85x", expect_in_url="MARK\u2028\x85x")
    add("newline in the query", f"/healthz?q=MARK{quoted}", expect_in_url=f"q=MARK{quoted}")
    add("raw JSON in the query", '/healthz?q=MARK{"injected":true}', expect_in_url='q=MARK{"injected":true}')
    add("quotes in the request id", "/healthz?id=MARK", {"x-request-id": 'x","injected":"true'})
    add("request id", "/healthz?id=MARK", {"x-request-id": "MARK"})

    async def send() -> list[int]:
        async with LoadClient(server.url, connections=1) as client:
            statuses = []
            for path, headers, _ in cases.values():
                r = await client.request("GET", path, headers={"x-api-key": ADMIN_KEY, **headers})
                assert r.status != 0, r.error
                assert r.status < 500
                statuses.append(r.status)
            return statuses

    run_async(send)
    log_file = server.data_dir / "logs" / "access.log"
    deadline = time.monotonic() + 10
    while True:
        text = log_file.read_text(encoding="utf-8")
        if all(m in text for m in cases) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    stdout = server.log()

    for source, content in (("access.log", text), ("stdout", stdout)):
        lines = content.split("\n")
        for marker, (_, headers, expect_in_url) in cases.items():
            mine = [line for line in lines if marker in line]
            assert len(mine) == 1, (source, marker, mine)
            assert len(mine[0].splitlines()) == 1, (source, mine)  # no U+2028/U+0085 left raw either
            record = json.loads(mine[0])
            assert isinstance(record, dict) and "injected" not in record
            if expect_in_url:
                assert expect_in_url in record["url"], (source, record["url"])
            if "x-request-id" in headers and headers["x-request-id"] != marker:
                assert record["request_id"] != headers["x-request-id"]  # replaced, never echoed
            if headers.get("x-request-id") == marker:
                assert record["request_id"] == marker
    for line in text.split("\n"):
        if line:
            assert "injected" not in json.loads(line)  # every line of the file is one JSON record
    record_figure("log_forging", requests=len(cases), lines_per_request=1, forged_lines=0)
