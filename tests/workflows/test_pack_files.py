"""A pack's workflow files as Attune lays them out: ``workflows/*.yaml`` and an action YAML
with ``workflow_file``; a bad file is reported naming it, and the rest of the pack loads."""

from __future__ import annotations

from pathlib import Path

from engine.packs import load_pack

GRAPH_ONLY = """
version: 1.2.0
vars: {done: false}
tasks:
  - name: deploy
    action: core.echo
    input: {message: "deploying {{ parameters.app }}"}
    next:
      - when: "{{ succeeded() }}"
        publish: [{done: true}]
output_map:
  done: "{{ vars.done }}"
"""


def make(root: Path, files: dict[str, str]) -> Path:
    pack = root / "ops"
    for name, text in {"pack.yaml": "ref: ops\nversion: 1.0.0\n", **files}.items():
        (pack / name).parent.mkdir(parents=True, exist_ok=True)
        (pack / name).write_text(text, encoding="utf-8")
    return pack


def test_action_yaml_with_workflow_file_and_standalone_workflow_files(tmp_path: Path) -> None:
    pack = make(
        tmp_path,
        {
            "actions/deploy.yaml": (
                "ref: ops.deploy\nlabel: Deploy the app\n"
                "workflow_file: workflows/deploy.workflow.yaml\n"
                "parameters:\n  app: {type: string, required: true}\n"
            ),
            "actions/workflows/deploy.workflow.yaml": GRAPH_ONLY,
            "workflows/drain.workflow.yaml": (
                "label: Drain\ntasks:\n  - {name: drain, action: core.noop}\n"
            ),
        },
    )
    spec = load_pack(pack)
    assert spec.problems == ()
    found = {w.definition.ref: w for w in spec.workflows}
    assert set(found) == {"ops.deploy", "ops.drain"}
    deploy = found["ops.deploy"]
    assert deploy.definition.label == "Deploy the app"  # the action YAML's
    assert deploy.fields.version == "1.2.0"
    assert deploy.fields.param_schema == {"app": {"type": "string", "required": True}}
    actions = {a.ref: a for a in spec.actions}
    assert set(actions) == {"ops.deploy", "ops.drain"}
    for action in actions.values():  # runnable: their definitions are valid
        assert action.enabled is True
        assert (action.runtime_ref, action.runner_type) == ("workflow", "workflow")
        assert action.disabled_reason is None
    assert actions["ops.deploy"].entry_point == "workflows/deploy.workflow.yaml"
    assert actions["ops.drain"].label == "Drain"


def test_bad_workflow_files_are_named_and_the_pack_still_loads(tmp_path: Path) -> None:
    pack = make(
        tmp_path,
        {
            "actions/hello.yaml": "name: hello\nentry_point: hello.sh\n",
            "actions/hello.sh": "#!/bin/sh\necho hi\n",
            "actions/linked.yaml": "name: linked\nworkflow_file: ../../elsewhere.yaml\n",
            "workflows/good.yaml": "tasks:\n  - {name: a, action: ops.hello}\n",
            "workflows/hello.yaml": "tasks:\n  - {name: a, action: core.noop}\n",
            "workflows/cycle.yaml": (
                "tasks:\n  - {name: a, action: core.noop, on_complete: b}\n"
                "  - {name: b, action: core.noop, on_complete: c}\n"
                "  - {name: c, action: core.noop, on_complete: b}\n"
            ),
            "workflows/foreign.yaml": "ref: other.x\ntasks:\n  - {name: a, action: core.noop}\n",
            "workflows/broken.yaml": "tasks:\n  - name: a\n    action: [\n",
        },
    )
    spec = load_pack(pack)
    assert [w.definition.ref for w in spec.workflows] == ["ops.good"]
    problems = "\n".join(spec.problems)
    assert f"{pack / 'workflows' / 'cycle.yaml'}: task 'b' next: cycle without an exit" in problems
    assert f"{pack / 'workflows' / 'broken.yaml'}: invalid YAML" in problems
    assert "foreign.yaml: ref 'other.x' does not belong to pack 'ops'" in problems
    assert "hello.yaml: 'ops.hello' is already an action" in problems
    assert "linked.yaml: workflow_file '../../elsewhere.yaml'" in problems
    assert {a.ref for a in spec.actions} == {"ops.hello", "ops.linked", "ops.good"}
