"""The planning core: what starts, which transitions fire, what is published, when a run ends."""

from __future__ import annotations

from typing import Any

import yaml

from engine.templates import KvView
from engine.workflows import plan
from engine.workflows.definition import WorkflowDefinition, parse_definition
from engine.workflows.plan import Progress, Step


def wf(text: str) -> WorkflowDefinition:
    return parse_definition(yaml.safe_load("ref: p.w\n" + text))


def started(step: Step) -> list[tuple[str, int | None]]:
    return [(launch.task, launch.index) for launch in step.launches]


def end(d: WorkflowDefinition, step: Step, task: str, status: str = "completed", **kw: Any) -> Step:
    return plan.task_ended(d, step.progress, task, status, kw.pop("result", None), **kw)


SEQUENCE = wf("""
parameters: {host: {type: string}}
vars: {greeting: ""}
tasks:
  - name: first
    action: core.echo
    input: {message: "hello {{ parameters.host }}"}
    next:
      - when: "{{ succeeded() }}"
        publish:
          - greeting: "{{ result().stdout | trim }}"
          - shout: "{{ vars.greeting | upper }}"
        do: [second]
  - name: second
    action: core.echo
    input: {message: "{{ vars.shout }} after {{ task.first.status }}", code: "{{ result().code }}"}
output_map:
  said: "{{ vars.greeting }}"
  second: "{{ task.second.result }}"
""")


def test_sequential_run_publishes_and_renders_inputs_with_types() -> None:
    step = plan.start(SEQUENCE, {"host": "web1"})
    assert [(x.task, x.action, x.input) for x in step.launches] == [
        ("first", "core.echo", {"message": "hello web1"})
    ]
    step = end(SEQUENCE, step, "first", result={"stdout": "hi web1\n", "code": 0})
    assert step.progress.vars == {"greeting": "hi web1", "shout": "HI WEB1"}
    assert step.fired == (("first", 0),)
    assert step.launches[0].input == {"message": "HI WEB1 after completed", "code": 0}
    assert not step.finished
    step = end(SEQUENCE, step, "second", result={"ok": True})
    assert step.finished
    assert step.progress.status == "completed"
    assert step.progress.output == {"said": "hi web1", "second": {"ok": True}}


def test_branch_on_failure_handles_it_and_an_unhandled_failure_fails_the_run() -> None:
    d = wf("""
tasks:
  - name: restart
    action: ops.restart
    next:
      - {when: "{{ succeeded() }}", do: [verify]}
      - {when: "{{ failed() }}", do: [rollback]}
  - {name: verify, action: core.echo}
  - {name: rollback, action: ops.rollback}
""")
    step = end(d, plan.start(d, {}), "restart", "failed", result={"error": "exit 1"})
    assert started(step) == [("rollback", None)]
    step = end(d, step, "rollback")
    assert step.progress.status == "completed"  # the failure was handled
    # the rollback failing too: nothing handles it, the run fails saying so
    step = end(d, plan.start(d, {}), "restart", "failed")
    step = end(d, step, "rollback", "failed", result={"error": "no previous version"})
    assert step.progress.status == "failed"
    assert step.progress.error == (
        "task 'rollback' ended failed and no transition handles it: no previous version"
    )


def test_timeout_fires_timed_out_not_failed() -> None:
    d = wf("""
tasks:
  - name: slow
    action: core.sleep
    timeout: 5
    next:
      - {when: "{{ failed() }}", do: [on_fail]}
      - {when: "{{ timed_out() }}", do: [on_timeout]}
  - {name: on_fail, action: core.echo}
  - {name: on_timeout, action: core.echo}
""")
    step = plan.start(d, {})
    assert step.launches[0].timeout_s == 5
    assert started(end(d, step, "slow", "timeout")) == [("on_timeout", None)]


def test_with_items_runs_concurrency_at_a_time_and_collects_results() -> None:
    d = wf("""
tasks:
  - name: each
    action: core.echo
    with_items: "{{ parameters.hosts }}"
    concurrency: 2
    input: {message: "{{ index }}:{{ item }}"}
    on_success: report
  - name: report
    action: core.echo
    input: {message: "{{ task.each.result | join(',') }}"}
""")
    step = plan.start(d, {"hosts": ["a", "b", "c"]})
    assert [x.input["message"] for x in step.launches] == ["0:a", "1:b"]
    step = end(d, step, "each", result="B", index=1)
    assert started(step) == [("each", 2)]
    assert step.launches[0].input == {"message": "2:c"}
    step = end(d, step, "each", result="A", index=0)
    assert step.launches == ()
    again = end(d, step, "each", result="A", index=0)  # a duplicate end changes nothing
    assert again.launches == ()
    assert again.progress == step.progress
    step = end(d, step, "each", result="C", index=2)
    assert step.launches[0].input == {"message": "A,B,C"}
    # no items: the task succeeds at once with an empty list
    empty = plan.start(d, {"hosts": []})
    assert started(empty) == [("report", None)]
    # not a list: the task fails, naming the field
    bad = plan.start(d, {"hosts": {"a": 1}})
    assert bad.progress.status == "failed"
    assert "task 'each' with_items: gave a dict, not a list" in str(bad.progress.error)


