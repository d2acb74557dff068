"""The run form as pure functions: schema to modal, submitted values to parameters with a
problem per field."""

from __future__ import annotations

import json
from typing import Any

from bot.slack_forms import (
    MAX_BLOCKS,
    RUN_FORM,
    FormOrigin,
    build_form,
    field_kind,
    missing_required,
    read_form,
)
from engine.params import normalize_schema

SCHEMA = normalize_schema(
    {
        "service": {"type": "string", "required": True, "description": "What to deploy"},
        "replicas": {"type": "integer", "required": True, "minimum": 1, "maximum": 20},
        "ratio": {"type": "number", "default": 0.5},
        "dry_run": {"type": "boolean", "required": True},
        "env": {"type": "string", "enum": ["staging", "production"], "required": True},
        "token": {"type": "string", "secret": True, "required": True, "default": "s3cret-dflt"},
        "extra": {"type": "object"},
        "tags": {"type": "array", "default": ["a"]},
        "level": {"enum": [1, 2, 3], "default": 2},
    }
)
ORIGIN = FormOrigin("ops.deploy", "C1", "T1", "https://hooks.example/r", 1000.0)


def fields(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"].removeprefix("param:"): b for b in view["blocks"] if b["type"] == "input"}


def state(**values: dict[str, Any]) -> dict[str, Any]:
    return {f"param:{name}": {"value": v} for name, v in values.items()}


def text(value: str) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


def number(value: str) -> dict[str, Any]:
    return {"type": "number_input", "value": value}


def picked(value: str | None) -> dict[str, Any]:
    return {
        "type": "static_select",
        "selected_option": None if value is None else {"value": value},
    }


def test_missing_required_ignores_given_and_defaulted() -> None:
    assert missing_required(SCHEMA, {}) == ["service", "replicas", "dry_run", "env"]
    assert missing_required(SCHEMA, {"service": "x", "env": "staging"}) == ["replicas", "dry_run"]
    assert missing_required(normalize_schema({}), {}) == []


def test_each_type_gets_the_element_that_fits_it() -> None:
    view = build_form("ops.deploy", "Deploy it", SCHEMA, {}, ORIGIN)
    assert view is not None
    assert view["callback_id"] == RUN_FORM
    assert len(view["title"]["text"]) <= 24
    f = fields(view)
    assert list(f) == [
        "service",
        "replicas",
        "ratio",
        "dry_run",
        "env",
        "token",
        "extra",
        "tags",
        "level",
    ]
    assert f["service"]["element"]["type"] == "plain_text_input"
    assert f["service"]["hint"]["text"] == "What to deploy"
    assert f["replicas"]["element"] == {
        "action_id": "value",
        "type": "number_input",
        "is_decimal_allowed": False,
        "min_value": "1",
        "max_value": "20",
    }
    assert f["ratio"]["element"]["is_decimal_allowed"] is True
    assert f["dry_run"]["element"]["type"] == "radio_buttons"
    assert [o["value"] for o in f["dry_run"]["element"]["options"]] == ["true", "false"]
    assert f["env"]["element"]["type"] == "static_select"
    assert [o["text"]["text"] for o in f["env"]["element"]["options"]] == ["staging", "production"]
    assert [o["value"] for o in f["level"]["element"]["options"]] == ["1", "2", "3"]
    assert f["extra"]["element"]["multiline"] is True
    assert "JSON" in f["extra"]["hint"]["text"]
    # required without a default: a field that must be filled; the rest optional
    assert {n for n, b in f.items() if not b["optional"]} == {
        "service",
        "replicas",
        "dry_run",
        "env",
    }


def test_defaults_and_given_values_prefill_but_never_a_secret() -> None:
    given = {"service": "api", "replicas": "3", "dry_run": "true", "env": "production"}
    view = build_form("ops.deploy", "", SCHEMA, given, ORIGIN)
    assert view is not None
    f = fields(view)
    assert f["service"]["element"]["initial_value"] == "api"
    assert f["replicas"]["element"]["initial_value"] == "3"
    assert f["ratio"]["element"]["initial_value"] == "0.5"
    assert f["dry_run"]["element"]["initial_option"]["value"] == "true"
    assert f["env"]["element"]["initial_option"]["value"] == '"production"'
    assert f["level"]["element"]["initial_option"]["value"] == "2"
    assert json.loads(f["tags"]["element"]["initial_value"]) == ["a"]
    assert "initial_value" not in f["token"]["element"]
    assert "s3cret-dflt" not in json.dumps(view)
    assert "masked" in f["token"]["hint"]["text"]


def test_a_value_slack_would_refuse_as_initial_is_left_out() -> None:
    view = build_form("ops.deploy", "", SCHEMA, {"replicas": "99", "env": "nope"}, ORIGIN)
    assert view is not None
    f = fields(view)
    assert "initial_value" not in f["replicas"]["element"]  # above the maximum
    assert "initial_option" not in f["env"]["element"]


def test_a_secret_given_in_the_command_is_kept_not_shown() -> None:
    origin = FormOrigin("ops.deploy", "C1", sealed="gAAAA-sealed")
    view = build_form("ops.deploy", "", SCHEMA, {}, origin, kept_secrets=frozenset({"token"}))
    assert view is not None
    token = fields(view)["token"]
    assert token["optional"] is True
    assert "leave empty to keep it" in token["hint"]["text"]
    assert FormOrigin.from_metadata(view["private_metadata"]) == origin


def test_a_form_that_does_not_fit_a_modal_is_not_built() -> None:
    many = normalize_schema({f"p{i}": {"type": "string", "required": True} for i in range(100)})
    assert build_form("ops.many", "", many, {}, ORIGIN) is None
    fits = normalize_schema(
        {f"p{i}": {"type": "string", "required": True} for i in range(MAX_BLOCKS - 1)}
    )
    assert build_form("ops.many", "", fits, {}, ORIGIN) is not None
    long_name = normalize_schema({"x" * 300: {"type": "string", "required": True}})
    assert build_form("ops.long", "", long_name, {}, ORIGIN) is None
    big_metadata = FormOrigin("ops.deploy", sealed="x" * 3000)
    assert build_form("ops.deploy", "", SCHEMA, {}, big_metadata) is None


def test_field_kinds() -> None:
    assert field_kind({"type": ["integer", "null"]}) == "integer"
    assert field_kind({"type": ["integer", "string"]}) == "json"
    assert field_kind({}) == "text"
    assert field_kind({"enum": list(range(101))}) == "text"  # too many for a select
    assert field_kind({"type": "string", "enum": [str(i) for i in range(101)]}) == "text"


def test_valid_values_become_typed_parameters() -> None:
    values = state(
        service=text("api"),
        replicas=number("3"),
        ratio=number("0.75"),
        dry_run={"type": "radio_buttons", "selected_option": {"value": "false"}},
        env=picked('"staging"'),
        token=text("hunter2"),
        extra=text('{"a": [1, 2]}'),
        tags=text(""),
        level=picked(None),
    )
    got = read_form(SCHEMA, values)
    assert got.errors == {}
    assert got.parameters == {
        "service": "api",
        "replicas": 3,
        "ratio": 0.75,
        "dry_run": False,
        "env": "staging",
        "token": "hunter2",
        "extra": {"a": [1, 2]},
    }


def test_bad_values_are_named_on_their_fields() -> None:
    values = state(
        service=text("api"),
        replicas=number("40"),
        dry_run={"type": "radio_buttons", "selected_option": None},
        env=picked('"staging"'),
        extra=text("{not json"),
        tags=text('{"a": 1}'),
    )
    got = read_form(SCHEMA, values)
    assert set(got.errors) == {"param:replicas", "param:dry_run", "param:extra", "param:tags"}
    assert got.errors["param:replicas"].startswith("parameter 'replicas'")
    assert got.errors["param:dry_run"] == "missing required parameter 'dry_run'"
    assert got.errors["param:extra"].startswith("not valid JSON")
    assert "array" in got.errors["param:tags"]
    assert all(len(e) <= 150 for e in got.errors.values())


def test_a_secret_problem_does_not_echo_the_secret() -> None:
    schema = normalize_schema({"pin": {"type": "string", "secret": True, "pattern": "^[0-9]+$"}})
    got = read_form(schema, state(pin=text("hunter2")))
    assert "hunter2" not in json.dumps(got.errors)
    assert set(got.errors) == {"param:pin"}


def test_a_kept_secret_fills_its_empty_field() -> None:
    got = read_form(SCHEMA, state(token=text("")), kept={"token": "from-command"})
    assert got.parameters["token"] == "from-command"
    got = read_form(SCHEMA, state(token=text("typed")), kept={"token": "from-command"})
    assert got.parameters["token"] == "typed"


def test_metadata_that_is_not_ours_is_refused() -> None:
    assert FormOrigin.from_metadata("") is None
    assert FormOrigin.from_metadata("42") is None
    assert FormOrigin.from_metadata('{"a": 1}') is None


def test_parameter_problems_are_keyed_by_parameter() -> None:
    from engine.params import parameter_problems

    schema = normalize_schema(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer"},
                "o": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
            },
            "required": ["n"],
        }
    )
    assert parameter_problems(schema, {"n": "3", "o": {"k": "v"}}) == {}
    problems = parameter_problems(schema, {"o": {}, "zz": 1})
    assert problems["n"] == "missing required parameter 'n'"
    assert set(problems) == {"n", "o", ""}
    assert "'zz'" in problems[""]
