"""Reading captured data back: objects by hour partition, records in a time window, review
records, and the API's time-window parsing (part of :mod:`mlgate.monitoring.capture`).

Objects: ``capture/<model>/<version>/YYYY/MM/DD/HH/<time>-<pid>-<instance>-<seq>.jsonl`` (the
UTC hour of the inference time); workflow executions kept for review live in a namespace of
their own, ``review/<workflow>/YYYY/MM/DD/HH/…`` (so a model may be named ``review``). Readers
list only the hour (or day) prefixes of the window they are asked for.
"""

from __future__ import annotations

import itertools
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from mlgate.errors import InvalidInput, ObjectNotFound
from mlgate.monitoring.capture_format import iso_ms
from mlgate.store import ArtifactStore

__all__ = [
    "capture_prefix",
    "list_files",
    "parse_when",
    "partition_of",
    "read_page",
    "read_records",
    "read_review",
    "review_prefix",
]

log = logging.getLogger("mlgate.monitoring")

_ROOT = "capture"
#: The top-level prefix of review records: beside ``capture/``, not under it.
_REVIEW_ROOT = "review"
_WHEN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def capture_prefix(model: str, version: int | str | None) -> str:
    """``capture/<model>/<version>`` (version None: ``capture/<model>``), no trailing slash."""
    return f"{_ROOT}/{model}" if version is None else f"{_ROOT}/{model}/{version}"


def review_prefix(workflow: str) -> str:
    """``review/<workflow>``: executions kept for review (a namespace of their own, apart from
    models' ``capture/``), no trailing slash."""
    return f"{_REVIEW_ROOT}/{workflow}"


