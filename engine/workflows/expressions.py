"""Templates and conditions of a workflow (pure): what they can see and how they are checked.

Attune's workflow expressions are ``{{ ... }}`` blocks in a Python-like language (``and``,
``or``, ``not``, ``in``, comparisons, ``a.b``, ``a[0]``, function calls): Jinja's expression
language is a superset, so they run in our sandboxed Jinja environment
(:func:`engine.templates.render`: a value that is only a template keeps its JSON type, unknown
names fail). The scopes:

- ``parameters``: the workflow's input; ``vars`` (also Attune's ``workflow``, ``variables``):
  the workflow variables, changed by ``publish``; a bare name reads a variable or parameter.
- ``task.<name>.result`` and ``task.<name>.status`` (also ``tasks``): tasks that have ended.
- ``system``: facts of the run (its execution id, when it started); ``kv``: the key-value store
  (``kv.get('ref')``, ``kv.get_secret('ref')``); ``item`` and ``index`` in a ``with_items``
  task's input.
- ``succeeded()``, ``failed()``, ``timed_out()``, ``result()``: the task that just ended (in
  ``when``, ``publish``, and the input of the tasks it starts), plus Attune's helper functions
  (``length``, ``keys``, ``join``...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta, nodes

from engine.templates import TemplateProblem, check_templates, render

#: Execution statuses of a task that ended well, and that ended by running out of time.
SUCCESS = "completed"
TIMEOUT = "timeout"
#: Scopes every template may use.
SCOPES = frozenset(
    {"parameters", "vars", "workflow", "variables", "task", "tasks", "system", "kv"}
    | {"keystore", "config"}
)
#: Scopes only a ``with_items`` task's input (and per-item fields) may use.
ITEM_SCOPES = frozenset({"item", "index"})
OUTCOME_FUNCTIONS = frozenset({"succeeded", "failed", "timed_out", "result"})
#: Names Jinja itself provides.
_JINJA_GLOBALS = frozenset(jinja2.Environment(autoescape=False).globals)  # noqa: S701
_FALSE_TEXTS = frozenset({"", "false", "0", "no", "none", "null"})


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


#: Attune's helper functions (its ``expression`` module) that Jinja lacks.
HELPERS: dict[str, Callable[..., Any]] = {
    "length": len,
    "keys": lambda v: list(v.keys()),
    "values": lambda v: list(v.values()),
    "string": lambda v: v if isinstance(v, str) else ("" if v is None else str(v)),
    "number": float,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "trim": lambda s: str(s).strip(),
    "split": lambda s, sep: str(s).split(sep),
    "join": lambda items, sep="": str(sep).join(str(i) for i in items),
    "contains": lambda haystack, needle: needle in haystack,
    "starts_with": lambda s, prefix: str(s).startswith(prefix),
    "ends_with": lambda s, suffix: str(s).endswith(suffix),
    "type_of": _type_of,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a task ended: its execution status and result."""

    status: str
    result: Any = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    @property
    def timed_out(self) -> bool:
        return self.status == TIMEOUT

    @property
    def failed(self) -> bool:
        """Attune's ``failed()``: ended badly, not by its timeout."""
        return not self.succeeded and not self.timed_out


_NO_ITEM = object()


def context(
    *,
    parameters: Mapping[str, Any],
    variables: Mapping[str, Any],
    tasks: Mapping[str, Mapping[str, Any]],
    system: Mapping[str, Any] | None = None,
    kv: Any = None,
    outcome: Outcome | None = None,
    item: Any = _NO_ITEM,
    index: int | None = None,
) -> dict[str, Any]:
    """The names a template sees. ``tasks`` maps a task's name to ``{status, result}``."""
    ctx: dict[str, Any] = {**HELPERS, **dict(parameters), **dict(variables)}  # bare names
    ctx.update(
        parameters=dict(parameters),
        vars=dict(variables),
        workflow=dict(variables),
        variables=dict(variables),
        task=dict(tasks),
        tasks=dict(tasks),
        system=dict(system or {}),
        succeeded=lambda: outcome is not None and outcome.succeeded,
        failed=lambda: outcome is not None and outcome.failed,
        timed_out=lambda: outcome is not None and outcome.timed_out,
        result=lambda: None if outcome is None else outcome.result,
    )
    if kv is not None:
        ctx["kv"] = ctx["keystore"] = kv
    if item is not _NO_ITEM:
        ctx["item"], ctx["index"] = item, index
    return ctx


