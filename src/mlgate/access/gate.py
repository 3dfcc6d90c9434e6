"""The gate every metered call passes: who is calling, which plan governs it, may it pass.

One call per request, before the model runs::

    admission = await gate.admit(mode="key", api_key=..., bearer=None, scope="temperatura", route="/prod")
    ...                                            # serve
    gate.record(admission, outcome="ok", units=n)  # durable usage, batched
    gate.refund(admission, unserved)               # quota units of items not served

Authentication: an API key (``x-api-key``, verified against a short in-process cache),
a user's bearer JWT, either, or nothing (public). Metering: the plan governing the key on
this route or scope (a model name) — an attached plan, else the default plan, so nothing
that runs a model is unmetered unless an admin key is attached to ``unmetered`` — its token
bucket (rate, burst), then its quota for the current period.

**Budgets belong to the owner**, not to the key: a user's keys and tokens spend one budget
(``user:<name>``), an ownerless key its rotation lineage's (``key:<first id>``), so extra
keys and rotations never mint budget. The budget is per attachment scope (a route, a
model, or ``*``) and not per plan: a user's keys on different plans share one bucket and,
per quota period, one counter — each key's plan only says how much of it that key may use.

**Charged = served**: tokens are taken for every admitted attempt (the rate limits
attempts), quota units are given back for what the server failed to serve (5xx answers,
batch items refused), so the quota counts what was served.
The gate knows nothing of HTTP: it raises mlgate errors that the edge renders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlgate.access.keys import ApiKey, KeyStore
from mlgate.access.limiter import Decision, LimiterStorage, QuotaDecision, quota_window
from mlgate.access.limiter_storage import InProcessStorage
from mlgate.access.login import LoginGuard
from mlgate.access.plans import Plan, PlanStore
from mlgate.access.tokens import TokenIssuer, authenticate_token
from mlgate.access.usage import UsageRecorder, user_subject
from mlgate.access.users import UserStore
from mlgate.errors import Forbidden, QuotaExceeded, Throttled, Unauthorized
from mlgate.settings import AuthSettings
from mlgate.types import AuthMode, Caller

if TYPE_CHECKING:
    from mlgate.telemetry.metrics import QuotaUsage

__all__ = ["ANONYMOUS", "Admission", "Gate"]

log = logging.getLogger(__name__)

RouteAuth = Literal["key", "user", "either", "public"]
ANONYMOUS = Caller(kind="anonymous")
_PASSES_MAX = 65_536


@dataclass(slots=True)
class Admission:
    """The outcome of a passed gate: the caller and the rate-limit headers to send back."""

    caller: Caller
    scope: str
    headers: dict[str, str] = field(default_factory=dict)
    metered_as: str | None = None  # key id or "user:<name>" when usage is recorded
    cost: int = 1  # the units this call was admitted for
    # set when quota units were counted, so those not served can be given back
    plan: Plan | None = None
    quota_key: str | None = None
    window_end: float = 0.0


@dataclass(slots=True)
class _Pass:
    """A (key, scope)'s admission inputs, valid while ``key`` and ``plan`` are the cached records."""

    key: ApiKey
    plan: Plan | None
    source: str  # the attachment scope the plan came from
    caller: Caller
    subject: str  # the budget: "<user:owner or key:lineage>:<attachment scope>"
    bucket_key: str
    quota_key: str | None  # None when the plan has no quota


