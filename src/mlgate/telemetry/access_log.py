"""The structured access log: one JSON line per request, to stdout and a rotating file.

Lines are built with orjson, so user input (paths, ids) is always escaped inside one
JSON string and cannot forge a second line. Writing happens on a background thread
(QueueHandler/QueueListener) so the event loop never blocks on a slow terminal or disk.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import orjson

from mlgate.settings import LogSettings

__all__ = ["AccessLog", "AccessRecord"]


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


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class AccessLog:
    """Owns the access logger's handlers; ``start`` before serving, ``stop`` to flush."""

    def __init__(self, settings: LogSettings) -> None:
        self._settings = settings
        self._queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._listener: logging.handlers.QueueListener | None = None
        self._logger = logging.getLogger(f"mlgate.access.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)

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
        self._logger.handlers = [logging.handlers.QueueHandler(self._queue)]
        self._listener = logging.handlers.QueueListener(self._queue, *handlers, respect_handler_level=False)
        self._listener.start()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            for h in self._listener.handlers:
                h.close()
            self._listener = None
        self._logger.handlers = []

    def write(self, record: AccessRecord) -> None:
        if self._listener is None:
            return
        line = {"date": datetime.now(UTC).isoformat(timespec="milliseconds"), **asdict(record)}
        self._logger.info("%s", orjson.dumps(line).decode())
