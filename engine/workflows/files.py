"""A pack's workflow files (Attune's layout): ``workflows/<name>.yaml`` (or
``<name>.workflow.yaml``), each a whole definition whose ref defaults to ``<pack>.<name>``; and
an action YAML with ``workflow_file`` (relative to ``actions/``), whose ref, label,
description and parameters the action YAML gives. A file that cannot be used is reported
(naming the file and the problem) and left out; the rest of the pack loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from engine.errors import EngineError
from engine.packs import WORKFLOW_RUNNER, ActionSpec
from engine.workflows.definition import WorkflowDefinition, WorkflowProblem, parse_definition
from engine.workflows.records import WorkflowFields
from engine.workflows.service import fields_of, workflow_action
from engine.workflows.validation import validate


@dataclass(frozen=True, slots=True)
class WorkflowFile:
    """A workflow read from a pack's folder, checked except against the catalog."""

    source: str
    definition: WorkflowDefinition
    fields: WorkflowFields
    action: ActionSpec


def _load(file: Path) -> Any:
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise WorkflowProblem(
            f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowProblem(f"cannot read: {exc}") from None


def read_workflows(
    pack_dir: Path, pack_ref: str, linked: Sequence[tuple[Path, dict[str, Any], ActionSpec]] = ()
) -> tuple[list[WorkflowFile], list[str]]:
    """The pack's workflows and the problems of the files left out. ``linked`` holds each
    action YAML with a ``workflow_file``: ``(its file, its mapping, its action)``."""
    found: list[WorkflowFile] = []
    problems: list[str] = []
    taken = {action.ref for _, _, action in linked}
    for action_file, data, action in linked:
        target = Path(str(data.get("workflow_file")))
        file = (action_file.parent / target).resolve()
        try:
            if target.is_absolute() or not file.is_relative_to(pack_dir.resolve()):
                raise WorkflowProblem(f"workflow_file '{target}' is not inside the pack")
            raw = _load(file)
            if isinstance(raw, dict) and data.get("parameters") is not None:
                raw = {**raw, "parameters": data["parameters"]}  # the action YAML's
            definition = parse_definition(
                raw,
                ref=action.ref,
                label=action.label,
                description=action.description or None,
            )
            validate(definition)
            params = data.get("parameters")
            output = data.get("output") or data.get("out_schema") or data.get("output_schema")
            fields = fields_of(definition, pack_ref, param_schema=params, out_schema=output)
            runnable = action.model_copy(
                update={"runner_type": WORKFLOW_RUNNER, "enabled": True, "disabled_reason": None}
            )
            found.append(WorkflowFile(str(action_file), definition, fields, runnable))
        except EngineError as exc:
            problems.append(f"{action_file}: workflow_file '{target}': {exc.message}")
    folder = pack_dir / "workflows"
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    for file in files:
        name = file.name.rsplit(".", 1)[0].removesuffix(".workflow")
        try:
            raw = _load(file)
            if not isinstance(raw, dict):
                raise WorkflowProblem("expected a mapping with 'tasks' at the top level")
            ref = raw.get("ref") or f"{pack_ref}.{name}"
            if not isinstance(ref, str) or not ref.startswith(f"{pack_ref}."):
                raise WorkflowProblem(f"ref '{ref}' does not belong to pack '{pack_ref}'")
            if ref in taken:
                raise WorkflowProblem(f"'{ref}' is already defined by another file of the pack")
            definition = parse_definition(raw, ref=ref)
            validate(definition)
            action = workflow_action(
                definition,
                pack_ref,
                entry_point=str(file.relative_to(pack_dir)),
                base_dir=str(pack_dir),
            )
            fields = fields_of(definition, pack_ref)
            found.append(WorkflowFile(str(file), definition, fields, action))
            taken.add(ref)
        except EngineError as exc:
            problems.append(f"{file}: {exc.message}")
    return found, problems
