"""Every process's metric samples in the database, so one evaluator sees them all.

With ``--workers N`` there are N processes, and replicas share the database: each process's
:class:`MetricShare` upserts its current samples (cumulative counters and histogram buckets,
gauges) of the families the alert rules read into ``telemetry_snapshots`` every
``alerts.snapshot_s``, in its own thread (off the request path), and deletes rows no process
updated for 10 minutes. The evaluator (:mod:`mlgate.monitoring.alerts`) reads them with
:func:`read_snapshots`: counters are summed over processes after rates are computed per
process, gauges keep one series per process (an ``instance`` label).

This module also reads the process's memory (``/proc``) and its limit (setting, cgroup v2
``memory.max``, cgroup v1 ``memory.limit_in_bytes``, else the machine's RAM).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from mlgate.db.tables import telemetry_snapshots

__all__ = [
    "STALE_S",
    "MetricShare",
    "Sample",
    "Snapshot",
    "collect_samples",
    "memory_limit_bytes",
    "read_snapshots",
    "resident_memory_bytes",
]

log = logging.getLogger(__name__)

STALE_S = 600.0  # rows not updated for this long are deleted
_CUMULATIVE_TYPES = {"counter", "histogram", "summary", "gaugehistogram"}

#: ``(sample name, labels, value, cumulative?)``
Sample = tuple[str, dict[str, str], float, bool]


@dataclass(frozen=True)
class Snapshot:
    process: str
    started_at: float
    updated_at: float
    samples: list[Sample]


def collect_samples(
    registry: CollectorRegistry | Sequence[CollectorRegistry], names: set[str] | None
) -> list[Sample]:
    """The registries' samples whose name is in ``names`` (all when None)."""
    out: list[Sample] = []
    registries = [registry] if isinstance(registry, CollectorRegistry) else registry
    families = [family for r in registries for family in r.collect()]
    for family in families:
        cumulative = family.type in _CUMULATIVE_TYPES
        if family.type not in _CUMULATIVE_TYPES and family.type not in ("gauge", "unknown"):
            continue
        for s in family.samples:
            if names is not None and s.name not in names:
                continue
            if s.name.endswith("_created"):
                continue
            out.append((s.name, dict(s.labels), float(s.value), cumulative))
    return out


def resident_memory_bytes() -> float:
    """This process's resident set size (``/proc/self/statm``; 0 where there is no /proc)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
        return float(int(fields[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


_UNLIMITED = 1 << 60


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 < value < _UNLIMITED else None


def memory_limit_bytes(configured: int | None = None, *, root: str = "") -> float:
    """The memory this process may use: ``configured``, else its cgroup's limit, else RAM."""
    if configured is not None:
        return float(configured)
    cgroup = _own_cgroup(root)
    candidates = [f"{root}/sys/fs/cgroup{cgroup}/memory.max"] if cgroup else []
    candidates += [f"{root}/sys/fs/cgroup/memory.max", f"{root}/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    for path in candidates:
        limit = _read_int(path)
        if limit is not None:
            return float(limit)
    try:
        for line in Path(f"{root}/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError):
        return 0.0


def _own_cgroup(root: str) -> str | None:
    """The cgroup v2 path of this process (``0::/path`` in /proc/self/cgroup)."""
    try:
        for line in Path(f"{root}/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                path = line[3:].strip()
                return path if path not in ("", "/") else None
    except OSError:
        return None
    return None


class MetricShare:
    """This process's samples into ``telemetry_snapshots`` every ``interval_s``, in a thread."""

    def __init__(
        self,
        engine: Engine,
        registry: CollectorRegistry | Sequence[CollectorRegistry],
        *,
        process: str,
        interval_s: float,
        names: set[str] | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.process = process
        self.interval_s = interval_s
        self.names = names
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_cleanup = 0.0

    def share_once(self, now: float | None = None) -> None:
        """Upsert this process's samples now (and delete stale rows once a minute)."""
        now = time.time() if now is None else now
        data = orjson.dumps({"samples": collect_samples(self.registry, self.names)}).decode()
        t = telemetry_snapshots
        with self.engine.begin() as conn:
            updated = conn.execute(
                update(t).where(t.c.process == self.process).values(updated_at=now, data=data)
            ).rowcount
        if not updated:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(t).values(
                            process=self.process, started_at=self.started_at, updated_at=now, data=data
                        )
                    )
            except IntegrityError:  # inserted meanwhile (cannot happen for one process; harmless)
                pass
        if now - self._last_cleanup >= 60.0:
            self._last_cleanup = now
            with self.engine.begin() as conn:
                conn.execute(delete(t).where(t.c.updated_at < now - STALE_S))

    def forget(self) -> None:
        """Delete this process's row (on a clean stop: its gauges should not outlive it)."""
        t = telemetry_snapshots
        with self.engine.begin() as conn:
            conn.execute(delete(t).where(t.c.process == self.process))

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="mlgate-metric-share", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.share_once()
            except Exception as exc:  # the database is away: try again next time
                log.warning("sharing metric samples failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.interval_s)


def read_snapshots(
    engine: Engine, *, since: float = 0.0, seen: Mapping[str, float] | None = None
) -> list[Snapshot]:
    """Every process's latest samples (rows updated after ``since``, and after ``seen[process]``:
    rows already read are not decoded again)."""
    t = telemetry_snapshots
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.process, t.c.started_at, t.c.updated_at, t.c.data).where(t.c.updated_at > since)
        ).all()
    out: list[Snapshot] = []
    for row in rows:
        if seen is not None and row.updated_at <= seen.get(row.process, -1.0):
            continue
        try:
            raw = orjson.loads(row.data)["samples"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        out.append(Snapshot(row.process, row.started_at, row.updated_at, list(_samples(raw))))
    return out


def _samples(raw: Iterable[object]) -> Iterable[Sample]:
    for item in raw:
        if isinstance(item, list) and len(item) == 4:
            name, labels, value, cumulative = item
            if isinstance(name, str) and isinstance(labels, dict) and isinstance(value, int | float):
                yield name, {str(k): str(v) for k, v in labels.items()}, float(value), bool(cumulative)