def evaluate(value: Any, ctx: Mapping[str, Any]) -> Any:
    """``value`` with every template in it rendered (TemplateProblem when one fails)."""
    return render(value, ctx)


def _as_template(condition: str) -> str:
    """Attune accepts a bare expression (``succeeded()``) as well as ``{{ succeeded() }}``."""
    return condition if "{{" in condition else "{{ " + condition + " }}"


def holds(condition: str, ctx: Mapping[str, Any]) -> bool:
    """Whether a ``when`` (or ``on_error``) condition holds; a text result is read as Attune
    reads it (``"false"``, ``"0"``, ``""`` do not hold)."""
    value = render(_as_template(condition), ctx)
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_TEXTS
    return bool(value)


# -- checks at save ---------------------------------------------------------------------------

#: Parses templates to read their names (never renders: no escaping to choose).
_PARSER = jinja2.Environment(autoescape=False)  # noqa: S701


def problems_in(
    value: Any,
    where: str,
    *,
    known: frozenset[str],
    task_names: frozenset[str],
    condition: bool = False,
) -> list[str]:
    """What is wrong with the templates inside ``value`` (walked through lists and mappings):
    syntax, a name no scope defines, ``task.<name>`` of no such task. ``known`` is every bare
    name allowed here; each problem starts with ``where``."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, Mapping):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, str) and (condition or "{{" in item or "{%" in item):
            text = _as_template(item) if condition else item
            found.extend(_problems_in_text(text, at, known, task_names))
    return found


def _problems_in_text(
    text: str, at: str, known: frozenset[str], task_names: frozenset[str]
) -> list[str]:
    try:
        check_templates(text, at)
        tree = _PARSER.parse(text)
    except TemplateProblem as exc:
        return [exc.message]
    except jinja2.TemplateSyntaxError as exc:
        return [f"{at}: {exc}"]
    out = []
    for name in sorted(meta.find_undeclared_variables(tree)):
        if name in ITEM_SCOPES and name not in known:
            out.append(f"{at}: '{name}' exists only in the input of a task with with_items")
        elif name not in known:
            out.append(
                f"{at}: unknown name '{name}' (use parameters.{name} for a parameter, "
                f"vars.{name} for a variable, or define it in vars)"
            )
    for ref in _task_references(tree):
        if ref not in task_names:
            out.append(f"{at}: no task named '{ref}' (task.{ref})")
    return out


def _task_references(tree: nodes.Template) -> list[str]:
    """The task names read as ``task.<name>`` or ``task['<name>']``."""
    refs = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        base = getattr(node, "node", None)
        if not isinstance(base, nodes.Name) or base.name not in ("task", "tasks"):
            continue
        if isinstance(node, nodes.Getattr):
            refs.append(node.attr)
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                refs.append(arg.value)
    return refs


def known_names(variables: Mapping[str, Any], parameters: Any, *, items: bool) -> frozenset[str]:
    """The bare names a template of this workflow may use (with ``item``/``index`` when
    ``items``)."""
    params = parameters or {}
    if isinstance(params, Mapping) and isinstance(params.get("properties"), Mapping):
        params = params["properties"]  # a JSON Schema's parameters
    names = SCOPES | OUTCOME_FUNCTIONS | frozenset(HELPERS) | _JINJA_GLOBALS
    names |= frozenset(str(k) for k in variables) | frozenset(str(k) for k in params)
    return names | ITEM_SCOPES if items else names
