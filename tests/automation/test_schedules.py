"""Pure parts of the event-driven half: rule-timer schedules (Attune's ``trigger_params``),
JSON-Logic conditions, and the request models' tolerance of Attune's requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from engine import json_logic
from engine.automation import RuleSpec, RuleUpdate, TriggerSpec, TriggerUpdate
from engine.automation.schedules import cron_next, rule_schedule
from engine.errors import InvalidRequest
from engine.templates import TemplateProblem, check_conditions, matches

NOW = datetime(2026, 3, 7, 23, 59, 58, 500_000, tzinfo=UTC)


# -- schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "seconds"),
    [
        ({"unit": "seconds", "interval": 5}, 5),
        ({"unit": "minutes", "interval": 2}, 120),
        ({"unit": "hours", "delta": 1}, 3600),  # StackStorm's name
        ({"interval": 10}, 10),  # unit defaults to seconds
        ({"unit": "days", "interval": 1, "timezone": "Europe/Paris"}, 86_400),
    ],
)
def test_interval_schedule(params: dict[str, Any], seconds: int) -> None:
    schedule = rule_schedule("intervaltimer", params)
    assert schedule is not None
    assert schedule.next_after(NOW) == NOW + timedelta(seconds=seconds)
    payload = schedule.payload(NOW, NOW + timedelta(milliseconds=20), 3, None)
    assert (payload["type"], payload["interval_seconds"], payload["execution_count"]) == (
        "interval",
        seconds,
        3,
    )


def test_cron_schedule_reads_six_fields_with_seconds_first_and_five_classic() -> None:
    six = rule_schedule("crontimer", {"expression": "*/5 * * * * *"})
    assert six is not None
    assert six.next_after(NOW) == datetime(2026, 3, 8, 0, 0, 0, tzinfo=UTC)
    assert six.next_after(datetime(2026, 3, 8, 0, 0, 0, tzinfo=UTC)) == datetime(
        2026, 3, 8, 0, 0, 5, tzinfo=UTC
    )
    five = rule_schedule("crontimer", {"expression": "30 9 * * MON-FRI"})
    assert five is not None
    assert five.next_after(NOW) == datetime(2026, 3, 9, 9, 30, tzinfo=UTC)  # Monday


def test_cron_schedule_in_a_time_zone_across_daylight_saving() -> None:
    schedule = rule_schedule(
        "crontimer", {"expression": "0 30 2 * * *", "timezone": "America/New_York"}
    )
    assert schedule is not None
    # 2026-03-08 02:30 does not exist in New York (clocks jump 02:00 -> 03:00).
    first = schedule.next_after(datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert first is not None
    assert first.tzinfo is not None
    assert first.astimezone(ZoneInfo("America/New_York")).hour == 3
    second = schedule.next_after(first)
    assert second == datetime(2026, 3, 9, 6, 30, tzinfo=UTC)  # 02:30 EDT
    assert cron_next("0 12 * * *", NOW, ZoneInfo("Asia/Tokyo")) == datetime(
        2026, 3, 8, 3, 0, tzinfo=UTC
    )


def test_date_schedule_fires_once_and_never_in_the_past() -> None:
    schedule = rule_schedule(
        "datetimetimer", {"fire_at": "2026-03-08T09:00:00", "timezone": "Asia/Tokyo"}
    )
    assert schedule is not None
    at = datetime(2026, 3, 8, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo
    assert schedule.next_after(NOW) == at
    assert schedule.next_after(at) is None
    payload = schedule.payload(at, at + timedelta(milliseconds=250), 1, None)
    assert (payload["type"], payload["delay_ms"]) == ("one_shot", 250)
    zulu = rule_schedule("datetimetimer", {"date": "2026-03-08T00:00:00Z"})
    assert zulu is not None
    assert zulu.next_after(NOW) == at
    past = rule_schedule("datetimetimer", {"fire_at": "2020-01-01T00:00:00Z"})
    assert past is not None
    assert past.next_after(NOW) is None


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("intervaltimer", {}, "trigger_params.interval"),
        ("intervaltimer", {"interval": True}, "trigger_params.interval"),
        ("intervaltimer", {"delta": -1}, "trigger_params.delta"),
        ("intervaltimer", {"interval": 1, "unit": "ms"}, "trigger_params.unit"),
        ("intervaltimer", {"interval": 10**9}, "trigger_params.interval"),
        ("crontimer", {}, "trigger_params.expression"),
        ("crontimer", {"expression": "* * * * * * *"}, "trigger_params.expression"),
        ("crontimer", {"expression": "* * * * * *", "timezone": "Nowhere/City"}, "timezone"),
        ("crontimer", {"expression": "* * * * *", "timezone": 5}, "timezone"),
        ("datetimetimer", {"fire_at": "soon"}, "trigger_params.fire_at"),
        ("datetimetimer", {"date": "2026-13-01"}, "trigger_params.date"),
    ],
)
def test_bad_trigger_params_name_the_field(kind: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rule_schedule(kind, params)
    assert field in caught.value.message


def test_other_triggers_have_no_rule_timer() -> None:
    assert rule_schedule("webhook", {"anything": 1}) is None
    assert rule_schedule("interval", {"seconds": 5}) is None  # the trigger fires itself


# -- JSON-Logic conditions --------------------------------------------------------------------

CONTEXT = {
    "event": {"id": 7, "trigger": "ops.alert", "payload": {"level": "error", "n": 5}},
    "payload": {"level": "error", "n": 5},
    "rule": {"ref": "ops.page", "id": 3},
}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ({"==": [{"var": "event.payload.level"}, "error"]}, True),
        (
            {"and": [{">": [{"var": "payload.n"}, 3]}, {"==": [{"var": "rule.ref"}, "ops.page"]}]},
            True,
        ),
        ({"or": [{"<": [{"var": "payload.n"}, 3]}, {"!": {"var": "event.payload.level"}}]}, False),
        ({"in": [{"var": "payload.level"}, ["error", "critical"]]}, True),
        ({"var": "event.payload.missing"}, False),  # absent reads as null
        ({"and": [{"var": "event.payload.level", "!=": None}]}, True),  # Attune's shorthand
        ({"and": [{"var": "event.payload.nothing", "!=": None}]}, False),
        ({"var": "payload.n", ">": 9}, False),
    ],
)
def test_json_logic_conditions(conditions: dict[str, Any], expected: bool) -> None:
    check_conditions(conditions)
    assert matches(conditions, CONTEXT) is expected


@pytest.mark.parametrize(
    ("conditions", "needle"),
    [
        ({"frobnicate": [1, 2]}, "frobnicate"),
        ({"==": [1]}, "=="),
        ({"and": [{"a": 1, "b": 2}]}, "conditions.and.0"),
        ({"expression": 5}, "conditions.expression"),
    ],
)
def test_bad_json_logic_is_refused(conditions: dict[str, Any], needle: str) -> None:
    with pytest.raises(TemplateProblem) as caught:
        check_conditions(conditions)
    assert needle in caught.value.message
    assert caught.value.http_status == 422


def test_runaway_json_logic_is_stopped() -> None:
    heavy = {"reduce": [{"var": "payload.big"}, {"+": [{"var": "current"}, 1]}, 0]}
    check_conditions(heavy)
    with pytest.raises(TemplateProblem, match="conditions failed"):
        matches(heavy, {"payload": {"big": list(range(json_logic.OPS_BUDGET * 2))}})


@pytest.mark.parametrize(
    ("value", "truth"),
    [(0, False), ("", False), ([], False), (None, False), ("0", True), ({}, True), ([0], True)],
)
def test_json_logic_truthiness(value: Any, truth: bool) -> None:
    assert json_logic.truthy(value) is truth


# -- requests as Attune's -----------------------------------------------------------------------


def test_trigger_request_takes_attune_fields_and_ignores_unknown_ones() -> None:
    spec = TriggerSpec.model_validate(
        {
            "ref": "test.test_pack.webhook_1",
            "pack_ref": "test_pack_local",
            "label": "Hook",
            "description": None,
            "param_schema": {"type": "object"},
            "out_schema": None,
            "enabled": False,
            "trigger_type": "webhook",
            "sensor": 7,
        }
    )
    assert spec.named()["pack_ref"] == "test_pack_local"
    assert spec.named()["description"] == ""
    assert (spec.param_schema, spec.enabled) == ({"type": "object"}, False)
    with pytest.raises(ValidationError, match="pack_ref"):
        TriggerSpec.model_validate({"ref": "nodot"})


def test_trigger_update_reads_patches() -> None:
    change = TriggerUpdate.model_validate(
        {"description": {"op": "clear"}, "param_schema": {"op": "set", "value": {"a": 1}}}
    )
    assert change.changes() == {"description": None, "param_schema": {"a": 1}}
    plain = TriggerUpdate.model_validate({"out_schema": {"type": "object"}, "label": "L"})
    assert plain.changes() == {"out_schema": {"type": "object"}, "label": "L"}
    nulls = TriggerUpdate.model_validate({"description": None, "webhook_secret": None})
    assert nulls.changes() == {"webhook_secret": None}  # null leaves Attune's fields


def test_rule_update_merges_onto_the_rule() -> None:
    current = RuleSpec(
        ref="ops.r",
        trigger_ref="ops.t",
        action_ref="ops.a",
        description="words",
        action_params={"x": 1},
        trigger_params={"interval": 5},
        chat_channel="C1",
    ).model_dump()
    change = {"enabled": False, "trigger_params": None, "description": None, "chat_channel": None}
    merged = RuleUpdate.model_validate(change).merged(current)
    assert (merged.enabled, merged.action_params) == (False, {"x": 1})
    # Attune's fields are Option: null leaves them; ours are cleared by null.
    assert (merged.trigger_params, merged.description) == ({"interval": 5}, "words")
    assert merged.chat_channel is None
