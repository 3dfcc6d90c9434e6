"""Alias traffic policies: canary splits with a rollout guard, shadow versions, sticky assignment.

An alias still points at one version (``aliases.version``: the *stable* one). Its policy
(``alias_policies``) may add:

- a **split**: weights per version in percent (``{3: 90, 4: 10}``, summing to 100). The stable
  version is the one with the largest weight (a tie: the alias's current version, else the
  lowest number); the others are canaries. Each caller — an API key's id, a bearer user's
  name — is *assigned* a version the first time it is seen under the split, so that the callers
  on each version match the weights (a hash of the id alone leaves ±2 % on 200 callers), and
  keeps it (``canary_assignments``); a caller with no identity is dealt by a hash of its
  address. A weight change deals again; a rollback (weight 0) sends everyone to the stable.
- a **guard** for the split (:class:`CanaryGuard`): the canary's weight drops to 0 by itself
  when its error rate or p95 latency exceeds the stable version's by a margin over a minimum
  number of requests (:mod:`mlgate.routing` measures, :mod:`mlgate.lifecycle.canary` acts).
- a **shadow**: a version that also answers a sample of the alias's traffic after the caller
  has had its answer, compared, never shown (:mod:`mlgate.lifecycle.shadow`).

Moving the alias (``PUT …/aliases/{alias}``) ends its split: the new version takes 100 %.
Every write bumps the registry generation, so other processes re-read within ``alias_ttl_s``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlgate.db.engine import write_tx
from mlgate.db.tables import alias_policies, aliases, canary_assignments, model_versions, registry_state
from mlgate.errors import InvalidInput, NotFound
from mlgate.history import record_event

__all__ = [
    "MAX_ASSIGNMENTS",
    "MAX_SPLIT_VERSIONS",
    "AliasPolicy",
    "CanaryGuard",
    "Policies",
    "ShadowOptions",
    "identity_hash",
]

#: A split names at most this many versions.
MAX_SPLIT_VERSIONS = 5
#: Past this many assigned callers in one split, new callers are dealt by hash (no new rows).
MAX_ASSIGNMENTS = 100_000


@dataclass(frozen=True, slots=True)
class CanaryGuard:
    """When a canary is rolled back by itself (per process, since the split was set)."""

    enabled: bool = True
    #: requests the canary (and the stable) must have answered in this process before judging
    min_requests: int = 100
    #: the canary's error rate (answers ≥ 500) may exceed the stable's by at most this much
    max_error_rate_delta: float = 0.05
    #: the canary's p95 may exceed the stable's by at most this fraction of it…
    max_p95_ratio: float = 0.5
    #: …and is never judged slower for less than this many seconds (sub-millisecond noise)
    min_p95_delta_s: float = 0.05

    @classmethod
    def parse(cls, raw: Any) -> CanaryGuard:
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise InvalidInput("guard must be an object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InvalidInput(
                f"unknown guard field(s): {', '.join(unknown)}", details={"known": sorted(known)}
            )
        guard = cls()
        values: dict[str, Any] = {}
        for key, value in raw.items():
            default = getattr(guard, key)
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise InvalidInput(f"guard.{key} must be true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
                    raise InvalidInput(f"guard.{key} must be an integer from 1 to 10000000")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1000:
                    raise InvalidInput(f"guard.{key} must be a number from 0 to 1000")
                value = float(value)
            values[key] = value
        return replace(guard, **values)


@dataclass(frozen=True, slots=True)
class ShadowOptions:
    """How a shadow is called: its own timeout, and at most ``max_concurrency`` groups of shadow
    calls running per alias and process (calls arriving within 10 ms start together as one group
    of at most 64, so they share a batch: :mod:`mlgate.lifecycle.shadow`); beyond, skipped."""

    timeout_s: float = 5.0
    max_concurrency: int = 4

    @classmethod
    def parse(cls, timeout_s: Any = None, max_concurrency: Any = None) -> ShadowOptions:
        options = cls()
        if timeout_s is not None:
            if (
                isinstance(timeout_s, bool)
                or not isinstance(timeout_s, int | float)
                or not 0 < timeout_s <= 300
            ):
                raise InvalidInput("timeout_s must be a number of seconds in (0, 300]")
            options = replace(options, timeout_s=float(timeout_s))
        if max_concurrency is not None:
            if (
                isinstance(max_concurrency, bool)
                or not isinstance(max_concurrency, int)
                or not 1 <= max_concurrency <= 256
            ):
                raise InvalidInput("max_concurrency must be an integer from 1 to 256")
            options = replace(options, max_concurrency=max_concurrency)
        return options


@dataclass(frozen=True, slots=True)
class AliasPolicy:
    """An alias's traffic: its stable version, split, guard and shadow."""

    model: str
    alias: str
    #: the stable version (the alias row's)
    version: int
    #: (version, weight) in dealing order — canaries by number, the stable last; () without a split
    split: tuple[tuple[int, int], ...] = ()
    guard: CanaryGuard = field(default_factory=CanaryGuard)
    split_since: float | None = None
    shadow: int | None = None
    shadow_sample: float = 0.0
    shadow_options: ShadowOptions = field(default_factory=ShadowOptions)
    shadow_since: float | None = None

    @property
    def splitting(self) -> bool:
        """Some traffic goes to a version other than the stable."""
        return any(v != self.version and w > 0 for v, w in self.split)

    @property
    def routed(self) -> bool:
        """Anything beyond "every request to the stable version"."""
        return self.splitting or (self.shadow is not None and self.shadow_sample > 0)

    def weight(self, version: int) -> int:
        for v, w in self.split:
            if v == version:
                return w
        return 100 if version == self.version and not self.split else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "alias": self.alias, "version": self.version}
        if self.split:
            out["split"] = {str(v): w for v, w in sorted(self.split)}
            out["canaries"] = [v for v, w in self.split if v != self.version]
            out["guard"] = asdict(self.guard)
            out["split_since"] = self.split_since
        if self.shadow is not None:
            out["shadow"] = {
                "version": self.shadow,
                "sample": self.shadow_sample,
                **asdict(self.shadow_options),
                "since": self.shadow_since,
            }
        return out


