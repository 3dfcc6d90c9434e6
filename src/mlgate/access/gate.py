"""The gate every metered call passes: who is calling, which plan governs it, may it pass.

One call per request, before the model runs::

    admission = await gate.admit(mode="key", api_key=..., bearer=None, scope="temperatura")
    ...                                  # serve
    gate.record(admission, ok=True)      # durable usage, batched

Authentication: an API key (``x-api-key``, verified against a short in-process cache),
a user's bearer JWT, either, or nothing (public). Metering: the key's plan for this
scope (a model name) — its token bucket (rate, burst), then its quota for the current
period. Budgets belong to the key's owner when it has one (so a user's extra or rotated
keys share one budget), else to the key; users calling with a token are metered by the
default plan, per user.
The gate knows nothing of HTTP: it raises mlgate errors that the edge renders.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Literal

from mlgate.access.keys import ApiKey, KeyStore
from mlgate.access.limiter import Decision, LimiterStorage, QuotaDecision, quota_window
from mlgate.access.limiter_storage import InProcessStorage
from mlgate.access.plans import Plan, PlanStore
from mlgate.access.tokens import TokenIssuer, authenticate_token
from mlgate.access.usage import UsageRecorder, user_subject
from mlgate.access.users import UserStore
from mlgate.errors import Forbidden, QuotaExceeded, Throttled, Unauthorized
from mlgate.settings import AuthSettings
from mlgate.types import AuthMode, Caller

__all__ = ["ANONYMOUS", "Admission", "Gate"]

RouteAuth = Literal["key", "user", "either", "public"]
ANONYMOUS = Caller(kind="anonymous")
_PASSES_MAX = 4096


@dataclass(slots=True)
class Admission:
    """The outcome of a passed gate: the caller and the rate-limit headers to send back."""

    caller: Caller
    scope: str
    headers: dict[str, str] = field(default_factory=dict)
    metered_as: str | None = None  # key id or "user:<name>" when usage is recorded


@dataclass(slots=True)
class _Pass:
    """A (key, scope)'s admission inputs, valid while ``key`` and ``plan`` are the cached records."""

    key: ApiKey
    plan: Plan | None
    source: str  # the attachment scope the plan came from
    caller: Caller
    subject: str  # the budget: "<owner or key id>:<plan>:<scope>"
    bucket_key: str | None  # set when the plan has both a bucket and a quota (metered in one call)
    quota_key: str | None


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
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.plans = plans
        self.limiter = limiter
        self.usage = usage
        self.users = users
        self.tokens = tokens
        # Quota windows by (period, offset): a window holds until it ends, so computing its
        # calendar bounds (datetime arithmetic) is needed once per period, not per request.
        self._windows: dict[tuple[str, int], tuple[float, float]] = {}
        # What admitting a key on a scope needs, by (key id, scope): see _admit_key.
        self._passes: dict[tuple[str, str], _Pass] = {}
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
        cost: int = 1,
        now: float | None = None,
    ) -> Admission:
        """Authenticate, then take ``cost`` tokens and units of quota from the governing plan.

        A batch of N inputs costs N, so batching cannot side-step a plan.
        """
        if api_key and mode in ("key", "either"):
            admission, pending = self._admit_key(api_key, scope, cost, now)  # the hot path
            if pending is not None:  # the limiter is across the network, or the plan is partial
                await self._meter(pending[0], pending[1], admission, cost=cost, now=pending[2])
            return admission
        caller = await self.authenticate(mode=mode, api_key=api_key, bearer=bearer)
        admission = Admission(caller=caller, scope=scope)
        if caller.kind == "anonymous":
            return admission
        assert caller.username is not None
        default, plan_scope = self.plans.governing("", scope)  # the default plan, if any
        admission.metered_as = budget = user_subject(caller.username)
        if default is not None:
            when = now if now is not None else time.time()
            await self._meter(
                default, f"{budget}:{default.name}:{plan_scope}", admission, cost=cost, now=when
            )
        return admission

    def _admit_key(
        self, api_key: str, scope: str, cost: int, now: float | None
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
        plan, plan_scope = self.plans.governing(key.id, scope)
        granted = self._passes.get((key.id, scope))
        if (
            granted is None
            or granted.key is not key
            or granted.plan is not plan
            or granted.source != plan_scope
        ):
            granted = self._pass(key, scope, plan, plan_scope)
        admission = Admission(caller=granted.caller, scope=scope, metered_as=key.id)
        if plan is None:
            return admission, None
        when = now if now is not None else time.time()
        meter_now = self._meter_now
        if meter_now is None or granted.quota_key is None or granted.bucket_key is None:
            return admission, (plan, granted.subject, when)
        assert plan.rate is not None and plan.burst is not None and plan.quota_limit is not None
        assert plan.quota_period is not None
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
        self._apply(admission, decision, quota, when)
        return admission, None

    def _pass(self, key: ApiKey, scope: str, plan: Plan | None, plan_scope: str) -> _Pass:
        # A user's keys share one budget: creating or rotating keys never mints quota.
        budget = user_subject(key.owner) if key.owner else key.id
        subject = f"{budget}:{plan.name}:{plan_scope}" if plan is not None else budget
        both = plan is not None and plan.rate is not None and plan.burst is not None
        both = both and plan is not None and plan.quota_limit is not None and plan.quota_period is not None
        granted = _Pass(
            key=key,
            plan=plan,
            source=plan_scope,
            caller=Caller(kind="key", id=key.id, username=key.owner, role=key.role),
            subject=subject,
            bucket_key=f"bucket:{subject}" if both else None,
            quota_key=f"quota:{subject}" if both else None,
        )
        if len(self._passes) >= _PASSES_MAX:
            self._passes.clear()
        self._passes[(key.id, scope)] = granted
        return granted

    def record(self, admission: Admission, *, outcome: Literal["ok", "throttled", "error"]) -> None:
        if admission.metered_as is not None:
            self.usage.record(admission.metered_as, admission.scope, outcome=outcome)

    async def _meter(self, plan: Plan, subject: str, admission: Admission, *, cost: int, now: float) -> None:
        decision: Decision | None = None
        quota: QuotaDecision | None = None
        end = 0.0
        limited = plan.rate is not None and plan.burst is not None
        if plan.quota_limit is not None and plan.quota_period is not None:
            end = self._window_end(plan.quota_period, plan.quota_offset, now)
            if limited:
                assert plan.rate is not None and plan.burst is not None
                # Both in one round trip (the database: one transaction; Redis: one script).
                decision, quota = await self.limiter.take_then_count(
                    f"bucket:{subject}",
                    f"quota:{subject}",
                    rate=plan.rate,
                    burst=plan.burst,
                    limit=plan.quota_limit,
                    window_end=end,
                    cost=cost,
                    now=now,
                )
            else:
                quota = await self.limiter.count(
                    f"quota:{subject}", limit=plan.quota_limit, window_end=end, cost=cost, now=now
                )
        elif limited:
            assert plan.rate is not None and plan.burst is not None
            decision = await self.limiter.take(
                f"bucket:{subject}", rate=plan.rate, burst=plan.burst, cost=cost, now=now
            )
        self._apply(admission, decision, quota, now)

    def _apply(
        self, admission: Admission, decision: Decision | None, quota: QuotaDecision | None, now: float
    ) -> None:
        """The limiter's answers as rate-limit headers, and a refusal as Throttled/QuotaExceeded."""
        headers = admission.headers
        if decision is not None:
            headers["X-RateLimit-Limit"] = str(decision.limit)
            headers["X-RateLimit-Remaining"] = str(decision.remaining)
            if not decision.allowed:
                self.usage.record(admission.metered_as or "", admission.scope, outcome="throttled")
                raise Throttled("Too Many Requests", retry_after=decision.retry_after, headers=dict(headers))
        if quota is not None:
            headers["X-Quota-Limit"] = str(quota.limit)
            headers["X-Quota-Remaining"] = str(quota.remaining)
            headers["X-Quota-Reset"] = str(int(quota.resets_at))
            if not quota.allowed:
                self.usage.record(admission.metered_as or "", admission.scope, outcome="throttled")
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
