"""Concurrency policies, pure: the group key of a run, the policy's validation, its place in
an action's YAML, and the result of a refused run (engine/concurrency.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from engine.concurrency import (
    MAX_KEY_CHARS,
    ConcurrencyPolicy,
    group_key,
    parameter_value,
    refusal,
    waiting_reason,
)
from engine.errors import PackError
from engine.packs import action_from_dict

ONE = ConcurrencyPolicy(limit=1)
BY_HOST = ConcurrencyPolicy(limit=2, parameters=("host", "env"))


def test_no_policy_no_group() -> None:
    assert group_key("ops.deploy", None, {"host": "a"}) is None


def test_without_grouping_parameters_every_run_of_the_action_is_one_group() -> None:
    assert group_key("ops.deploy", ONE, {"host": "a"}) == "ops.deploy"
    assert group_key("ops.deploy", ONE, {"host": "b"}) == "ops.deploy"
    assert group_key("ops.other", ONE, {}) == "ops.other"


def test_the_values_of_the_grouping_parameters_make_the_group() -> None:
    a = group_key("ops.deploy", BY_HOST, {"host": "a", "env": "prod", "tag": "1"})
    assert a == 'ops.deploy {"env":"prod","host":"a"}', "canonical JSON, keys sorted"
    assert group_key("ops.deploy", BY_HOST, {"env": "prod", "host": "a", "tag": "2"}) == a, (
        "other parameters and their order do not matter"
    )
    assert group_key("ops.deploy", BY_HOST, {"host": "b", "env": "prod"}) != a
    assert group_key("ops.restart", BY_HOST, {"host": "a", "env": "prod"}) != a
    assert group_key("ops.deploy", BY_HOST, {"host": 1, "env": "prod"}) != group_key(
        "ops.deploy", BY_HOST, {"host": "1", "env": "prod"}
    ), "a number and a string are different values"


def test_a_missing_value_is_null_and_dotted_paths_reach_into_objects() -> None:
    assert parameter_value({"target": {"region": "eu"}}, "target.region") == "eu"
    assert parameter_value({"target": {"region": "eu"}}, "target.zone") is None
    assert parameter_value({"target": "flat"}, "target.region") is None
    policy = ConcurrencyPolicy(limit=1, parameters=("target.region",))
    assert group_key("a.b", policy, {"target": {"region": "eu"}}) == 'a.b {"target.region":"eu"}'
    assert group_key("a.b", policy, {}) == 'a.b {"target.region":null}'


def test_a_long_or_secret_grouping_value_is_hashed() -> None:
    policy = ConcurrencyPolicy(limit=1, parameters=("blob",))
    long_a = group_key("a.b", policy, {"blob": "x" * 2000})
    long_b = group_key("a.b", policy, {"blob": "x" * 1999 + "y"})
    assert long_a is not None
    assert long_b is not None
    assert len(long_a) <= MAX_KEY_CHARS
    assert long_a.startswith("a.b sha256:")
    assert long_a != long_b
    secret = group_key("a.b", policy, {"blob": "hunter2"}, secret=frozenset({"blob"}))
    assert secret is not None
    assert "hunter2" not in secret
    assert secret == group_key("a.b", policy, {"blob": "hunter2"}, secret=frozenset({"blob"}))


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"limit": 1, "method": "drop"}, "method"),
        ({"limit": 1, "parameters": ["host", "host"]}, "parameters"),
        ({"limit": 1, "parameters": ["a..b"]}, "parameters"),
        ({"limit": 1, "burst": 2}, "burst"),
        ({}, "limit"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(given: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConcurrencyPolicy.model_validate(given)
    assert field in str(caught.value)


def test_attunes_name_of_the_limit_is_accepted() -> None:
    policy = ConcurrencyPolicy.model_validate({"threshold": 3, "method": "cancel"})
    assert policy == ConcurrencyPolicy(limit=3, method="cancel")


def test_an_action_yaml_declares_its_policy() -> None:
    data = {
        "name": "deploy",
        "runner_type": "builtin",
        "entry_point": "noop",
        "parameters": {"host": {"type": "string"}},
        "concurrency": {"limit": 2, "method": "cancel", "parameters": ["host"]},
    }
    spec = action_from_dict(data, "ops", None)
    assert spec.concurrency == ConcurrencyPolicy(limit=2, method="cancel", parameters=("host",))
    plain = action_from_dict(
        {"name": "x", "runner_type": "builtin", "entry_point": "noop"}, "o", None
    )
    assert plain.concurrency is None
    assert action_from_dict(
        {**data, "concurrency": {"limit": 1}}, "ops", None
    ).concurrency == ConcurrencyPolicy(limit=1, method="enqueue")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"limit": 1, "parameters": ["hots"]}, "concurrency.parameters: 'hots' is not a parameter"),
        ({"limit": -1}, "concurrency.limit"),
        ({"limit": 1, "method": "queue"}, "concurrency.method"),
    ],
)
def test_a_bad_policy_in_yaml_names_the_file_and_field(
    policy: dict[str, object], message: str
) -> None:
    data = {
        "name": "deploy",
        "runner_type": "builtin",
        "entry_point": "noop",
        "parameters": {"host": {"type": "string"}},
        "concurrency": policy,
    }
    with pytest.raises(PackError) as caught:
        action_from_dict(data, "ops", None, source="actions/deploy.yaml")
    assert caught.value.message.startswith("actions/deploy.yaml: ")
    assert message in caught.value.message


def test_a_refused_run_gets_attunes_result_naming_the_limit() -> None:
    now = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    result = refusal("ops.deploy", 2, 2, now)
    assert result == {
        "succeeded": False,
        "error": "Execution cancelled by policy: "
        "Concurrency limit exceeded: 2 running executions (limit: 2)",
        "message": "Policy violation: Concurrency limit exceeded: 2 running executions (limit: 2)",
        "action_ref": "ops.deploy",
        "cancelled_by": "execution_scheduler",
        "cancelled_at": "2026-11-30T00:00:00+00:00",
    }
    assert waiting_reason(2) == "waiting for a concurrency slot (2 running)"
