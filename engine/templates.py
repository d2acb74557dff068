"""Rule templates and conditions (pure): a sandboxed Jinja2 environment over the event.

Templates see ``event.payload``, ``event.id``, ``event.trigger`` and ``rule.ref``. A value that
is only a template (``"{{ event.payload.count }}"``) keeps its JSON type; a template inside
other text renders as text. Unknown names fail (StrictUndefined), so a typo is a failed
enforcement with the reason, not a silent empty string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from itertools import chain, islice
from typing import Any

import re2
from jinja2 import StrictUndefined, Template, TemplateError, Undefined
from jinja2.nativetypes import NativeCodeGenerator

from engine import json_logic
from engine.errors import EngineError
from engine.template_limits import BoundedSandbox, LimitExceeded, check_output

#: Longest regular expression a ``matches`` condition may use, and longest text it scans.
MAX_PATTERN_CHARS = 1000
MAX_MATCH_TEXT_CHARS = 100_000
OPERATORS = ("equals", "not_equals", "contains", "greater_than", "less_than", "matches", "exists")


class TemplateProblem(EngineError):
    """A template or condition that cannot be used; 422 on the API."""

    code = "UNPROCESSABLE_ENTITY"
    http_status = 422


#: RE2 (linear time in the text: no back-references, no look-arounds); errors are raised, not
#: written to stderr.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=256)
def compile_regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2, whose matching time is linear in the text (Python's ``re``
    backtracks: ``^(a+)+$`` took exponential time). Raises ``ValueError`` with RE2's reason
    for a pattern it does not accept (back-references and look-arounds among them)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text) from None


def _concat(values: Iterable[Any]) -> Any:
    """One rendered node keeps its own value and type; several are joined as text. (Jinja's
    ``native_concat`` would re-parse a lone string as a Python literal: "1.10" -> 1.1.)"""
    it = iter(values)
    head = list(islice(it, 2))
    if not head:
        return None
    if len(head) == 1:
        return head[0]
    return "".join(str(v) for v in chain(head, it))


class _NativeSandbox(BoundedSandbox):
    """Sandboxed (no attribute tricks, nothing mutable, growth bounded:
    :mod:`engine.template_limits`) and native (keeps JSON types)."""

    code_generator_class = NativeCodeGenerator
    concat = staticmethod(_concat)


_ENV = _NativeSandbox(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=512)
def _compiled(text: str) -> Template:
    """A template compiled once per process (compiling costs milliseconds; rendering, tens of
    microseconds). A compiled template holds no state between renderings."""
    return _ENV.from_string(text)


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def check_templates(value: Any, where: str = "action_params") -> None:
    """Raise :class:`TemplateProblem` naming the first template that does not parse."""
    for path, text in _strings(value, where):
        if _is_template(text):
            try:
                _ENV.parse(text)
            except TemplateError as exc:
                raise TemplateProblem(f"{path}: {exc}") from None


def _strings(value: Any, path: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            out.append((where, item))
        elif isinstance(item, Mapping):
            stack.extend((v, f"{where}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return out


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template inside ``value`` (dicts and lists walked); raise TemplateProblem."""
    if isinstance(value, str):
        if not _is_template(value):
            return value
        try:
            result = _compiled(value).render(context)
            if isinstance(result, Undefined):
                str(result)  # a lone undefined name: StrictUndefined raises here
            check_output(result)
            return result if isinstance(result, str) else _json_value(result)
        except TemplateError as exc:
            raise TemplateProblem(f"template {value!r} failed: {exc}") from None
        except (TemplateProblem, LimitExceeded) as exc:  # a helper such as kv.get; a limit
            raise TemplateProblem(f"template {value!r} failed: {exc.message}") from None
        except Exception as exc:  # errors raised inside template expressions
            raise TemplateProblem(
                f"template {value!r} failed: {type(exc).__name__}: {exc}"
            ) from None
    if isinstance(value, Mapping):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _json_value(result: Any) -> Any:
    """``result`` as the JSON value it is stored as (a tuple becomes a list); TemplateProblem
    for what JSON cannot hold (``{{ range(3) }}``, a method, NaN), which would otherwise fail
    only when the execution is stored."""
    try:
        return json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError):
        kind = type(result).__name__
        raise TemplateProblem(f"gave a {kind} ({str(result)[:80]!r}), not a JSON value") from None


