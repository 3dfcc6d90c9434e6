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

from mlgate.access.keys import KeyStore
from mlgate.access.limiter import Decision, LimiterStorage, QuotaDecision, quota_window
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


@dataclass(slots=True)
class Admission:
    """The outcome of a passed gate: the caller and the rate-limit headers to send back."""

    caller: Caller
    scope: str
    headers: dict[str, str] = field(default_factory=dict)
    metered_as: str | None = None  # key id or "user:<name>" when usage is recorded


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
        # calendar bounds per request (~15 µs of datetime arithmetic) is needed once per period.
        self._windows: dict[tuple[str, int], tuple[float, float]] = {}

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
        caller = await self.authenticate(mode=mode, api_key=api_key, bearer=bearer)
        admission = Admission(caller=caller, scope=scope)
        if caller.kind == "anonymous":
            return admission
        if caller.kind == "key":
            assert caller.id is not None
            plan, plan_scope = self.plans.governing(caller.id, scope)
            admission.metered_as = caller.id
            # A user's keys share one budget: creating or rotating keys never mints quota.
            budget = user_subject(caller.username) if caller.username else caller.id
        else:
            assert caller.username is not None
            plan, plan_scope = self.plans.governing("", scope)  # the default plan, if any
            admission.metered_as = budget = user_subject(caller.username)
        if plan is not None:
            when = now if now is not None else time.time()
            await self._meter(plan, f"{budget}:{plan.name}:{plan_scope}", admission, cost=cost, now=when)
        return admission

    def record(self, admission: Admission, *, outcome: Literal["ok", "throttled", "error"]) -> None:
        if admission.metered_as is not None:
            self.usage.record(admission.metered_as, admission.scope, outcome=outcome)

    async def _meter(self, plan: Plan, subject: str, admission: Admission, *, cost: int, now: float) -> None:
        headers = admission.headers
        decision: Decision | None = None
        quota: QuotaDecision | None = None
        end = 0.0
        if plan.quota_limit is not None and plan.quota_period is not None:
            end = self._window_end(plan.quota_period, plan.quota_offset, now)
            both = getattr(self.limiter, "take_then_count", None)
            if both is not None and plan.rate is not None and plan.burst is not None:
                # A storage that can do both in one round trip (the database: one transaction).
                decision, quota = await both(
                    f"bucket:{subject}",
                    f"quota:{subject}",
                    rate=plan.rate,
                    burst=plan.burst,
                    limit=plan.quota_limit,
                    window_end=end,
                    cost=cost,
                    now=now,
                )
        if plan.rate is not None and plan.burst is not None:
            if decision is None:
                decision = await self.limiter.take(
                    f"bucket:{subject}", rate=plan.rate, burst=plan.burst, cost=cost, now=now
                )
            headers["X-RateLimit-Limit"] = str(decision.limit)
            headers["X-RateLimit-Remaining"] = str(decision.remaining)
            if not decision.allowed:
                self.usage.record(admission.metered_as or subject, admission.scope, outcome="throttled")
                raise Throttled("Too Many Requests", retry_after=decision.retry_after, headers=dict(headers))
        if plan.quota_limit is not None and plan.quota_period is not None:
            if quota is None:
                quota = await self.limiter.count(
                    f"quota:{subject}", limit=plan.quota_limit, window_end=end, cost=cost, now=now
                )
            headers["X-Quota-Limit"] = str(quota.limit)
            headers["X-Quota-Remaining"] = str(quota.remaining)
            headers["X-Quota-Reset"] = str(int(quota.resets_at))
            if not quota.allowed:
                self.usage.record(admission.metered_as or subject, admission.scope, outcome="throttled")
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
