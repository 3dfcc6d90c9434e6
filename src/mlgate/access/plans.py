"""Usage plans as in AWS API Gateway: a token bucket (rate, burst) and a quota per period.

A plan throttles with a token bucket (``rate`` tokens refilled per second, ``burst`` =
capacity) and/or caps requests per ``DAY``/``WEEK``/``MONTH`` (``quota_limit``). Plans are
attached to API keys globally (scope ``"*"``) or for one model or route (scope = the model's
name or the route's path); :meth:`PlanStore.governing` picks the most specific one (the
route's, then the model's, then the global one), else the server's default plan
(``MLGATE_LIMITER__DEFAULT_PLAN``, the ``reference`` plan unless configured). Nothing that
runs a model is unmetered by accident: a plan with neither a rate nor a quota (``unmetered``,
created on first start) may only be attached to an admin key — an explicit choice that
``keys list`` shows — and can never be the default plan.
Enforcement lives in the limiter; this module only says which limits apply.

``plan_for`` is on the hot path, so plans and each key's attachments are cached in the
process while the access generation does not move (:mod:`mlgate.access.generation`). A
write through this store invalidates its cache at once; a change made by another process
is seen here within the generation's ttl (``cache_ttl``, default 5 s).

Example::

    plans = PlanStore(engine, default_plan="reference")
    ensure_reference_plan(plans)            # rate 10, burst 10, 1,000 per MONTH
    plans.create("gold", rate=50, quota_limit=100_000, quota_period="MONTH")
    plans.attach(key_id, "gold", scope="temperatura")
    plans.plan_for(key_id, "temperatura").name  # 'gold'
"""

from __future__ import annotations

import builtins
import math
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from mlgate.access.generation import AccessGeneration
from mlgate.db.engine import write_tx
from mlgate.db.tables import api_keys, key_plans, usage_plans, utcnow
from mlgate.errors import ConfigurationError, Conflict, InvalidInput, NotFound

__all__ = [
    "GLOBAL_SCOPE",
    "PERIODS",
    "REFERENCE_PLAN",
    "UNMETERED_PLAN",
    "Period",
    "Plan",
    "PlanStore",
    "ensure_builtin_plans",
    "ensure_reference_plan",
]

Period = Literal["DAY", "WEEK", "MONTH"]
PERIODS: tuple[Period, ...] = ("DAY", "WEEK", "MONTH")
#: Largest ``quota_offset`` per period, as API Gateway allows (DAY: 0; WEEK: 0-6; MONTH: 0-27).
_MAX_OFFSET: dict[str, int] = {"DAY": 0, "WEEK": 6, "MONTH": 27}
#: The scope of a plan attached to every model and route of a key.
GLOBAL_SCOPE = "*"
#: Name of the reference deployment's plan (SPEC §3.1).
REFERENCE_PLAN = "reference"
#: The plan without limits, for admin keys only (attached explicitly; shown by ``keys list``).
UNMETERED_PLAN = "unmetered"

