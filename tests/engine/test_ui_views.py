"""The pure parts of the web UI's read endpoints: analytics windows and failure rate, an
execution's history derived from its record, audit entries as Attune's events, and workers'
summaries (tests/api/test_ui_endpoints.py has them over HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from engine.analytics import TimeRange, failure_rate, time_range
from engine.audit_events import attune_outcome, audit_event, category, event_type
from engine.audit_records import AuditRecord
from engine.errors import InvalidRequest
from engine.history import execution_changes, matching
from engine.worker_roster import Held, WorkerFilter, summary, worker_id

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _s(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- analytics --------------------------------------------------------------------------------


def test_time_range_follows_attunes_rules() -> None:
    now = _s(0)
    assert time_range(None, None, None, now) == TimeRange(now - timedelta(hours=24), now)
    assert time_range(None, None, 6, now) == TimeRange(now - timedelta(hours=6), now)
    assert time_range(None, None, 0, now).since == now - timedelta(hours=1)
    assert time_range(None, None, 10**9, now).since == now - timedelta(hours=8760)
    until = _s(-3600)
    assert time_range(None, until, 2, now) == TimeRange(until - timedelta(hours=2), until)
    since = _s(-60)
    assert time_range(since, None, 2, now) == TimeRange(since, now)  # hours ignored
    assert time_range(since, until, None, now) == TimeRange(since, until)


def test_failure_rate_counts_failed_and_timed_out_among_rated_ends() -> None:
    window = TimeRange(_s(0), _s(3600))
    ended = [
        {"bucket": _s(0), "label": "completed", "value": 6},
        {"bucket": _s(0), "label": "failed", "value": 1},
        {"bucket": _s(3600), "label": "completed", "value": 2},
        {"bucket": _s(3600), "label": "timeout", "value": 1},
        {"bucket": _s(3600), "label": "cancelled", "value": 5},
    ]
    rate = failure_rate(window, ended)
    assert rate["total_terminal"] == 10
    assert (rate["completed_count"], rate["failed_count"], rate["timeout_count"]) == (8, 1, 1)
    assert rate["failure_rate_pct"] == pytest.approx(20.0)
    assert failure_rate(window, [])["failure_rate_pct"] == 0.0


# -- history ----------------------------------------------------------------------------------


def _execution(status: str, **more: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": 7,
        "action_ref": "ops.deploy",
        "status": status,
        "executor": 1,
        "parent": None,
        "enforcement": None,
        "result": None,
        "created": _s(0),
        "updated": _s(0),
        "started_at": None,
        "finished_at": None,
    }
    record.update(more)
    return record


def _timeline(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["operation"], r["new_values"]["status"]) for r in reversed(records)]


def test_a_waiting_execution_has_its_creation_only() -> None:
    [created] = execution_changes(_execution("requested"), None, None)
    assert created["operation"] == "INSERT"
    assert created["time"] == _s(0)
    assert created["new_values"]["status"] == "requested"
    assert created["new_values"]["executor"] == 1
    assert (created["entity_id"], created["entity_ref"]) == (7, "ops.deploy")


def test_a_finished_run_has_creation_start_and_end() -> None:
    result = {"succeeded": False, "exit_code": 2, "stdout": "x" * 10_000, "error": "e" * 900}
    done = _execution("failed", started_at=_s(1), finished_at=_s(5), updated=_s(5), result=result)
    records = execution_changes(done, "host:12", None)
    assert _timeline(records) == [
        ("INSERT", "requested"),
        ("UPDATE", "running"),
        ("UPDATE", "failed"),
    ]
    end, start, _ = records
    assert start["new_values"]["worker"] == "host:12"
    assert start["changed_fields"] == ["status", "worker", "started_at"]
    assert end["time"] == _s(5)
    assert end["changed_fields"] == ["status", "result"]
    assert "stdout" not in end["new_values"]["result"]  # a digest; the execution has it all
    assert len(end["new_values"]["result"]["error"]) == 500


def test_a_cancel_of_a_running_execution_adds_canceling() -> None:
    canceling = _execution("canceling", started_at=_s(1), updated=_s(3))
    assert _timeline(execution_changes(canceling, "w", _s(3)))[-1] == ("UPDATE", "canceling")
    cancelled = _execution("cancelled", started_at=_s(1), finished_at=_s(4), updated=_s(4))
    records = execution_changes(cancelled, "w", _s(3))
    assert [status for _, status in _timeline(records)] == [
        "requested", "running", "canceling", "cancelled",
    ]  # fmt: skip
    assert records[1]["time"] == _s(3)
    # Recorded a moment after the run ended: the move still comes before the end.
    late = execution_changes(cancelled, "w", _s(4.2))
    assert late[1]["time"] == _s(4)
    assert [r["time"] for r in late] == sorted((r["time"] for r in late), reverse=True)


def test_a_cancel_before_the_start_goes_straight_to_cancelled() -> None:
    cancelled = _execution("cancelled", finished_at=_s(2), updated=_s(2))
    records = execution_changes(cancelled, None, _s(2))
    assert _timeline(records) == [("INSERT", "requested"), ("UPDATE", "cancelled")]


def test_history_filters() -> None:
    done = _execution("completed", started_at=_s(1), finished_at=_s(5), updated=_s(5))
    records = execution_changes(done, "w", None)
    assert len(matching(records, operation="insert")) == 1
    assert len(matching(records, changed_field="status")) == 2
    assert len(matching(records, changed_field="worker")) == 1
    assert len(matching(records, since=_s(1))) == 2
    assert len(matching(records, until=_s(1))) == 2


# -- audit events -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "outcome", "kind", "etype", "attune"),
    [
        ("run", "accepted", "execution", "execution.run", "success"),
        ("run", "denied", "execution", "execution.run", "denied"),
        ("rerun", "refused", "execution", "execution.rerun", "failure"),
        ("login", "denied", "auth", "auth.login", "denied"),
        ("change-password", "accepted", "auth", "auth.change_password", "success"),
        ("key.create", "completed", "secret", "secret.key.create", "success"),
        ("list_audit_events", "denied", "rbac", "rbac.denied", "denied"),
        ("something_new", "failed", "api", "api.something_new", "failure"),
    ],
)
def test_our_verbs_and_outcomes_as_attunes(
    verb: str, outcome: str, kind: str, etype: str, attune: str
) -> None:
    assert category(verb, outcome) == kind
    assert event_type(verb, outcome) == etype
    assert attune_outcome(outcome) == attune


def test_a_refused_request_names_its_path() -> None:
    row = {
        "id": 3, "at": _s(0), "actor": "vic", "role": "viewer", "source": "api",
        "channel": "token:login", "verb": "list_audit_events", "target": "/api/v1/audit-events",
        "parameters": None, "outcome": "denied", "detail": "needs admin", "execution_id": None,
    }  # fmt: skip
    event = audit_event(AuditRecord(**row), 5)
    assert (event["category"], event["outcome"], event["actor_identity"]) == ("rbac", "denied", 5)
    assert (event["http_path"], event["http_status"]) == ("/api/v1/audit-events", 403)
    assert event["resource_ref"] is None
    assert event["actor_token_type"] == "access"
    assert event["details"] == {
        "verb": "list_audit_events", "outcome": "denied", "detail": "needs admin",
        "parameters": None,
    }  # fmt: skip


# -- workers ----------------------------------------------------------------------------------


class _Own:
    concurrency = 4


def test_this_processs_worker_is_alive_and_shows_its_load() -> None:
    own: Any = _Own()
    worker = summary("box:1", Held(running=3, canceling=1), own=own, stale_after_s=30, now=T0)
    assert (worker["status"], worker["health_state"]) == ("busy", "busy")
    assert worker["last_heartbeat"] == T0
    assert worker["heartbeat_stale"] is False
    assert worker["load"]["total_active"] == 4
    assert worker["load"]["utilization_percent"] == 100
    assert worker["worker_type"] == "local"
    assert worker["host"] == "box"


def test_a_silent_worker_of_another_process_is_offline() -> None:
    held = Held(running=1, last_heartbeat=_s(-120), first_started=_s(-300))
    worker = summary("elsewhere:9", held, own=None, stale_after_s=30, now=T0)
    assert worker["health_state"] == "offline"
    assert worker["heartbeat_stale"] is True
    assert worker["heartbeat_age_seconds"] == 120
    assert worker["worker_type"] == "remote"
    assert worker["created"] == _s(-300)
    assert worker["load"]["max_concurrent_executions"] is None
    fresh = summary("elsewhere:9", Held(running=1, last_heartbeat=_s(-5)), own=None,
                    stale_after_s=30, now=T0)  # fmt: skip
    assert fresh["health_state"] == "busy"


def test_worker_ids_are_stable_and_exact_in_json() -> None:
    assert worker_id("host:1") == worker_id("host:1") != worker_id("host:2")
    assert 0 < worker_id("host:1") < 2**53


def test_worker_filters_refuse_unknown_values() -> None:
    assert WorkerFilter.parse({"cordoned": "false"}).cordoned is False
    assert WorkerFilter.parse({"role": "", "status": ""}) == WorkerFilter()
    for bad in ({"role": "robot"}, {"cordoned": "yes"}, {"health_state": "sleepy"}):
        with pytest.raises(InvalidRequest):
            WorkerFilter.parse(bad)