def check_conditions(conditions: Any) -> None:
    """Validate a rule's conditions when it is saved (422 with the reason): ``{}``/null, a
    ``[{field, operator, value}]`` list, ``{"expression": "{{ ... }}"}``, or any other object
    as JSON-Logic (:mod:`engine.json_logic`)."""
    if conditions in (None, [], {}):
        return
    if isinstance(conditions, Mapping):
        if set(conditions) != {"expression"}:  # JSON-Logic
            try:
                json_logic.check(conditions)
            except json_logic.LogicProblem as exc:
                raise TemplateProblem(exc.message) from None
            return
        expression = conditions["expression"]
        if not isinstance(expression, str):
            raise TemplateProblem('conditions.expression must be a text, "{{ ... }}"')
        check_templates(expression, "conditions.expression")
        return
    if not isinstance(conditions, list):
        raise TemplateProblem("conditions must be a list of {field, operator, value}")
    for i, cond in enumerate(conditions):
        if not isinstance(cond, Mapping) or not isinstance(cond.get("field"), str):
            raise TemplateProblem(f"conditions[{i}] needs a 'field' (e.g. payload.severity)")
        op = cond.get("operator", "equals")
        if op not in OPERATORS:
            raise TemplateProblem(
                f"conditions[{i}]: unknown operator '{op}' (expected one of {', '.join(OPERATORS)})"
            )
        if op == "matches":
            pattern = cond.get("value")
            if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
                raise TemplateProblem(
                    f"conditions[{i}]: 'matches' needs a regular expression "
                    f"of at most {MAX_PATTERN_CHARS} characters"
                )
            try:
                compile_regex(pattern)
            except ValueError as exc:
                raise TemplateProblem(
                    f"conditions[{i}] ({cond['field']} matches): regular expression not "
                    f"accepted by RE2 (linear time; no back-references or look-arounds): {exc}"
                ) from None


_MISSING = object()


def lookup(context: Mapping[str, Any], field: str) -> Any:
    """``payload.a.b`` (or ``event.payload.a.b``) in the event context; _MISSING if absent."""
    parts = field.split(".")
    if parts[0] != "event" and "event" in context:
        node: Any = context["event"]
    else:
        node = context
    for part in parts:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def matches(conditions: Any, context: Mapping[str, Any]) -> bool:
    """True when the conditions hold for the event (raises TemplateProblem for a failing
    expression)."""
    if conditions in (None, [], {}):
        return True
    if isinstance(conditions, Mapping):
        if set(conditions) != {"expression"}:
            try:
                return json_logic.holds(conditions, context)
            except json_logic.LogicProblem as exc:
                raise TemplateProblem(exc.message) from None
        return bool(render(conditions["expression"], context))
    return all(_holds(cond, context) for cond in conditions)


