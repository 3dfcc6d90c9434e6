"""The rollout guard's action: roll a failing canary back to weight 0, once, and say so.

The dataplane measures a split's versions in each process (:mod:`mlgate.routing`) and hands
the first breach of a canary to :meth:`CanaryGuardian.on_breach`. The rollback is one
conditional write (:meth:`mlgate.policies.Policies.rollback`: only if that split is still the
alias's and the canary still has weight), so when several processes see the breach, one acts.
The one that does records a ``rollback`` event in the model's history (the reason and both
versions' figures), counts ``mlgate_canary_rollbacks_total{model,alias,version}``, sets
``mlgate_canary_rolled_back`` to 1 for 15 minutes — the built-in alert ``MlgateCanaryRolledBack``
fires on it — and logs a warning. Every process then
sends the canary's callers to the stable version within ``alias_ttl_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mlgate.dataplane import DataPlane
from mlgate.policies import Policies
from mlgate.routing import Breach
from mlgate.telemetry.metrics import Metrics

__all__ = ["ALERT_S", "CanaryGuardian"]

#: How long ``mlgate_canary_rolled_back`` stays at 1 after a rollback (the alert fires meanwhile).
ALERT_S = 900.0

log = logging.getLogger("mlgate.lifecycle")


class CanaryGuardian:
    """Wired as ``dataplane.on_breach`` by the server."""

    def __init__(self, *, dataplane: DataPlane, policies: Policies, metrics: Metrics) -> None:
        self.dataplane = dataplane
        self.policies = policies
        self.metrics = metrics
        self._tasks: set[asyncio.Task[bool]] = set()

    def on_breach(self, breach: Breach) -> None:
        task = asyncio.get_running_loop().create_task(self.roll_back(breach))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def roll_back(self, breach: Breach) -> bool:
        policy = breach.policy
        if policy.split_since is None:
            return False
        detail = {"reason": breach.reason, **breach.detail}
        try:
            done = await asyncio.to_thread(
                self.policies.rollback, policy.model, policy.alias, breach.version, policy.split_since, detail
            )
        except Exception:
            log.exception("could not roll back canary %s v%s", policy.model, breach.version)
            return False
        if done:
            labels = (policy.model, policy.alias, str(breach.version))
            self.metrics.canary_rollbacks.labels(*labels).inc()
            # What the alert reads: a gauge at 1 for ALERT_S (a counter's increase() misses a
            # series that appears and moves between two evaluations).
            until = time.monotonic() + ALERT_S
            self.metrics.canary_rolled_back.labels(*labels).set_function(
                lambda: 1.0 if time.monotonic() < until else 0.0
            )
            log.warning(
                "rolled back canary %s v%s on alias %s to weight 0: %s",
                policy.model,
                breach.version,
                policy.alias,
                breach.reason,
            )
        self.dataplane.invalidate()
        return done

    async def stop(self) -> None:
        """Let rollbacks under way finish (they are one short database write each)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
