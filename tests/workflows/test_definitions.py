"""Parsing Attune's workflow format and the checks made before a definition is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.workflows.definition import WorkflowProblem, parse_definition
from engine.workflows.validation import problems, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "packs" / "examples" / "workflows"


def wf(text: str, **kw: Any) -> Any:
    return parse_definition(yaml.safe_load(text), **kw)


def refused(text: str, exists: Any = None) -> str:
    with pytest.raises(WorkflowProblem) as caught:
        validate(wf(text), exists)
    return caught.value.message


def test_shorthands_fold_into_next_in_attunes_order() -> None:
    d = wf("""
ref: p.w
tasks:
  - name: a
    action: core.echo
    on_success: b
    on_failure: c
    on_complete: d
    on_timeout: e
    publish:
      - x: "{{ result() }}"
  - {name: b, action: core.echo}
  - {name: c, action: core.echo}
  - {name: d, action: core.echo}
  - {name: e, action: core.echo}
""")
    a = d.task("a")
    assert a is not None
    assert [(t.when, t.do) for t in a.next] == [
        ("{{ succeeded() }}", ("b",)),
        ("{{ failed() }}", ("c",)),
        (None, ("d",)),
        ("{{ timed_out() }}", ("e",)),
    ]
    assert a.next[0].publish == (("x", "{{ result() }}"),)
    # the canonical JSON has only ``next`` and parses back to the same definition
    stored = d.as_dict()
    assert "on_success" not in stored["tasks"][0]
    assert parse_definition(stored) == d


def test_next_wins_over_shorthands_and_fields_are_typed() -> None:
    d = wf("""
ref: p.w
version: 2.1.0
vars: [{count: 0}, {names: []}]
tasks:
  - name: a
    action: core.echo
    on_success: b
    next:
      - when: "{{ succeeded() }}"
        do: c
    retry: {count: 3, delay: 2, backoff: exponential, max_delay: 5}
    timeout: 30
  - {name: b, action: core.echo}
  - name: c
    action: core.echo
    with_items: "{{ parameters.hosts }}"
    concurrency: 2
    input: {host: "{{ item }}"}
""")
    a, c = d.task("a"), d.task("c")
    assert a is not None
    assert c is not None
    assert [t.do for t in a.next] == [("c",)]
    assert d.vars == {"count": 0, "names": []}
    assert d.version == "2.1.0"
    assert a.retry is not None
    assert a.timeout_s == 30
    assert [a.retry.delay_before(n) for n in (1, 2, 3)] == [2, 4, 5]
    assert c.with_items == "{{ parameters.hosts }}"
    assert c.concurrency == 2


def test_parse_errors_name_the_task_and_field() -> None:
    cases = {
        "tasks: []": "tasks",
        "tasks: [{name: a, action: core.echo, on_sucess: b}]": (
            "task 'a': unknown field 'on_sucess'"
        ),
        "tasks: [{name: a, action: core.echo, retry: {count: 0}}]": "task 'a' retry.count",
        "tasks: [{name: a, action: core.echo, concurrency: -1}]": "task 'a' concurrency",
        "tasks: [{name: a, action: core.echo, timeout: soon}]": "task 'a' timeout",
        "tasks: [{name: vars, action: core.echo}]": "task 'vars' name",
        "tasks: [{name: a, action: core.echo, next: [{do: [b], if: x}]}]": "task 'a' next[0]",
    }
    for body, expected in cases.items():
        with pytest.raises(WorkflowProblem) as caught:
            wf("ref: p.w\n" + body)
        assert expected in caught.value.message, (body, caught.value.message)


def test_unknown_task_in_do_is_refused_naming_task_and_field() -> None:
    message = refused("""
ref: p.w
tasks:
  - name: a
    action: core.echo
    next: [{when: "{{ failed() }}", do: [cleanup]}]
""")
    assert "task 'a' next[0].do: no task named 'cleanup'" in message


def test_missing_action_is_checked_against_the_catalog() -> None:
    text = """
ref: p.w
tasks:
  - {name: a, action: core.echo, on_success: b}
  - {name: b, action: ops.restart}
  - {name: c, type: action, on_complete: a}
"""
    message = refused(text, lambda ref: ref == "core.echo")
    assert "task 'b' action: no action 'ops.restart'" in message
    assert "task 'c' action: missing" in message


def test_cycle_without_exit_is_refused_and_a_loop_with_a_condition_is_not() -> None:
    message = refused("""
ref: p.w
tasks:
  - {name: start, action: core.echo, on_complete: poll}
  - name: poll
    action: core.echo
    on_complete: wait
  - name: wait
    action: core.sleep
    on_complete: poll
""")
    assert "cycle without an exit" in message
    assert "poll -> wait" in message
    validate(
        wf("""
ref: p.w
tasks:
  - {name: start, action: core.echo, on_complete: poll}
  - name: poll
    action: core.echo
    next:
      - when: "{{ result().stdout != 'ready' }}"
        do: [wait]
  - {name: wait, action: core.sleep, on_complete: poll}
""")
    )


def test_no_start_task_and_unreachable_tasks() -> None:
    assert "no start task" in refused("""
ref: p.w
tasks:
  - {name: a, action: core.echo, on_failure: b}
  - {name: b, action: core.echo, on_failure: a}
""")
    assert "task 'c': never starts" in refused("""
ref: p.w
tasks:
  - {name: a, action: core.echo}
  - {name: b, action: core.echo, on_success: c}
  - {name: c, action: core.echo, on_success: b}
""")


def test_bad_templates_are_refused_naming_task_and_field() -> None:
    message = refused("""
ref: p.w
vars: {attempts: 0}
tasks:
  - name: a
    action: core.echo
    input:
      message: "{{ parameters.host"
      other: "{{ hostname }}"
      ok: "{{ attempts + 1 }} {{ vars.attempts }} {{ kv.get('x') }} {{ system.execution_id }}"
    next:
      - when: "{{ task.nope.status == 'completed' }}"
        publish: [{x: "{{ item }}"}]
        do: [b]
  - {name: b, action: core.echo}
""")
    assert "task 'a' input.message" in message
    assert "task 'a' input.other: unknown name 'hostname'" in message
    assert "task 'a' next[0].when: no task named 'nope'" in message
    assert "task 'a' next[0].publish.x: 'item' exists only" in message
    assert "input.ok" not in message


def test_join_and_parallel_checks() -> None:
    assert "task 'c' join: waits for 3 tasks but 2 lead to it" in refused("""
ref: p.w
tasks:
  - {name: a, action: core.echo, on_success: c}
  - {name: b, action: core.echo, on_success: c}
  - {name: c, action: core.echo, join: 3}
""")
    assert "task 'x' next: a sub-task" in refused("""
ref: p.w
tasks:
  - name: checks
    type: parallel
    tasks:
      - {name: x, action: core.echo, on_success: y}
      - {name: y, action: core.echo}
""")


def test_shipped_example_runbooks_validate() -> None:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert len(files) >= 2
    core = {"core.echo", "core.http_request", "core.ask", "core.noop", "core.sleep"}
    core |= {f"examples.{f.stem}" for f in (EXAMPLES.parent / "actions").glob("*.yaml")}
    for file in files:
        definition = parse_definition(yaml.safe_load(file.read_text()))
        assert problems(definition, core.__contains__) == [], file
