"""JWT access tokens: pinned HS256, required claims, one 401 for every failure; signing secrets."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from mlgate.access.tokens import (
    WELL_KNOWN_SECRETS,
    TokenIssuer,
    authenticate_token,
    check_secret,
    load_or_create_secret,
)
from mlgate.access.users import User, UserStore
from mlgate.errors import ConfigurationError, Unauthorized
from mlgate.repository import Repository

SECRET = secrets.token_urlsafe(48)
USER = User(7, "ana", None, None, None, "user", False, datetime.now(UTC))


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "ana",
        "uid": 7,
        "role": "user",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": "mlgate",
        "typ": "access",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def assert_refused(issuer: TokenIssuer, token: Any) -> None:
    with pytest.raises(Unauthorized) as err:
        issuer.verify(token)
    assert err.value.status == 401
    assert err.value.message == "Authentication Failed"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET)


def test_round_trip(issuer: TokenIssuer) -> None:
    token = issuer.issue(USER)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    got = issuer.verify(token)
    assert got["sub"] == "ana"
    assert got["uid"] == 7
    assert got["role"] == "user"
    assert got["typ"] == "access"
    assert got["iss"] == "mlgate"
    assert got["exp"] - got["iat"] == 20 * 60 == issuer.expires_in
    assert got["nbf"] == got["iat"]
    assert abs(got["iat"] - time.time()) < 5
    assert len(got["jti"]) == 32
    assert issuer.verify(issuer.issue(USER))["jti"] != got["jti"]
    assert TokenIssuer(SECRET, minutes=5).expires_in == 300


def test_alg_none_is_refused(issuer: TokenIssuer) -> None:
    for alg in ("none", "None", "NONE"):
        token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."
        assert_refused(issuer, token)
        # the same with a signature copied from a real token
        assert_refused(issuer, token + issuer.issue(USER).split(".")[2])


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_other_hmac_algorithm_with_the_right_key_is_refused(issuer: TokenIssuer, algorithm: str) -> None:
    assert_refused(issuer, jwt.encode(claims(), SECRET, algorithm=algorithm))


def test_token_signed_with_another_key_is_refused(issuer: TokenIssuer) -> None:
    assert_refused(issuer, jwt.encode(claims(), secrets.token_urlsafe(48), algorithm="HS256"))
    assert_refused(issuer, TokenIssuer(secrets.token_urlsafe(48)).issue(USER))


def test_token_with_the_right_key_and_claims_is_accepted(issuer: TokenIssuer) -> None:
    assert issuer.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))["sub"] == "ana"


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_required_claims(issuer: TokenIssuer, missing: str) -> None:
    assert_refused(issuer, jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "bad",
    [
        {"iss": "someone-else"},
        {"iss": None},
        {"typ": "refresh"},
        {"typ": None},
        {"sub": ""},
        {"sub": 7},
        {"exp": "tomorrow"},
        {"nbf": int(time.time()) + 3600},
        {"iat": int(time.time()) + 3600},
        {"aud": "other-service"},
    ],
)
def test_bad_claims_are_refused(issuer: TokenIssuer, bad: dict[str, Any]) -> None:
    assert_refused(issuer, jwt.encode(claims(**bad), SECRET, algorithm="HS256"))


def test_wrong_issuer_setting(issuer: TokenIssuer) -> None:
    assert_refused(TokenIssuer(SECRET, issuer="other"), issuer.issue(USER))


def test_expired_token_is_refused_with_a_small_leeway() -> None:
    now = time.time()
    past = TokenIssuer(SECRET, minutes=20, clock=lambda: now - 3600)
    assert_refused(TokenIssuer(SECRET), past.issue(USER))
    verifier = TokenIssuer(SECRET)
    # expired 5 s ago: inside the 10 s clock-skew leeway; 15 s ago: outside it
    assert verifier.verify(TokenIssuer(SECRET, minutes=1, clock=lambda: now - 65).issue(USER))
    assert_refused(verifier, TokenIssuer(SECRET, minutes=1, clock=lambda: now - 75).issue(USER))


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "abc",
        "a.b.c",
        "a.b",
        "....",
        "💥.💥.💥",
        "Bearer x",
        "x" * 10_000,
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        f"{b64(b'[1, 2]')}.{b64(claims())}.sig",  # header is not an object
        None,
        b"bytes",
    ],
)
def test_garbage_is_refused(issuer: TokenIssuer, garbage: Any) -> None:
    assert_refused(issuer, garbage)


def test_tampered_token_is_refused(issuer: TokenIssuer) -> None:
    header, payload, signature = issuer.issue(USER).split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["role"] = "admin"
    assert_refused(issuer, f"{header}.{b64(forged)}.{signature}")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert_refused(issuer, f"{header}.{payload}.{flipped}")
    assert_refused(issuer, f"{header}.{payload}.")
    assert_refused(issuer, f"{header}.{payload}")


def test_issuer_refuses_empty_secret_and_zero_lifetime() -> None:
    with pytest.raises(ConfigurationError):
        TokenIssuer("")
    with pytest.raises(ConfigurationError):
        TokenIssuer(SECRET, minutes=0)


# -- signing secrets -----------------------------------------------------------------------


@pytest.mark.parametrize("secret", sorted(WELL_KNOWN_SECRETS))
def test_every_well_known_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        check_secret(secret, dev_mode=False)
    with pytest.raises(ConfigurationError):
        check_secret(secret.upper(), dev_mode=False)


@pytest.mark.parametrize(
    "secret",
    [
        "09D25E094FAA6CA2556C818166B7A9563B93F7099F6F0F4CAA6CF63B88E8D3E7",
        "Changeme123",
        "CHANGE_ME",
        "secret2024",
        "SECRET-KEY-1",
        "Your_Secret_Key_Here",
        "django-insecure-" + secrets.token_urlsafe(40),
        "please-change-me-in-production-" + secrets.token_hex(16),
        "a" * 64,
        "01" * 32,
        secrets.token_urlsafe(23)[:31],  # 31 characters
    ],
)
def test_weak_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        check_secret(secret, dev_mode=False)
    assert secret not in err.value.message  # the secret itself is never echoed


def test_random_secret_is_accepted() -> None:
    secret = secrets.token_urlsafe(36)
    assert len(secret) == 48
    check_secret(secret, dev_mode=False)
    check_secret(secrets.token_hex(32), dev_mode=False)


def test_dev_mode_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mlgate.access.tokens"):
        check_secret("secret", dev_mode=True)
        check_secret("short", dev_mode=True)
    assert len(caplog.records) == 2
    assert "dev_mode" in caplog.records[0].getMessage()


def test_secret_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jwt.secret"
    first = load_or_create_secret(path)
    check_secret(first, dev_mode=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first
    assert load_or_create_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["jwt.secret"]  # no temporary files left


def test_existing_secret_file_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    configured = secrets.token_urlsafe(48)
    path.write_text(configured + "\n")
    path.chmod(0o600)
    assert load_or_create_secret(path) == configured


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    path.write_text("\n")
    old = time.time() - 60
    os.utime(path, (old, old))  # a stale empty file, not a racing worker's fresh one
    started = time.monotonic()
    with pytest.raises(ConfigurationError) as err:
        load_or_create_secret(path)
    assert "delete it" in err.value.message
    assert time.monotonic() - started < 1


def test_fresh_empty_secret_file_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "jwt.secret"
    path.write_text("")  # another worker created it (O_EXCL) and is about to write
    secret = secrets.token_urlsafe(48)
    timer = threading.Timer(0.2, lambda: path.write_text(secret + "\n"))
    timer.start()
    try:
        assert load_or_create_secret(path) == secret
    finally:
        timer.join()


@pytest.mark.parametrize("links", [True, False], ids=["link", "no-hard-links"])
def test_racing_workers_agree_on_one_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    if not links:

        def no_link(*_args: Any, **_kwargs: Any) -> None:
            raise PermissionError("hard links not supported")

        monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "jwt.secret"
    count = 8
    barrier = threading.Barrier(count)

    def start(_: int) -> str:
        barrier.wait(timeout=30)
        return load_or_create_secret(path)

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(start, range(count)))
    assert len(set(results)) == 1
    assert path.read_text().strip() == results[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["jwt.secret"]


# -- tokens against accounts ---------------------------------------------------------------


@pytest.fixture
def users(tmp_path: Path) -> Iterator[UserStore]:
    repo = Repository.open(f"sqlite:///{tmp_path / 'users.db'}")
    yield UserStore(repo.engine, hasher=PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8 * 1024),)))
    repo.close()


def test_authenticate_token_follows_the_account(issuer: TokenIssuer, users: UserStore) -> None:
    ana = users.create("ana", "correct horse battery")
    token = issuer.issue(ana)
    assert authenticate_token(issuer, users, token) == ana
    users.set_role("ana", "admin")
    assert authenticate_token(issuer, users, token).role == "admin"  # the database decides the role
    users.set_disabled("ana", True)
    with pytest.raises(Unauthorized) as err:
        authenticate_token(issuer, users, token)
    assert err.value.message == "Authentication Failed"
    users.set_disabled("ana", False)
    assert authenticate_token(issuer, users, token).username == "ana"


def test_token_of_a_deleted_and_recreated_account_is_refused(
    issuer: TokenIssuer, users: UserStore, tmp_path: Path
) -> None:
    token = issuer.issue(users.create("ana", "correct horse battery"))
    users.create("bob", "correct horse battery")  # so SQLite cannot reuse ana's rowid
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'users.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("delete from users where username = 'ana'"))
    engine.dispose()
    with pytest.raises(Unauthorized):
        authenticate_token(issuer, users, token)  # deleted
    users.create("ana", "another password")
    with pytest.raises(Unauthorized):
        authenticate_token(issuer, users, token)  # same name, another account (uid differs)


def test_authenticate_token_with_a_bad_token(issuer: TokenIssuer, users: UserStore) -> None:
    with pytest.raises(Unauthorized):
        authenticate_token(issuer, users, "garbage")
    with pytest.raises(Unauthorized):  # valid signature, no such user
        authenticate_token(issuer, users, issuer.issue(USER))
