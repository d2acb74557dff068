"""Rule conditions and templates (pure)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from engine.automation import RateLimiter, next_fire
from engine.errors import TooManyRequests
from engine.templates import TemplateProblem, check_conditions, check_templates, matches, render

CTX: dict[str, Any] = {
    "event": {
        "id": 7,
        "trigger": "ops.alert",
        "payload": {
            "message": "disk full",
            "count": 3,
            "tags": ["db", "prod"],
            "severity": "high",
            "host": {"name": "web1"},
        },
    },
    "rule": {"ref": "ops.page"},
}


def test_a_lone_template_keeps_its_json_type() -> None:
    assert render(
        {
            "n": "{{ event.payload.count }}",
            "tags": "{{ event.payload.tags }}",
            "text": "{{ event.payload.count }} errors",
            "plain": "x",
        },
        CTX,
    ) == {"n": 3, "tags": ["db", "prod"], "text": "3 errors", "plain": "x"}


def test_templates_see_event_and_rule() -> None:
    rendered = render("{{ rule.ref }}/{{ event.trigger }}#{{ event.id }}", CTX)
    assert rendered == "ops.page/ops.alert#7"


def test_missing_keys_fail_with_the_reason() -> None:
    with pytest.raises(TemplateProblem, match="nope"):
        render("{{ event.payload.nope }}", CTX)


@pytest.mark.parametrize(
    "template",
    ["{{ event.__class__ }}", "{{ ''.__class__.__mro__ }}", "{{ event.payload.tags.append(1) }}"],
)
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
        (
            [
                {"field": "payload.severity", "value": "high"},
                {"field": "payload.count", "operator": "greater_than", "value": 5},
            ],
            False,
        ),
        ({"expression": "{{ event.payload.count > 2 and 'db' in event.payload.tags }}"}, True),
        ({"expression": "{{ event.payload.count > 5 }}"}, False),
    ],
)
def test_conditions(conditions: Any, expected: bool) -> None:
    check_conditions(conditions)
    assert matches(conditions, CTX) is expected


@pytest.mark.parametrize(
    "conditions",
    [
        [{"operator": "equals"}],
        [{"field": "x", "operator": "like"}],
        [{"field": "x", "operator": "matches", "value": "("}],
        {"expr": "x"},
        "nope",
        {"expression": "{{ oops("},
    ],
)
def test_bad_conditions_are_refused_when_saved(conditions: Any) -> None:
    with pytest.raises(TemplateProblem):
        check_conditions(conditions)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(a)\\1", "invalid escape sequence"),
        ("foo(?=bar)", "invalid perl operator"),
        ("(?<!x)a", "invalid perl operator"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_when_saved(pattern: str, reason: str) -> None:
    """Issue 12, hole 3: ``matches`` uses RE2 (linear time); back-references and look-arounds
    are refused at save time, naming the condition and RE2's reason."""
    conditions = [
        {"field": "payload.severity", "value": "high"},
        {"field": "payload.host.name", "operator": "matches", "value": pattern},
    ]
    with pytest.raises(TemplateProblem) as caught:
        check_conditions(conditions)
    message = caught.value.message
    assert message.startswith("conditions[1] (payload.host.name matches)"), message
    assert "RE2" in message, message
    assert reason in message, message


def test_a_catastrophic_pattern_is_answered_in_linear_time() -> None:
    """Issue 12, hole 3: ``^(a+)+$`` on 'aaa...!' took exponential time with Python's ``re``
    (26 letters: seconds; 40: hours)."""
    conditions = [{"field": "payload.text", "operator": "matches", "value": "^(a+)+$"}]
    check_conditions(conditions)
    for length in (26, 99_000):
        ctx = {"event": {"payload": {"text": "a" * length + "!"}}}
        started = time.monotonic()
        assert matches(conditions, ctx) is False
        assert time.monotonic() - started < 0.5, length
    assert matches(conditions, {"event": {"payload": {"text": "aaaa"}}}) is True


def test_timers_schedule() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 26, 12, 0, 30, tzinfo=UTC)
    assert next_fire("interval", {"seconds": 60}, now) == datetime(
        2026, 11, 26, 12, 1, 30, tzinfo=UTC
    )
    assert next_fire("cron", {"expression": "*/5 * * * *"}, now) == datetime(
        2026, 11, 26, 12, 5, tzinfo=UTC
    )
    assert next_fire("date", {"at": "2026-11-26T13:00:00+00:00"}, now) == datetime(
        2026, 11, 26, 13, 0, tzinfo=UTC
    )
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