def identity_hash(identity: str) -> str:
    """What is stored of a caller's identity (a key id, a user name): its sha256, hex."""
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()


def parse_weights(raw: Any) -> dict[int, int]:
    """``{"3": 90, "4": 10}`` (or ``"3=90,4=10"``) → ``{3: 90, 4: 10}``, checked."""
    if isinstance(raw, str):
        pairs: dict[str, Any] = {}
        for part in raw.split(","):
            v, sep, w = part.partition("=")
            if not sep:
                raise InvalidInput(f"a split is VERSION=WEIGHT,… (got {part.strip()!r})")
            pairs[v.strip()] = w.strip()
        raw = {k: int(v) if v.isascii() and v.isdigit() and len(v) <= 3 else v for k, v in pairs.items()}
    if not isinstance(raw, dict) or not raw:
        raise InvalidInput('weights must be an object of version → percent, e.g. {"3": 90, "4": 10}')
    if len(raw) > MAX_SPLIT_VERSIONS:
        raise InvalidInput(f"a split names at most {MAX_SPLIT_VERSIONS} versions")
    out: dict[int, int] = {}
    for key, weight in raw.items():
        text = str(key)
        if not (text.isascii() and text.isdigit()) or len(text) > 10 or not 1 <= int(text) < 2**31:
            raise InvalidInput(f"split versions are version numbers (got {text[:40]!r})")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise InvalidInput(f"split weights are whole percents from 0 to 100 (version {text}: {weight!r})")
        out[int(text)] = weight
    if sum(out.values()) != 100:
        raise InvalidInput(f"split weights must sum to 100 (they sum to {sum(out.values())})")
    return out


