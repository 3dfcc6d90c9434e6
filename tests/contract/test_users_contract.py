"""The UserStore contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from mlgate.access.tokens import TokenIssuer, authenticate_token
from mlgate.access.users import UserStore
from mlgate.errors import Conflict, InvalidInput, MlgateError, NotFound, Unauthorized, Unprocessable
from mlgate.repository import Repository

PASSWORD = "correct horse battery"
#: Fast argon2id parameters for tests (the defaults cost ~50 ms per hash on purpose).
FAST = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8 * 1024),))


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    yield repository
    repository.close()


@pytest.fixture
def users(repo: Repository) -> UserStore:
    return UserStore(repo.engine, hasher=FAST)


def dump(repo: Repository) -> str:
    with repo.engine.connect() as conn:
        return "\n".join(repr(tuple(row)) for row in conn.execute(sa.text("select * from users")))


def test_create_get_list(users: UserStore) -> None:
    assert users.list() == []
    ana = users.create("ana", PASSWORD, email="ana@example.org", first_name="Ana", last_name="Pérez")
    bob = users.create("bob", PASSWORD, role="admin")
    assert ana.id != bob.id
    assert (ana.role, bob.role) == ("user", "admin")
    assert not ana.disabled
    assert ana.created_at.tzinfo is not None
    got = users.get("ana")
    assert got.public() == ana.public()
    assert abs((got.created_at - ana.created_at).total_seconds()) < 0.01
    assert [u.username for u in users.list()] == ["ana", "bob"]
    assert users.get_active("bob") is not None
    with pytest.raises(NotFound):
        users.get("carla")
    with pytest.raises(NotFound):
        users.get("x" * 200)  # longer than the column: still just "not found"


def test_duplicate_username_is_409(users: UserStore) -> None:
    users.create("ana", PASSWORD)
    with pytest.raises(Conflict) as err:
        users.create("ana", "another password", role="admin")
    assert err.value.status == 409
    assert len(users.list()) == 1
    assert users.authenticate("ana", PASSWORD) is not None  # the first account is untouched


@pytest.mark.parametrize("count", [2, 8])
def test_racing_creators_exactly_one_wins(users: UserStore, count: int) -> None:
    barrier = threading.Barrier(count)

    def create(i: int) -> str:
        barrier.wait(timeout=30)
        try:
            users.create("ana", f"password-{i}")
        except Conflict:
            return "conflict"
        return f"won-{i}"

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(create, range(count)))  # any other error is re-raised here
    winners = [r for r in results if r.startswith("won")]
    assert len(winners) == 1
    assert results.count("conflict") == count - 1
    assert len(users.list()) == 1
    winner = int(winners[0].split("-")[1])
    assert users.authenticate("ana", f"password-{winner}") is not None


def test_insert_that_loses_at_the_unique_constraint_is_409(repo: Repository, users: UserStore) -> None:
    # A competitor inserts "ana" between our existence check and our insert (as a concurrent
    # PostgreSQL transaction can): the unique constraint fails and must surface as Conflict.
    injected = False

    def after_execute(conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal injected
        if not injected and statement.lstrip().upper().startswith("SELECT") and "users" in statement:
            injected = True
            conn.execute(
                sa.text(
                    "insert into users (username, password_hash, role, disabled, created_at) "
                    "values ('ana', 'x', 'user', false, CURRENT_TIMESTAMP)"
                )
            )

    sa.event.listen(repo.engine, "after_cursor_execute", after_execute)
    try:
        with pytest.raises(Conflict) as err:
            users.create("ana", PASSWORD)
    finally:
        sa.event.remove(repo.engine, "after_cursor_execute", after_execute)
    assert injected
    assert err.value.status == 409
    assert isinstance(err.value.__cause__, sa.exc.IntegrityError)  # decided by the constraint
    assert users.list() == []  # the whole transaction rolled back
    users.create("ana", PASSWORD)


def test_authenticate(users: UserStore) -> None:
    ana = users.create("ana", PASSWORD)
    users.create("bob", "bobs password")
    assert users.authenticate("ana", PASSWORD) == ana
    assert users.authenticate("ana", "bobs password") is None
    assert users.authenticate("ana", PASSWORD.upper()) is None
    assert users.authenticate("ANA", PASSWORD) is None
    assert users.authenticate("nobody", PASSWORD) is None
    assert users.authenticate("ana", "") is None
    users.set_disabled("ana", True)
    assert users.authenticate("ana", PASSWORD) is None
    assert users.get_active("ana") is None
    assert users.get("ana").disabled
    assert users.set_disabled("ana", False).disabled is False
    assert users.authenticate("ana", PASSWORD) is not None


def test_only_an_argon2id_hash_is_stored(repo: Repository, users: UserStore) -> None:
    password = f"plain-{secrets.token_hex(8)}"
    users.create("ana", password, email="ana@example.org")
    with repo.engine.connect() as conn:
        stored = conn.execute(sa.text("select password_hash from users")).scalar_one()
    assert stored.startswith("$argon2id$")
    text = dump(repo)
    assert "$argon2id$" in text
    assert password not in text
    assert password.encode().hex() not in text


def test_long_passwords_are_hashed_whole(users: UserStore) -> None:
    base = "p" * 79 + "A" + "q" * 20  # 100 bytes; byte 80 is "A"
    users.create("ana", base)
    assert users.authenticate("ana", base) is not None
    assert users.authenticate("ana", base[:79] + "B" + base[80:]) is None  # differs only at byte 80
    assert users.authenticate("ana", base[:72]) is None  # no bcrypt-style truncation
    seventy_three = secrets.token_hex(36) + "z"
    assert len(seventy_three.encode()) == 73
    users.create("bob", seventy_three)
    assert users.authenticate("bob", seventy_three) is not None
    assert users.authenticate("bob", seventy_three[:72]) is None
    thousand = "é" * 400 + "x" * 200  # 800 + 200 bytes
    assert len(thousand.encode()) == 1000
    users.create("carla", thousand)
    assert users.authenticate("carla", thousand) is not None
    assert users.authenticate("carla", thousand[:-1] + "y") is None


def test_refusals_have_their_status(users: UserStore) -> None:
    with pytest.raises(Unprocessable) as too_long:
        users.create("ana", "x" * 1025)
    assert too_long.value.status == 422
    with pytest.raises(InvalidInput) as too_short:
        users.create("ana", "1234567")
    assert too_short.value.status == 400
    assert "at least 8 characters" in too_short.value.message
    with pytest.raises(InvalidInput) as bad_name:
        users.create("a b", PASSWORD)
    assert bad_name.value.status == 400
    with pytest.raises(InvalidInput) as bad_role:
        users.create("ana", PASSWORD, role="root")
    assert bad_role.value.status == 400
    assert users.list() == []


def test_hostile_text_is_refused_or_stored_exactly(users: UserStore) -> None:
    for kwargs in ({"first_name": "nul\x00"}, {"email": "a\x00@example.org"}, {"last_name": "x\ud800"}):
        with pytest.raises(InvalidInput):
            users.create("ana", PASSWORD, **kwargs)
    ana = users.create("ana", "pässwörd 🔑 with ' quotes \"", first_name="Zoë 🦄", last_name="O'Brien")
    assert users.get("ana").public() == ana.public()
    assert users.authenticate("ana", "pässwörd 🔑 with ' quotes \"") is not None
    with pytest.raises(NotFound):
        users.get("ana' OR '1'='1")


def test_roles_and_tokens_follow_the_database(users: UserStore) -> None:
    issuer = TokenIssuer(secrets.token_urlsafe(48))
    ana = users.create("ana", PASSWORD)
    token = issuer.issue(ana)
    assert authenticate_token(issuer, users, token).role == "user"
    assert users.set_role("ana", "admin").role == "admin"
    assert authenticate_token(issuer, users, token).role == "admin"
    users.set_disabled("ana", True)
    with pytest.raises(Unauthorized) as err:
        authenticate_token(issuer, users, token)
    assert err.value.status == 401
    assert err.value.message == "Authentication Failed"


def test_no_internal_errors_on_odd_lookups(users: UserStore) -> None:
    users.create("ana", PASSWORD)
    for name in ("", "a" * 10_000, "%", "_", "ana%", "\x00", "ana\x00"):
        try:
            assert users.authenticate(name, PASSWORD) is None
            assert users.get_active(name) is None
            with pytest.raises(NotFound):
                users.get(name)
            with pytest.raises(NotFound):
                users.set_disabled(name, True)
        except MlgateError as exc:  # pragma: no cover - reported with its status
            pytest.fail(f"{name!r}: {type(exc).__name__} {exc.status}")