# Matched with fullmatch (``$`` would accept a trailing newline).
_PLAN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MODEL_SCOPE = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # mlgate.types.NAME_PATTERN
_ROUTE_SCOPE = re.compile(r"/[A-Za-z0-9._~/{}:@!$&'()*+,;=%-]{0,127}")
_MAX_RATE = 1_000_000.0
_MAX_BURST = 2**31 - 1
_MAX_QUOTA = 2**63 - 1
_MAX_DESCRIPTION = 1024
_FIELDS = frozenset({"rate", "burst", "quota_limit", "quota_period", "quota_offset", "description"})
#: Keys whose attachments are cached at once (least recently used evicted first).
_ATTACHMENT_CACHE_MAX = 65_536
_NONE: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Plan:
    """One usage plan. ``rate``/``burst`` None: no throttling; ``quota_limit`` None: no quota.

    ``quota_offset`` is how many days into the period the quota resets (API Gateway's
    bounds: DAY 0, WEEK 0-6, MONTH 0-27); the limiter turns it into time windows.
    """

    name: str
    rate: float | None
    burst: int | None
    quota_limit: int | None
    quota_period: Period | None
    quota_offset: int
    description: str

    @property
    def metered(self) -> bool:
        """Whether the plan limits anything (a rate or a quota)."""
        return self.rate is not None or self.quota_limit is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlanStore:
    """Usage plans and their attachments to keys, in the registry database.

    ``default_plan`` governs keys with no attachment for the scope asked; when it names a
    plan that does not exist, :meth:`plan_for` raises :class:`ConfigurationError` (fail
    closed: a typo must not make every key unlimited).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        default_plan: str | None = None,
        cache_ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        generation: AccessGeneration | None = None,
    ) -> None:
        self._engine = engine
        self._default = default_plan
        self._ttl = cache_ttl
        self._access = (
            generation
            if generation is not None
            else AccessGeneration(engine, ttl=cache_ttl, monotonic=monotonic)
        )
        self._lock = threading.Lock()
        self._generation = 0
        self._plans: tuple[tuple[int, int], dict[str, Plan]] | None = None
        self._attached: OrderedDict[str, tuple[tuple[int, int], dict[str, str]]] = OrderedDict()

    @property
    def default_plan(self) -> str | None:
        return self._default

    # -- plans ----------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        rate: float | None = None,
        burst: int | None = None,
        quota_limit: int | None = None,
        quota_period: str | None = None,
        quota_offset: int = 0,
        description: str = "",
    ) -> Plan:
        """Create a plan; :class:`Conflict` if the name is taken, :class:`InvalidInput` if invalid.

        ``burst`` defaults to ``ceil(rate)`` when only a rate is given.
        """
        _check_plan_name(name)
        plan = _validated(
            name,
            rate=rate,
            burst=burst,
            quota_limit=quota_limit,
            quota_period=quota_period,
            quota_offset=quota_offset,
            description=description,
        )
        try:
            with write_tx(self._engine) as conn:
                if _plan_row(conn, name) is not None:
                    raise Conflict(f"usage plan {name!r} already exists", details={"plan": name})
                conn.execute(usage_plans.insert().values(**_columns(plan), created_at=utcnow()))
        except sa_exc.IntegrityError as exc:  # a concurrent create on PostgreSQL
            raise Conflict(f"usage plan {name!r} already exists", details={"plan": name}) from exc
        self._invalidate()
        return plan

    def update(self, name: str, **fields: Any) -> Plan:
        """Change some fields of a plan; the result is validated as a whole.

        Clearing ``rate`` (None) also clears ``burst``, and clearing ``quota_limit`` also
        clears the period and offset, unless those are given too.
        """
        unknown = set(fields) - _FIELDS
        if unknown:
            raise InvalidInput(
                f"unknown plan field(s): {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_FIELDS))}"
            )
        with write_tx(self._engine) as conn:
            row = _plan_row(conn, name, lock="update")
            if row is None:
                raise NotFound(f"no usage plan {name!r}", details={"plan": name})
            current = _from_row(row)
            merged: dict[str, Any] = {f: getattr(current, f) for f in _FIELDS}
            if "rate" in fields and "burst" not in fields:
                # a new rate keeps the burst; a first rate gets ceil(rate); no rate, no burst
                keep = fields["rate"] is not None and current.rate is not None
                merged["burst"] = current.burst if keep else None
            if "quota_limit" in fields and fields["quota_limit"] is None:
                merged["quota_period"] = None
                merged["quota_offset"] = 0
            merged.update(fields)
            plan = _validated(name, **merged)
            if not plan.metered and name == self._default:
                raise InvalidInput(
                    f"usage plan {name!r} is the server's default plan (MLGATE_LIMITER__DEFAULT_PLAN): "
                    "it must keep a rate or a quota",
                    details={"plan": name},
                )
            if not plan.metered:
                _refuse_unmetered_for_users(conn, plan.name)
            conn.execute(usage_plans.update().where(usage_plans.c.name == name).values(**_columns(plan)))
            self._access.bump(conn)
        self._invalidate()
        return plan

    def get(self, name: str) -> Plan:
        """The plan called ``name``; :class:`NotFound` if none."""
        with self._engine.connect() as conn:
            row = _plan_row(conn, name)
        if row is None:
            raise NotFound(f"no usage plan {name!r}", details={"plan": name})
        return _from_row(row)

    def list(self) -> builtins.list[Plan]:
        """Every plan, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(usage_plans).order_by(usage_plans.c.name)).all()
        return [_from_row(row) for row in rows]

    def delete(self, name: str) -> None:
        """Delete a plan; :class:`Conflict` while a key uses it or it is the default plan."""
        if name == self._default:
            raise Conflict(
                f"usage plan {name!r} is the server's default plan (MLGATE_LIMITER__DEFAULT_PLAN)",
                details={"plan": name},
            )
        try:
            with write_tx(self._engine) as conn:
                if _plan_row(conn, name, lock="update") is None:
                    raise NotFound(f"no usage plan {name!r}", details={"plan": name})
                used = conn.execute(
                    sa.select(sa.func.count()).select_from(key_plans).where(key_plans.c.plan == name)
                ).scalar_one()
                if used:
                    raise Conflict(
                        f"usage plan {name!r} is attached to {used} key scope(s); detach it first",
                        details={"plan": name, "attachments": used},
                    )
                conn.execute(usage_plans.delete().where(usage_plans.c.name == name))
                self._access.bump(conn)
        except sa_exc.IntegrityError as exc:  # attached concurrently (the foreign key refused)
            raise Conflict(f"usage plan {name!r} is attached to a key", details={"plan": name}) from exc
        self._invalidate()

    # -- attachments ----------------------------------------------------------------------

    def attach(self, key_id: str, plan: str, *, scope: str = GLOBAL_SCOPE) -> None:
        """Make ``plan`` govern ``key_id`` for ``scope`` (replacing any plan there)."""
        _check_scope(scope)
        try:
            with write_tx(self._engine) as conn:
                if conn.execute(sa.select(api_keys.c.id).where(api_keys.c.id == key_id)).first() is None:
                    raise NotFound(f"no API key with id {key_id!r}", details={"key_id": key_id})
                row = _plan_row(conn, plan, lock="share")
                if row is None:
                    raise NotFound(f"no usage plan {plan!r}", details={"plan": plan})
                role = conn.execute(sa.select(api_keys.c.role).where(api_keys.c.id == key_id)).scalar_one()
                if not _from_row(row).metered and role != "admin":
                    raise InvalidInput(
                        f"usage plan {plan!r} has no limits: only an admin key may be unmetered",
                        details={"plan": plan, "key_id": key_id},
                    )
                conn.execute(_upsert_attachment(conn, key_id=key_id, scope=scope, plan=plan))
                self._access.bump(conn)
        except sa_exc.IntegrityError as exc:  # the plan was deleted concurrently
            raise NotFound(f"no usage plan {plan!r}", details={"plan": plan}) from exc
        self._invalidate()

    def detach(self, key_id: str, *, scope: str = GLOBAL_SCOPE) -> None:
        """Remove the plan of ``key_id`` for ``scope``; :class:`NotFound` if none is attached."""
        with write_tx(self._engine) as conn:
            result = conn.execute(
                key_plans.delete().where(key_plans.c.key_id == key_id, key_plans.c.scope == scope)
            )
            self._access.bump(conn)
        self._invalidate()
        if result.rowcount == 0:
            raise NotFound(
                f"API key {key_id!r} has no plan for scope {scope!r}",
                details={"key_id": key_id, "scope": scope},
            )

    def attachments(self, key_id: str) -> dict[str, str]:
        """``{scope: plan}`` of ``key_id`` (read from the database, not the cache)."""
        with self._engine.connect() as conn:
            return _load_attachments(conn, key_id)

    def plan_for(self, key_id: str, scope: str, route: str | None = None) -> Plan | None:
        """The plan governing ``key_id`` on ``scope`` (hot path, cached for ``cache_ttl``).

        The plan attached for ``route`` (the request's path), else for ``scope`` (the
        model), else for ``"*"``, else the default plan, else None (unlimited).
        """
        return self.governing(key_id, scope, route)[0]

    def governing(self, key_id: str | None, scope: str, route: str | None = None) -> tuple[Plan | None, str]:
        """:meth:`plan_for` plus the attachment scope it came from (cached, hot path).

        The second item is ``route`` or ``scope`` when a plan is attached for it, else
        ``"*"`` (the global attachment, the default plan, or no plan): the limiter keys its
        buckets and quota counters by it, so one global plan is one budget across models.
        ``key_id`` None: a user calling with a token (the default plan).
        """
        attached = self._cached_attachments(key_id) if key_id is not None else _NONE
        if route is not None and route in attached:
            name: str | None = attached[route]
            source = route
        elif scope in attached:
            name = attached[scope]
            source = scope
        else:
            name = attached.get(GLOBAL_SCOPE, self._default)
            source = GLOBAL_SCOPE
        if name is None:
            return None, source
        plan = self._cached_plans().get(name)
        if plan is None:  # created elsewhere after our snapshot: look once more
            plan = self._cached_plans(refresh=True).get(name)
        if plan is None:
            hint = " (MLGATE_LIMITER__DEFAULT_PLAN)" if name == self._default else ""
            raise ConfigurationError(f"usage plan {name!r} does not exist{hint}", details={"plan": name})
        return plan, source

    # -- cache ----------------------------------------------------------------------------

    def _invalidate(self) -> None:
        self._access.changed()
        with self._lock:
            self._generation += 1
            self._plans = None

    def _cached_attachments(self, key_id: str) -> dict[str, str]:
        current = self._access.current() if self._ttl > 0 else None
        with self._lock:
            entry = self._attached.get(key_id)
            generation = self._generation
            if entry is not None and entry[0] == current:
                self._attached.move_to_end(key_id)
                return entry[1]
        with self._engine.connect() as conn:
            attached = _load_attachments(conn, key_id)
        with self._lock:
            if generation == self._generation and current is not None:
                self._attached[key_id] = (current, attached)
                self._attached.move_to_end(key_id)
                if len(self._attached) > _ATTACHMENT_CACHE_MAX:
                    self._attached.popitem(last=False)  # the least recently used
        return attached

    def _cached_plans(self, *, refresh: bool = False) -> dict[str, Plan]:
        current = self._access.current() if self._ttl > 0 else None
        with self._lock:
            entry = self._plans
            generation = self._generation
        if not refresh and entry is not None and entry[0] == current:
            return entry[1]
        plans = {plan.name: plan for plan in self.list()}
        with self._lock:
            if generation == self._generation and current is not None:
                self._plans = (current, plans)
        return plans