class Gate:
    def __init__(
        self,
        *,
        settings: AuthSettings,
        keys: KeyStore,
        plans: PlanStore,
        limiter: LimiterStorage,
        usage: UsageRecorder,
        users: UserStore,
        tokens: TokenIssuer,
        quota_usage: QuotaUsage | None = None,
    ) -> None:
        self.settings = settings
        #: mlgate_quota_used_ratio (budgets at 50 % of their quota or more), for the quota alert
        self.quota_usage = quota_usage
        self.keys = keys
        self.plans = plans
        self.limiter = limiter
        self.usage = usage
        self.users = users
        self.tokens = tokens
        #: login throttling and the cap on concurrent password hashes (logins, sign-ups)
        self.login = LoginGuard(limiter, hashes=settings.password_hashes)
        # Quota windows by (period, offset): a window holds until it ends, so computing its
        # calendar bounds (datetime arithmetic) is needed once per period, not per request.
        self._windows: dict[tuple[str, int], tuple[float, float]] = {}
        # What admitting a key on a scope needs, by (key id, scope): see _admit_key.
        self._passes: dict[tuple[str, str, str | None], _Pass] = {}
        self._refunds: set[asyncio.Task[None]] = set()
        # A storage that meters without waiting on I/O (this machine's file, one process's
        # memory) is called directly: no coroutine per take.
        self._meter_now = limiter.take_then_count_sync if isinstance(limiter, InProcessStorage) else None

    def mode_for(self, *, declared: AuthMode, model: str | None = None, path: str | None = None) -> RouteAuth:
        """Per-route settings win, then per-model settings, then the route's own, then the default."""
        routes = self.settings.routes
        if path is not None and path in routes:
            return routes[path]
        if model is not None and model in routes:
            return routes[model]
        if declared != "default":
            return declared
        return self.settings.model_routes

    async def authenticate(self, *, mode: RouteAuth, api_key: str | None, bearer: str | None) -> Caller:
        """Who is calling; Forbidden (403) for a bad key, Unauthorized (401) for a bad token."""
        if mode == "public":
            return ANONYMOUS
        if api_key and mode in ("key", "either"):
            key = self.keys.verify_cached(api_key)
            if key is None:
                raise Forbidden("Forbidden")
            return Caller(kind="key", id=key.id, username=key.owner, role=key.role)
        if bearer and mode in ("user", "either"):
            user = await asyncio.to_thread(authenticate_token, self.tokens, self.users, bearer)
            return Caller(kind="user", id=user.username, username=user.username, role=user.role)
        if mode == "user":
            raise Unauthorized("Authentication Failed")
        raise Forbidden("Forbidden")

    async def admit(
        self,
        *,
        mode: RouteAuth,
        api_key: str | None,
        bearer: str | None,
        scope: str,
        route: str | None = None,
        cost: int = 1,
        now: float | None = None,
    ) -> Admission:
        """Authenticate, then take ``cost`` tokens and units of quota from the governing plan
        (the one attached for ``route``, else for ``scope``, else globally, else the default).

        A batch of N inputs costs N, so batching cannot side-step a plan.
        """
        if api_key and mode in ("key", "either"):
            admission, pending = self._admit_key(api_key, scope, route, cost, now)  # the hot path
            if pending is not None:  # the limiter is across the network
                await self._meter(pending[0], pending[1], admission, cost=cost, now=pending[2])
            return admission
        caller = await self.authenticate(mode=mode, api_key=api_key, bearer=bearer)
        admission = Admission(caller=caller, scope=scope, cost=cost)
        if caller.kind == "anonymous":
            return admission
        assert caller.username is not None
        # A user calling with a token spends the same budget as their keys, under the default plan.
        plan, plan_scope = self.plans.governing(None, scope, route)
        admission.metered_as = budget = user_subject(caller.username)
        if plan is not None:
            when = now if now is not None else time.time()
            await self._meter(plan, f"{budget}:{plan_scope}", admission, cost=cost, now=when)
        return admission

    def _admit_key(
        self, api_key: str, scope: str, route: str | None, cost: int, now: float | None
    ) -> tuple[Admission, tuple[Plan, str, float] | None]:
        """:meth:`admit` for an API key, without a coroutine when the limiter answers without I/O;
        else the metering still to await: ``(plan, subject, now)`` for :meth:`_meter`.

        What a (key, scope) needs — its Caller, plan, budget and limiter keys — is kept in a
        :class:`_Pass` as long as the key's and the plan's cached records are the same objects
        (so a disable, rotation or plan change is seen exactly as soon as without it).
        """
        key = self.keys.verify_cached(api_key)
        if key is None:
            raise Forbidden("Forbidden")
        plan, plan_scope = self.plans.governing(key.id, scope, route)
        granted = self._passes.get((key.id, scope, route))
        if (
            granted is None
            or granted.key is not key
            or granted.plan is not plan
            or granted.source != plan_scope
        ):
            granted = self._pass(key, scope, route, plan, plan_scope)
        admission = Admission(granted.caller, scope, {}, key.id, cost)
        if plan is None:
            return admission, None
        when = now if now is not None else time.time()
        meter_now = self._meter_now
        if meter_now is None or plan.rate is None or granted.quota_key is None:
            return admission, (plan, granted.subject, when)
        assert plan.burst is not None and plan.quota_limit is not None and plan.quota_period is not None
        end = self._window_end(plan.quota_period, plan.quota_offset, when)
        decision, quota = meter_now(
            granted.bucket_key,
            granted.quota_key,
            rate=plan.rate,
            burst=plan.burst,
            limit=plan.quota_limit,
            window_end=end,
            cost=cost,
            now=when,
        )
        self._apply(admission, decision, quota, when, granted.quota_key, plan)
        admission.plan, admission.quota_key, admission.window_end = plan, granted.quota_key, end
        return admission, None

    def _pass(self, key: ApiKey, scope: str, route: str | None, plan: Plan | None, plan_scope: str) -> _Pass:
        # A user's keys share one budget, an ownerless key's rotations too: creating or
        # rotating keys never mints quota.
        subject = f"{key.budget}:{plan_scope}"
        granted = _Pass(
            key=key,
            plan=plan,
            source=plan_scope,
            caller=Caller(kind="key", id=key.id, username=key.owner, role=key.role),
            subject=subject,
            bucket_key=f"bucket:{subject}",
            quota_key=_quota_key(subject, plan),
        )
        passes = self._passes
        if len(passes) >= _PASSES_MAX:
            del passes[next(iter(passes))]  # the oldest (a pass is rebuilt cheaply when needed)
        passes[(key.id, scope, route)] = granted
        return granted

    def record(
        self, admission: Admission, *, outcome: Literal["ok", "throttled", "error"], units: int | None = None
    ) -> None:
        """Usage of an admitted call: ``units`` served (default: its whole cost if ok or error)."""
        if admission.metered_as is not None:
            served = admission.cost if units is None else units
            self.usage.record(admission.metered_as, admission.scope, outcome=outcome, units=served)

    def refund(self, admission: Admission, unserved: int) -> None:
        """Give back the quota units of ``unserved`` items (the server failed to serve them).

        Tokens stay taken: the rate limits attempts. On this machine's limiter the refund is
        done here; across the network it runs in the background (a lost refund errs on the
        side of the plan, never of the caller).
        """
        plan, quota_key = admission.plan, admission.quota_key
        unserved = min(unserved, admission.cost)
        if plan is None or quota_key is None or unserved <= 0:
            return
        rate = plan.rate or 1.0
        burst = plan.burst or 1
        args: dict[str, Any] = {
            "rate": rate,
            "burst": burst,
            "window_end": admission.window_end,
            "cost": unserved,
        }
        admission.quota_key = None  # once
        limiter = self.limiter
        if isinstance(limiter, InProcessStorage):
            limiter.refund_sync(None, quota_key, **args)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(limiter.refund(None, quota_key, **args))
        self._refunds.add(task)
        task.add_done_callback(self._refund_done)

    def _refund_done(self, task: asyncio.Task[None]) -> None:
        self._refunds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a quota refund failed: %s", type(task.exception()).__name__)

    async def _meter(self, plan: Plan, subject: str, admission: Admission, *, cost: int, now: float) -> None:
        decision: Decision | None = None
        quota: QuotaDecision | None = None
        end = 0.0
        limited = plan.rate is not None and plan.burst is not None
        quota_key = _quota_key(subject, plan)
        if plan.quota_limit is not None and plan.quota_period is not None:
            assert quota_key is not None
            end = self._window_end(plan.quota_period, plan.quota_offset, now)
            if limited:
                assert plan.rate is not None and plan.burst is not None
                # Both in one round trip (the database: one transaction; Redis: one script).
                decision, quota = await self.limiter.take_then_count(
                    f"bucket:{subject}",
                    quota_key,
                    rate=plan.rate,
                    burst=plan.burst,
                    limit=plan.quota_limit,
                    window_end=end,
                    cost=cost,
                    now=now,
                )
            else:
                quota = await self.limiter.count(
                    quota_key, limit=plan.quota_limit, window_end=end, cost=cost, now=now
                )
        elif limited:
            assert plan.rate is not None and plan.burst is not None
            decision = await self.limiter.take(
                f"bucket:{subject}", rate=plan.rate, burst=plan.burst, cost=cost, now=now
            )
        self._apply(admission, decision, quota, now, quota_key, plan)
        if quota is not None:
            admission.plan, admission.quota_key, admission.window_end = plan, quota_key, end

    def _apply(
        self,
        admission: Admission,
        decision: Decision | None,
        quota: QuotaDecision | None,
        now: float,
        quota_key: str | None = None,
        plan: Plan | None = None,
    ) -> None:
        """The limiter's answers as rate-limit headers, and a refusal as Throttled/QuotaExceeded."""
        headers = admission.headers
        if decision is not None:
            headers["X-RateLimit-Limit"] = str(decision.limit)
            headers["X-RateLimit-Remaining"] = str(decision.remaining)
            if not decision.allowed:
                self.usage.record(admission.metered_as or "", admission.scope, outcome="throttled", units=0)
                raise Throttled("Too Many Requests", retry_after=decision.retry_after, headers=dict(headers))
        if quota is not None:
            used = quota.limit - quota.remaining
            if used * 2 >= quota.limit and quota_key is not None and plan is not None:
                usage = self.quota_usage  # only budgets at 50 % or more reach this
                if usage is not None:
                    usage.observe(quota_key, plan.name, used, quota.limit, quota.resets_at)
            headers["X-Quota-Limit"] = str(quota.limit)
            headers["X-Quota-Remaining"] = str(quota.remaining)
            headers["X-Quota-Reset"] = str(int(quota.resets_at))
            if not quota.allowed:
                self.usage.record(admission.metered_as or "", admission.scope, outcome="throttled", units=0)
                raise QuotaExceeded(
                    "Limit Exceeded", retry_after=max(1.0, quota.resets_at - now), headers=dict(headers)
                )

    def _window_end(self, period: str, offset: int, now: float) -> float:
        """``quota_window(...)[1]``, recomputed only when ``now`` leaves the cached window.

        Within a microsecond of either bound it is recomputed too, so the result is exactly
        quota_window's (which rounds ``now`` to the microsecond).
        """
        window = self._windows.get((period, offset))
        if window is None or not window[0] + 1e-6 <= now < window[1] - 1e-6:
            window = self._windows[(period, offset)] = quota_window(period, offset_days=offset, now=now)
        return window[1]


def _quota_key(subject: str, plan: Plan | None) -> str | None:
    """A budget's counter for the plan's period: keys on plans with other periods (or reset
    days) count apart, keys on plans with the same period share one count."""
    if plan is None or plan.quota_period is None:
        return None
    return f"quota:{subject}:{plan.quota_period}{plan.quota_offset}"
