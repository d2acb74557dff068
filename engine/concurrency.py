"""Concurrency policies (Attune's): at most ``limit`` runs of an action at once, per group of
runs, and what happens to a run over the limit (pure; no I/O).

A policy groups an action's runs by the values of some of their parameters (``parameters``:
names, or dotted paths into an object parameter, as Attune's ``policy.parameters``); without
any, all runs of the action are one group. Each group has its own limit. Over the limit,
``enqueue`` keeps the run ``requested`` until a slot frees, first come first served, and
``cancel`` ends it ``cancelled`` at once, with Attune's result (see :func:`refusal`).

A run's group is its :func:`group_key`, stored on the execution (``concurrency_key``) at
submission; ``concurrency_groups`` counts the runs of each group that hold a slot
(:mod:`engine.storage.concurrency`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

#: Longest stored group key (``executions.concurrency_key``, ``concurrency_groups.key``).
MAX_KEY_CHARS = 512
#: Attune's ``policy_method_enum``.
Method = Literal["enqueue", "cancel"]
#: Attune's message of a refused run (``PolicyViolation::ConcurrencyLimitExceeded``).
VIOLATION = "Concurrency limit exceeded: {running} running executions (limit: {limit})"
#: Attune's ``result.error`` of a run its policy cancelled.
CANCELLED_BY_POLICY = "Execution cancelled by policy"


class ConcurrencyPolicy(BaseModel):
    """An action's concurrency policy, as a pack's action YAML (``concurrency:``) and the API
    give it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Runs of one group at once (Attune's ``threshold``, accepted as its other name).
    limit: int = Field(
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("limit", "threshold"),
        description="Runs of one group at once (Attune's 'threshold' is accepted too).",
    )
    method: Method = Field(
        default="enqueue",
        description="Over the limit: enqueue (wait, first come first served) or cancel.",
    )
    #: Parameter names (or dotted paths) whose values group the runs.
    parameters: tuple[str, ...] = Field(
        default=(),
        description="Parameters (names or dotted paths) whose values group the runs, each "
        "group with its own limit; none: all runs of the action are one group.",
    )

    @field_validator("parameters")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.strip() or any(not part for part in name.split(".")):
                raise ValueError(f"'{name}' is not a parameter name or dotted path")
        if len(set(value)) != len(value):
            raise ValueError("a parameter is named twice")
        return value


def undeclared(policy: ConcurrencyPolicy, param_schema: Mapping[str, Any]) -> str | None:
    """The first grouping parameter the action does not declare (the first part of a dotted
    path), or None. An action without declared parameters accepts any."""
    declared = param_schema.get("properties")
    if not isinstance(declared, Mapping) or not declared:
        return None
    for path in policy.parameters:
        if path.split(".", 1)[0] not in declared:
            return path
    return None


def parameter_value(parameters: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of the parameters; None when any part is missing (as
    Attune's ``extract_parameter_value``)."""
    current: Any = parameters
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def group_key(
    action_ref: str,
    policy: ConcurrencyPolicy | None,
    parameters: Mapping[str, Any],
    secret: frozenset[str] = frozenset(),
) -> str | None:
    """The group of a run of ``action_ref`` with ``parameters``: the action's ref, then the
    canonical JSON (sorted keys, no spaces) of the grouping values by path, as Attune's group
    key. None without a policy. A key longer than :data:`MAX_KEY_CHARS`, or grouped by a
    ``secret`` parameter (never stored in clear), holds a SHA-256 of the values instead."""
    if policy is None:
        return None
    if not policy.parameters:
        return action_ref
    values = {path: parameter_value(parameters, path) for path in policy.parameters}
    canonical = json.dumps(
        values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    key = f"{action_ref} {canonical}"
    hidden = any(path.split(".", 1)[0] in secret for path in policy.parameters)
    if hidden or len(key) > MAX_KEY_CHARS:
        digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        key = f"{action_ref} sha256:{digest}"
    if len(key) > MAX_KEY_CHARS:  # an action ref of hundreds of characters
        key = "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return key


def violation(running: int, limit: int) -> str:
    return VIOLATION.format(running=running, limit=limit)


def refusal(action_ref: str, running: int, limit: int, now: datetime) -> dict[str, Any]:
    """The result of a run its ``cancel`` policy refused: Attune's (``error``, ``message``,
    ``action_ref``, ``cancelled_by``, ``cancelled_at``; status ``cancelled``), with the limit
    named in ``error`` too (what a chat card shows) and ``succeeded`` false as every failed
    result here."""
    reason = violation(running, limit)
    return {
        "succeeded": False,
        "error": f"{CANCELLED_BY_POLICY}: {reason}",
        "message": f"Policy violation: {reason}",
        "action_ref": action_ref,
        "cancelled_by": "execution_scheduler",
        "cancelled_at": now.isoformat(),
    }


def waiting_reason(running: int) -> str:
    """What a ``requested`` run held back by its policy is waiting for."""
    return f"waiting for a concurrency slot ({running} running)"


def policy_record(policy: ConcurrencyPolicy | None) -> dict[str, Any] | None:
    """The policy as the API shows it."""
    if policy is None:
        return None
    return {"limit": policy.limit, "method": policy.method, "parameters": list(policy.parameters)}


def from_columns(
    limit: int | None, method: str | None, parameters: Sequence[str] | None
) -> ConcurrencyPolicy | None:
    """The policy of an action's stored columns (None: no limit)."""
    if limit is None:
        return None
    return ConcurrencyPolicy(
        limit=limit,
        method="cancel" if method == "cancel" else "enqueue",
        parameters=tuple(parameters or ()),
    )