def ensure_reference_plan(store: PlanStore) -> Plan:
    """The reference deployment's plan (rate 10, burst 10, 1,000 per MONTH), created if absent."""
    return _ensure(
        store,
        REFERENCE_PLAN,
        rate=10,
        burst=10,
        quota_limit=1000,
        quota_period="MONTH",
        description="reference deployment: 10 requests/s, burst 10, 1,000 requests per month",
    )


def ensure_builtin_plans(store: PlanStore) -> None:
    """On every start: the reference plan, the ``unmetered`` plan (admin keys only), and a check
    that the default plan exists and limits something (fail closed: :class:`ConfigurationError`)."""
    ensure_reference_plan(store)
    _ensure(store, UNMETERED_PLAN, description="no limits: only for admin keys, by explicit choice")
    name = store.default_plan
    if name is None:
        return
    try:
        plan = store.get(name)
    except NotFound:
        raise ConfigurationError(
            f"the default usage plan {name!r} does not exist (MLGATE_LIMITER__DEFAULT_PLAN)",
            details={"plan": name},
        ) from None
    if not plan.metered:
        raise ConfigurationError(
            f"the default usage plan {name!r} has no limits: every key would be unmetered "
            "(MLGATE_LIMITER__DEFAULT_PLAN must name a plan with a rate or a quota)",
            details={"plan": name},
        )


