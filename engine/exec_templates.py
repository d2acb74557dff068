"""Execution templates: an action with some of its parameters saved under a name, run later
with overrides (``POST /api/v1/templates/{ref}/execute``, chat ``run @ref key=value``).

- A template's parameters are checked against the action's schema when it is saved, all but
  ``required``: a required parameter may be left for the overrides of each run. The run
  itself is checked whole, by the gate, as any run.
- Secret parameters are sealed as a rule's are (:mod:`engine.automation.rule_secrets`): the
  stored and shown values hold the marker; a write that sends the marker back keeps the value.
- Permissions are the action's: whoever may not run the action may not save, change, delete
  or run a template of it; listing and reading need ``view`` on it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.automation.rule_secrets import opened, shown, split_secrets
from engine.catalog import Catalog
from engine.errors import Conflict, InvalidParameters, InvalidRequest, NotFound
from engine.gate import Gate, NeedsConfirmation, Requester, Submitted
from engine.params import REDACTED, validate_parameters
from engine.policy import Verb
from engine.template_records import ExecTemplate, TemplateFields, TemplateRepository

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: A template's name: ``pack.name`` or a plain name.
TEMPLATE_REF = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
REF_RULE = "a template ref is 1 to 256 letters, digits, '.', '_' or '-' (e.g. ops.restart_web)"


def check_ref(ref: str) -> str:
    if not isinstance(ref, str) or not TEMPLATE_REF.match(ref):
        raise InvalidRequest(f"bad template ref {str(ref)[:60]!r}: {REF_RULE}")
    return ref


@dataclass(frozen=True)
class TemplateView:
    """A template as anyone sees it: secrets masked."""

    template: ExecTemplate
    parameters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        f = self.template.fields
        return {
            "id": self.template.id,
            "ref": f.ref,
            "action_ref": f.action_ref,
            "parameters": self.parameters,
            "description": f.description,
            "owner": f.owner,
            "created": self.template.created,
            "updated": self.template.updated,
        }


class ExecTemplates:
    def __init__(self, repo: TemplateRepository, catalog: Catalog, gate: Gate) -> None:
        self.repo = repo
        self.catalog = catalog
        self.gate = gate

    async def _allowed(self, who: Requester, verb: Verb, action_ref: str, what: str) -> None:
        await self.gate.deny(who, verb, action_ref, audit_verb=what)

    async def find(self, ref: str) -> ExecTemplate:
        found = await self.repo.get(check_ref(ref))
        if found is None:
            raise NotFound(f"template '{ref}' not found")
        return found

    async def view(self, template: ExecTemplate) -> TemplateView:
        try:
            secrets = (await self.catalog.get_action(template.action_ref)).secrets
        except NotFound:
            secrets = frozenset()
        return TemplateView(template, shown(template.fields.parameters, secrets))

    async def _fields(
        self,
        who: Requester,
        ref: str,
        action_ref: str,
        parameters: Mapping[str, Any],
        description: str,
        current: ExecTemplate | None,
    ) -> TemplateFields:
        action = await self.catalog.get_action(action_ref)
        before: dict[str, Any] = {}
        sealed_before: frozenset[str] = frozenset()
        if current is not None and current.action_ref == action_ref:
            before, sealed_before = opened(
                current.fields.parameters, current.fields.parameters_sealed, self.gate.secrets
            )
        given = {
            name: before[name] if value == REDACTED and name in before else value
            for name, value in parameters.items()
        }
        partial = {**action.param_schema, "required": []}
        try:
            checked = validate_parameters(partial, given)
        except InvalidParameters as exc:
            raise InvalidParameters(
                f"{exc.message} (a template's parameters are checked against {action_ref}'s "
                "schema; required ones may be left for the overrides of each run)"
            ) from None
        kept = {name: checked[name] for name in given}
        stored, sealed = split_secrets(
            kept, action.secrets, self.gate.secrets, sealed_before=sealed_before
        )
        owner = current.fields.owner if current is not None else who.identity
        return TemplateFields(ref, action_ref, stored, sealed, description, owner)

    async def create(
        self,
        who: Requester,
        ref: str,
        action_ref: str,
        parameters: Mapping[str, Any],
        description: str = "",
    ) -> TemplateView:
        check_ref(ref)
        await self._allowed(who, "run", action_ref, "template create")
        fields = await self._fields(who, ref, action_ref, parameters, description, None)
        if await self.repo.get(ref) is not None:
            raise Conflict(
                f"template '{ref}' already exists (PUT /api/v1/templates/{ref} changes it)"
            )
        try:
            made = await self.repo.add(fields)
        except Conflict:  # made by someone else meanwhile
            raise Conflict(f"template '{ref}' already exists") from None
        await self.gate.audit.record(who.entry("template create", "accepted", target=action_ref))
        return await self.view(made)

    async def get(self, who: Requester, ref: str) -> TemplateView:
        found = await self.find(ref)
        await self._allowed(who, "view", found.action_ref, "template view")
        return await self.view(found)

    async def list(self, who: Requester, verb: Verb = "view") -> list[TemplateView]:
        policy = self.gate.policy
        return [
            await self.view(t)
            for t in await self.repo.list()
            if policy.allows(who.role, verb, t.action_ref)
        ]

    async def update(
        self,
        who: Requester,
        ref: str,
        *,
        action_ref: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> TemplateView:
        """Change the fields given; the template keeps the others (its parameters are checked
        again when its action changes)."""
        current = await self.find(ref)
        await self._allowed(who, "run", current.action_ref, "template update")
        target = action_ref or current.action_ref
        if target != current.action_ref:
            await self._allowed(who, "run", target, "template update")
        if parameters is None:
            parameters = current.fields.parameters  # markers: kept by _fields
        if target != current.action_ref and any(v == REDACTED for v in parameters.values()):
            raise InvalidParameters(
                "a template moved to another action cannot keep its secret values: send them"
            )
        fields = await self._fields(
            who,
            ref,
            target,
            parameters,
            current.fields.description if description is None else description,
            current,
        )
        changed = await self.repo.replace(ref, fields)
        if changed is None:
            raise NotFound(f"template '{ref}' not found")
        await self.gate.audit.record(who.entry("template update", "accepted", target=target))
        return await self.view(changed)

    async def delete(self, who: Requester, ref: str) -> None:
        current = await self.find(ref)
        await self._allowed(who, "run", current.action_ref, "template delete")
        if not await self.repo.delete(ref):
            raise NotFound(f"template '{ref}' not found")
        await self.gate.audit.record(
            who.entry("template delete", "accepted", target=current.action_ref)
        )

    async def parameters_of(
        self, ref: str, overrides: Mapping[str, Any] | None
    ) -> tuple[ExecTemplate, dict[str, Any]]:
        """The template and the parameters of a run of it: its own (secrets opened), then the
        overrides on top."""
        if overrides is not None and not isinstance(overrides, Mapping):
            raise InvalidParameters("parameters must be a JSON object")
        found = await self.find(ref)
        f = found.fields
        saved, _ = opened(f.parameters, f.parameters_sealed, self.gate.secrets)
        return found, {**saved, **(overrides or {})}

    async def execute(
        self,
        who: Requester,
        ref: str,
        overrides: Mapping[str, Any] | None = None,
        *,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        confirmed: bool = False,
    ) -> Submitted | NeedsConfirmation:
        """Run the template through the gate as ``who`` (the action's permissions, audit,
        confirmation and validation of the whole parameters)."""
        found, params = await self.parameters_of(ref, overrides)
        return await self.gate.run(
            who,
            found.action_ref,
            params,
            chat=chat,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
            confirmed=confirmed,
        )


def templates_of(runtime: Runtime) -> ExecTemplates:
    """The templates of a runtime (the service holds no state of its own)."""
    from engine.storage.exec_templates import template_repository

    return ExecTemplates(template_repository(runtime.store), runtime.catalog, runtime.gate)