def test_parallel_branches_join_and_a_dead_end_fails_with_the_reason() -> None:
    d = wf("""
tasks:
  - name: start
    action: core.echo
    next: [{do: [left, right]}]
  - {name: left, action: core.echo, on_success: joined}
  - {name: right, action: core.echo, on_success: joined}
  - {name: joined, action: core.echo, join: all}
""")
    step = end(d, plan.start(d, {}), "start")
    assert started(step) == [("left", None), ("right", None)]
    step = end(d, step, "left")
    assert step.launches == ()
    assert step.progress.waiting == {"joined": ["left"]}
    done = end(d, end(d, step, "right"), "joined")
    assert done.progress.status == "completed"
    # right fails: joined never gets both, nothing runs, the run fails instead of hanging
    dead = end(d, step, "right", "failed")
    assert dead.finished
    assert dead.progress.status == "failed"
    assert "task 'right' ended failed" in str(dead.progress.error)
    assert "dead end: task 'joined' waits (join) for 2 inbound tasks but only 1 (left)" in str(
        dead.progress.error
    )


def test_parallel_task_type_starts_sub_tasks_and_ends_with_them() -> None:
    d = wf("""
tasks:
  - name: checks
    type: parallel
    tasks:
      - {name: disk, action: core.echo}
      - {name: dns, action: core.echo}
    on_success: go
    on_failure: stop
  - {name: go, action: core.echo}
  - {name: stop, action: core.echo, input: {why: "{{ result() }}"}}
""")
    step = plan.start(d, {})
    assert started(step) == [("disk", None), ("dns", None)]
    step = end(d, step, "disk", result=1)
    assert step.launches == ()
    step = end(d, step, "dns", "failed", result=2)
    assert started(step) == [("stop", None)]
    assert step.launches[0].input == {"why": {"disk": 1, "dns": 2}}


def test_retry_runs_again_with_backoff_then_follows_failure() -> None:
    d = wf("""
tasks:
  - name: flaky
    action: core.http_request
    retry: {count: 2, delay: 3, backoff: linear}
    on_failure: alert
  - {name: alert, action: core.echo}
""")
    step = end(d, plan.start(d, {}), "flaky", "failed")
    assert [(x.task, x.attempt, x.delay_s) for x in step.launches] == [("flaky", 1, 3.0)]
    step = end(d, step, "flaky", "failed")
    assert [(x.task, x.attempt, x.delay_s) for x in step.launches] == [("flaky", 2, 6.0)]
    step = end(d, step, "flaky", "failed")
    assert started(step) == [("alert", None)]


def test_when_skips_a_task_and_decision_default_fires_when_nothing_else_does() -> None:
    d = wf("""
tasks:
  - name: check
    action: core.echo
    decision:
      - when: "{{ result().code == 0 }}"
        next: fine
      - default: repair
  - name: fine
    action: core.echo
  - name: repair
    action: core.echo
    when: "{{ parameters.allow_repair }}"
""")
    step = end(d, plan.start(d, {"allow_repair": True}), "check", result={"code": 0})
    assert started(step) == [("fine", None)]
    step = end(d, plan.start(d, {"allow_repair": True}), "check", result={"code": 2})
    assert started(step) == [("repair", None)]
    skipped = end(d, plan.start(d, {"allow_repair": False}), "check", result={"code": 2})
    assert skipped.launches == ()
    assert skipped.progress.status == "completed"
    assert skipped.progress.tasks["repair"].status == "skipped"


def test_kv_and_system_scopes_and_a_failing_template_fails_the_task() -> None:
    d = wf("""
tasks:
  - name: a
    action: core.echo
    input: {token: "{{ kv.get('api.url') }}", run: "{{ system.execution_id }}"}
    on_success: b
  - name: b
    action: core.echo
    input: {x: "{{ result().missing.deeper }}"}
    on_failure: c
  - {name: c, action: core.echo, input: {why: "{{ result().error }}"}}
""")
    kv = KvView({"api.url": ("https://x", False)})
    step = plan.start(d, {}, system={"execution_id": 7}, kv=kv)
    assert step.launches[0].input == {"token": "https://x", "run": 7}
    step = plan.task_ended(d, step.progress, "a", "completed", {}, kv=kv)
    assert started(step) == [("c", None)]  # b's input could not render: b failed
    assert "missing" in step.launches[0].input["why"]


def test_progress_survives_json_and_a_loop_runs_a_task_again() -> None:
    d = wf("""
vars: {polls: 0}
tasks:
  - {name: begin, action: core.echo, on_complete: poll}
  - name: poll
    action: core.echo
    next:
      - when: "{{ result() != 'ready' }}"
        publish: [{polls: "{{ vars.polls + 1 }}"}]
        do: [poll]
""")
    step = end(d, plan.start(d, {}), "begin")
    for _ in range(2):
        restored = Progress.from_dict(step.progress.as_dict())  # as stored with the run
        step = plan.task_ended(d, restored, "poll", "completed", "busy")
        assert started(step) == [("poll", None)]
    step = end(d, step, "poll", result="ready")
    assert step.progress.status == "completed"
    assert step.progress.vars == {"polls": 2}
    assert step.progress.tasks["poll"].runs == 3


def test_parallel_sub_tasks_may_iterate_or_be_skipped() -> None:
    d = wf("""
tasks:
  - name: fan
    type: parallel
    tasks:
      - name: each
        action: core.echo
        with_items: "{{ parameters.hosts }}"
        input: {host: "{{ item }}"}
      - {name: maybe, action: core.echo, when: "{{ parameters.extra }}"}
    on_success: after
  - {name: after, action: core.echo, input: {r: "{{ result() }}"}}
""")
    step = plan.start(d, {"hosts": ["a", "b"], "extra": False})
    assert started(step) == [("each", 0), ("each", 1)]
    step = end(d, step, "each", result="A", index=0)
    assert step.launches == ()
    step = end(d, step, "each", result="B", index=1)
    assert step.launches[0].input == {"r": {"each": ["A", "B"], "maybe": None}}
    nothing = plan.start(d, {"hosts": [], "extra": False})
    assert started(nothing) == [("after", None)]
