"""Offer an answered model call to data capture (:mod:`mlgate.monitoring.capture`).

Every route that runs a model for a client — the edge's own (:meth:`mlgate.http.edge.Edge.serve`)
and FastAPI's batch and Open Inference Protocol routes — ends here once it has a 2xx answer, so
the sample is drawn and the record offered the same way everywhere: the request and answer
bodies (never a header), the exchange's model, version, route label, request id and key id.
Callers check ``capture.rate(model) > 0`` first, so with capture off a request pays one dict
lookup and nothing else. Capture never fails an answer: an error here is logged and forgotten.
"""

from __future__ import annotations

import logging
import os
import random

from mlgate.http.exchange import Exchange
from mlgate.http.wire import WireResponse
from mlgate.monitoring.capture import SHADOW_PAIR
from mlgate.monitoring.capture_format import event_id

__all__ = ["capture_answer", "capture_bodies"]

log = logging.getLogger("mlgate.http")

# The sampling draw: a generator seeded once per process (reseeded in a forked worker), not a
# system call per request. Samples need no cryptographic quality.
_draws = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _draws.seed(os.urandom(16)))


def capture_bodies(
    x: Exchange,
    rate: float,
    request_body: bytes,
    request_type: str,
    response_body: bytes,
    response_type: str,
    status: int = 200,
    route: str | None = None,
) -> bool:
    """Draw the sample for ``x`` at ``rate`` and offer it; True if it was queued. ``route`` is the
    route template when the exchange's label is not known yet (FastAPI labels it at its close)."""
    if x.model is None or (rate < 1.0 and _draws.random() >= rate):
        return False
    try:
        # A shadowed answer (mlgate.lifecycle.shadow): one context-variable read per captured
        # record; its shadow's record will share this record's event id.
        pair = SHADOW_PAIR.get()
        if pair is not None and pair.model != x.model:
            pair = None
        eid = event_id() if pair is not None else None
        queued = x.server.capture.offer(
            x.model,
            x.version,
            request_body,
            request_type,
            response_body,
            response_type,
            route=route or x.label,
            request_id=x.request_id,
            key_id=x.key_id,
            status=status,
            event_id=eid,
            extra=(("role", "primary"), ("shadowVersion", str(pair.shadow))) if pair is not None else (),
        )
        if queued and pair is not None:
            pair.event_id, pair.request_body, pair.request_type = eid, request_body, request_type
            pair.route, pair.request_id, pair.key_id = route or x.label, x.request_id, x.key_id
        return queued
    except Exception:  # capture is never a reason to fail an answer
        log.exception("capture: could not offer a record of %s", x.model)
        return False


def capture_answer(x: Exchange, response: WireResponse, rate: float, route: str | None = None) -> bool:
    """:func:`capture_bodies` for an edge route's answer."""
    return capture_bodies(
        x,
        rate,
        x.body,
        x.content_type,
        response.body,
        response.content_type.decode("latin-1"),
        response.status,
        route,
    )
