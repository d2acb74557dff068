"""Packs and actions in Attune's on-disk format, loaded into typed specs.

A pack is a folder with ``pack.yaml`` (``ref, label, description, version`` and Attune's
``conf_schema, config, meta, tags, runtime_deps, dependencies, is_standard``) and
``actions/<name>.yaml``. An action's ``entry_point`` is resolved against the pack's ``actions/``
folder (StackStorm's rule), falling back to the pack folder itself; either way the script must
be under ``actions/`` once symbolic links are followed (:func:`resolve_entry`).

As Attune's loader does, an action whose runner this server does not have (``node``, ``native``,
a workflow) is loaded disabled, with the reason, and the rest of the pack works.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.aliases.records import AliasSpec
from engine.concurrency import ConcurrencyPolicy, undeclared
from engine.errors import EngineError, PackError
from engine.params import normalize_schema, secret_names

RunnerType = Literal["shell", "python", "builtin", "workflow", "unavailable"]
ParameterDelivery = Literal["stdin", "file"]
ParameterFormat = Literal["json", "dotenv", "yaml"]
OutputFormat = Literal["text", "json", "yaml", "jsonl"]

#: Names other tools use for our runners.
RUNNER_ALIASES: dict[str, RunnerType] = {
    "shell": "shell",
    "sh": "shell",
    "bash": "shell",
    "local-shell-script": "shell",
    "core.shell": "shell",
    "python": "python",
    "python3": "python",
    "python-script": "python",
    "core.python": "python",
    "builtin": "builtin",
}
#: Runner names of workflow actions (Attune's, StackStorm's): loaded, not run.
WORKFLOW_RUNNERS = frozenset({"workflow", "orquesta", "mistral", "action-chain"})
#: The runner of a workflow's action (its definition is stored beside it; the worker starts it
#: and its tasks run as child executions: engine/workflows/runs.py).
WORKFLOW_RUNNER: RunnerType = "workflow"
#: Why a workflow action without a usable definition is disabled (a StackStorm ``orquesta``
#: action, or an Attune ``workflow_file`` that could not be read: then the reason is its problem).
WORKFLOW_NOT_YET = (
    "only Attune workflows with a valid definition run here (workflows/<name>.yaml or "
    "workflow_file)"
)
#: ``runtime_ref`` (Attune's) of each runner this server has.
RUNTIME_REFS: dict[RunnerType, str] = {"shell": "core.shell", "python": "core.python"}

BUILTIN_PACKS_DIR = Path(__file__).parent / "builtin"
#: Most retries an action may ask for (``max_retries``).
MAX_RETRIES = 100


class ActionSpec(BaseModel):
    """Everything the engine needs to validate parameters for and run one action."""

    model_config = ConfigDict(frozen=True)

    ref: str
    pack_ref: str
    name: str
    label: str = ""
    description: str = ""
    runner_type: RunnerType
    entry_point: str | None = None
    #: Inline script body (ad-hoc actions created over the API).
    script: str | None = None
    param_schema: dict[str, Any] = Field(default_factory=dict)
    parameter_delivery: ParameterDelivery = "stdin"
    parameter_format: ParameterFormat = "json"
    output_format: OutputFormat = "text"
    timeout_s: float | None = None
    enabled: bool = True
    #: Chat asks the requester to confirm (buttons in Slack) before it runs.
    confirm: bool = False
    #: Folder the entry point is resolved against.
    base_dir: str | None = None
    out_schema: dict[str, Any] | None = None
    #: The runtime as the author named it (``core.python``, ``node``...).
    runtime_ref: str | None = None
    #: Why the action cannot run here (it is then disabled).
    disabled_reason: str | None = None
    #: At most so many runs at once (per group), Attune's concurrency policy; None: no limit.
    concurrency: ConcurrencyPolicy | None = None
    #: Attune's: how many times a run that ends transiently (abandoned, timeout) is retried
    #: (engine/retries.py); 0: never.
    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)

    @property
    def secrets(self) -> frozenset[str]:
        return secret_names(self.param_schema)

    def entry_path(self) -> Path | None:
        """Absolute path of the script file, or None for inline, built-in and unavailable actions;
        PackError when it is not under the pack's ``actions/`` folder (see
        :func:`resolve_entry`; checked again at run time, as the folder may have changed)."""
        if self.script is not None or self.entry_point is None:
            return None
        if self.runner_type in ("builtin", "workflow", "unavailable"):  # no script to run
            return None
        if not self.base_dir:
            raise PackError(f"entry_point '{self.entry_point}' has no pack folder to be in")
        return resolve_entry(Path(self.base_dir), self.entry_point)


def resolve_entry(base_dir: Path, entry: str) -> Path:
    """The script an ``entry_point`` names: a path relative to the pack's ``actions/`` folder
    (StackStorm's and Attune's rule), or to the pack folder (``actions/hello.sh``), that
    resolves, after symbolic links, to a place under ``actions/``. Anything else (an absolute
    path, ``..``, a link out of ``actions/``, a file elsewhere in the pack) is a PackError
    naming the entry point. A file that does not exist yet is failed at run time."""
    base = base_dir.resolve()
    actions_dir = (base / "actions").resolve()
    outside = (
        f"entry_point '{entry}' must name a script under the pack's actions/ folder ({actions_dir})"
    )
    if not actions_dir.is_relative_to(base):
        raise PackError(f"{outside}; actions/ itself leads out of the pack")
    path = Path(entry)
    if path.is_absolute() or not entry.strip():
        raise PackError(outside)
    candidates = (base / "actions" / path, base / path)
    found = [c for c in candidates if c.exists() or c.is_symlink()]
    target = (found[0] if found else candidates[0]).resolve()
    if not target.is_relative_to(actions_dir):
        where = target.relative_to(base) if target.is_relative_to(base) else target
        raise PackError(f"{outside}; it leads to {where}")
    return target


class PackSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    ref: str
    label: str = ""
    description: str = ""
    version: str = "0.0.0"
    path: str | None = None
    conf_schema: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    tags: tuple[str, ...] = ()
    runtime_deps: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    is_standard: bool = False
    actions: tuple[ActionSpec, ...] = ()
    #: ``triggers/*.yaml`` and ``rules/*.yaml`` as written (checked when they are registered).
    triggers: tuple[dict[str, Any], ...] = ()
    rules: tuple[dict[str, Any], ...] = ()
    #: ``workflows/*.yaml`` and actions' ``workflow_file`` (:class:`engine.workflows.files
    #: .WorkflowFile`), and the problems of the workflow files left out.
    workflows: tuple[Any, ...] = ()
    problems: tuple[str, ...] = ()
    #: ``aliases/*.yaml``, checked; a file that cannot be used is left out and named in
    #: ``alias_problems`` (``file:line:column: reason``), and the rest of the pack loads.
    aliases: tuple[AliasSpec, ...] = ()
    alias_problems: tuple[str, ...] = ()


class _ActionFile(BaseModel):
    """The YAML of one action as written by a pack author."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    ref: str | None = None
    label: str | None = None
    description: str = ""
    runner_type: str | None = None
    runtime_ref: str | None = None
    entry_point: str | None = None
    parameters: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
    parameter_delivery: ParameterDelivery = "stdin"
    parameter_format: ParameterFormat = "json"
    output_format: OutputFormat = "text"
    timeout_seconds: float | None = Field(default=None, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    enabled: bool = True
    confirm: bool = False
    concurrency: ConcurrencyPolicy | None = None
    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)


