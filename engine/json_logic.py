"""Rule conditions written in JSON-Logic (jsonlogic.com), checked when a rule is saved and
evaluated against each event (Attune stores them and never fires on them; we do).

The engine is ``datalogic-py`` (a maintained Rust implementation that passes the JSON-Logic
conformance suite), with a ceiling on the work one evaluation may do. ``var`` reads the names
a rule's templates see (:mod:`engine.automation.enforcement`): ``event.payload.x``,
``event.trigger``, ``rule.ref``, ``payload.x`` and so on; a name that is absent reads as null.

Attune's own examples write a comparison beside ``var``: ``{"var": "event.payload.x", "!=":
null}``. That shorthand is read as ``{"!=": [{"var": "event.payload.x"}, null]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datalogic_py

from engine.errors import EngineError

#: Operations one evaluation may do, and its deepest nesting.
OPS_BUDGET = 100_000
MAX_DEPTH = 64
#: Operators the ``{"var": ..., op: value}`` shorthand may use.
_SHORTHAND_OPS = frozenset({"==", "===", "!=", "!==", ">", ">=", "<", "<=", "in"})

_ENGINE = datalogic_py.Engine(config={"ops_budget": OPS_BUDGET, "max_recursion_depth": MAX_DEPTH})


class LogicProblem(EngineError):
    """A JSON-Logic condition that cannot be used; 422 on the API."""

    code = "UNPROCESSABLE_ENTITY"
    http_status = 422


def normalize(rule: Any) -> Any:
    """``rule`` with Attune's ``{"var": X, op: Y}`` shorthand spelled out, everywhere in it."""
    if isinstance(rule, list):
        return [normalize(item) for item in rule]
    if not isinstance(rule, Mapping):
        return rule
    if len(rule) == 2 and "var" in rule:
        (op,) = set(rule) - {"var"}
        if op in _SHORTHAND_OPS:
            return {op: [{"var": rule["var"]}, normalize(rule[op])]}
    return {key: normalize(value) for key, value in rule.items()}


def check(rule: Any, where: str = "conditions") -> None:
    """Raise :class:`LogicProblem` naming the first problem in ``rule``."""
    try:
        problems = _ENGINE.check(normalize(rule))
    except datalogic_py.DataLogicError as exc:
        raise LogicProblem(f"{where}: not a JSON-Logic rule: {exc}") from None
    errors = [p for p in problems if p["severity"] == "error"]
    if errors:
        first = errors[0]
        at = f"{where}{first['pointer'].replace('/', '.')}"
        raise LogicProblem(f"{at}: {first['message']}")


def holds(rule: Any, data: Mapping[str, Any]) -> bool:
    """Whether ``rule`` is truthy (JSON-Logic's truthiness) for ``data``; raise
    :class:`LogicProblem` when it cannot be evaluated."""
    try:
        result = _ENGINE.compile(normalize(rule)).evaluate(dict(data))
    except datalogic_py.DataLogicError as exc:
        raise LogicProblem(f"conditions failed: {exc}") from None
    return truthy(result)


def truthy(value: Any) -> bool:
    """JSON-Logic's truthiness: false, null, 0, "" and [] are false; everything else true."""
    if isinstance(value, bool):
        return value
    if value is None or value == "" or value == []:
        return False
    if isinstance(value, int | float):
        return value != 0
    return True
