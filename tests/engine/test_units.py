"""Pure unit tests: status machine, parameter schemas, pack loading, topic matching, settings.

No services, no event loop: everything here is a plain function of its input (settings read the
environment, which each test sets with ``monkeypatch``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from config import Settings, slack_enabled
from config.settings import DEFAULT_DATABASE_URL
from engine.broker import topic_matches
from engine.errors import InvalidParameters, PackError
from engine.packs import BUILTIN_PACKS_DIR, discover_packs, load_pack, runner_for
from engine.params import (
    REDACTED,
    coerce_value,
    normalize_schema,
    redact,
    secret_names,
    validate_parameters,
)
from engine.params import (
    flat_schema as flat_form,
)
from engine.status import PENDING, TERMINAL, ExecutionStatus, allowed_sources, can_transition

S = ExecutionStatus
REPO = Path(__file__).resolve().parents[2]
EXAMPLES_PACK = REPO / "packs" / "examples"
TEST_PACK = REPO / "tests" / "fixtures" / "packs" / "test_pack"


# -- engine.status --------------------------------------------------------------------------------


def test_statuses_are_lowercase_on_the_wire() -> None:
    assert [s.value for s in S] == [
        "requested",
        "scheduling",
        "scheduled",
        "running",
        "completed",
        "failed",
        "canceling",
        "cancelled",
        "timeout",
        "abandoned",
    ]
    assert {s for s in S if s.is_terminal} == {
        S.COMPLETED,
        S.FAILED,
        S.CANCELLED,
        S.TIMEOUT,
        S.ABANDONED,
    }
    assert TERMINAL.isdisjoint(PENDING)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_status_has_no_way_out(terminal: ExecutionStatus) -> None:
    assert [t for t in S if can_transition(terminal, t)] == []


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        (S.REQUESTED, S.RUNNING, True),
        (S.SCHEDULED, S.RUNNING, True),
        (S.COMPLETED, S.RUNNING, False),
        (S.RUNNING, S.RUNNING, False),  # a second claim loses
        (S.RUNNING, S.COMPLETED, True),
        (S.CANCELING, S.COMPLETED, True),  # finished before the kill landed
        (S.REQUESTED, S.COMPLETED, False),  # never ran
        (S.REQUESTED, S.CANCELLED, True),  # cancel before hand-off
        (S.REQUESTED, S.CANCELING, False),
        (S.RUNNING, S.CANCELING, True),
        (S.CANCELING, S.CANCELLED, True),
        (S.RUNNING, S.TIMEOUT, True),
        (S.REQUESTED, S.TIMEOUT, False),
        (S.RUNNING, S.ABANDONED, True),
        (S.RUNNING, S.REQUESTED, False),
    ],
)
def test_transitions(current: ExecutionStatus, target: ExecutionStatus, allowed: bool) -> None:
    assert can_transition(current, target) is allowed


def test_nothing_goes_back_to_requested() -> None:
    assert allowed_sources(S.REQUESTED) == frozenset()


# -- engine.params --------------------------------------------------------------------------------

FLAT = {
    "count": {"type": "integer", "required": True, "description": "How many."},
    "flag": {"type": "boolean", "default": False},
    "items": {"type": "array", "items": {"type": "integer"}},
    "opts": {"type": "object"},
    "mode": {"type": "string", "enum": ["fast", "slow"], "default": "fast"},
    "ratio": {"type": "number"},
    "token": {"type": "string", "secret": True},
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "host": {"type": "string"},
        "port": {"type": "integer", "default": 22},
        "tags": {"type": "array"},
    },
    "required": ["host"],
}


@pytest.fixture(scope="module")
def flat_schema() -> dict[str, Any]:
    return normalize_schema(FLAT)


def test_flat_parameters_become_json_schema(flat_schema: dict[str, Any]) -> None:
    assert flat_schema["type"] == "object"
    assert flat_schema["required"] == ["count"]
    assert flat_schema["additionalProperties"] is False
    assert flat_schema["properties"]["count"] == {"type": "integer", "description": "How many."}
    assert flat_schema["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert "required" not in flat_schema["properties"]["count"]
    Draft202012Validator.check_schema(flat_schema)
    assert secret_names(flat_schema) == frozenset({"token"})


def test_json_schema_parameters_are_kept() -> None:
    schema = normalize_schema(JSON_SCHEMA)
    assert schema["properties"] == JSON_SCHEMA["properties"]
    assert schema["required"] == ["host"]
    assert schema["additionalProperties"] is False, "unknown parameters are refused by default"
    assert "additionalProperties" not in JSON_SCHEMA, "the input is not modified"
    open_schema = normalize_schema({**JSON_SCHEMA, "additionalProperties": True})
    assert validate_parameters(open_schema, {"host": "a", "extra": 1})["extra"] == 1


@pytest.mark.parametrize(
    "empty", [None, {}, {"type": "object"}, {"type": "object", "properties": {}}]
)
def test_an_empty_schema_accepts_any_parameters_as_attunes_does(
    empty: dict[str, Any] | None,
) -> None:
    schema = normalize_schema(empty)
    assert validate_parameters(schema, None) == {}
    assert validate_parameters(schema, {"x": "1", "n": 2}) == {"x": "1", "n": 2}


def test_a_schema_that_declares_properties_refuses_others() -> None:
    schema = normalize_schema({"host": {"type": "string"}})
    with pytest.raises(InvalidParameters, match="unknown parameter 'x'"):
        validate_parameters(schema, {"host": "a", "x": "1"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"n": {"type": "strng"}}, "parameter 'n' has unknown type 'strng'"),
        ({"n": "string"}, "parameter 'n' must be a mapping"),
        ({"type": "object", "properties": {"n": {"type": "bogus"}}}, "invalid parameter schema"),
        (["n"], "parameters must be a mapping"),
    ],
)
def test_bad_schemas_are_pack_errors(spec: Any, message: str) -> None:
    with pytest.raises(PackError, match=message):
        normalize_schema(spec)


@pytest.mark.parametrize(
    ("given_params", "expected"),
    [
        ({"count": "5"}, {"count": 5}),
        ({"count": " 7 "}, {"count": 7}),
        ({"count": 3}, {"count": 3}),
        ({"count": 1, "flag": "true"}, {"count": 1, "flag": True}),
        ({"count": 1, "flag": "No"}, {"count": 1, "flag": False}),
        ({"count": 1, "items": "[1, 2, 3]"}, {"count": 1, "items": [1, 2, 3]}),
        ({"count": 1, "opts": '{"a": {"b": 1}}'}, {"count": 1, "opts": {"a": {"b": 1}}}),
        ({"count": 1, "ratio": "2.5"}, {"count": 1, "ratio": 2.5}),
        ({"count": 1, "ratio": "3"}, {"count": 1, "ratio": 3}),
        ({"count": 1, "mode": "slow"}, {"count": 1, "mode": "slow"}),
        ({"count": 1, "token": "123"}, {"count": 1, "token": "123"}),
    ],
)
def test_values_are_coerced_and_defaults_applied(
    flat_schema: dict[str, Any], given_params: dict[str, Any], expected: dict[str, Any]
) -> None:
    defaults = {"flag": False, "mode": "fast"}
    result = validate_parameters(flat_schema, given_params)
    assert result == {**defaults, **expected}
    assert type(result["count"]) is int


def test_json_schema_defaults_and_coercion() -> None:
    schema = normalize_schema(JSON_SCHEMA)
    assert validate_parameters(schema, {"host": "web1"}) == {"host": "web1", "port": 22}
    assert validate_parameters(schema, {"host": "web1", "port": "2222", "tags": '["a"]'}) == {
        "host": "web1",
        "port": 2222,
        "tags": ["a"],
    }


def test_defaults_are_copies(flat_schema: dict[str, Any]) -> None:
    schema = normalize_schema({"tags": {"type": "array", "default": []}})
    first = validate_parameters(schema, {})
    first["tags"].append("changed")
    assert validate_parameters(schema, {}) == {"tags": []}


def test_coerce_value_leaves_what_it_cannot_convert() -> None:
    assert coerce_value("five", {"type": "integer"}) == "five"
    assert coerce_value("[1]", {"type": "object"}) == "[1]"
    assert coerce_value('{"a": 1}', {"type": "array"}) == '{"a": 1}'
    assert coerce_value("5", {"type": "string"}) == "5"
    assert coerce_value("5", {"type": ["integer", "string"]}) == "5", "ambiguous: kept as text"
    assert coerce_value("5", {}) == "5"
    assert coerce_value("null", {"type": ["null", "integer"]}) is None
    assert coerce_value(5, {"type": "string"}) == 5, "only text is coerced"


@pytest.mark.parametrize(
    ("given_params", "message"),
    [
        ({"count": "five"}, "parameter 'count' must be an integer, got \"five\""),
        ({"count": 1.5}, "parameter 'count' must be an integer, got 1.5"),
        ({"count": 1, "flag": "maybe"}, "parameter 'flag' must be a boolean, got \"maybe\""),
        ({"count": 1, "items": "[1"}, "parameter 'items' must be an array"),
        ({"count": 1, "opts": "[1]"}, "parameter 'opts' must be an object"),
        ({"count": 1, "ratio": "fast"}, "parameter 'ratio' must be a number"),
        ({"count": 1, "mode": "medium"}, 'parameter \'mode\' must be one of "fast", "slow"'),
        ({"count": 1, "items": ["a"]}, "parameter 'items.0' must be an integer"),
        ({}, "missing required parameter 'count'"),
        ({"count": 1, "bogus": 1}, "unknown parameter 'bogus'"),
        ({"count": 1, "zz": 1, "aa": 2}, "unknown parameters 'aa', 'zz'"),
    ],
)
def test_error_messages_name_the_parameter(
    flat_schema: dict[str, Any], given_params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameters) as caught:
        validate_parameters(flat_schema, given_params)
    assert message in caught.value.message
    assert caught.value.code == "INVALID_PARAMETERS"


def test_every_problem_is_named_at_once(flat_schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters) as caught:
        validate_parameters(flat_schema, {"flag": "maybe", "bogus": 1})
    message = caught.value.message
    for part in ("'count'", "'flag'", "'bogus'"):
        assert part in message


def test_parameters_must_be_an_object(flat_schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters, match="must be a JSON object"):
        validate_parameters(flat_schema, ["count", 1])  # type: ignore[arg-type]


def test_redact() -> None:
    params = {"user": "alice", "token": "s3cr3t", "n": 1}
    assert redact(params, frozenset({"token", "absent"})) == {
        "user": "alice",
        "token": REDACTED,
        "n": 1,
    }
    assert params["token"] == "s3cr3t", "the input is not modified"
    assert redact(params, frozenset()) == params


def test_deeply_nested_json_text_is_an_invalid_parameter(flat_schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidParameters, match="'items'"):
        validate_parameters(flat_schema, {"count": 1, "items": "[" * 5000})


# Property: whatever text arrives from chat or the command line, validation either returns the
# parameters or raises InvalidParameters (the message a user sees), never anything else.

_names = st.one_of(st.sampled_from(sorted(FLAT)), st.text(max_size=12))
_texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["true", "no", "5", "-3", "2.5", "1e3", "nan", "inf", "[]", "{}", "null"]),
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ).map(json.dumps),
)


def _check_outcome(schema: dict[str, Any], params: dict[str, Any]) -> None:
    try:
        result = validate_parameters(schema, params)
    except InvalidParameters as exc:
        message = exc.message
        result = None
    if result is None:
        assert message, "a refusal always says why"
        return
    assert isinstance(result, dict)
    assert set(result) <= set(schema["properties"])
    assert set(schema["required"]) <= set(result)
    assert Draft202012Validator(schema).is_valid(result)
    for name, value in params.items():
        if isinstance(result[name], float) and math.isnan(result[name]):
            continue
        assert validate_parameters(schema, result)[name] == result[name], value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _texts, max_size=8))
def test_validate_parameters_text_property(params: dict[str, str]) -> None:
    _check_outcome(normalize_schema(FLAT), params)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["host", "port", "tags"]), st.text(max_size=8)),
        st.one_of(_texts, st.integers(), st.booleans(), st.none(), st.lists(st.integers())),
        max_size=5,
    )
)
def test_validate_parameters_json_schema_property(params: dict[str, Any]) -> None:
    _check_outcome(normalize_schema(JSON_SCHEMA), params)


# -- engine.packs ---------------------------------------------------------------------------------


def test_load_example_pack() -> None:
    pack = load_pack(EXAMPLES_PACK)
    assert pack.ref == "examples"
    assert pack.version == "1.0.0"
    actions = {a.name: a for a in pack.actions}
    assert set(actions) == {"disk_usage", "fail", "greet", "restart_service", "wait"} | {
        "ask_before_restart",  # workflows (packs/examples/workflows)
        "restart_with_rollback",
    }
    assert {a.name for a in pack.aliases} == {"disk_usage", "greet", "restart_service"}
    greet = actions["greet"]
    assert (greet.ref, greet.runner_type) == ("examples.greet", "shell")
    assert (greet.parameter_delivery, greet.parameter_format) == ("file", "dotenv")
    assert greet.param_schema["required"] == ["name"]
    assert actions["wait"].timeout_s == 300
    assert actions["disk_usage"].output_format == "json"
    for action in pack.actions:
        if action.runtime_ref == "workflow":
            assert action.entry_path() is None
            continue
        path = action.entry_path()
        assert path is not None
        assert path.is_file(), f"{action.ref}: {path}"


def test_load_fixture_test_pack() -> None:
    pack = load_pack(TEST_PACK)
    assert pack.ref == "test_pack"
    assert pack.label == "Test Pack"
    (echo,) = pack.actions
    assert (echo.ref, echo.label, echo.runner_type) == ("test_pack.echo", "Echo", "python")
    assert (echo.parameter_delivery, echo.parameter_format, echo.output_format) == (
        "stdin",
        "json",
        "json",
    )
    assert echo.entry_path() == TEST_PACK / "actions" / "echo.py"
    assert validate_parameters(echo.param_schema, {"message": "hi"}) == {
        "message": "hi",
        "count": 1,
    }


def test_builtin_core_pack_is_always_discovered() -> None:
    found = discover_packs([REPO / "packs", TEST_PACK])
    assert found == [BUILTIN_PACKS_DIR / "core", EXAMPLES_PACK, TEST_PACK]
    core = load_pack(found[0])
    assert {a.ref for a in core.actions} >= {"core.echo", "core.noop", "core.sleep"}
    assert {a.runner_type for a in core.actions} == {"builtin"}
    assert discover_packs([REPO / "does-not-exist"]) == [BUILTIN_PACKS_DIR / "core"]


def make_pack(root: Path, actions: dict[str, str], manifest: str = "ref: broken\n") -> Path:
    pack = root / "broken"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(manifest, encoding="utf-8")
    for name, body in actions.items():
        (pack / "actions" / name).write_text(body, encoding="utf-8")
    return pack


@pytest.mark.parametrize(
    ("files", "culprit", "message"),
    [
        ({"bad.yaml": "name: x\nentry_point: [oops\n"}, "bad.yaml", ":3:1: invalid YAML"),
        ({"list.yaml": "- a\n"}, "list.yaml", "expected a mapping"),
        (
            {"noentry.yaml": "name: x\nrunner_type: shell\n"},
            "noentry.yaml",
            "'entry_point' is required",
        ),
        (
            {"param.yaml": "name: x\nentry_point: x.sh\nparameters: {n: {type: strng}}\n"},
            "param.yaml",
            "parameter 'n' has unknown type 'strng'",
        ),
        (
            {"ref.yaml": "ref: other.x\nentry_point: x.sh\n"},
            "ref.yaml",
            "does not belong to pack 'broken'",
        ),
        ({"anon.yaml": "entry_point: x.sh\n"}, "anon.yaml", "needs a 'name' or 'ref'"),
        (
            {"t.yml": "name: x\nentry_point: x.sh\ntimeout_seconds: -1\n"},
            "t.yml",
            "timeout_seconds",
        ),
    ],
)
def test_broken_action_names_the_file(
    tmp_path: Path, files: dict[str, str], culprit: str, message: str
) -> None:
    pack = make_pack(tmp_path, {"good.yaml": "name: fine\nentry_point: fine.sh\n", **files})
    with pytest.raises(PackError) as caught:
        load_pack(pack)
    assert str(pack / "actions" / culprit) in caught.value.message
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("manifest", "message"),
    [("ref: [oops\n", ":2:1: invalid YAML"), ("ref: 'bad ref!'\n", "'ref' must be a name")],
)
def test_broken_manifest_names_the_file(tmp_path: Path, manifest: str, message: str) -> None:
    pack = make_pack(tmp_path, {}, manifest=manifest)
    with pytest.raises(PackError) as caught:
        load_pack(pack)
    assert str(pack / "pack.yaml") in caught.value.message
    assert message in caught.value.message


def test_an_action_of_a_runner_this_server_lacks_is_loaded_disabled_with_the_reason(
    tmp_path: Path,
) -> None:
    pack = make_pack(
        tmp_path,
        {
            "good.yaml": "name: fine\nentry_point: fine.sh\n",
            "node.yaml": "name: js\nrunner_type: node\nentry_point: x.js\n",
        },
    )
    loaded = {a.name: a for a in load_pack(pack).actions}
    assert loaded["fine"].enabled
    assert loaded["fine"].disabled_reason is None
    assert loaded["js"].enabled is False
    assert loaded["js"].disabled_reason == "runtime 'node' is not available on this server"


@pytest.mark.parametrize(
    ("yaml_text", "reason"),
    [
        (
            "name: deploy\nworkflow_file: workflows/deploy.workflow.yaml\n",
            "workflow_file 'workflows/deploy.workflow.yaml': ",
        ),
        (
            "name: deploy\nrunner_type: orquesta\nentry_point: workflows/deploy.yaml\n",
            "only Attune workflows with a valid definition run here",
        ),
    ],
)
def test_a_workflow_action_without_a_usable_definition_is_disabled_with_the_reason(
    tmp_path: Path, yaml_text: str, reason: str
) -> None:
    pack = make_pack(tmp_path, {"deploy.yaml": yaml_text})
    (deploy,) = load_pack(pack).actions
    assert deploy.enabled is False
    assert deploy.disabled_reason is not None
    assert reason in deploy.disabled_reason


@pytest.mark.parametrize(
    ("runtime", "entry", "runner"),
    [
        (None, "x.py", "python"),
        (None, "x.sh", "shell"),
        (None, "x", "shell"),
        ("core.python", "x.sh", "python"),
        ("python3", "x", "python"),
        ("core.shell", "x.py", "shell"),
    ],
)
def test_the_runner_follows_the_runtime_else_the_entry_points_extension(
    runtime: str | None, entry: str, runner: str
) -> None:
    assert runner_for(runtime, entry) == (runner, None)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackError, match=r"no pack\.yaml found"):
        load_pack(tmp_path)


DUPLICATE = {
    "a.yaml": "name: same\nentry_point: a.sh\n",
    "b.yaml": "name: same\nentry_point: b.sh\n",
}


def test_duplicate_action_is_refused(tmp_path: Path) -> None:
    pack = make_pack(tmp_path, DUPLICATE)
    with pytest.raises(PackError) as caught:
        load_pack(pack)
    assert "action 'broken.same' is already defined in a.yaml" in caught.value.message
    assert str(pack) in caught.value.message


def test_duplicate_action_names_the_file(tmp_path: Path) -> None:
    pack = make_pack(tmp_path, DUPLICATE)
    with pytest.raises(PackError) as caught:
        load_pack(pack)
    assert str(pack / "actions" / "b.yaml") in caught.value.message


# -- engine.broker.topic_matches ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("execution.requested", "execution.requested", True),
        ("execution.requested", "execution.completed", False),
        ("execution.*", "execution.cancel", True),
        ("execution.*", "execution", False),
        ("execution.*", "execution.a.b", False),
        ("*.requested", "execution.requested", True),
        ("*", "execution", True),
        ("*", "execution.requested", False),
        ("#", "execution.requested", True),
        ("#", "execution", True),
        ("execution.#", "execution", True),
        ("execution.#", "execution.a.b.c", True),
        ("execution.#", "executions.a", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.#.z", "a.b.c", False),
        ("#.requested", "execution.requested", True),
        ("#.requested", "execution.requested.x", False),
    ],
)
def test_topic_matches(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


# -- config.Settings ------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ATTUNE_* or SLACK_* variable from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(("ATTUNE_", "SLACK_")):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_run_with_nothing_installed(clean_env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8080)
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.is_sqlite
    assert s.amqp_url is None
    assert s.slack_bot_token is None
    assert s.pack_dirs == [Path("./packs")]


def test_environment_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ATTUNE_HTTP_PORT", "9090")
    clean_env.setenv("ATTUNE_HTTP_HOST", "10.1.2.3")
    clean_env.setenv("ATTUNE_DATABASE_URL", "postgresql+asyncpg://u@db/attune")
    clean_env.setenv("ATTUNE_AMQP_URL", "amqp://guest:guest@mq:5672/")
    clean_env.setenv("ATTUNE_PACKS_PATH", "/a:/b:")
    clean_env.setenv("ATTUNE_ADMIN_PASSWORD", "hunter2hunter2")
    s = Settings()
    assert (s.http_host, s.http_port) == ("10.1.2.3", 9090)
    assert s.database_url == "postgresql+asyncpg://u@db/attune"
    assert not s.is_sqlite
    assert s.amqp_url == "amqp://guest:guest@mq:5672/"
    assert s.pack_dirs == [Path("/a"), Path("/b")]
    assert s.admin_password is not None
    assert s.admin_password.get_secret_value() == "hunter2hunter2"
    assert "hunter2" not in repr(s), "secrets are not shown"


def test_slack_variables_and_bolt_aliases(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SLACK_BOT_TOKEN", "xoxb-bolt")
    clean_env.setenv("SLACK_SIGNING_SECRET", "sign-bolt")
    s = Settings()
    assert s.slack_bot_token is not None
    assert s.slack_bot_token.get_secret_value() == "xoxb-bolt"
    assert s.slack_signing_secret is not None
    assert s.slack_signing_secret.get_secret_value() == "sign-bolt"
    assert "xoxb-bolt" not in repr(s)

    clean_env.setenv("ATTUNE_SLACK_BOT_TOKEN", "xoxb-attune")
    clean_env.setenv("ATTUNE_SLACK_APP_TOKEN", "xapp-1")
    s = Settings()
    assert s.slack_bot_token is not None
    assert s.slack_bot_token.get_secret_value() == "xoxb-attune", "ATTUNE_ name wins"
    assert s.slack_app_token is not None
    assert s.slack_app_token.get_secret_value() == "xapp-1"


def test_an_empty_slack_variable_leaves_slack_off(clean_env: pytest.MonkeyPatch) -> None:
    """An empty line in .env (or a compose variable passed through empty) is not a token."""
    clean_env.setenv("ATTUNE_SLACK_BOT_TOKEN", "")
    clean_env.setenv("ATTUNE_SLACK_SIGNING_SECRET", " ")
    clean_env.setenv("ATTUNE_SLACK_APP_TOKEN", "")
    s = Settings()
    assert s.slack_bot_token is None
    assert s.slack_signing_secret is None
    assert s.slack_app_token is None
    assert not slack_enabled(s)


def test_invalid_environment_value_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ATTUNE_HTTP_PORT", "70000")
    with pytest.raises(ValidationError, match="http_port"):
        Settings()


def test_toml_file_named_by_attune_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "attune.toml"
    config.write_text(
        'http_port = 7070\ndatabase_url = "postgresql+asyncpg://toml@db/attune"\n'
        'slack_bot_token = "xoxb-toml"\nworker_concurrency = 4\n',
        encoding="utf-8",
    )
    clean_env.setenv("ATTUNE_CONFIG", str(config))
    s = Settings()
    assert s.http_port == 7070
    assert s.database_url == "postgresql+asyncpg://toml@db/attune"
    assert s.worker_concurrency == 4
    assert s.slack_bot_token is not None
    assert s.slack_bot_token.get_secret_value() == "xoxb-toml"

    clean_env.setenv("ATTUNE_HTTP_PORT", "9191")
    s = Settings()
    assert s.http_port == 9191, "the environment beats the file"
    assert s.worker_concurrency == 4
    assert Settings(http_port=1).http_port == 1, "keyword arguments beat both"


def test_deeply_nested_parameter_values_are_refused_not_crashing() -> None:
    schema = normalize_schema({"data": {"type": "array"}})
    deep: list[object] = []
    node = deep
    for _ in range(5000):  # deeper than Python's recursion limit
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(InvalidParameters, match="'data' is nested deeper than 64"):
        validate_parameters(schema, {"data": deep})


@pytest.mark.parametrize("fmt", ["json", "yaml", "jsonl"])
def test_deeply_nested_output_is_a_parse_error_not_a_crash(fmt: str) -> None:
    from engine.runners.formats import parse_output

    for depth in (100, 100_000):  # past the depth kept, and past Python's recursion limit
        data, error = parse_output("[" * depth + "]" * depth + "\n", fmt)
        assert data is None
        assert error is not None
        assert error.startswith(f"could not parse stdout as {fmt}")


def test_parameters_read_back_in_attunes_flat_form() -> None:
    schema = normalize_schema(
        {
            "type": "object",
            "properties": {"host": {"type": "string"}, "token": {"type": "string", "secret": True}},
            "required": ["host"],
        }
    )
    assert flat_form(schema) == {
        "host": {"type": "string", "required": True},
        "token": {"type": "string", "secret": True},
    }
    assert normalize_schema(flat_form(schema)) == schema  # the flat form says it all
    assert flat_form(normalize_schema(None)) == {}
    odd = {"type": "object", "properties": {}, "oneOf": [{"required": ["a"]}]}
    assert flat_form(odd) == odd  # more than a flat map can say: as it is
