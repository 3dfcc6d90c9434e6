"""AccessGeneration: one read per ttl, local changes at once, remote ones within the ttl."""

from __future__ import annotations

from pathlib import Path

from mlgate.access.generation import AccessGeneration
from mlgate.db.engine import write_tx
from mlgate.repository import Repository


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_change_is_seen_here_at_once_and_elsewhere_within_the_ttl(tmp_path: Path) -> None:
    engine = Repository.open(f"sqlite:///{tmp_path / 'g.db'}").engine
    ticker = Ticker()
    here, there = AccessGeneration(engine, monotonic=ticker), AccessGeneration(engine, monotonic=ticker)
    first_here, first_there = here.current(), there.current()
    with write_tx(engine) as conn:
        here.bump(conn)
    here.changed()
    assert here.current() != first_here  # at once
    assert there.current() == first_there  # cached: no read before the ttl
    ticker.now += 5.0
    assert there.current() != first_there
    assert there.current()[0] == here.current()[0]
