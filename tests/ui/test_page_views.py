"""What the execution page shows, computed without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from engine.api.page_views import (
    duration_ms,
    has_secrets,
    origin_facts,
    output,
    parameters,
    show_duration_ms,
    show_time,
)
from engine.params import REDACTED
from engine.records import Execution

T0 = datetime(2026, 11, 29, 20, 0, 0, tzinfo=UTC)


def _record(**fields: object) -> Execution:
    base: dict[str, object] = {
        "id": 7, "action_ref": "ops.restart", "status": "completed", "config": {},
        "parent": None, "enforcement": None, "result": None, "created": T0, "updated": T0,
        "started_at": None, "finished_at": None, "executor": None,
        "requester": {"identity": "ana", "source": "slack", "channel": "C0123"},
    }  # fmt: skip
    base.update(fields)
    return Execution(**base)  # type: ignore[arg-type]


def test_durations_and_times() -> None:
    assert show_duration_ms(None) == "—"
    assert show_duration_ms(1834) == "1.8 s"
    assert show_duration_ms(125_000) == "2 min 05 s"
    assert show_duration_ms(3_720_000) == "1 h 02 min"
    assert show_time(None) == "—"
    assert show_time(T0) == "2026-11-29 20:00:00 UTC"
    timed = _record(started_at=T0, finished_at=T0 + timedelta(seconds=3))
    assert duration_ms(timed) == 3000
    assert duration_ms(_record(result={"duration_ms": 12}, started_at=T0)) == 12
    assert duration_ms(_record(started_at=T0)) is None


def test_secrets_are_shown_as_hidden() -> None:
    record = _record(config={"host": "web1", "token": REDACTED, "n": [1, 2]})
    shown = {p.name: (p.value, p.secret) for p in parameters(record.config)}
    assert shown == {
        "host": ("web1", False),
        "n": ("[1, 2]", False),
        "token": ("hidden (secret)", True),
    }
    assert has_secrets(record)
    assert not has_secrets(_record(config={"host": "web1"}))


def test_who_where_why() -> None:
    facts = {f.label: f.value for f in origin_facts(_record(parent=3), None)}
    assert facts == {
        "Requested by": "ana",
        "Through": "slack",
        "Chat channel": "C0123",
        "Started by": "execution #3",
    }
    ruled = _record(enforcement=9, requester={"identity": "rule:ops.on_alert", "source": "rule"})
    enforcement = {"rule_ref": "ops.on_alert", "trigger_ref": "ops.alert", "event_id": 41}
    facts = {f.label: f.value for f in origin_facts(ruled, enforcement)}
    assert facts["Rule"] == "ops.on_alert"
    assert facts["Trigger"] == "ops.alert"
    assert facts["Event"] == "#41"
    assert facts["Enforcement"] == "#9"


def test_output_of_a_result() -> None:
    out = output(_record(result={"stdout": "a\n", "stderr": "", "exit_code": 2, "error": "boom"}))
    assert (out.stdout, out.stderr, out.exit_code, out.error) == ("a\n", "", 2, "boom")
    assert output(_record()).stdout == ""
