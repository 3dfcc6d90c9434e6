"""The structured access log: one JSON line per request, to stdout and a rotating file.

Lines are built with orjson, so user input (paths, ids) is always escaped inside one
JSON string and cannot forge a second line; the writer thread also escapes the three line
breaks JSON leaves raw (U+0085, U+2028, U+2029, which ``str.splitlines`` and some log
viewers honour). Writing happens on a background thread so the
event loop never blocks on a slow terminal or disk. The request path only appends the line
to a deque (no lock, no system call, no thread wake-up per line: on the hot path a
``logging.QueueHandler`` cost a ``LogRecord`` plus a futex wake-up per request); the writer
thread drains it every ``_FLUSH_S`` and hands each batch to the handlers as one record, so a
file write and a rotation check happen once per batch instead of once per line.
"""

from __future__ import annotations

import collections
import logging
import logging.handlers
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from mlgate.settings import LogSettings

__all__ = ["AccessLog", "AccessRecord", "utc_stamp"]

#: How often the writer thread drains pending lines (a line reaches the file within this).
_FLUSH_S = 0.05
#: Most lines handed to the handlers in one write.
_MAX_BATCH = 2048
_UNICODE_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


@dataclass(slots=True)
class AccessRecord:
    method: str
    url: str
    status: int
    duration_ms: float
    request_id: str
    model: str | None = None
    version: str | None = None
    key_id: str | None = None
    client: str | None = None
    reason: str | None = None


# The date of the last second stamped: (whole seconds, "YYYY-MM-DDTHH:MM:SS"). A line's date is
# this prefix plus its milliseconds, instead of a datetime.now(UTC).isoformat() per request.
_second: tuple[int, str] = (-1, "")


def utc_stamp(now: float) -> str:
    """``now`` (epoch seconds) as ``datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")``.

    >>> utc_stamp(0.25)
    '1970-01-01T00:00:00.250+00:00'
    """
    global _second
    whole = int(now)
    micros = round((now - whole) * 1e6)  # as datetime rounds a timestamp: to the microsecond
    if micros >= 1_000_000:
        whole += 1
        micros -= 1_000_000
    cached = _second
    if cached[0] != whole:
        cached = _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{micros // 1000:03d}+00:00"


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class AccessLog:
    """Owns the access log's handlers and writer thread; ``start`` before serving, ``stop`` to flush."""

    def __init__(self, settings: LogSettings) -> None:
        self._settings = settings
        self._pending: collections.deque[bytes] = collections.deque()
        self._handlers: list[logging.Handler] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._running = False

    def start(self) -> None:
        handlers: list[logging.Handler] = []
        if self._settings.access_stdout:
            handlers.append(logging.StreamHandler(sys.stdout))
        if self._settings.access_file is not None:
            self._settings.access_file.parent.mkdir(parents=True, exist_ok=True)
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    self._settings.access_file,
                    maxBytes=self._settings.max_bytes,
                    backupCount=self._settings.backup_count,
                    encoding="utf-8",
                )
            )
        for h in handlers:
            h.setFormatter(_Raw())
        self._handlers = handlers
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="mlgate-access-log", daemon=True)
        self._running = True
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._running = False
            self._stopping.set()
            self._thread.join()
            self._thread = None
            self._drain()  # anything appended while the thread was finishing
            for h in self._handlers:
                h.close()
        self._handlers = []

    def write(self, record: AccessRecord) -> None:
        self.line(
            record.method,
            record.url,
            record.status,
            record.duration_ms,
            record.request_id,
            record.model,
            record.version,
            record.key_id,
            record.client,
            record.reason,
        )

    def line(
        self,
        method: str,
        url: str,
        status: int,
        duration_ms: float,
        request_id: str,
        model: str | None,
        version: str | None,
        key_id: str | None,
        client: str | None,
        reason: str | None = None,
    ) -> None:
        """:meth:`write` without building an :class:`AccessRecord` (the edge's per-request call).

        ``reason`` (why the edge refused or ended the request: ``header_timeout``,
        ``client_closed``…) is written only when there is one."""
        if not self._running:
            return
        line = {
            "date": utc_stamp(time.time()),
            "method": method,
            "url": url,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": request_id,
            "model": model,
            "version": version,
            "key_id": key_id,
            "client": client,
        }
        if reason is not None:
            line["reason"] = reason
        self._pending.append(orjson.dumps(line))  # deque.append: atomic, thread-safe

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(_FLUSH_S):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        pending = self._pending
        while pending:
            batch: list[bytes] = []
            try:
                while len(batch) < _MAX_BATCH:
                    batch.append(pending.popleft())
            except IndexError:
                pass
            text = b"\n".join(batch).decode()
            if not text.isascii():
                text = text.translate(_UNICODE_LINE_BREAKS)
            record = logging.LogRecord("mlgate.access", logging.INFO, __file__, 0, text, None, None)
            for h in self._handlers:
                h.handle(record)