def _ensure(store: PlanStore, name: str, **fields: Any) -> Plan:
    try:
        return store.get(name)
    except NotFound:
        pass
    try:
        return store.create(name, **fields)
    except Conflict:  # another process created it first
        return store.get(name)


def _refuse_unmetered_for_users(conn: sa.Connection, plan: str) -> None:
    """A plan may lose all its limits only while no non-admin key is attached to it."""
    users = conn.execute(
        sa.select(sa.func.count())
        .select_from(key_plans.join(api_keys, api_keys.c.id == key_plans.c.key_id))
        .where(key_plans.c.plan == plan, api_keys.c.role != "admin")
    ).scalar_one()
    if users:
        raise InvalidInput(
            f"usage plan {plan!r} governs {users} non-admin key scope(s): it must keep a rate or a quota",
            details={"plan": plan},
        )


# -- validation and rows ----------------------------------------------------------------------


def _check_plan_name(name: object) -> None:
    if not isinstance(name, str) or not _PLAN_NAME.fullmatch(name):
        raise InvalidInput(
            "plan name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def _check_scope(scope: object) -> None:
    if not isinstance(scope, str) or not (
        scope == GLOBAL_SCOPE or _MODEL_SCOPE.fullmatch(scope) or _ROUTE_SCOPE.fullmatch(scope)
    ):
        raise InvalidInput(
            "scope must be '*', a model name (lowercase, 1-64 characters) or a route path starting with '/'"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validated(
    name: str,
    *,
    rate: Any,
    burst: Any,
    quota_limit: Any,
    quota_period: Any,
    quota_offset: Any,
    description: Any,
) -> Plan:
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise InvalidInput("rate must be a finite number of requests per second")
        if not 0 < rate <= _MAX_RATE:
            raise InvalidInput(f"rate must be > 0 and <= {_MAX_RATE:g} (omit it for no throttling)")
        rate = float(rate)
        if burst is None:
            burst = math.ceil(rate)
    if burst is not None:
        if rate is None:
            raise InvalidInput("burst needs a rate (the bucket refills at rate tokens per second)")
        if not _is_int(burst) or not 1 <= burst <= _MAX_BURST:
            raise InvalidInput(f"burst must be an integer between 1 and {_MAX_BURST}")
    if quota_period is not None:
        if not isinstance(quota_period, str) or quota_period.upper() not in PERIODS:
            raise InvalidInput("quota_period must be one of DAY, WEEK, MONTH")
        quota_period = quota_period.upper()
    if quota_limit is not None:
        if not _is_int(quota_limit) or not 1 <= quota_limit <= _MAX_QUOTA:
            raise InvalidInput("quota_limit must be a positive integer")
        if quota_period is None:
            raise InvalidInput("quota_limit needs a quota_period (DAY, WEEK or MONTH)")
    elif quota_period is not None:
        raise InvalidInput("quota_period needs a quota_limit")
    if not _is_int(quota_offset) or quota_offset < 0:
        raise InvalidInput("quota_offset must be a non-negative integer")
    if quota_offset and quota_period is None:
        raise InvalidInput("quota_offset needs a quota_period")
    if quota_period is not None and quota_offset > _MAX_OFFSET[quota_period]:
        raise InvalidInput(
            f"quota_offset for a {quota_period} period must be between 0 and {_MAX_OFFSET[quota_period]}"
        )
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise InvalidInput(f"description must be a string of at most {_MAX_DESCRIPTION} characters")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in description):
        raise InvalidInput("description must not contain control characters")
    return Plan(
        name=name,
        rate=rate,
        burst=burst,
        quota_limit=quota_limit,
        quota_period=cast("Period | None", quota_period),
        quota_offset=quota_offset,
        description=description,
    )


def _columns(plan: Plan) -> dict[str, Any]:
    return plan.to_dict()


def _from_row(row: sa.Row[Any]) -> Plan:
    return Plan(
        name=row.name,
        rate=None if row.rate is None else float(row.rate),
        burst=row.burst,
        quota_limit=None if row.quota_limit is None else int(row.quota_limit),
        quota_period=row.quota_period,
        quota_offset=int(row.quota_offset),
        description=row.description,
    )


def _plan_row(
    conn: sa.Connection, name: str, *, lock: Literal["update", "share"] | None = None
) -> sa.Row[Any] | None:
    query = sa.select(usage_plans).where(usage_plans.c.name == name)
    if lock:  # PostgreSQL: attach (share) vs update/delete (update); SQLite's BEGIN IMMEDIATE already does
        query = query.with_for_update(read=lock == "share")
    return conn.execute(query).first()


def _load_attachments(conn: sa.Connection, key_id: str) -> dict[str, str]:
    rows = conn.execute(
        sa.select(key_plans.c.scope, key_plans.c.plan).where(key_plans.c.key_id == key_id)
    ).all()
    return {row.scope: row.plan for row in rows}


def _upsert_attachment(conn: sa.Connection, *, key_id: str, scope: str, plan: str) -> sa.Executable:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(key_plans).values(key_id=key_id, scope=scope, plan=plan)
        return pg.on_conflict_do_update(index_elements=["key_id", "scope"], set_={"plan": plan})
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    lite = sqlite_insert(key_plans).values(key_id=key_id, scope=scope, plan=plan)
    return lite.on_conflict_do_update(index_elements=["key_id", "scope"], set_={"plan": plan})
