"""UserStore rules that do not depend on the database backend (SQLite here; see the contract suite)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from mlgate.access.users import MAX_PASSWORD_BYTES, User, UserStore
from mlgate.errors import InvalidInput, NotFound, Unprocessable
from mlgate.repository import Repository

PASSWORD = "correct horse battery"


class CountingHash(PasswordHash):
    """A fast argon2id hasher that counts its work (argon2 defaults cost ~50 ms a hash)."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__((Argon2Hasher(time_cost=time_cost, memory_cost=8 * 1024),))
        self.hashes = 0
        self.verifies = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self.hashes += 1
        return super().hash(password, salt=salt)

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        self.verifies += 1
        return super().verify(password, hash)

    def verify_and_update(self, password: str | bytes, hash: str | bytes) -> tuple[bool, str | None]:
        self.verifies += 1
        return super().verify_and_update(password, hash)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = Repository.open(f"sqlite:///{tmp_path / 'users.db'}")
    yield repository
    repository.close()


@pytest.fixture
def hasher() -> CountingHash:
    return CountingHash()


@pytest.fixture
def users(repo: Repository, hasher: CountingHash) -> UserStore:
    return UserStore(repo.engine, hasher=hasher)


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 65, "", "has space", "slash/no", "ünïcode", "semi;colon", "new\nline", "nul\x00byte"],
)
def test_bad_username_is_400_before_any_hashing(
    users: UserStore, hasher: CountingHash, username: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        users.create(username, PASSWORD)
    assert err.value.status == 400
    assert "username" in err.value.message
    assert hasher.hashes == 0


@pytest.mark.parametrize("username", ["abc", "a" * 64, "ana.maria_o-k@example.org", "A.B"])
def test_good_usernames(users: UserStore, username: str) -> None:
    assert users.create(username, PASSWORD).username == username


@pytest.mark.parametrize("password", ["", "short", "1234567", "ñññññ"])  # "ñ"*5 is 10 bytes, 5 chars
def test_short_password_is_400(users: UserStore, password: str) -> None:
    with pytest.raises(InvalidInput) as err:
        users.create("ana", password)
    assert type(err.value) is InvalidInput
    assert err.value.status == 400
    assert "at least 8 characters" in err.value.message


@pytest.mark.parametrize(
    "password",
    ["x" * (MAX_PASSWORD_BYTES + 1), "€" * 342, "y" * 100_000],  # 342 x 3 bytes = 1026 bytes
)
def test_password_over_1024_bytes_is_422_never_hashed(
    users: UserStore, hasher: CountingHash, password: str
) -> None:
    with pytest.raises(Unprocessable) as err:
        users.create("ana", password)
    assert err.value.status == 422
    assert "1024 bytes" in err.value.message
    assert hasher.hashes == 0
    assert users.list() == []


def test_password_of_exactly_1024_bytes_is_accepted(users: UserStore) -> None:
    password = "€" * 341 + "x"  # 1023 + 1 bytes
    assert len(password.encode()) == MAX_PASSWORD_BYTES
    users.create("ana", password)
    assert users.authenticate("ana", password) is not None


def test_lone_surrogate_password_is_400(users: UserStore) -> None:
    with pytest.raises(InvalidInput) as err:
        users.create("ana", "abcdefgh\ud800")
    assert err.value.status == 400
    assert users.authenticate("ana", "abcdefgh\ud800") is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("role", "root"),
        ("role", "Admin"),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "a b@example.org"),
        ("email", "x" * 250 + "@example.org"),
        ("first_name", "a" * 129),
        ("last_name", "nul\x00"),
        ("first_name", "bad\ud800"),
    ],
)
def test_bad_fields_are_400(users: UserStore, hasher: CountingHash, field: str, value: str) -> None:
    with pytest.raises(InvalidInput) as err:
        users.create("ana", PASSWORD, **{field: value})
    assert err.value.status == 400
    assert hasher.hashes == 0


