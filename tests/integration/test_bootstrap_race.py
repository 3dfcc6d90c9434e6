"""Replicas starting together on one empty PostgreSQL database (compose, Kubernetes) each run
the bootstrap: exactly one admin key results and no replica fails (READ COMMITTED alone let two
check-then-insert transactions both insert, and the loser's start died on the unique key)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mlgate.access.keys import KeyStore, NewKey
from mlgate.repository import Repository
from tests.services import postgres_schema

pytestmark = pytest.mark.integration

REPLICAS = 8


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema("boot") as (url, _schema):
        yield url


def _race(url: str, configured: str | None) -> tuple[list[NewKey | None], list[BaseException], int]:
    """Every replica's ensure_admin at once, each on its own engine (its own connections)."""
    Repository.open(url).close()  # migrated once, as `mlgate serve` does before its workers
    stores = [KeyStore(Repository.open(url, migrate=False).engine) for _ in range(REPLICAS)]
    barrier = threading.Barrier(REPLICAS)
    results: list[NewKey | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def replica(keys: KeyStore) -> None:
        barrier.wait()
        try:
            created = keys.ensure_admin(configured=configured)
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(created)

    threads = [threading.Thread(target=replica, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    with stores[0]._engine.connect() as conn:
        admins = conn.execute(sa.select(sa.func.count()).select_from(sa.table("api_keys"))).scalar_one()
    for s in stores:
        s._engine.dispose()
    return results, errors, int(admins)


@pytest.mark.parametrize("configured", ["mlg_bootrace_" + "k" * 30, None], ids=["configured", "generated"])
def test_replicas_starting_together_leave_exactly_one_admin_key(pg_url: str, configured: str | None) -> None:
    results, errors, admins = _race(pg_url, configured)
    assert errors == []
    assert len(results) == REPLICAS
    assert sum(r is not None for r in results) == 1  # one replica created it, the others found it
    assert admins == 1