# -- a small payload must not stall the server (issue 12, hole 3) ---------------------------------

#: Bound on rendering one hostile template. Each renders in a child process with its memory
#: capped, so a template that would hang or grow the process fails the test instead of the run.
HOSTILE_TIMEOUT_S = 10.0
_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from engine.templates import TemplateProblem, render
template, payload = json.loads(sys.argv[1])
try:
    result = render(template, {"event": {"payload": payload}})
    print(json.dumps({"ok": str(result)[:100]}))
except TemplateProblem as exc:
    print(json.dumps({"refused": exc.message}))
"""


def _render_in_child(template: str, payload: dict[str, Any]) -> dict[str, str]:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps([template, payload])],
            capture_output=True,
            text=True,
            timeout=HOSTILE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{template} with {payload} took over {HOSTILE_TIMEOUT_S} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("template", "payload", "reason"),
    [
        ("{{ event.payload.n ** event.payload.n }}", {"n": 10**6}, "'**' would make a number"),
        ("{{ 9 ** (9 ** 8) }}", {}, "'**' would make a number of more than 4096 bits"),
        ("{{ 'a' * event.payload.n }}", {"n": 10**10}, "'*' would make a str of more than"),
        ("{{ event.payload.n * [0] }}", {"n": 10**9}, "'*' would make a list of more than"),
        ("{{ '%0999999999d' % 1 }}", {}, "'%' formatting wider than"),
        ("{{ '%*d' % (event.payload.n, 1) }}", {"n": 10**9}, "'%' formatting with a width"),
        ("{{ '%(a)0999999999d' % {'a': 1} }}", {}, "'%' formatting wider than"),
        ("{{ '%0999999999d' | format(1) }}", {}, "'%' formatting wider than"),
        ("{{ '{:>9999999}'.format(1) }}", {}, "'format' with a width"),
        ("{{ '{:>{}}'.format(1, event.payload.n) }}", {"n": 10**10}, "'format' with a width"),
        ("{{ 'a'.ljust(event.payload.n) }}", {"n": 10**10}, "'ljust': a size over"),
        ("{{ 'a' | center(event.payload.n) }}", {"n": 10**10}, "filter 'center': a size over"),
        ("{{ [1] | slice(event.payload.n) | list }}", {"n": 10**8}, "filter 'slice'"),
        ("{{ lipsum(event.payload.n) }}", {"n": 10**6}, "'lipsum' is undefined"),
        ("{{ 'a' * 900000 }}{{ 'b' * 900000 }}", {}, "longer than 1000000 characters"),
    ],
)
def test_a_template_that_would_grow_without_bound_fails_with_the_reason(
    template: str, payload: dict[str, Any], reason: str
) -> None:
    answer = _render_in_child(template, payload)
    assert "refused" in answer, answer
    assert reason in answer["refused"], answer


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 2 ** event.payload.count }}", 8),
        ("{{ event.payload.count ** 2.0 }}", 9.0),
        ("{{ 2 ** -event.payload.count }}", 0.125),
        ("{{ 'ab' * event.payload.count }}", "ababab"),
        ("{{ event.payload.tags * 2 }}", ["db", "prod", "db", "prod"]),
        ("{{ event.payload.count * 14 }}", 42),
        ("{{ 7 % event.payload.count }}", 1),
        ("{{ '%5.1f|%-3s|%%' % (event.payload.count, 'x') }}", "  3.0|x  |%"),
        ("{{ event.payload.host.name | center(7) }}", "  web1 "),
        ("{{ event.payload.host.name.rjust(6, '.') }}", "..web1"),
        ("{{ '{}-{:>6}'.format(event.payload.count, 'x') }}", "3-     x"),
        ("{{ '%(n)03d' % {'n': event.payload.count} }}", "003"),
        ("{{ '%s!' | format(event.payload.count) }}", "3!"),
    ],
)
def test_small_arithmetic_and_padding_still_work(template: str, expected: Any) -> None:
    assert render(template, CTX) == expected