class Policies:
    """Alias policies and canary assignments in the registry database (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reading -----------------------------------------------------------------------------

    def get(self, model: str, alias: str) -> AliasPolicy | None:
        """The alias's policy (its plain version when it has none); None if the alias does not exist."""
        with self.engine.connect() as conn:
            return _read(conn, model, alias)

    def for_model(self, model: str) -> dict[str, AliasPolicy]:
        """Every alias of ``model`` with a split or a shadow."""
        with self.engine.connect() as conn:
            names = conn.scalars(select(alias_policies.c.alias).where(alias_policies.c.model == model)).all()
            found = {name: _read(conn, model, name) for name in names}
        return {k: v for k, v in found.items() if v is not None and (v.split or v.shadow is not None)}

    # -- writing -----------------------------------------------------------------------------

    def set_split(
        self, model: str, alias: str, weights: dict[int, int], guard: CanaryGuard | None, *, actor: str | None
    ) -> AliasPolicy:
        """Split the alias's traffic; one version at 100 simply moves the alias there."""
        with write_tx(self.engine) as conn:
            _bump(conn)  # first: the row lock that orders registry writers (PostgreSQL)
            current = _require(conn, model, alias)
            for version in weights:
                _require_version(conn, model, version)
            top = max(weights.values())
            tied = sorted(v for v, w in weights.items() if w == top)
            stable = current.version if current.version in tied else tied[0]
            now = time.time()
            live = {v: w for v, w in weights.items() if w > 0}
            conn.execute(
                update(aliases)
                .where(aliases.c.model == model, aliases.c.alias == alias)
                .values(version=stable)
            )
            if current.shadow == stable:  # as a move does: a version is never its own shadow
                _upsert(
                    conn,
                    model,
                    alias,
                    shadow_version=None,
                    shadow_sample=None,
                    shadow_options=None,
                    shadow_since=None,
                    updated_at=now,
                )
            conn.execute(
                delete(canary_assignments).where(
                    canary_assignments.c.model == model, canary_assignments.c.alias == alias
                )
            )
            if len(live) == 1:  # 100 % to one version: a plain alias
                _upsert(conn, model, alias, split=None, guard=None, split_since=None, updated_at=now)
                detail: dict[str, Any] = {"from": current.version, "weights": {str(stable): 100}}
                record_event(conn, model, "alias", alias=alias, version=stable, actor=actor, detail=detail)
            else:
                _upsert(
                    conn,
                    model,
                    alias,
                    split=json.dumps({str(v): w for v, w in sorted(weights.items())}),
                    guard=json.dumps(asdict(guard or CanaryGuard())),
                    split_since=now,
                    updated_at=now,
                )
                record_event(
                    conn,
                    model,
                    "split",
                    alias=alias,
                    version=stable,
                    actor=actor,
                    detail={
                        "weights": {str(v): w for v, w in sorted(weights.items())},
                        "guard": asdict(guard or CanaryGuard()),
                    },
                )
            policy = _read(conn, model, alias)
        assert policy is not None
        return policy

    def clear_split(self, model: str, alias: str, *, actor: str | None) -> AliasPolicy:
        """End the split: everyone on the stable version."""
        with write_tx(self.engine) as conn:
            _bump(conn)  # first: the row lock that orders registry writers (PostgreSQL)
            current = _require(conn, model, alias)
            if current.split:
                _upsert(conn, model, alias, split=None, guard=None, split_since=None, updated_at=time.time())
                conn.execute(
                    delete(canary_assignments).where(
                        canary_assignments.c.model == model, canary_assignments.c.alias == alias
                    )
                )
                record_event(
                    conn,
                    model,
                    "split",
                    alias=alias,
                    version=current.version,
                    actor=actor,
                    detail={"weights": None, "cleared": dict((str(v), w) for v, w in current.split)},
                )
            policy = _read(conn, model, alias)
        assert policy is not None
        return policy

    def rollback(
        self, model: str, alias: str, version: int, split_since: float, detail: dict[str, Any]
    ) -> bool:
        """The guard's rollback of canary ``version`` (its weight to 0, given to the stable), once:
        only while the split it judged (``split_since``) is still the alias's. True if this call did it."""
        with write_tx(self.engine) as conn:
            _bump(conn)  # first: the row lock that orders registry writers (PostgreSQL)
            current = _read(conn, model, alias)
            if current is None or current.split_since != split_since or current.weight(version) == 0:
                return False
            weights = dict(current.split)
            weights[current.version] = weights.get(current.version, 0) + weights[version]
            weights[version] = 0
            _upsert(
                conn,
                model,
                alias,
                split=json.dumps({str(v): w for v, w in sorted(weights.items())}),
                updated_at=time.time(),
            )
            record_event(
                conn,
                model,
                "rollback",
                alias=alias,
                version=version,
                actor="guard",
                detail={**detail, "weights": {str(v): w for v, w in sorted(weights.items())}},
            )
        return True

    def set_shadow(
        self,
        model: str,
        alias: str,
        version: int,
        sample: float,
        options: ShadowOptions,
        *,
        actor: str | None,
    ) -> AliasPolicy:
        if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 1:
            raise InvalidInput("sample must be a fraction in (0, 1]")
        with write_tx(self.engine) as conn:
            _bump(conn)  # first: the row lock that orders registry writers (PostgreSQL)
            current = _require(conn, model, alias)
            _require_version(conn, model, version)
            if version == current.version:
                raise InvalidInput(
                    f"version {version} is the alias's own version: a shadow must be another one"
                )
            now = time.time()
            _upsert(
                conn,
                model,
                alias,
                shadow_version=version,
                shadow_sample=float(sample),
                shadow_options=json.dumps(asdict(options)),
                shadow_since=now if current.shadow != version else current.shadow_since,
                updated_at=now,
            )
            record_event(
                conn,
                model,
                "shadow",
                alias=alias,
                version=version,
                actor=actor,
                detail={"sample": float(sample), **asdict(options)},
            )
            policy = _read(conn, model, alias)
        assert policy is not None
        return policy

    def clear_shadow(self, model: str, alias: str, *, actor: str | None) -> AliasPolicy:
        with write_tx(self.engine) as conn:
            _bump(conn)  # first: the row lock that orders registry writers (PostgreSQL)
            current = _require(conn, model, alias)
            if current.shadow is not None:
                _upsert(
                    conn,
                    model,
                    alias,
                    shadow_version=None,
                    shadow_sample=None,
                    shadow_options=None,
                    shadow_since=None,
                    updated_at=time.time(),
                )
                record_event(
                    conn,
                    model,
                    "shadow",
                    alias=alias,
                    version=current.shadow,
                    actor=actor,
                    detail={"cleared": True},
                )
            policy = _read(conn, model, alias)
        assert policy is not None
        return policy

    # -- sticky assignment -------------------------------------------------------------------

    def assign(self, policy: AliasPolicy, identity: str) -> int:
        """The version ``identity`` sees under ``policy``'s split: its assignment, or a new one
        to the version furthest below its weight (ties: dealing order). Blocking."""
        ident = identity_hash(identity)
        t = canary_assignments
        where = (t.c.model == policy.model, t.c.alias == policy.alias)
        with write_tx(self.engine) as conn:
            # The split's row locked (PostgreSQL; SQLite's write transaction is exclusive): two
            # processes' first-sight assignments read the counts one after the other.
            conn.execute(
                select(alias_policies.c.model)
                .where(alias_policies.c.model == policy.model, alias_policies.c.alias == policy.alias)
                .with_for_update()
            )
            found = conn.scalar(select(t.c.version).where(*where, t.c.identity == ident))
            if found is not None:
                return int(found)
            counts: dict[int, int] = dict(
                conn.execute(select(t.c.version, func.count()).where(*where).group_by(t.c.version)).all()
            )
            total = sum(counts.values())
            if total >= MAX_ASSIGNMENTS:
                return bucket_version(policy, ident)
            live = [(v, w) for v, w in policy.split if w > 0]
            # the version whose share would fall furthest below its weight with this caller
            chosen = max(
                live, key=lambda vw: (vw[1] * (total + 1) / 100 - counts.get(vw[0], 0), -live.index(vw))
            )[0]
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(t).values(
                            model=policy.model,
                            alias=policy.alias,
                            identity=ident,
                            version=chosen,
                            assigned_at=time.time(),
                        )
                    )
            except IntegrityError:  # another process assigned it meanwhile
                again = conn.scalar(select(t.c.version).where(*where, t.c.identity == ident))
                return int(again) if again is not None else chosen
        return chosen