def _workflow_file_problems(
    linked: Sequence[tuple[Path, dict[str, Any], ActionSpec]],
    loaded: Sequence[Any],
    problems: Sequence[str],
) -> list[tuple[str, str]]:
    """(ref, problem) of each action YAML whose ``workflow_file`` was not loaded."""
    ok = {w.action.ref for w in loaded}
    out = []
    for file, _, action in linked:
        if action.ref in ok:
            continue
        mine = [p for p in problems if p.startswith(f"{file}:")]
        out.append((action.ref, mine[0] if mine else WORKFLOW_NOT_YET))
    return out


def runner_for(runtime: str | None, entry_point: str | None) -> tuple[RunnerType, str | None]:
    """The runner of a runtime name (ours or Attune's), else the entry point's extension
    (``.py`` python, otherwise shell, as Attune's loader decides); and why it cannot run here
    when this server has no such runner."""
    if runtime:
        known = RUNNER_ALIASES.get(runtime) or RUNNER_ALIASES.get(runtime.lower())
        if known is not None:
            return known, None
        return "unavailable", f"runtime '{runtime}' is not available on this server"
    if entry_point and entry_point.strip().endswith(".py"):
        return "python", None
    return "shell", None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise PackError(f"{where}: invalid YAML: {problem}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise PackError(f"{path}: expected a mapping at the top level")
    return data


def first_error(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``field: message``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def action_from_dict(
    data: dict[str, Any], pack_ref: str, base_dir: str | None, source: str = "action"
) -> ActionSpec:
    """Build an :class:`ActionSpec` from an action YAML mapping."""
    try:
        raw = _ActionFile.model_validate(data)
    except ValidationError as exc:
        raise PackError(f"{source}: {first_error(exc)}") from exc
    name = raw.name or (raw.ref.split(".", 1)[-1] if raw.ref else None)
    if not name:
        raise PackError(f"{source}: an action needs a 'name' or 'ref'")
    if raw.ref and "." in raw.ref and not raw.ref.startswith(f"{pack_ref}."):
        raise PackError(f"{source}: ref '{raw.ref}' does not belong to pack '{pack_ref}'")
    named_runtime = raw.runner_type or raw.runtime_ref
    runner, unavailable = runner_for(named_runtime, raw.entry_point)
    workflow = str(named_runtime).lower() in WORKFLOW_RUNNERS
    workflow_file = (raw.model_extra or {}).get("workflow_file")
    if workflow or workflow_file:
        runner, unavailable = "unavailable", WORKFLOW_NOT_YET
        if workflow_file:  # Attune's workflow action: its graph is in that file
            named_runtime, raw.entry_point = named_runtime or "workflow", str(workflow_file)
    if runner not in ("builtin", "unavailable") and not raw.entry_point:
        raise PackError(f"{source}: 'entry_point' is required for runner_type {runner}")
    try:
        schema = normalize_schema(raw.parameters)
    except PackError as exc:
        raise PackError(f"{source}: {exc.message}") from exc
    if raw.concurrency is not None and (missing := undeclared(raw.concurrency, schema)):
        raise PackError(f"{source}: concurrency.parameters: '{missing}' is not a parameter")
    if runner in ("shell", "python") and raw.entry_point and base_dir is not None:
        try:
            resolve_entry(Path(base_dir), raw.entry_point)
        except PackError as exc:
            raise PackError(f"{source}: {exc.message}") from exc
    return ActionSpec(
        ref=f"{pack_ref}.{name}",
        pack_ref=pack_ref,
        name=name,
        label=raw.label or name,
        description=raw.description,
        runner_type=runner,
        entry_point=raw.entry_point,
        param_schema=schema,
        parameter_delivery=raw.parameter_delivery,
        parameter_format=raw.parameter_format,
        output_format=raw.output_format,
        timeout_s=raw.timeout_seconds or raw.timeout,
        enabled=raw.enabled and unavailable is None,
        confirm=raw.confirm,
        base_dir=base_dir,
        out_schema=raw.out_schema or raw.output_schema,
        runtime_ref=named_runtime,
        disabled_reason=unavailable,
        concurrency=raw.concurrency,
        max_retries=raw.max_retries,
    )


def load_pack(path: Path) -> PackSpec:
    """Load a pack folder; raise :class:`PackError` naming the file at fault."""
    path = path.resolve()
    manifest = path / "pack.yaml"
    if not manifest.is_file():
        raise PackError(f"{path}: no pack.yaml found")
    meta = _read_yaml(manifest)
    ref = meta.get("ref") or meta.get("name")
    if not isinstance(ref, str) or not ref.replace("_", "").replace("-", "").isalnum():
        raise PackError(f"{manifest}: 'ref' must be a name of letters, digits, '_' or '-'")
    attune = _pack_fields(meta, manifest)
    actions: list[ActionSpec] = []
    defined_in: dict[str, Path] = {}
    linked: list[tuple[Path, dict[str, Any], ActionSpec]] = []
    actions_dir = path / "actions"
    if actions_dir.is_dir():
        for file in sorted([*actions_dir.glob("*.yaml"), *actions_dir.glob("*.yml")]):
            data = _read_yaml(file)
            action = action_from_dict(data, ref, str(path), source=str(file))
            if action.ref in defined_in:
                raise PackError(
                    f"{file}: action '{action.ref}' is already defined in "
                    f"{defined_in[action.ref].name}"
                )
            defined_in[action.ref] = file
            actions.append(action)
            if data.get("workflow_file"):
                linked.append((file, data, action))
    from engine.workflows.files import read_workflows  # it builds on this module's specs

    workflows, problems = read_workflows(path, ref, linked)
    linked_refs = {a.ref for _, _, a in linked}
    for found in list(workflows):
        if found.action.ref in defined_in and found.action.ref not in linked_refs:
            problems.append(f"{found.source}: '{found.action.ref}' is already an action")
            workflows.remove(found)
        elif found.action.ref not in defined_in:
            actions.append(found.action)
        else:  # an action YAML's workflow_file, read: the action runs it
            actions = [found.action if a.ref == found.action.ref else a for a in actions]
    for problem_ref, problem in _workflow_file_problems(linked, workflows, problems):
        actions = [
            a.model_copy(update={"disabled_reason": problem}) if a.ref == problem_ref else a
            for a in actions
        ]
    extras: dict[str, list[dict[str, Any]]] = {"triggers": [], "rules": []}
    for kind, items in extras.items():
        folder = path / kind
        if folder.is_dir():
            for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
                item = _read_yaml(file)
                name = item.pop("name", None) or str(item.get("ref", "")).split(".", 1)[-1]
                if not name:
                    raise PackError(f"{file}: needs a 'name' or 'ref'")
                item["ref"] = f"{ref}.{name}"
                item["_source"] = str(file)
                items.append(item)
    aliases, alias_problems = _load_aliases(path, ref)
    return PackSpec(
        aliases=aliases,
        alias_problems=alias_problems,
        triggers=tuple(extras["triggers"]),
        rules=tuple(extras["rules"]),
        ref=ref,
        label=str(meta.get("label") or ref),
        description=str(meta.get("description") or ""),
        version=str(meta.get("version") or "0.0.0"),
        path=str(path),
        actions=tuple(actions),
        workflows=tuple(workflows),
        problems=tuple(problems),
        **attune,
    )


def _load_aliases(path: Path, ref: str) -> tuple[tuple[AliasSpec, ...], tuple[str, ...]]:
    """The pack's ``aliases/*.yaml`` (StackStorm's format; ``pack`` is this pack whatever the
    file says), and one problem per file that cannot be used."""
    folder = path / "aliases"
    if not folder.is_dir():
        return (), ()
    found: dict[str, Path] = {}
    aliases: list[AliasSpec] = []
    problems: list[str] = []
    for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            data = _read_yaml(file)
            data["pack"] = ref
            try:
                spec = AliasSpec.model_validate(data).checked()
            except ValidationError as exc:
                raise PackError(f"{file}: {first_error(exc)}") from None
            except EngineError as exc:
                raise PackError(f"{file}: {exc.message}") from None
            if spec.alias_ref in found:
                first = found[spec.alias_ref].name
                raise PackError(f"{file}: alias '{spec.alias_ref}' is already defined in {first}")
        except PackError as exc:
            problems.append(exc.message)
            continue
        found[spec.alias_ref] = file
        aliases.append(spec)
    return tuple(aliases), tuple(problems)


def _pack_fields(meta: dict[str, Any], manifest: Path) -> dict[str, Any]:
    """Attune's pack fields from ``pack.yaml`` (``system: true`` is Attune's older name for
    ``is_standard``); a field of the wrong kind is named with its file."""
    fields: dict[str, Any] = {"is_standard": bool(meta.get("is_standard", meta.get("system")))}
    for name in ("conf_schema", "config", "meta"):
        value = meta.get(name) or {}
        if not isinstance(value, dict):
            raise PackError(f"{manifest}: '{name}' must be a mapping")
        fields[name] = value
    for name in ("tags", "runtime_deps", "dependencies"):
        value = meta.get(name) or []
        if not isinstance(value, list):
            raise PackError(f"{manifest}: '{name}' must be a list")
        fields[name] = tuple(str(v) for v in value)
    return fields


def discover_packs(dirs: list[Path]) -> list[Path]:
    """Pack folders under ``dirs``: each dir is a pack itself or holds packs one level down."""
    found: list[Path] = [BUILTIN_PACKS_DIR / "core"]
    for d in dirs:
        if (d / "pack.yaml").is_file():
            found.append(d)
        elif d.is_dir():
            found.extend(sorted(p for p in d.iterdir() if (p / "pack.yaml").is_file()))
    return found
