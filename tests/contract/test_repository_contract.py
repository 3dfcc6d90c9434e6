"""The Repository contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text

from mlgate.db import create_engine_for, upgrade
from mlgate.db.migrate import HEAD_REVISION
from mlgate.errors import Conflict, InvalidInput, ModelNotFound, NotFound, VersionNotFound
from mlgate.repository import Repository
from mlgate.types import Manifest

TABLES = {
    "models",
    "model_versions",
    "aliases",
    "api_keys",
    "registry_state",
    "alembic_version",
    "users",
    "usage_plans",
    "key_plans",
    "usage_daily",
    "limiter_buckets",
    "limiter_counters",
    "workflows",
    "executions",
    "execution_events",
    "monitor_models",
    "monitor_leases",
    "telemetry_snapshots",
    "alert_states",
    "alert_events",
    "drift_latest",
    "alias_policies",
    "canary_assignments",
    "model_events",
    "train_runs",
    "retrain_policies",
    "shadow_stats",
    "stats_traffic",
    "stats_usage",
    "dashboard_sessions",
}


def manifest(digest: str = "a", **kwargs: Any) -> Manifest:
    return Manifest(runtime="sklearn", artifact="model.skops", files={"model.skops": digest * 64}, **kwargs)


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    yield repository
    repository.close()


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)

    def start(i: int) -> Any:
        barrier.wait(timeout=30)
        return target(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [future.result() for future in [pool.submit(start, i) for i in range(count)]]


def assert_recent_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=1)


# -- models -------------------------------------------------------------------------------


def test_create_and_get_model(repo: Repository) -> None:
    created = repo.create_model("iris", description="flowers")
    assert (created.name, created.description) == ("iris", "flowers")
    got = repo.get_model("iris")
    assert (got.name, got.description, got.aliases, got.latest_version) == ("iris", "flowers", {}, None)
    assert_recent_utc(got.created_at)


def test_create_model_twice_conflicts(repo: Repository) -> None:
    repo.create_model("iris")
    with pytest.raises(Conflict):
        repo.create_model("iris")


@pytest.mark.parametrize("name", ["", "Iris", "1iris", "iris model", "a" * 65, "iris/1", "_x", "123"])
def test_create_model_rejects_bad_names(repo: Repository, name: str) -> None:
    with pytest.raises(InvalidInput):
        repo.create_model(name)
    assert repo.list_models() == []


def test_ensure_model_is_idempotent(repo: Repository) -> None:
    first = repo.ensure_model("iris", description="one")
    again = repo.ensure_model("iris", description="two")
    assert again.description == "one"
    assert again.created_at == first.created_at
    assert [m.name for m in repo.list_models()] == ["iris"]


def test_get_missing_model(repo: Repository) -> None:
    with pytest.raises(ModelNotFound):
        repo.get_model("nope")


def test_list_models_sorted_with_aliases_and_latest(repo: Repository) -> None:
    for name in ("zeta", "alpha", "mid"):
        repo.create_model(name)
    repo.add_version("alpha", manifest())
    repo.add_version("alpha", manifest("b"))
    repo.set_alias("alpha", "production", 1)
    repo.set_alias("alpha", "canary", 2)
    listed = repo.list_models()
    assert [m.name for m in listed] == ["alpha", "mid", "zeta"]
    assert dict(listed[0].aliases) == {"canary": 2, "production": 1}
    assert listed[0].latest_version == 2
    assert (dict(listed[1].aliases), listed[1].latest_version) == ({}, None)
    assert dict(repo.get_model("alpha").aliases) == {"canary": 2, "production": 1}


# -- versions -----------------------------------------------------------------------------


def test_add_version_numbers_and_round_trips(repo: Repository) -> None:
    repo.create_model("iris")
    full = manifest(description="v1", params={"labels": ["a", "b"]}, metrics={"f1": 0.9}, trusted=True)
    first = repo.add_version("iris", full)
    second = repo.add_version("iris", manifest("b"), location="s3://bucket/iris.skops")
    assert (first.version, second.version) == (1, 2)
    got = repo.get_version("iris", 1)
    assert got.manifest == full
    assert (got.model, got.location) == ("iris", "")
    assert_recent_utc(got.created_at)
    assert repo.get_version("iris", 2).location == "s3://bucket/iris.skops"
    assert [v.version for v in repo.list_versions("iris")] == [1, 2]


def test_version_numbers_are_per_model(repo: Repository) -> None:
    repo.create_model("a")
    repo.create_model("b")
    assert repo.add_version("a", manifest()).version == 1
    assert repo.add_version("b", manifest()).version == 1
    assert repo.add_version("a", manifest()).version == 2


def test_add_version_to_missing_model(repo: Repository) -> None:
    with pytest.raises(ModelNotFound):
        repo.add_version("nope", manifest())


def test_version_lookup_errors(repo: Repository) -> None:
    repo.create_model("iris")
    with pytest.raises(VersionNotFound):
        repo.get_version("iris", 1)
    with pytest.raises(ModelNotFound):
        repo.get_version("nope", 1)
    with pytest.raises(ModelNotFound):
        repo.list_versions("nope")
    assert repo.list_versions("iris") == []


def test_find_version(repo: Repository) -> None:
    repo.create_model("iris")
    repo.add_version("iris", manifest("a"))
    repo.add_version("iris", manifest("b"))
    repo.add_version("iris", manifest("a"), location="s3://bucket/k")
    files_a = {"model.skops": "a" * 64}
    found = repo.find_version("iris", files_a)
    assert found is not None
    assert found.version == 1
    remote = repo.find_version("iris", files_a, location="s3://bucket/k")
    assert remote is not None
    assert remote.version == 3
    assert repo.find_version("iris", {"model.skops": "c" * 64}) is None
    assert repo.find_version("iris", {**files_a, "extra.json": "d" * 64}) is None
    assert repo.find_version("iris", {}) is None
    assert repo.find_version("nope", files_a) is None


# -- aliases and resolve ------------------------------------------------------------------


def test_set_move_and_delete_alias(repo: Repository) -> None:
    repo.create_model("iris")
    repo.add_version("iris", manifest())
    repo.add_version("iris", manifest())
    repo.set_alias("iris", "production", 1)
    assert repo.resolve("iris", "production").version == 1
    repo.set_alias("iris", "production", 2)
    assert repo.resolve("iris", "production").version == 2
    assert dict(repo.get_model("iris").aliases) == {"production": 2}
    repo.delete_alias("iris", "production")
    assert dict(repo.get_model("iris").aliases) == {}
    with pytest.raises(NotFound):
        repo.delete_alias("iris", "production")
    with pytest.raises(ModelNotFound):
        repo.delete_alias("nope", "production")


@pytest.mark.parametrize("alias", ["123", "7", "Prod", "", "a b", "x" * 65])
def test_set_alias_rejects_bad_alias(repo: Repository, alias: str) -> None:
    repo.create_model("iris")
    repo.add_version("iris", manifest())
    with pytest.raises(InvalidInput):
        repo.set_alias("iris", alias, 1)


def test_set_alias_to_missing_version_or_model(repo: Repository) -> None:
    repo.create_model("iris")
    repo.add_version("iris", manifest())
    with pytest.raises(VersionNotFound):
        repo.set_alias("iris", "production", 2)
    with pytest.raises(ModelNotFound):
        repo.set_alias("nope", "production", 1)
    assert dict(repo.get_model("iris").aliases) == {}


def test_resolve(repo: Repository) -> None:
    repo.create_model("iris")
    for digest in "abc":
        repo.add_version("iris", manifest(digest))
    assert repo.resolve("iris").version == 3  # no production alias: latest
    assert repo.resolve("iris", 2).version == 2
    assert repo.resolve("iris", "1").version == 1
    repo.set_alias("iris", "production", 2)
    repo.set_alias("iris", "canary", 3)
    assert repo.resolve("iris").version == 2
    assert repo.resolve("iris", None).version == 2
    assert repo.resolve("iris", "canary").version == 3
    assert repo.resolve("iris", "canary").manifest.files == {"model.skops": "c" * 64}


def test_resolve_errors(repo: Repository) -> None:
    with pytest.raises(ModelNotFound):
        repo.resolve("nope")
    repo.create_model("iris")
    with pytest.raises(VersionNotFound):
        repo.resolve("iris")
    repo.add_version("iris", manifest())
    with pytest.raises(VersionNotFound):
        repo.resolve("iris", 9)
    with pytest.raises(VersionNotFound):
        repo.resolve("iris", "9")
    with pytest.raises(VersionNotFound, match="staging"):
        repo.resolve("iris", "staging")


# -- change detection and multi-process behaviour -----------------------------------------


def test_delete_version_refused_while_aliased_and_releases_unreferenced_digests(repo: Repository) -> None:
    repo.create_model("m")
    repo.create_model("n")
    repo.add_version("m", manifest("a"))
    repo.add_version("m", manifest("b"))
    repo.add_version("m", manifest("c"))
    repo.add_version("n", manifest("c"))  # shares m v3's file
    repo.add_version("n", manifest("d"), location="s3://bucket/models")  # not content-addressed
    repo.set_alias("m", "production", 1)
    released: list[set[str]] = []
    with pytest.raises(Conflict) as refused:
        repo.delete_version("m", 1, release=released.append)
    assert refused.value.details["aliases"] == ["production"]
    assert repo.delete_version("m", 2, release=released.append).version == 2
    assert repo.delete_version("m", 3, release=released.append).version == 3
    assert released == [{"b" * 64}]  # "c" is still n's
    assert [v.version for v in repo.list_versions("m")] == [1]
    with pytest.raises(VersionNotFound):
        repo.delete_version("m", 2)
    with pytest.raises(ModelNotFound):
        repo.delete_version("nope", 1)
    assert repo.get_model("m").latest_version == 1
    assert repo.add_version("m", manifest("e")).version == 2  # numbering goes on from the latest


def test_delete_model_removes_aliases_and_versions(repo: Repository) -> None:
    repo.create_model("m")
    repo.add_version("m", manifest("a"))
    repo.add_version("m", manifest("b"))
    repo.set_alias("m", "production", 2)
    released: list[set[str]] = []
    assert [v.version for v in repo.delete_model("m", release=released.append)] == [1, 2]
    assert released == [{"a" * 64, "b" * 64}]
    with pytest.raises(ModelNotFound):
        repo.get_model("m")
    with pytest.raises(ModelNotFound):
        repo.delete_model("m")
    repo.create_model("m")  # the name is free again
    assert repo.add_version("m", manifest("a")).version == 1


def test_generation_bumps_on_every_change(repo: Repository) -> None:
    start = repo.generation()
    repo.create_model("iris")
    after_model = repo.generation()
    assert after_model > start
    repo.add_version("iris", manifest())
    after_version = repo.generation()
    assert after_version > after_model
    repo.set_alias("iris", "production", 1)
    after_alias = repo.generation()
    assert after_alias > after_version
    repo.delete_alias("iris", "production")
    after_delete = repo.generation()
    assert after_delete > after_alias
    # Reads and failed writes leave it alone.
    repo.resolve("iris")
    repo.list_models()
    repo.ensure_model("iris")
    with pytest.raises(NotFound):
        repo.delete_alias("iris", "production")
    with pytest.raises(Conflict):
        repo.create_model("iris")
    assert repo.generation() == after_delete


def test_alias_move_is_visible_to_another_repository(repo: Repository, database_url: str) -> None:
    repo.create_model("iris")
    repo.add_version("iris", manifest("a"))
    repo.add_version("iris", manifest("b"))
    repo.set_alias("iris", "production", 1)
    other = Repository.open(database_url)
    try:
        assert other.resolve("iris").version == 1
        seen = other.generation()
        repo.set_alias("iris", "production", 2)
        assert other.generation() > seen
        assert other.resolve("iris").version == 2
        assert other.get_version("iris", 2).manifest.files == {"model.skops": "b" * 64}
    finally:
        other.close()


def test_concurrent_add_version_gets_distinct_consecutive_numbers(
    repo: Repository, database_url: str
) -> None:
    repo.create_model("iris")
    per_thread = 3
    repos = [Repository.open(database_url, migrate=False) for _ in range(8)]
    try:
        results = run_threads(
            8, lambda i: [repos[i].add_version("iris", manifest()).version for _ in range(per_thread)]
        )
    finally:
        for other in repos:
            other.close()
    numbers = sorted(n for batch in results for n in batch)
    assert numbers == list(range(1, 8 * per_thread + 1))
    assert [v.version for v in repo.list_versions("iris")] == numbers


def test_concurrent_add_version_on_one_shared_repository(repo: Repository) -> None:
    repo.create_model("iris")
    numbers = run_threads(8, lambda _: repo.add_version("iris", manifest()).version)
    assert sorted(numbers) == list(range(1, 9))


def test_concurrent_read_then_write(repo: Repository) -> None:
    """Writers that first read (resolve, then set_alias) never hit 'database is locked'."""
    repo.create_model("iris")
    for _ in range(8):
        repo.add_version("iris", manifest())

    def flip(i: int) -> None:
        for _ in range(3):
            current = repo.resolve("iris")
            repo.set_alias("iris", "production", i + 1)
            assert current.version >= 1

    run_threads(8, flip)
    assert 1 <= repo.resolve("iris").version <= 8


# -- migrations ---------------------------------------------------------------------------


def table_names(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_migration_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    assert table_names(database_url) == TABLES
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            assert revisions == [HEAD_REVISION]
            assert conn.execute(text("SELECT id, generation FROM registry_state")).all() == [(1, 0)]
    finally:
        engine.dispose()


def test_concurrent_migrations(database_url: str) -> None:
    run_threads(2, lambda _: upgrade(database_url))
    assert table_names(database_url) == TABLES
    repo = Repository.open(database_url)
    try:
        assert repo.generation() == 0
        repo.create_model("iris")
        assert repo.add_version("iris", manifest()).version == 1
    finally:
        repo.close()


def test_open_without_migrate_does_not_touch_schema(database_url: str) -> None:
    Repository.open(database_url, migrate=False).close()
    assert table_names(database_url) == set()


def test_0004_keeps_existing_admin_keys_unmetered_explicitly_and_scopes_names_by_owner(
    database_url: str,
) -> None:
    """Upgrading a 0003 database: admin keys without a plan get the explicit ``unmetered`` one
    (nothing changes for them), user keys stay on the default plan, lineage and units are
    filled, execution names become unique per owner; and the downgrade goes back."""
    from alembic import command

    from mlgate.db.migrate import alembic_config

    upgrade(database_url, revision="0003")
    engine = create_engine_for(database_url)
    try:
        with engine.begin() as conn:
            for key_id, role in (("a0000001", "admin"), ("u0000001", "user")):
                conn.execute(
                    text(
                        "INSERT INTO api_keys (id, prefix, key_hash, name, role, created_at, disabled) "
                        "VALUES (:id, :id, 'h', 'k', :role, CURRENT_TIMESTAMP, false)"
                    ),
                    {"id": key_id, "role": role},
                )
            conn.execute(
                text(
                    "INSERT INTO workflows (name, definition, description, revision, created_at, updated_at) "
                    "VALUES ('w', '{}', '', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO executions (id, workflow, name, revision, status, input, owner, started_at) "
                    "VALUES ('e0', 'w', 'nightly', 1, 'SUCCEEDED', '{}', 'ana', CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO execution_events (execution_id, seq, type, timestamp, details) "
                    "VALUES ('e0', 1, 'ExecutionStarted', CURRENT_TIMESTAMP, '{}')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO usage_daily (key_id, day, scope, requests, throttled, errors) "
                    "VALUES ('u0000001', '2026-12-01', 'm', 7, 0, 1)"
                )
            )
        upgrade(database_url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT key_id, scope, plan FROM key_plans")).all() == [
                ("a0000001", "*", "unmetered")
            ]
            assert dict(conn.execute(text("SELECT id, lineage FROM api_keys")).all()) == {
                "a0000001": "a0000001",
                "u0000001": "u0000001",
            }
            assert conn.execute(text("SELECT requests, units FROM usage_daily")).all() == [(7, 7)]
        with engine.begin() as conn:  # the name ana used, now another owner's too
            conn.execute(
                text(
                    "INSERT INTO executions (id, workflow, name, revision, status, input, owner, started_at) "
                    "VALUES ('e1', 'w', 'nightly', 1, 'SUCCEEDED', '{}', 'eve', CURRENT_TIMESTAMP)"
                )
            )
        with pytest.raises(sa_exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO executions (id, workflow, name, revision, status, input, owner, started_at) "
                    "VALUES ('e9', 'w', 'nightly', 1, 'SUCCEEDED', '{}', 'ana', CURRENT_TIMESTAMP)"
                )
            )
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM executions WHERE owner = 'eve'"))  # the old rule holds again
            command.downgrade(alembic_config(conn), "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0003"]
            assert conn.execute(text("SELECT count(*) FROM execution_events")).scalar_one() == 1
    finally:
        engine.dispose()
