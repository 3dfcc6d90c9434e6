"""Shadow comparison: the math behind a shadow version's figures, apart from the runner.

Holds what compares a primary answer with its shadow's and reports on it — walking two JSON
answers together, the numeric |Δ| and relative Δ, label agreement and confusion, the bounded
samples and their quantiles, one process's running :class:`Comparison`, the merge of several
processes' stored figures (:func:`summarize`) and the report's shape. Pure computation (no I/O,
no event loop, no database): the runner that calls shadows, times them out and stores these
figures is :mod:`mlgate.lifecycle.shadow`, which re-exports the names it used to hold.

**Comparison** (:class:`Comparison`, one per alias per process): both JSON outputs are walked
together, generically, whatever the model. Arrays are zipped by index and their elements share
one path (``top[*].clase``); objects by key (``prediccion``); the root scalar is ``$``.

- a *numeric* leaf (int or float in the primary's answer) gives |Δ| = |shadow - primary| and the
  relative Δ = |Δ| / |primary| (undefined, and counted as such, when the primary is 0); a shadow
  answer that is not a number there counts as ``mismatched``;
- a *categorical* leaf — a string, a bool, null, or an int under a key named like a label
  (``class``, ``label``, ``clase``, ``category``, ``etiqueta``, ``target``) — gives agreement
  (same label) and a confusion table primary label by shadow label; a missing leaf reads
  ``<missing>``. A pair *agrees* when all its categorical leaves do.

Bounds: 16 paths per alias (further paths are counted as dropped), 1,000 leaves walked per
answer, depth 16, 50 distinct labels per path (then ``other``; the confusion table shows the 10
most frequent + ``other``), and the last 10,000 |Δ|, relative Δ and latencies (primary and
shadow) per process — so quantiles are exact while a process has compared fewer pairs, and the
last 10,000 per process after. Quantiles are numpy's default (linear interpolation).

**Latency and errors**: the primary's latency is the dataplane's measure of its answer, the
shadow's the time of its pinned call within its group (for a model whose batches cost more than
single calls, an upper bound); the shadow's error rate is its errors and
timeouts over its calls (skips excluded), the primary's is its version's server-side errors
(5xx codes) over its answers in this process since the comparison started (the model metrics'
counters: all of that version's traffic, read by the runner).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlgate.policies import AliasPolicy

__all__ = [
    "FORMAT",
    "MAX_DEPTH",
    "MAX_LABELS",
    "MAX_LEAVES",
    "MAX_PATHS",
    "MISSING",
    "OTHER",
    "SAMPLE",
    "TOP_LABELS",
    "Comparison",
    "compare_outputs",
    "summarize",
]

#: Values kept per process for each quantile (|Δ| and relative Δ per path, latencies).
SAMPLE = 10_000
#: Output paths compared per alias (a path beyond is counted in ``paths_dropped``).
MAX_PATHS = 16
#: Distinct labels tracked per path before the rest read ``other``.
MAX_LABELS = 50
#: Labels shown in a confusion table (the most frequent; the rest are ``other``).
TOP_LABELS = 10
#: Leaves walked per answer, and the deepest nesting walked.
MAX_LEAVES = 1000
MAX_DEPTH = 16
OTHER = "other"
MISSING = "<missing>"
FORMAT = 1
_LABEL_KEY = re.compile(r"class|label|clase|categor|etiqueta|target", re.IGNORECASE)
_MAX_PATH_CHARS = 200


# -- comparing two answers --------------------------------------------------------------------


def _label(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, int | float):
        return repr(value)
    return f"<{type(value).__name__}>"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compare_outputs(
    primary: Any, shadow: Any
) -> tuple[list[tuple[str, float, Any]], list[tuple[str, str, str]]]:
    """Walk both answers together: ``(numeric, categorical)`` leaves as ``(path, primary's,
    shadow's)`` — numeric ones with the shadow's raw value (not a number: mismatched), categorical
    ones as labels. Bounded by :data:`MAX_LEAVES` and :data:`MAX_DEPTH` (see the module)."""
    numeric: list[tuple[str, float, Any]] = []
    categorical: list[tuple[str, str, str]] = []
    stack: list[tuple[str, str, Any, Any, int]] = [("$", "", primary, shadow, 0)]
    leaves = 0
    while stack and leaves < MAX_LEAVES:
        path, key, p, s, depth = stack.pop()
        if isinstance(p, dict) and depth < MAX_DEPTH:
            other = s if isinstance(s, dict) else {}
            names = list(p) + [k for k in other if k not in p]
            for name in reversed(names):
                child = name if path == "$" else f"{path}.{name}"
                stack.append(
                    (
                        child[:_MAX_PATH_CHARS],
                        str(name),
                        p.get(name, _ABSENT),
                        other.get(name, _ABSENT),
                        depth + 1,
                    )
                )
            continue
        if isinstance(p, list) and depth < MAX_DEPTH:
            other_list = s if isinstance(s, list) else []
            child = f"{path}[*]" if path != "$" else "[*]"
            for i in reversed(range(max(len(p), len(other_list)))):
                stack.append(
                    (
                        child[:_MAX_PATH_CHARS],
                        key,
                        p[i] if i < len(p) else _ABSENT,
                        other_list[i] if i < len(other_list) else _ABSENT,
                        depth + 1,
                    )
                )
            continue
        leaves += 1
        if p is _ABSENT:  # only the shadow has it: a label against nothing
            if isinstance(s, dict | list):
                continue
            categorical.append((path, MISSING, MISSING if s is _ABSENT else _label(s)))
        elif _is_number(p) and not (isinstance(p, int) and _LABEL_KEY.search(key)):
            numeric.append((path, float(p), s))
        else:
            categorical.append((path, _label(p), MISSING if s is _ABSENT else _label(s)))
    return numeric, categorical


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


# -- one process's running comparison ---------------------------------------------------------


@dataclass(slots=True)
class _Numeric:
    pairs: int = 0
    mismatched: int = 0
    rel_undefined: int = 0
    abs: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE))
    rel: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLE))


@dataclass(slots=True)
class _Categorical:
    pairs: int = 0
    agree: int = 0
    labels: set[str] = field(default_factory=set)
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)

    def bound(self, label: str) -> str:
        if label in self.labels:
            return label
        if len(self.labels) < MAX_LABELS:
            self.labels.add(label)
            return label
        return OTHER


class Comparison:
    """One alias's shadow comparison in this process (see the module for what is measured)."""

    def __init__(self, policy: AliasPolicy, *, primary_counts: tuple[float, float] = (0.0, 0.0)) -> None:
        assert policy.shadow is not None
        self.model = policy.model
        self.alias = policy.alias
        self.primary = policy.version
        self.shadow = policy.shadow
        self.since = policy.shadow_since or 0.0
        self.sample = policy.shadow_sample
        self.calls = {"ok": 0, "error": 0, "timeout": 0, "busy": 0}
        self.pairs = 0
        self.pairs_agree = 0
        self.pairs_labelled = 0
        self.paths_dropped = 0
        self.numeric: dict[str, _Numeric] = {}
        self.categorical: dict[str, _Categorical] = {}
        self.primary_latency: deque[float] = deque(maxlen=SAMPLE)
        self.shadow_latency: deque[float] = deque(maxlen=SAMPLE)
        #: the primary version's (answers, server-side errors) counters when the comparison began
        self.primary_start = primary_counts
        self.primary_now = primary_counts
        self.dirty = False

    def matches(self, policy: AliasPolicy) -> bool:
        return (
            policy.shadow == self.shadow
            and policy.version == self.primary
            and (policy.shadow_since or 0.0) == self.since
        )

    def outcome(self, outcome: str) -> None:
        self.calls[outcome] += 1
        self.dirty = True

    def record(self, primary: Any, shadow: Any, primary_s: float, shadow_s: float) -> None:
        """One successful pair: both outputs compared, both latencies kept."""
        self.calls["ok"] += 1
        self.pairs += 1
        self.dirty = True
        self.primary_latency.append(primary_s)
        self.shadow_latency.append(shadow_s)
        numeric, categorical = compare_outputs(primary, shadow)
        for path, p, s in numeric:
            stats = self.numeric.get(path)
            if stats is None:
                if len(self.numeric) + len(self.categorical) >= MAX_PATHS:
                    self.paths_dropped += 1
                    continue
                stats = self.numeric[path] = _Numeric()
            stats.pairs += 1
            if not _is_number(s) or not math.isfinite(float(s)):
                stats.mismatched += 1
                continue
            delta = abs(float(s) - p)
            stats.abs.append(delta)
            if p == 0.0:
                stats.rel_undefined += 1
            else:
                stats.rel.append(delta / abs(p))
        if categorical:
            agreed = True
            for path, p_label, s_label in categorical:
                cat = self.categorical.get(path)
                if cat is None:
                    if len(self.numeric) + len(self.categorical) >= MAX_PATHS:
                        self.paths_dropped += 1
                        continue
                    cat = self.categorical[path] = _Categorical()
                cat.pairs += 1
                same = p_label == s_label
                if same:
                    cat.agree += 1
                else:
                    agreed = False
                cell = (cat.bound(p_label), cat.bound(s_label))
                cat.confusion[cell] = cat.confusion.get(cell, 0) + 1
            self.pairs_labelled += 1
            self.pairs_agree += agreed

    def to_data(self) -> dict[str, Any]:
        """This process's figures as stored in ``shadow_stats.data`` (merged by :func:`summarize`)."""
        return {
            "format": FORMAT,
            "primary": self.primary,
            "shadow": self.shadow,
            "sample": self.sample,
            "calls": dict(self.calls),
            "pairs": self.pairs,
            "pairs_labelled": self.pairs_labelled,
            "pairs_agree": self.pairs_agree,
            "paths_dropped": self.paths_dropped,
            "primary_answers": self.primary_now[0] - self.primary_start[0],
            "primary_errors": self.primary_now[1] - self.primary_start[1],
            "latency": {"primary": list(self.primary_latency), "shadow": list(self.shadow_latency)},
            "numeric": {
                path: {
                    "pairs": n.pairs,
                    "mismatched": n.mismatched,
                    "rel_undefined": n.rel_undefined,
                    "abs": list(n.abs),
                    "rel": list(n.rel),
                }
                for path, n in self.numeric.items()
            },
            "categorical": {
                path: {
                    "pairs": c.pairs,
                    "agree": c.agree,
                    "confusion": [[p, s, k] for (p, s), k in c.confusion.items()],
                }
                for path, c in self.categorical.items()
            },
        }

    def figures(self) -> dict[str, Any]:
        """This process's figures alone (the metrics' source)."""
        return summarize([self.to_data()])


# -- merging processes' figures ------------------------------------------------------------------


def _quantiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    array = np.asarray(values, dtype=np.float64)
    p50, p95 = np.quantile(array, [0.5, 0.95])
    return {"p50": float(p50), "p95": float(p95), "n": len(values)}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge processes' stored figures (:meth:`Comparison.to_data`) into the reported ones."""
    calls = {"ok": 0, "error": 0, "timeout": 0, "busy": 0}
    totals = {"pairs": 0, "pairs_labelled": 0, "pairs_agree": 0, "paths_dropped": 0}
    primary_answers = primary_errors = 0.0
    lat_p: list[float] = []
    lat_s: list[float] = []
    numeric: dict[str, dict[str, Any]] = {}
    categorical: dict[str, dict[str, Any]] = {}
    processes = 0
    for row in rows:
        processes += 1
        for k in calls:
            calls[k] += int(row.get("calls", {}).get(k, 0))
        for k in totals:
            totals[k] += int(row.get(k, 0))
        primary_answers += float(row.get("primary_answers", 0))
        primary_errors += float(row.get("primary_errors", 0))
        lat_p.extend(row.get("latency", {}).get("primary", ()))
        lat_s.extend(row.get("latency", {}).get("shadow", ()))
        for path, n in row.get("numeric", {}).items():
            into = numeric.setdefault(
                path, {"pairs": 0, "mismatched": 0, "rel_undefined": 0, "abs": [], "rel": []}
            )
            for k in ("pairs", "mismatched", "rel_undefined"):
                into[k] += int(n.get(k, 0))
            into["abs"].extend(n.get("abs", ()))
            into["rel"].extend(n.get("rel", ()))
        for path, c in row.get("categorical", {}).items():
            into = categorical.setdefault(path, {"pairs": 0, "agree": 0, "cells": {}})
            into["pairs"] += int(c.get("pairs", 0))
            into["agree"] += int(c.get("agree", 0))
            for p, s, k in c.get("confusion", ()):
                into["cells"][(p, s)] = into["cells"].get((p, s), 0) + int(k)
    outputs: dict[str, Any] = {}
    for path, n in sorted(numeric.items()):
        outputs[path] = {
            "kind": "numeric",
            "pairs": n["pairs"],
            "mismatched": n["mismatched"],
            "abs_delta": _quantiles(n["abs"]),
            "rel_delta": {**_quantiles(n["rel"]), "undefined": n["rel_undefined"]},
        }
    for path, c in sorted(categorical.items()):
        outputs[path] = {
            "kind": "categorical",
            "pairs": c["pairs"],
            "agree": c["agree"],
            "agreement": _ratio(c["agree"], c["pairs"]),
            "confusion": _confusion(c["cells"]),
        }
    attempted = calls["ok"] + calls["error"] + calls["timeout"]
    shadow_rate = _ratio(calls["error"] + calls["timeout"], attempted)
    primary_rate = _ratio(primary_errors, primary_answers + primary_errors)
    lp, ls = _quantiles(lat_p), _quantiles(lat_s)
    return {
        "processes": processes,
        "calls": calls,
        "pairs": totals["pairs"],
        "agreement": _ratio(totals["pairs_agree"], totals["pairs_labelled"]),
        "paths_dropped": totals["paths_dropped"],
        "outputs": outputs,
        "latency_s": {
            "primary": lp,
            "shadow": ls,
            "delta": {
                q: (ls[q] - lp[q]) if isinstance(ls[q], float) and isinstance(lp[q], float) else None  # type: ignore[operator]
                for q in ("p50", "p95")
            },
        },
        "errors": {
            "shadow_rate": shadow_rate,
            "primary_rate": primary_rate,
            "delta": shadow_rate - primary_rate
            if shadow_rate is not None and primary_rate is not None
            else shadow_rate,
            "shadow_failed": calls["error"] + calls["timeout"],
            "primary_answers": int(primary_answers),
            "primary_errors": int(primary_errors),
        },
    }


def _confusion(cells: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """primary label → shadow label → pairs, over the :data:`TOP_LABELS` most frequent labels
    (both sides counted) and ``other``."""
    weight: dict[str, int] = {}
    for (p, s), k in cells.items():
        weight[p] = weight.get(p, 0) + k
        weight[s] = weight.get(s, 0) + k
    top = {label for label, _ in sorted(weight.items(), key=lambda lw: (-lw[1], lw[0]))[:TOP_LABELS]}
    table: dict[str, dict[str, int]] = {}
    for (p, s), k in cells.items():
        row = table.setdefault(p if p in top else OTHER, {})
        col = s if s in top else OTHER
        row[col] = row.get(col, 0) + k
    return {p: dict(sorted(row.items())) for p, row in sorted(table.items())}
