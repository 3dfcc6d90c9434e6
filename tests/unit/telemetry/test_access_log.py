"""The access log: one JSON line per request, dated as datetime would date it."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

from mlgate.settings import LogSettings
from mlgate.telemetry.access_log import AccessLog, AccessRecord, utc_stamp


def test_utc_stamp_is_datetimes_isoformat_to_the_millisecond() -> None:
    rng = random.Random(3)
    moments = [rng.uniform(0, 4e9) for _ in range(50_000)]
    moments += [0.0, 0.9995, 0.9999996, 59.9999999, 1_700_000_000.0004999, 1_700_000_000.9999999]
    for now in moments:
        assert utc_stamp(now) == datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"), now


def test_lines_are_json_with_every_field_and_escaped_input(tmp_path: Path) -> None:
    log = AccessLog(LogSettings(access_stdout=False, access_file=tmp_path / "access.log"))
    log.start()
    log.write(
        AccessRecord(method="POST", url="/prod", status=200, duration_ms=1.5, request_id="r1", key_id="k")
    )
    log.line("GET", '/x"\n\u2028y', 404, 0.25, "r2", None, None, None, "127.0.0.1")
    log.stop()
    raw = (tmp_path / "access.log").read_text().splitlines()
    assert len(raw) == 2  # the forged line breaks stayed inside one line
    first, second = (json.loads(line) for line in raw)
    assert set(first) == {
        "date",
        "method",
        "url",
        "status",
        "duration_ms",
        "request_id",
        "model",
        "version",
        "key_id",
        "client",
    }
    assert (first["status"], first["key_id"], second["url"], second["client"]) == (
        200,
        "k",
        '/x"\n\u2028y',
        "127.0.0.1",
    )
    datetime.fromisoformat(first["date"])
