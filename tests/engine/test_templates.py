"""Rule conditions and templates (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from engine.automation import RateLimiter, next_fire
from engine.errors import TooManyRequests
from engine.templates import TemplateProblem, check_conditions, check_templates, matches, render

CTX: dict[str, Any] = {
    "event": {"id": 7, "trigger": "ops.alert", "payload": {
        "message": "disk full", "count": 3, "tags": ["db", "prod"], "severity": "high",
        "host": {"name": "web1"}}},
    "rule": {"ref": "ops.page"},
}


def test_a_lone_template_keeps_its_json_type() -> None:
    assert render({"n": "{{ event.payload.count }}", "tags": "{{ event.payload.tags }}",
                   "text": "{{ event.payload.count }} errors", "plain": "x"}, CTX) == {
        "n": 3, "tags": ["db", "prod"], "text": "3 errors", "plain": "x"}


def test_templates_see_event_and_rule() -> None:
    rendered = render("{{ rule.ref }}/{{ event.trigger }}#{{ event.id }}", CTX)
    assert rendered == "ops.page/ops.alert#7"


def test_missing_keys_fail_with_the_reason() -> None:
    with pytest.raises(TemplateProblem, match="nope"):
        render("{{ event.payload.nope }}", CTX)


@pytest.mark.parametrize("template", ["{{ event.__class__ }}", "{{ ''.__class__.__mro__ }}",
                                      "{{ event.payload.tags.append(1) }}"])
def test_the_sandbox_refuses_escapes_and_mutation(template: str) -> None:
    with pytest.raises(TemplateProblem):
        render(template, CTX)


def test_syntax_is_checked_when_the_rule_is_saved() -> None:
    with pytest.raises(TemplateProblem, match=r"action_params\.message"):
        check_templates({"message": "{{ event.payload.message "})
    check_templates({"message": "{{ event.payload.message }}", "n": [1, "{{ 2 }}"]})


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (None, True),
        ([], True),
        ([{"field": "payload.severity", "operator": "equals", "value": "high"}], True),
        ([{"field": "event.payload.severity", "value": "high"}], True),
        ([{"field": "payload.severity", "operator": "not_equals", "value": "high"}], False),
        ([{"field": "payload.message", "operator": "contains", "value": "disk"}], True),
        ([{"field": "payload.tags", "operator": "contains", "value": "prod"}], True),
        ([{"field": "payload.count", "operator": "greater_than", "value": 2}], True),
        ([{"field": "payload.count", "operator": "less_than", "value": 2}], False),
        ([{"field": "payload.count", "operator": "greater_than", "value": "x"}], False),
        ([{"field": "payload.host.name", "operator": "matches", "value": "^web\\d+$"}], True),
        ([{"field": "payload.host", "operator": "exists", "value": True}], True),
        ([{"field": "payload.nope", "operator": "exists", "value": True}], False),
        ([{"field": "payload.nope", "operator": "exists", "value": False}], True),
        ([{"field": "payload.nope", "operator": "equals", "value": None}], False),
        ([{"field": "payload.severity", "value": "high"},
          {"field": "payload.count", "operator": "greater_than", "value": 5}], False),
        ({"expression": "{{ event.payload.count > 2 and 'db' in event.payload.tags }}"}, True),
        ({"expression": "{{ event.payload.count > 5 }}"}, False),
    ],
)
def test_conditions(conditions: Any, expected: bool) -> None:
    check_conditions(conditions)
    assert matches(conditions, CTX) is expected


@pytest.mark.parametrize("conditions", [
    [{"operator": "equals"}], [{"field": "x", "operator": "like"}],
    [{"field": "x", "operator": "matches", "value": "("}], {"expr": "x"}, "nope",
    {"expression": "{{ oops("},
])
def test_bad_conditions_are_refused_when_saved(conditions: Any) -> None:
    with pytest.raises(TemplateProblem):
        check_conditions(conditions)


def test_timers_schedule() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
    assert next_fire("interval", {"seconds": 60}, now) == datetime(2026, 11, 26, 12, 1, 30,
                                                                    tzinfo=UTC)
    assert next_fire("cron", {"expression": "*/5 * * * *"}, now) == datetime(
        2026, 11, 26, 12, 5, tzinfo=UTC)
    assert next_fire("date", {"at": "2026-11-26T13:00:00+00:00"}, now) == datetime(
        2026, 11, 26, 13, 0, tzinfo=UTC)
    assert next_fire("date", {"at": "2026-11-26T11:00:00+00:00"}, now) is None


def test_webhook_rate_limit_per_key() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=3)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(TooManyRequests) as caught:
        limiter.take("a")
    assert caught.value.retry_after_s > 0
    limiter.take("b")  # another key has its own bucket


@pytest.mark.parametrize("text", ["1.10", "42", "None", "True", "[1, 2]", "'hi'"])
def test_a_lone_template_keeps_a_string_a_string(text: str) -> None:
    context = {"event": {"payload": {"m": text}}}
    assert render("{{ event.payload.m }}", context) == text
    assert render("{{ event.payload.m }}{{ event.payload.m }}", context) == text + text