def test_optional_fields_and_public_view(users: UserStore) -> None:
    user = users.create(
        "ana", PASSWORD, email="ana@example.org", first_name="Ana", last_name="Pérez", role="admin"
    )
    assert users.create("bob", PASSWORD, email="").email is None
    public = user.public()
    assert public == {
        "id": user.id,
        "username": "ana",
        "email": "ana@example.org",
        "first_name": "Ana",
        "last_name": "Pérez",
        "role": "admin",
        "disabled": False,
    }
    assert users.get("ana") == user


def test_unknown_user_costs_one_verify_like_a_known_one(users: UserStore, hasher: CountingHash) -> None:
    users.create("ana", PASSWORD)
    hasher.verifies = 0
    assert users.authenticate("nobody", PASSWORD) is None
    assert hasher.verifies == 1  # verified against the dummy hash
    assert users.authenticate("x", PASSWORD) is None  # not even a valid username shape
    assert hasher.verifies == 2
    assert users.authenticate("ana", "wrong password") is None
    assert hasher.verifies == 3
    assert users.authenticate("ana", PASSWORD) is not None
    assert hasher.verifies == 4
    hashes = hasher.hashes
    users.authenticate("nobody", PASSWORD)
    assert hasher.hashes == hashes  # the dummy hash is made once per store


def test_disabled_user_verifies_then_fails(users: UserStore, hasher: CountingHash) -> None:
    users.create("ana", PASSWORD)
    disabled = users.set_disabled("ana", True)
    assert disabled.disabled
    hasher.verifies = 0
    assert users.authenticate("ana", PASSWORD) is None
    assert hasher.verifies == 1  # same work as for an enabled user: no timing difference
    assert users.get_active("ana") is None
    assert users.get("ana").disabled


def test_oversized_password_on_login_is_refused_without_hashing(
    users: UserStore, hasher: CountingHash
) -> None:
    users.create("ana", PASSWORD)
    hasher.verifies = 0
    assert users.authenticate("ana", PASSWORD + "x" * 2000) is None
    assert hasher.verifies == 0


def test_outdated_hash_is_upgraded_on_login(repo: Repository, users: UserStore) -> None:
    users.create("ana", PASSWORD)
    with repo.engine.connect() as conn:
        old = conn.execute(sa.text("select password_hash from users")).scalar_one()
    assert ",t=1," in old
    stronger = UserStore(repo.engine, hasher=CountingHash(time_cost=2))
    assert stronger.authenticate("ana", "wrong password") is None
    with repo.engine.connect() as conn:
        assert conn.execute(sa.text("select password_hash from users")).scalar_one() == old
    assert stronger.authenticate("ana", PASSWORD) is not None
    with repo.engine.connect() as conn:
        new = conn.execute(sa.text("select password_hash from users")).scalar_one()
    assert new != old
    assert new.startswith("$argon2id$")
    assert ",t=2," in new
    assert stronger.authenticate("ana", PASSWORD) is not None
    assert users.authenticate("ana", PASSWORD) is not None  # the old parameters still verify


def test_unrecognised_hash_fails_closed(repo: Repository, users: UserStore) -> None:
    users.create("ana", PASSWORD)
    with repo.engine.begin() as conn:
        conn.execute(sa.text("update users set password_hash = 'plain:' || :p"), {"p": PASSWORD})
    assert users.authenticate("ana", PASSWORD) is None


def test_set_role_and_unknown_users(users: UserStore) -> None:
    users.create("ana", PASSWORD)
    assert users.set_role("ana", "admin").role == "admin"
    assert users.get("ana").role == "admin"
    with pytest.raises(InvalidInput):
        users.set_role("ana", "superuser")
    with pytest.raises(NotFound) as err:
        users.set_role("nobody", "user")
    assert err.value.status == 404
    with pytest.raises(NotFound):
        users.set_disabled("nobody", True)
    with pytest.raises(NotFound):
        users.get("nobody")
    assert users.get_active("nobody") is None


def test_user_is_frozen() -> None:
    user = User(1, "ana", None, None, None, "user", False, datetime.now(UTC))
    with pytest.raises(AttributeError):
        user.role = "admin"  # type: ignore[misc]
