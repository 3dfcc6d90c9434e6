"""The training run's child process: ``python -m mlgate.lifecycle.jobs`` runs :func:`main`.

The manager (:mod:`mlgate.lifecycle.jobs`, which re-exports :func:`main` and delegates to it
when run as a module) spawns this with the run's spec, its server's loopback URL and a
short-lived admin key in the environment (:data:`ENV_SPEC`, :data:`ENV_URL`, :data:`ENV_KEY`);
the child removes them at once, runs :func:`mlgate.lifecycle.train.run_train` against the
server over HTTP, and reports on stdout as JSON lines ``{"mlgate-train": "progress" | "report" |
"error", ...}``, which the manager reads. Kept apart because it is the other side of a process
boundary: only the child imports the HTTP client, the gate and the recipes (lazily, in
:func:`main`), never the server.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

__all__ = ["ENV_KEY", "ENV_SPEC", "ENV_URL", "main"]

#: the environment variables the manager hands the run's spec, URL and key in
ENV_SPEC = "MLGATE_TRAIN_SPEC"
ENV_URL = "MLGATE_TRAIN_URL"
ENV_KEY = "MLGATE_TRAIN_KEY"  # the variable's name, not a secret


def _emit(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"mlgate-train": kind, **fields}, default=str) + "\n")
    sys.stdout.flush()


def main() -> int:
    """The child: ``python -m mlgate.lifecycle.jobs`` with the spec, URL and key in its environment
    (removed from it at once, so a recipe cannot read the key back from ``os.environ``)."""
    import httpx

    from mlgate.errors import MlgateError
    from mlgate.lifecycle.gate import GateConfig
    from mlgate.lifecycle.train import TrainError, run_train

    try:
        spec = json.loads(os.environ.pop(ENV_SPEC))
        url = os.environ.pop(ENV_URL)
        key = os.environ.pop(ENV_KEY)
    except (KeyError, ValueError):
        _emit("error", error="started without its spec, URL and key (the server starts this module)")
        return 2
    last = [0.0]

    def progress(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done in (0, total) or now - last[0] >= 0.5:  # bounded: at most ~2 lines a second
            last[0] = now
            _emit("progress", phase=phase, done=done, total=total)

    try:
        # trust_env off: a proxy from the environment must not see loopback calls and their key
        with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=600, trust_env=False) as client:
            del key
            report = run_train(
                spec["recipe"],
                client=client,
                model=spec["model"],
                alias=spec.get("promote") or spec.get("alias") or "production",
                promote=spec.get("promote") is not None,
                dry_run=bool(spec.get("dry_run")),
                seed=int(spec.get("seed", 0)),
                params=dict(spec.get("params") or {}),
                config=GateConfig(
                    min_improvement=float(spec.get("min_improvement", 0.0)), seed=int(spec.get("seed", 0))
                ),
                progress=progress,
            )
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if not isinstance(exc, MlgateError | TrainError):  # a recipe's own bug: its traceback, in the tail
            traceback.print_exc(file=sys.stdout)
        _emit("error", error=f"{type(exc).__name__}: {message}")
        return 1
    _emit("report", report=report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
