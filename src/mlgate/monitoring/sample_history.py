"""Every process's shared metric samples as an in-memory history: what the alert rules read.

The evaluator (:mod:`mlgate.monitoring.alerts`) ingests the snapshots every process stores
(:mod:`mlgate.monitoring.share`) into a :class:`SampleHistory`, the
:class:`~mlgate.monitoring.promql.SeriesSource` that :func:`mlgate.monitoring.promql.evaluate`
reads, kept for the longest range the rules use.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from mlgate.monitoring import promql
from mlgate.monitoring.share import Snapshot

__all__ = ["SampleHistory"]


class SampleHistory:
    """Every process's samples over time, merged for :func:`promql.evaluate`.

    A cumulative series (counter, histogram bucket) keeps one entry per process with the same
    labels, so rates are computed per process and summed; a gauge gets an ``instance`` label.
    A series missing from a process's newer snapshot is marked stale (a NaN sample).
    """

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._series: dict[str, dict[tuple[str, promql.Labels], tuple[bool, deque[tuple[float, float]]]]] = {}
        self.seen: dict[str, float] = {}  # process -> updated_at ingested

    def ingest(self, snapshots: Iterable[Snapshot], now: float) -> None:
        for snap in snapshots:
            if snap.updated_at <= self.seen.get(snap.process, -math.inf):
                continue
            self.seen[snap.process] = snap.updated_at
            present: set[tuple[str, promql.Labels]] = set()
            for name, labels, value, cumulative in snap.samples:
                full = dict(labels)
                full["__name__"] = name
                if not cumulative:
                    full["instance"] = snap.process
                key = (snap.process, promql.labels_of(full))
                present.add(key)
                by_name = self._series.setdefault(name, {})
                entry = by_name.get(key)
                if entry is None:
                    entry = by_name[key] = (cumulative, deque())
                entry[1].append((snap.updated_at, value))
            for by_name in self._series.values():
                for key, (_, samples) in by_name.items():
                    if (
                        key[0] == snap.process
                        and key not in present
                        and samples
                        and not math.isnan(samples[-1][1])
                    ):
                        samples.append((snap.updated_at, math.nan))
        self.prune(now)

    def prune(self, now: float) -> None:
        oldest = now - self.keep_s
        for name in list(self._series):
            by_name = self._series[name]
            for key in list(by_name):
                samples = by_name[key][1]
                while samples and samples[0][0] < oldest:
                    samples.popleft()
                if not samples:
                    del by_name[key]
            if not by_name:
                del self._series[name]
        for process, seen in list(self.seen.items()):
            if seen < oldest:
                del self.seen[process]

    def add(
        self, process: str, name: str, labels: dict[str, str], t: float, value: float, *, cumulative: bool
    ) -> None:
        """One sample, no staleness marking (tests build histories with this)."""
        full = {**labels, "__name__": name}
        if not cumulative:
            full["instance"] = process
        key = (process, promql.labels_of(full))
        entry = self._series.setdefault(name, {}).setdefault(key, (cumulative, deque()))
        entry[1].append((t, value))

    def series(self, name: str | None) -> Iterable[tuple[promql.Labels, bool, list[tuple[float, float]]]]:
        names = [name] if name is not None else list(self._series)
        for n in names:
            for (_process, labels), (cumulative, samples) in self._series.get(n, {}).items():
                yield labels, cumulative, list(samples)