def bucket_version(policy: AliasPolicy, ident: str) -> int:
    """A version by hash (callers with no stored assignment): 10,000 buckets dealt by weight."""
    point = int(ident[:8], 16) % 10_000
    edge = 0
    for version, weight in policy.split:
        edge += weight * 100
        if point < edge:
            return version
    return policy.version


# -- rows ---------------------------------------------------------------------------------------


def _read(conn: Connection, model: str, alias: str) -> AliasPolicy | None:
    stable = conn.scalar(select(aliases.c.version).where(aliases.c.model == model, aliases.c.alias == alias))
    if stable is None:
        return None
    row = conn.execute(
        select(alias_policies).where(alias_policies.c.model == model, alias_policies.c.alias == alias)
    ).first()
    policy = AliasPolicy(model, alias, int(stable))
    if row is None:
        return policy
    if row.split:
        weights = {int(v): int(w) for v, w in json.loads(row.split).items()}
        order = sorted(v for v in weights if v != stable) + ([stable] if stable in weights else [])
        policy = replace(
            policy,
            split=tuple((v, weights[v]) for v in order),
            guard=CanaryGuard(**json.loads(row.guard)) if row.guard else CanaryGuard(),
            split_since=row.split_since,
        )
    if row.shadow_version is not None:
        policy = replace(
            policy,
            shadow=int(row.shadow_version),
            shadow_sample=float(row.shadow_sample or 0.0),
            shadow_options=ShadowOptions(**json.loads(row.shadow_options))
            if row.shadow_options
            else ShadowOptions(),
            shadow_since=row.shadow_since,
        )
    return policy


def _require(conn: Connection, model: str, alias: str) -> AliasPolicy:
    policy = _read(conn, model, alias)
    if policy is None:
        raise NotFound(f"model {model!r} has no alias {alias!r}", details={"model": model, "alias": alias})
    return policy


def _require_version(conn: Connection, model: str, version: int) -> None:
    found = conn.scalar(
        select(model_versions.c.version).where(
            model_versions.c.model == model, model_versions.c.version == version
        )
    )
    if found is None:
        raise NotFound(
            f"model {model!r} has no version {version}", details={"model": model, "version": version}
        )


def _upsert(conn: Connection, model: str, alias: str, **values: Any) -> None:
    t = alias_policies
    done = conn.execute(update(t).where(t.c.model == model, t.c.alias == alias).values(**values)).rowcount
    if not done:
        conn.execute(insert(t).values(model=model, alias=alias, **values))


def _bump(conn: Connection) -> None:
    conn.execute(
        update(registry_state)
        .where(registry_state.c.id == 1)
        .values(generation=registry_state.c.generation + 1)
    )
