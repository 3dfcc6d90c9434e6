"""Short-lived JWT access tokens for user accounts (PyJWT, HS256 pinned).

The algorithm is fixed on both sides: tokens are signed with HS256 and only HS256 is
accepted, whatever the token's header says (so ``alg: none`` and algorithm confusion fail).
``exp``, ``iat`` and ``sub`` are required; every failure is the same 401
``Authentication Failed`` (the cardiaco service's historical message), so a caller learns
nothing about why.

The signing secret comes from settings or from :func:`load_or_create_secret`; it is never a
constant in the code, and :func:`check_secret` refuses short or published ones outside dev mode.

Example::

    issuer = TokenIssuer(load_or_create_secret(data_dir / "jwt.secret"), minutes=20)
    token = issuer.issue(user)
    user = authenticate_token(issuer, users, token)  # Unauthorized if bad, expired or disabled
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlgate.access.users import User, UserStore
from mlgate.errors import ConfigurationError, Unauthorized

__all__ = [
    "MIN_SECRET_CHARS",
    "WELL_KNOWN_SECRETS",
    "TokenIssuer",
    "authenticate_token",
    "check_secret",
    "load_or_create_secret",
]

log = logging.getLogger("mlgate.access.tokens")

#: Shortest signing secret accepted outside dev mode (HS256 wants >= 256 bits of key).
MIN_SECRET_CHARS = 32
#: Tokens longer than this are refused before any parsing.
MAX_TOKEN_CHARS = 8192
#: The one message of every token failure.
AUTH_FAILED = "Authentication Failed"

#: Published example and placeholder secrets: they must never sign tokens. Compared after
#: :func:`_normalize` (casefolded, without ``-``, ``_``, ``.`` and spaces).
WELL_KNOWN_SECRETS: frozenset[str] = frozenset(
    {
        # FastAPI's OAuth2/JWT tutorial
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        # jwt.io's debugger defaults, old and new
        "your-256-bit-secret",
        "a-string-secret-at-least-256-bits-long",
        # express-session / Flask / Django / tutorials and .env templates
        "keyboard cat",
        "django-insecure",
        "dev",
        "development",
        "test",
        "testing",
        "secret",
        "secrets",
        "secret-key",
        "secretkey",
        "SECRET_KEY",
        "jwt-secret",
        "jwt-secret-key",
        "jwt_secret_key_here",
        "your-jwt-secret",
        "my-jwt-secret",
        "mysecret",
        "mysecretkey",
        "my-secret-key",
        "my-super-secret-key",
        "supersecret",
        "super-secret-key",
        "supersecretkey",
        "topsecret",
        "s3cr3t",
        "your-secret",
        "your-secret-key",
        "your-secret-key-here",
        "your_secret_key_here",
        "your-super-secret-key",
        "changeme",
        "change-me",
        "change-this",
        "change-this-secret",
        "changethis",
        "please-change-me",
        "replace-me",
        "replace-with-your-secret",
        "password",
        "default",
        "insecure",
        "notsecret",
        "not-a-secret",
    }
)
_SEPARATORS = re.compile(r"[-_.\s]+")
# Placeholders that may come with digits or a suffix ("changeme123", "secret2024").
_PLACEHOLDER_WITH_DIGITS = re.compile(r"(?:changeme|changethis|replaceme|secret|secretkey|jwtsecret)\d*")
_PLACEHOLDER_INSIDE = ("changeme", "changethis", "replaceme", "djangoinsecure", "yoursecret")
_NORMALIZED_KNOWN = frozenset(_SEPARATORS.sub("", s.casefold()) for s in WELL_KNOWN_SECRETS)
# Fewer distinct characters than this is a pattern ("aaaa…", "0101…"), not a random secret.
_MIN_DISTINCT_CHARS = 8


def _normalize(secret: str) -> str:
    return _SEPARATORS.sub("", secret.strip().casefold())


def _weakness(secret: str) -> str | None:
    norm = _normalize(secret)
    if norm in _NORMALIZED_KNOWN or _PLACEHOLDER_WITH_DIGITS.fullmatch(norm):
        return "is a published default"
    if any(marker in norm for marker in _PLACEHOLDER_INSIDE):
        return "is a placeholder"
    if len(secret) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    if len(set(secret)) < _MIN_DISTINCT_CHARS:
        return "is a repeated pattern, not a random value"
    return None


def check_secret(secret: str, *, dev_mode: bool) -> None:
    """Refuse a signing secret that is short or published (:class:`ConfigurationError`).

    In ``dev_mode`` a weak secret only logs a warning. Generate a good one with
    ``python -c "import secrets; print(secrets.token_urlsafe(48))"``.
    """
    problem = _weakness(secret)
    if problem is None:
        return
    message = (
        f"the JWT secret {problem}; set MLGATE_AUTH__JWT_SECRET to >= {MIN_SECRET_CHARS} random "
        "characters (or leave it unset to generate one)"
    )
    if dev_mode:
        log.warning("%s (allowed because dev_mode is on)", message)
        return
    raise ConfigurationError(message)


def load_or_create_secret(path: Path) -> str:
    """The secret in ``path``, created once (random, mode 0600) if the file does not exist.

    Several workers starting together agree on one secret: each writes a complete candidate
    to a private temporary file and publishes it with ``os.link``, which like
    ``O_CREAT | O_EXCL`` fails if the name exists; the losers read the winner's file. A
    reader therefore never sees a half-written secret. (Where the filesystem has no hard
    links, ``O_CREAT | O_EXCL`` on the name itself is used and readers wait a moment for the
    winner's write.)
    """
    secret = _read_secret(path)
    if secret is None:
        _publish_new_secret(path)
        secret = _read_secret(path)
    if not secret:
        raise ConfigurationError(f"{path} holds no JWT secret; delete it to generate a new one")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return secret


def _publish_new_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    candidate = (secrets.token_urlsafe(48) + "\n").encode("ascii")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):  # POSIX: exactly 0600 whatever the umask
                os.fchmod(fd, 0o600)
            os.write(fd, candidate)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker won; everyone uses its secret
        except OSError:
            _create_exclusive(path, candidate)  # no hard links on this filesystem
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, content: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


#: An empty secret file younger than this may be a racing worker's (O_EXCL fallback) mid-write.
_FRESH_S = 2.0


def _read_secret(path: Path) -> str | None:
    """The stripped contents of ``path`` (``""`` if it stays empty); None if it does not exist."""
    deadline = time.monotonic() + _FRESH_S
    while True:
        try:
            text = path.read_text(encoding="utf-8").strip()
            fresh = time.time() - path.stat().st_mtime < _FRESH_S
        except FileNotFoundError:
            return None
        if text or not fresh or time.monotonic() >= deadline:
            return text
        time.sleep(0.01)


class TokenIssuer:
    """Issues and verifies HS256 access tokens.

    ``leeway`` (seconds) absorbs clock skew between machines for ``exp``, ``nbf`` and ``iat``.
    ``clock`` is the time source for issuing (tests move it). A secret shorter than 32 bytes
    (only possible in dev mode) makes PyJWT emit ``InsecureKeyLengthWarning``.
    """

    ALGORITHM = "HS256"

    def __init__(
        self,
        secret: str,
        *,
        minutes: int = 20,
        issuer: str = "mlgate",
        leeway: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secret:
            raise ConfigurationError("the JWT secret is empty")
        if minutes < 1:
            raise ConfigurationError("token lifetime must be at least one minute")
        self._secret = secret
        self._minutes = minutes
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock

    def derived_key(self, purpose: str) -> bytes:
        """A key for another HMAC use of this secret (e.g. page tokens), independent of the JWTs':
        HMAC-SHA256(secret, ``purpose``)."""
        return hmac.new(self._secret.encode(), purpose.encode(), hashlib.sha256).digest()

    @property
    def expires_in(self) -> int:
        """Lifetime of a new token, in seconds (the ``expires_in`` of an OAuth2 answer)."""
        return self._minutes * 60

    def issue(self, user: User) -> str:
        """A signed access token for ``user``: ``sub`` is the username, ``uid`` its id."""
        now = int(self._clock())
        claims = {
            "sub": user.username,
            "uid": user.id,
            "role": user.role,
            "iat": now,
            "nbf": now,
            "exp": now + self.expires_in,
            "iss": self._issuer,
            "jti": uuid.uuid4().hex,
            "typ": "access",
        }
        import jwt  # PyJWT (and the cryptography it probes) loads with the first token, not at startup

        return jwt.encode(claims, self._secret, algorithm=self.ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid access token; :class:`Unauthorized` for anything else."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized(AUTH_FAILED)
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[self.ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
            # Every failure looks the same to the caller; only the kind is logged (the
            # message could echo attacker-controlled bytes).
            log.debug("token refused: %s", type(exc).__name__)
            raise Unauthorized(AUTH_FAILED) from None
        if claims.get("typ") != "access" or not claims["sub"]:
            raise Unauthorized(AUTH_FAILED)
        return claims


def authenticate_token(issuer: TokenIssuer, users: UserStore, token: str) -> User:
    """The active user a token names: :class:`Unauthorized` if the token is bad or the user
    is disabled, deleted or replaced (a new account with the same name has another ``uid``)."""
    claims = issuer.verify(token)
    user = users.get_active(claims["sub"])
    if user is None or claims.get("uid") != user.id:
        raise Unauthorized(AUTH_FAILED)
    return user
