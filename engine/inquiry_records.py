"""Inquiries (Attune's): a run paused for a human answer. Records, the repository's protocol,
and the pure checks (the ``__inquiry`` request an action returns, the answer's schema)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from jsonschema import exceptions as schema_errors
from jsonschema import validators

PENDING = "pending"
RESPONDED = "responded"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
STATUSES = (PENDING, RESPONDED, TIMEOUT, CANCELLED)
#: The key of an action's result data that asks for an answer (Attune's).
INQUIRY_KEY = "__inquiry"
MAX_PROMPT = 10_000
MAX_TIMEOUT_S = 30 * 86_400


class BadInquiry(ValueError):
    """An ``__inquiry`` request that cannot be used (the message names the field)."""


@dataclass(frozen=True, slots=True)
class Inquiry:
    id: int
    execution: int
    prompt: str
    response_schema: dict[str, Any] | None
    assigned_to: int | None
    assignees: tuple[str, ...]
    status: str
    response: dict[str, Any] | None
    responded_by: str | None
    responded_at: datetime | None
    timeout_at: datetime | None
    chat: dict[str, Any] | None
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class InquiryRequest:
    """What a run asked for, checked."""

    prompt: str
    response_schema: dict[str, Any] | None
    assigned_to: int | None = None
    assignees: tuple[str, ...] = ()
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class InquiryFilter:
    status: str | None = None
    execution: int | None = None
    assigned_to: int | None = None


class InquiryRepository(Protocol):
    async def park(
        self,
        execution_id: int,
        worker_id: str,
        run_result: dict[str, Any],
        request: InquiryRequest,
        timeout_at: datetime | None,
        now: datetime,
    ) -> Inquiry | None:
        """In one transaction: detach the running execution from its worker (no heartbeat is
        expected while it waits) and insert the pending inquiry; None when the execution is no
        longer this worker's running one."""
        ...

    async def get(self, inquiry_id: int) -> Inquiry | None: ...

    async def list(
        self, where: InquiryFilter, limit: int, offset: int
    ) -> builtins.list[Inquiry]: ...

    async def count(self, where: InquiryFilter) -> int: ...

    async def settle(
        self,
        inquiry_id: int,
        status: str,
        now: datetime,
        *,
        response: dict[str, Any] | None = None,
        responded_by: str | None = None,
    ) -> Inquiry | None:
        """Conditional move out of ``pending``; None when it was no longer pending."""
        ...

    async def with_chat(self, limit: int) -> builtins.list[Inquiry]:
        """Pending inquiries of runs started from chat, oldest first."""
        ...

    async def settled_since(self, since: datetime, limit: int) -> builtins.list[Inquiry]:
        """Inquiries of runs started from chat that are no longer pending, changed at or
        after ``since``, in the order they changed."""
        ...

    async def set_chat(
        self, inquiry_id: int, chat: dict[str, Any], expected_updated: datetime, now: datetime
    ) -> Inquiry | None:
        """Replace ``chat`` if the row is unchanged since ``expected_updated`` (a claim that
        one process alone wins); None otherwise."""
        ...

    async def overdue(self, now: datetime, limit: int) -> builtins.list[Inquiry]: ...

    async def unsettled(
        self, live: Sequence[str], limit: int
    ) -> builtins.list[tuple[Inquiry, str]]:
        """Inquiries whose state and execution disagree: pending with an execution no longer
        ``running`` (cancel asked, or ended), or settled with an execution still live."""
        ...


def as_json_schema(schema: Any) -> dict[str, Any] | None:
    """A full JSON Schema from ``response_schema``: Attune's short form, a map of field name
    to ``{type, description, required: bool}``, becomes an object schema."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise BadInquiry("response_schema must be an object (a JSON Schema)")
    is_short = (
        schema
        and "type" not in schema
        and "properties" not in schema
        and all(isinstance(v, dict) for v in schema.values())
    )
    if is_short:
        properties = {k: {n: x for n, x in v.items() if n != "required"} for k, v in schema.items()}
        required = [k for k, v in schema.items() if v.get("required") is True]
        schema = {"type": "object", "properties": properties, "required": required}
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise BadInquiry(f"response_schema is not a valid JSON Schema: {exc.message}") from exc
    return dict(schema)


def schema_problem(schema: dict[str, Any] | None, response: Any) -> str | None:
    """The first way ``response`` fails ``schema``, naming the field; None when it fits."""
    if not isinstance(response, dict):
        return "response must be an object"
    if schema is None:
        return None
    validator = validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(response), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    error = errors[0]
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and not path:
        return f"response: {error.message}"
    return f"response.{path}: {error.message}" if path else f"response: {error.message}"


def inquiry_request(data: Any) -> InquiryRequest | None:
    """The request in a run's result data (``{"__inquiry": {...}}``), checked; None when the
    data asks nothing. Raises :class:`BadInquiry` naming the field that cannot be used."""
    if not isinstance(data, dict) or INQUIRY_KEY not in data:
        return None
    raw = data[INQUIRY_KEY]
    if not isinstance(raw, dict):
        raise BadInquiry(f"{INQUIRY_KEY} must be an object")
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > MAX_PROMPT:
        raise BadInquiry(f"{INQUIRY_KEY}.prompt must be text of 1 to {MAX_PROMPT} characters")
    assigned_to = raw.get("assigned_to")
    assignees: list[str] = []
    if isinstance(assigned_to, str) and not assigned_to.isdigit():
        assignees.append(assigned_to)  # a login or role name in place of an identity id
        assigned_to = None
    elif isinstance(assigned_to, str):
        assigned_to = int(assigned_to)
    if assigned_to is not None and (
        isinstance(assigned_to, bool) or not isinstance(assigned_to, int)
    ):
        raise BadInquiry(f"{INQUIRY_KEY}.assigned_to must be an identity id, a login or a role")
    more = raw.get("assignees") or []
    if isinstance(more, str):
        more = [x.strip() for x in more.split(",") if x.strip()]
    if not isinstance(more, list) or not all(isinstance(x, str) and x for x in more):
        raise BadInquiry(f"{INQUIRY_KEY}.assignees must be a list of logins, user ids or roles")
    assignees.extend(more)
    timeout = raw.get("timeout_seconds", raw.get("timeout"))
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise BadInquiry(f"{INQUIRY_KEY}.timeout_seconds must be a number of seconds")
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise BadInquiry(
                f"{INQUIRY_KEY}.timeout_seconds must be more than 0 and at most {MAX_TIMEOUT_S}"
            )
    return InquiryRequest(
        prompt=prompt,
        response_schema=as_json_schema(raw.get("response_schema")),
        assigned_to=assigned_to,
        assignees=tuple(dict.fromkeys(assignees)),
        timeout_s=float(timeout) if timeout is not None else None,
    )