def _holds(cond: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    op = cond.get("operator", "equals")
    actual = lookup(context, str(cond["field"]))
    expected = cond.get("value")
    if op == "exists":
        return bool((actual is not _MISSING) == (expected is not False))
    if actual is _MISSING:
        return bool(op == "not_equals")
    try:
        if op == "equals":
            return bool(actual == expected)
        if op == "not_equals":
            return bool(actual != expected)
        if op == "contains":
            return expected in actual if isinstance(actual, str | list | dict) else False
        if op == "greater_than":
            return bool(actual > expected)
        if op == "less_than":
            return bool(actual < expected)
        if op == "matches":
            text = str(actual)[:MAX_MATCH_TEXT_CHARS]
            return compile_regex(str(expected)).search(text) is not None
    except TypeError:
        return False  # comparing a number with text: the condition does not hold
    except ValueError as exc:  # a pattern saved before RE2 was the engine
        raise TemplateProblem(f"conditions: 'matches' {str(expected)[:80]!r}: {exc}") from None
    return False


# -- keys in templates ---------------------------------------------------------------------------

_KV_NAME = re.compile(r"\bkv\s*\.")


def mentions_kv(value: Any) -> bool:
    """True when a template inside ``value`` may read keys (``kv.get``, ``kv.get_secret``)."""
    return any(_is_template(text) and _KV_NAME.search(text) for _, text in _strings(value, ""))


class KvView:
    """``kv`` in a template: ``kv.get('ref', default)`` and ``kv.get_secret('ref', default)``
    over keys loaded before rendering (templates render synchronously).

    ``values`` maps a key's ref to ``(value, encrypted)``, or None when there is no such key;
    a ref not in it is noted in ``missing`` and reads as the default, so a caller can load the
    missing keys and render again. ``kv.get`` refuses an encrypted key (its value is a secret:
    ``kv.get_secret`` says so); whatever ``kv.get_secret`` returns is noted in ``secrets``."""

    def __init__(self, values: Mapping[str, tuple[Any, bool] | None]) -> None:
        self._values = values
        self.missing: set[str] = set()
        self.secrets: list[Any] = []

    def _entry(self, name: Any) -> tuple[Any, bool] | None:
        if not isinstance(name, str):
            raise TemplateProblem("kv.get and kv.get_secret take a key's ref (text)")
        if name not in self._values:
            self.missing.add(name)
            return None
        return self._values[name]

    def get(self, name: Any, default: Any = None) -> Any:
        entry = self._entry(name)
        if entry is None:
            return default
        value, encrypted = entry
        if encrypted:
            raise TemplateProblem(
                f"key '{name}' is encrypted: read it with kv.get_secret('{name}')"
            )
        return value

    def get_secret(self, name: Any, default: Any = None) -> Any:
        entry = self._entry(name)
        if entry is None:
            return default
        self.secrets.append(entry[0])
        return entry[0]


def render_with_kv(
    value: Any, context: Mapping[str, Any], kv: KvView
) -> tuple[Any, frozenset[str]]:
    """Render with ``kv`` in the context; also return the top-level names whose value read a
    secret (``kv.get_secret``): they are secret parameters of the execution."""
    scope = {**context, "kv": kv}
    if not isinstance(value, Mapping):
        return render(value, scope), frozenset()
    out: dict[str, Any] = {}
    secret: set[str] = set()
    for name, item in value.items():
        before = len(kv.secrets)
        out[name] = render(item, scope)
        if len(kv.secrets) > before:
            secret.add(name)
    return out, frozenset(secret)


# -- one rule on one event: the unit of work of the sandbox's worker processes ------------------


def has_templates(value: Any) -> bool:
    """True when ``value`` (a rule's conditions or ``action_params``) holds a Jinja template:
    only those need a worker process (list conditions use RE2 and JSON-Logic a work budget)."""
    return any(_is_template(text) for _, text in _strings(value, ""))


def evaluate(
    conditions: Any,
    action_params: Any,
    context: Mapping[str, Any],
    loaded: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Check a rule's conditions (unless None) and render its ``action_params`` for an event;
    with ``loaded`` (``{ref: [value, encrypted] | None}``) ``kv`` is in scope. Never raises:
    returns a JSON object ``{matched, result, secret, missing, problem}``: ``problem`` is the
    reason a condition or template failed, ``missing`` the key refs asked for but not loaded,
    ``secret`` the top-level names that read a secret."""
    out: dict[str, Any] = {
        "matched": True,
        "result": None,
        "secret": [],
        "missing": [],
        "problem": None,
    }
    view: KvView | None = None
    try:
        if conditions is not None and not matches(conditions, context):
            out["matched"] = False
            return out
        if loaded is None:
            out["result"] = render(action_params, context)
        else:
            view = KvView({k: None if v is None else (v[0], bool(v[1])) for k, v in loaded.items()})
            out["result"], secret = render_with_kv(action_params, context, view)
            out["secret"] = sorted(secret)
    except TemplateProblem as exc:
        out["problem"] = exc.message
    except Exception as exc:  # a bug or an odd value: a failed enforcement, never a crash
        out["problem"] = f"{type(exc).__name__}: {exc}"
    if view is not None:
        out["missing"] = sorted(view.missing)
    return out
