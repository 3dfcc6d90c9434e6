"""Alias traffic policies on every registry backend: splits, sticky balanced assignment,
the guard's once-only rollback, shadows, what a move or a delete does to them, the history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from mlgate.errors import Conflict, InvalidInput, NotFound
from mlgate.history import model_history
from mlgate.policies import CanaryGuard, Policies, ShadowOptions, parse_weights
from mlgate.repository import Repository
from tests.contract.test_repository_contract import manifest, run_threads


@pytest.fixture
def repo(database_url: str) -> Iterator[Repository]:
    repository = Repository.open(database_url)
    repository.create_model("m")
    for digest in "abcd":
        repository.add_version("m", manifest(digest))
    repository.set_alias("m", "production", 1)
    yield repository
    repository.close()


def test_weights_are_checked() -> None:
    assert parse_weights({"3": 90, "4": 10}) == {3: 90, 4: 10}
    assert parse_weights("3=90,4=10") == {3: 90, 4: 10}
    for bad in (
        {"3": 90},
        {"3": 90, "4": 20},
        {"x": 100},
        {"3": -1, "4": 101},
        {"3": 50.5, "4": 49.5},
        {},
        [1],
    ):
        with pytest.raises(InvalidInput):
            parse_weights(bad)
    with pytest.raises(InvalidInput):
        parse_weights({str(v): 100 if v == 1 else 0 for v in range(1, 8)})  # too many versions
    with pytest.raises(InvalidInput):
        CanaryGuard.parse({"min_requests": 0})
    with pytest.raises(InvalidInput):
        CanaryGuard.parse({"bogus": 1})
    assert CanaryGuard.parse({"max_p95_ratio": 2}).max_p95_ratio == 2.0


def test_a_split_keeps_the_stable_version_and_deals_callers_by_weight(repo: Repository) -> None:
    policies = Policies(repo.engine)
    policy = policies.set_split("m", "production", {1: 90, 2: 10}, None, actor="key:admin")
    assert policy.version == 1 and policy.split == ((2, 10), (1, 90)) and policy.splitting
    seen = Counter(policies.assign(policy, f"key-{i}") for i in range(200))
    assert seen == {1: 180, 2: 20}  # balanced at first sight, not by a hash's luck
    assert all(policies.assign(policy, f"key-{i}") == policies.assign(policy, f"key-{i}") for i in range(50))
    # The largest weight is the stable one; a tie keeps the alias's current version.
    tied = policies.set_split("m", "production", {2: 50, 1: 50}, None, actor=None)
    assert tied.version == 1
    moved = policies.set_split("m", "production", {3: 70, 1: 30}, None, actor=None)
    assert moved.version == 3 and repo.resolve("m", "production").version == 3
    with pytest.raises(NotFound):
        policies.set_split("m", "production", {1: 50, 9: 50}, None, actor=None)
    with pytest.raises(NotFound):
        policies.set_split("m", "nope", {1: 50, 2: 50}, None, actor=None)


def test_assignment_under_concurrency_stays_sticky(repo: Repository) -> None:
    policies = Policies(repo.engine)
    policy = policies.set_split("m", "production", {1: 50, 2: 50}, None, actor=None)
    first = run_threads(8, lambda i: policies.assign(policy, "same-caller"))
    assert len(set(first)) == 1
    assert policies.assign(policy, "same-caller") == first[0]


def test_the_guard_rolls_back_once_and_only_the_split_it_judged(repo: Repository) -> None:
    policies = Policies(repo.engine)
    policy = policies.set_split("m", "production", {1: 80, 2: 20}, CanaryGuard(min_requests=5), actor=None)
    assert policy.split_since is not None
    done = run_threads(
        4, lambda i: policies.rollback("m", "production", 2, policy.split_since, {"reason": "x"})
    )
    assert sorted(done) == [False, False, False, True]
    after = policies.get("m", "production")
    assert after is not None and after.weight(2) == 0 and after.weight(1) == 100 and not after.splitting
    # A later split is not rolled back by a breach judged on the earlier one.
    again = policies.set_split("m", "production", {1: 80, 2: 20}, None, actor=None)
    assert not policies.rollback("m", "production", 2, policy.split_since, {})
    assert again.weight(2) == 20
    kinds = [e["kind"] for e in model_history(repo.engine, "m")]
    assert kinds == ["split", "rollback", "split"]
    rollback = model_history(repo.engine, "m", kind="rollback")[0]
    assert rollback["actor"] == "guard" and rollback["detail"]["reason"] == "x"


def test_moving_or_deleting_the_alias_ends_its_policy(repo: Repository) -> None:
    policies = Policies(repo.engine)
    policies.set_split("m", "production", {1: 90, 2: 10}, None, actor=None)
    policies.set_shadow(
        "m", "production", 3, 0.5, ShadowOptions(timeout_s=1.0, max_concurrency=2), actor=None
    )
    with pytest.raises(Conflict):
        repo.delete_version("m", 2)  # a canary
    with pytest.raises(Conflict):
        repo.delete_version("m", 3)  # a shadow
    repo.set_alias("m", "production", 2)
    policy = policies.get("m", "production")
    assert policy is not None and policy.version == 2 and policy.split == () and policy.shadow == 3
    repo.set_alias("m", "production", 3)  # the shadow's version now answers: no shadow of itself
    policy = policies.get("m", "production")
    assert policy is not None and policy.shadow is None
    policies.set_shadow("m", "production", 4, 1.0, ShadowOptions(), actor=None)
    repo.delete_alias("m", "production")
    assert policies.get("m", "production") is None
    repo.delete_version("m", 4)  # no longer anyone's shadow


def test_a_shadow_is_another_version_with_a_sample(repo: Repository) -> None:
    policies = Policies(repo.engine)
    with pytest.raises(InvalidInput):
        policies.set_shadow("m", "production", 1, 1.0, ShadowOptions(), actor=None)  # the alias's own
    for sample in (0, 1.5, -1):
        with pytest.raises(InvalidInput):
            policies.set_shadow("m", "production", 2, sample, ShadowOptions(), actor=None)
    with pytest.raises(InvalidInput):
        ShadowOptions.parse(timeout_s=0)
    with pytest.raises(InvalidInput):
        ShadowOptions.parse(max_concurrency=10_000)
    policy = policies.set_shadow("m", "production", 2, 0.25, ShadowOptions.parse(2, 3), actor="key:a")
    assert policy.to_json()["shadow"]["version"] == 2 and policy.routed and not policy.splitting
    assert policies.for_model("m") == {"production": policy}
    cleared = policies.clear_shadow("m", "production", actor=None)
    assert cleared.shadow is None and policies.for_model("m") == {}