def _hour(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def partition_of(key: str) -> datetime | None:
    """The UTC hour of a capture object's partition (``…/YYYY/MM/DD/HH/<file>``)."""
    parts = key.split("/")
    if len(parts) < 6:
        return None
    try:
        y, m, d, h = (int(p) for p in parts[-5:-1])
        return datetime(y, m, d, h, tzinfo=UTC)
    except ValueError:
        return None


def _keys_between(
    store: ArtifactStore, root: str, since: datetime, until: datetime
) -> list[tuple[datetime, str]]:
    """``(hour, key)`` of the objects under ``root`` whose hour partition overlaps [since, until],
    oldest first. A short window lists each hour's prefix, a longer one each day's; only a very
    long one lists the whole root."""
    first, last = _hour(since), _hour(until)
    if last < first:
        return []
    hours = int((last - first).total_seconds() // 3600) + 1
    prefixes: list[str]
    if hours <= 48:
        prefixes = [f"{root}/{first + timedelta(hours=i):%Y/%m/%d/%H}/" for i in range(hours)]
    elif hours <= 62 * 24:
        days = (last.date() - first.date()).days + 1
        prefixes = [f"{root}/{first + timedelta(days=i):%Y/%m/%d}/" for i in range(days)]
    else:
        prefixes = [f"{root}/"]
    found: list[tuple[datetime, str]] = []
    for prefix in prefixes:
        for key in store.list(prefix):
            hour = partition_of(key)
            if hour is not None and first <= hour <= last and key.endswith(".jsonl"):
                found.append((hour, key))
    found.sort()
    return found


def _read_between(
    store: ArtifactStore,
    keys: list[tuple[datetime, str]],
    since: datetime,
    until: datetime,
    limit: int,
    max_bytes: int | None,
    *,
    newest: bool = False,
) -> tuple[list[dict[str, Any]], bool]:
    """Records of ``keys`` with an inference time in [since, until], in time order, at most
    ``limit`` (and about ``max_bytes`` of JSON) — the oldest ones, or the newest with ``newest``
    (hours are then read newest first, and reading stops once the limit is reached); True when
    more were left out."""
    lo, hi = iso_ms(since.timestamp()), iso_ms(until.timestamp())
    out: list[dict[str, Any]] = []
    used = 0
    hours = [list(group) for _, group in itertools.groupby(keys, key=lambda hk: hk[0])]
    for group in reversed(hours) if newest else hours:
        hour_records: list[tuple[str, dict[str, Any], int]] = []
        for _, key in group:
            try:
                raw = store.get_bytes(key)
            except Exception:  # deleted meanwhile (retention) or unreadable: skip it
                log.warning("capture: cannot read %s", key, exc_info=True)
                continue
            for line in raw.splitlines():
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                    stamp = record["eventMetadata"]["inferenceTime"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                if isinstance(stamp, str) and lo <= stamp <= hi:
                    hour_records.append((stamp, record, len(line)))
        hour_records.sort(key=lambda r: r[0])  # stable: one millisecond's records stay in order
        if newest:
            hour_records.reverse()
        for _, record, size in hour_records:
            if len(out) >= limit or (max_bytes is not None and used + size > max_bytes and out):
                return (out[::-1] if newest else out), True
            out.append(record)
            used += size
    return (out[::-1] if newest else out), False


def read_records(
    store: ArtifactStore,
    model: str,
    version: int | None,
    since: datetime,
    until: datetime,
    *,
    limit: int = 20_000,
) -> list[dict[str, Any]]:
    """The captured records of ``model`` (version None: every version) with an inference time in
    [since, until], oldest first; past ``limit``, the newest ``limit`` of them (a drift window
    wants the latest traffic). Reads only the hour partitions in between, newest first."""
    keys = _keys_for_model(store, model, version, since, until)
    records, _ = _read_between(store, keys, since, until, limit, None, newest=True)
    return records


def _keys_for_model(
    store: ArtifactStore, model: str, version: int | None, since: datetime, until: datetime
) -> list[tuple[datetime, str]]:
    if version is not None:
        return _keys_between(store, capture_prefix(model, version), since, until)
    # Every version: one listing of the model's prefix, filtered by version and hour partition.
    first, last = _hour(since), _hour(until)
    found: list[tuple[datetime, str]] = []
    for key in store.list(capture_prefix(model, None) + "/"):
        parts = key.split("/")
        hour = partition_of(key)
        if len(parts) == 8 and parts[2].isdigit() and hour is not None and first <= hour <= last:
            found.append((hour, key))
    found.sort()
    return found


def read_page(
    store: ArtifactStore,
    model: str,
    version: int | None,
    since: datetime,
    until: datetime,
    *,
    limit: int,
    max_bytes: int,
) -> tuple[list[dict[str, Any]], bool]:
    """:func:`read_records` bounded in bytes too, and whether more were left out (the API)."""
    keys = _keys_for_model(store, model, version, since, until)
    return _read_between(store, keys, since, until, limit, max_bytes)


def read_review(
    store: ArtifactStore, workflow: str, since: datetime, until: datetime, *, limit: int, max_bytes: int
) -> tuple[list[dict[str, Any]], bool]:
    """Review records of ``workflow`` in [since, until], oldest first (bounded)."""
    keys = _keys_between(store, review_prefix(workflow), since, until)
    return _read_between(store, keys, since, until, limit, max_bytes)


def list_files(
    store: ArtifactStore,
    model: str,
    version: int | None,
    since: datetime,
    until: datetime,
    *,
    limit: int = 1000,
) -> tuple[list[dict[str, Any]], bool]:
    """Capture objects of ``model`` in [since, until]'s hour partitions: key, size, hour."""
    keys = _keys_for_model(store, model, version, since, until)
    out: list[dict[str, Any]] = []
    for hour, key in keys[:limit]:
        try:
            size = store.size(key)
        except ObjectNotFound:  # deleted meanwhile (retention)
            continue
        parts = key.split("/")
        out.append(
            {"key": key, "version": parts[2], "size": size, "hour": hour.isoformat().replace("+00:00", "Z")}
        )
    return out, len(keys) > limit


def parse_when(value: str | None, *, default: datetime, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (UTC when it names no zone) or a time ago: ``30m``, ``1h``, ``2d``, ``1w``.
    :class:`InvalidInput` for anything else, and for a time outside the years 1 to 9999."""
    if value is None or not value.strip():
        return default
    now = now or datetime.now(UTC)
    shown = value if len(value) <= 64 else value[:64] + "…"
    try:
        match = _WHEN.match(value)
        if match:
            return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"bad time {shown!r}: give ISO-8601 (2026-12-03T08:00:00Z) or a time ago (30m, 1h, 2d)"
            ) from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):  # past year 9999 or before year 1 (or an infinite amount)
        raise InvalidInput(f"time {shown!r} is out of range") from None
