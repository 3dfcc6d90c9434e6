"""User accounts: argon2id password hashes (pwdlib), roles ``admin`` and ``user``.

Passwords are hashed with argon2id through pwdlib and only the hash is stored. Argon2 has no
72-byte input limit (bcrypt silently truncates there), so a long passphrase is hashed whole;
we still cap passwords at :data:`MAX_PASSWORD_BYTES` because hashing cost grows with the input
and an unbounded password is a cheap way to make the server burn CPU. A longer password is
refused with 422 (:class:`~mlgate.errors.Unprocessable`), never truncated.

Example::

    users = UserStore(engine)
    users.create("ana", "correct horse battery staple", role="admin")
    user = users.authenticate("ana", "correct horse battery staple")  # None if wrong
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.engine import Engine

from mlgate.access.generation import AccessGeneration
from mlgate.db.engine import write_tx
from mlgate.db.tables import users, utcnow
from mlgate.errors import Conflict, InvalidInput, NotFound, Unprocessable

__all__ = [
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_CHARS",
    "ROLES",
    "USERNAME_PATTERN",
    "User",
    "UserStore",
]

log = logging.getLogger("mlgate.access.users")

ROLES = ("admin", "user")
#: 3-64 characters: ASCII letters, digits, ``.``, ``_``, ``@`` and ``-``.
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9._@-]{3,64}")
MIN_PASSWORD_CHARS = 8
#: Upper bound of a password in UTF-8 bytes; longer ones get 422 (never truncated).
MAX_PASSWORD_BYTES = 1024
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_EMAIL = 255
_MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class User:
    """A user account as stored, without its password hash."""

    id: int
    username: str
    email: str | None
    first_name: str | None
    last_name: str | None
    role: str
    disabled: bool
    created_at: datetime

    def public(self) -> dict[str, Any]:
        """The account as JSON for its owner (``GET /``): never the hash."""
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "role": self.role,
            "disabled": self.disabled,
        }


class UserStore:
    """Users in the registry database.

    ``hasher`` defaults to pwdlib's argon2id with argon2-cffi's recommended parameters; a
    stored hash made with other parameters is upgraded on the next successful login.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        hasher: PasswordHash | None = None,
        generation: AccessGeneration | None = None,
    ) -> None:
        self._engine = engine
        # a user's state revokes or restores their keys: their caches must see it
        self._access = generation if generation is not None else AccessGeneration(engine)
        self._hasher = hasher if hasher is not None else PasswordHash((Argon2Hasher(),))
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()

    def create(
        self,
        username: str,
        password: str,
        *,
        role: str = "user",
        email: str | None = None,
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> User:
        """Create an account; :class:`Conflict` if the username is taken.

        Raises :class:`InvalidInput` (400) for a bad username, role, email or name or a
        password under 8 characters, and :class:`Unprocessable` (422) for a password over
        :data:`MAX_PASSWORD_BYTES` bytes. Argon2 hashes the whole password (no 72-byte limit as
        with bcrypt); the cap only bounds the hashing work an anonymous request can demand.
        """
        _check_username(username)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        email = _check_email(email)
        first_name = _check_name("first_name", first_name)
        last_name = _check_name("last_name", last_name)
        _check_password(password)
        # Hash before taking the write lock: argon2 is slow on purpose.
        password_hash = self._hasher.hash(password)
        now = utcnow()
        values = {
            "username": username,
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "password_hash": password_hash,
            "role": role,
            "disabled": False,
            "created_at": now,
        }
        try:
            with write_tx(self._engine) as conn:
                taken = conn.execute(sa.select(users.c.id).where(users.c.username == username)).first()
                if taken is not None:
                    raise Conflict(f"username {username!r} already exists")
                result = conn.execute(users.insert().values(**values))
                user_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        except sa.exc.IntegrityError as exc:
            # Two creators raced past the check (PostgreSQL); the unique constraint decided.
            raise Conflict(f"username {username!r} already exists") from exc
        assert isinstance(user_id, int)
        return User(user_id, username, email, first_name, last_name, role, False, now)

    def authenticate(self, username: str, password: str) -> User | None:
        """The active user with this password, or None (unknown, wrong password, disabled).

        An unknown user costs the same hashing time as a known one (a verify against a dummy
        hash), so usernames cannot be probed by timing. A hash made with outdated parameters
        is replaced after a successful verify.
        """
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        try:
            size = len(password.encode("utf-8"))
        except UnicodeEncodeError:
            return None
        if size > MAX_PASSWORD_BYTES:
            return None  # never stored, so never right; refused before any hashing work
        row = self._row(username)
        if row is None:
            self._hasher.verify(password, self._dummy_hash())
            return None
        try:
            valid, updated = self._hasher.verify_and_update(password, row.password_hash)
        except UnknownHashError:
            log.warning("user %r has a password hash no configured hasher recognises", row.username)
            return None
        if not valid:
            return None
        if updated is not None:
            self._replace_hash(row.id, row.password_hash, updated)
        user = _user(row)
        return None if user.disabled else user

    def get(self, username: str) -> User:
        """The user named ``username`` (enabled or not); :class:`NotFound` otherwise."""
        row = self._row(username)
        if row is None:
            raise NotFound(f"no user named {username!r}")
        return _user(row)

    def get_active(self, username: str) -> User | None:
        """The user if it exists and is not disabled, else None."""
        row = self._row(username)
        if row is None or row.disabled:
            return None
        return _user(row)

    def list(self) -> builtins.list[User]:
        """Every user, oldest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.id)).all()
        return [_user(row) for row in rows]

    def set_disabled(self, username: str, disabled: bool) -> User:
        """Disable or re-enable an account; its tokens stop (or resume) working at once."""
        return self._update(username, disabled=bool(disabled))

    def set_role(self, username: str, role: str) -> User:
        """Change an account's role (``admin`` or ``user``)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        return self._update(username, role=role)

    # -- internals -----------------------------------------------------------------------

    def _row(self, username: str) -> sa.Row[Any] | None:
        # A name no account can have is not looked up: it may hold bytes the database
        # refuses (PostgreSQL rejects NUL), which would otherwise surface as a 500.
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            return None
        with self._engine.connect() as conn:
            return conn.execute(sa.select(users).where(users.c.username == username)).first()

    def _update(self, username: str, **values: Any) -> User:
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            raise NotFound(f"no user named {username!r}")
        with write_tx(self._engine) as conn:
            result = conn.execute(users.update().where(users.c.username == username).values(**values))
            if result.rowcount == 0:
                raise NotFound(f"no user named {username!r}")
            row = conn.execute(sa.select(users).where(users.c.username == username)).one()
            self._access.bump(conn)
        self._access.changed()
        return _user(row)

    def _replace_hash(self, user_id: int, old: str, new: str) -> None:
        # Only if unchanged meanwhile, so a concurrent password change is never overwritten.
        with write_tx(self._engine) as conn:
            conn.execute(
                users.update()
                .where(users.c.id == user_id, users.c.password_hash == old)
                .values(password_hash=new)
            )

    def _dummy_hash(self) -> str:
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
            return self._dummy


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        role=row.role,
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


def _check_username(username: object) -> None:
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
        raise InvalidInput("username must be 3-64 characters: letters, digits, '.', '_', '@' or '-'")


def _check_password(password: object) -> None:
    if not isinstance(password, str):
        raise InvalidInput("password must be a string")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    try:
        size = len(password.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InvalidInput("password must be valid Unicode text") from exc
    if size > MAX_PASSWORD_BYTES:
        raise Unprocessable(f"password must be at most {MAX_PASSWORD_BYTES} bytes in UTF-8")


def _check_email(email: object) -> str | None:
    if email is None or email == "":
        return None
    if (
        not isinstance(email, str)
        or len(email) > _MAX_EMAIL
        or not _EMAIL.fullmatch(email)
        or not _encodable(email)
    ):
        raise InvalidInput("email must look like name@example.org")
    return email


def _check_name(field: str, value: object) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or len(value) > _MAX_NAME
        or _CONTROL.search(value)
        or not _encodable(value)
    ):
        raise InvalidInput(f"{field} must be text of at most {_MAX_NAME} characters")
    return value


def _encodable(text: str) -> bool:
    # Lone surrogates cannot be stored (PostgreSQL would fail with a 500); refuse them as input.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
