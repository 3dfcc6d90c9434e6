"""The stats tables' row layout, shared by the writer (:mod:`mlgate.telemetry.stats`) and the
reader (:mod:`mlgate.telemetry.stats_read`), and the tables they are handed (:class:`StatsTables`).

A traffic row in memory is a list of ``TRAFFIC_WIDTH`` numbers in the order of
``TRAFFIC_COUNTERS`` (the columns of ``stats_traffic``): requests, 4xx, 5xx, throttled, the
``N_LAT`` latency-histogram buckets from index ``LAT``, the latency sum (``SUM``), batch items
(``ITEMS``) and batches (``BATCHES``). A usage row counts ``USAGE_COUNTERS`` (``stats_usage``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "BATCHES",
    "ITEMS",
    "LAT",
    "N_LAT",
    "OTHER",
    "SUM",
    "TRAFFIC_COUNTERS",
    "TRAFFIC_PK",
    "TRAFFIC_WIDTH",
    "USAGE_COUNTERS",
    "USAGE_PK",
    "StatsTables",
]

#: The model, route and key of rows merged once a minute has ``max_keys`` distinct ones.
OTHER = "(other)"
LAT = 4  # index of lat_0 in a traffic row
N_LAT = 12
SUM = LAT + N_LAT  # latency_sum
ITEMS = SUM + 1  # batch_items
BATCHES = SUM + 2  # batches
TRAFFIC_WIDTH = BATCHES + 1
TRAFFIC_COUNTERS = (
    "requests",
    "errors_4xx",
    "errors_5xx",
    "throttled",
    *[f"lat_{i}" for i in range(N_LAT)],
    "latency_sum",
    "batch_items",
    "batches",
)
USAGE_COUNTERS = ("requests", "units", "throttled", "errors")
TRAFFIC_PK = ("resolution", "bucket", "model", "version", "route")
USAGE_PK = ("resolution", "bucket", "key_id", "model")


@dataclass(frozen=True, slots=True)
class StatsTables:
    """What the recorder and the reader need from the database layer (built by the server)."""

    traffic: sa.Table  # stats_traffic
    usage: sa.Table  # stats_usage
    keys: sa.Table  # api_keys: the owner of a key seen only throttled
    #: upper bounds of ``lat_0`` … ``lat_11`` (seconds; the last is +inf)
    bounds: tuple[float, ...]
    #: a writing transaction (``BEGIN IMMEDIATE`` on SQLite)
    write_tx: Callable[[Engine], AbstractContextManager[Connection]]
