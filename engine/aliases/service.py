"""Aliases of a runtime: kept (from packs and the API), matched to chat text, turned into the
parameters of a run, and their ``ack``/``result`` formats rendered.

Formats and templates are rendered in the rule sandbox (:mod:`engine.templates`, in the
runtime's template worker processes with a time limit: :mod:`engine.template_pool`). A value
typed in chat is never rendered as a template; only what the alias's author wrote is
(``immutable_parameters``, a format's default, the ack and result formats).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.aliases.matching import AliasMatch, best_match
from engine.aliases.records import Alias, AliasSpec, stored_fields
from engine.errors import InvalidParameters, InvalidRequest, NotFound
from engine.packs import PackSpec
from engine.params import coerce_value
from engine.storage.aliases import alias_repository

if TYPE_CHECKING:
    from engine.gate import Requester
    from engine.runtime import Runtime


@dataclass(frozen=True)
class PlannedRun:
    """What an alias match runs."""

    alias: Alias
    action_ref: str
    parameters: dict[str, Any]


class AliasCatalog:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = alias_repository(runtime.store)

    # -- keeping them -------------------------------------------------------------------------

    async def list_aliases(self, pack_ref: str | None = None) -> list[Alias]:
        return await self.repo.list_aliases(pack_ref)

    async def get(self, ref: str) -> Alias:
        found = await self.repo.get(ref)
        if found is None:
            raise NotFound(f"alias '{ref}' not found")
        return found

    async def create(self, who: Requester, spec: AliasSpec) -> Alias:
        """A new alias (403 unless ``who`` may manage its action; 409 when the ref is taken)."""
        spec = spec.checked()
        await self.runtime.gate.manage(who, spec.action_ref, "create_alias")
        return await self.repo.add(stored_fields(spec))

    async def update(self, who: Requester, ref: str, spec: AliasSpec) -> Alias:
        """Replace an alias's fields: ``who`` must manage the action it runs now and the one
        it will run."""
        current = await self.get(ref)
        spec = spec.checked()
        if spec.alias_ref != ref:
            raise InvalidRequest(f"the alias '{ref}' cannot be renamed to '{spec.alias_ref}'")
        await self.runtime.gate.manage(who, current.action_ref, "update_alias")
        await self.runtime.gate.manage(who, spec.action_ref, "update_alias")
        updated = await self.repo.replace(ref, stored_fields(spec))
        if updated is None:
            raise NotFound(f"alias '{ref}' not found")
        return updated

    async def delete(self, who: Requester, ref: str) -> None:
        current = await self.get(ref)
        await self.runtime.gate.manage(who, current.action_ref, "delete_alias")
        if not await self.repo.delete(ref):
            raise NotFound(f"alias '{ref}' not found")

    async def sync_pack(self, pack: PackSpec) -> None:
        """Store a pack's aliases from its folder (its others from disk go)."""
        await self.repo.sync_pack(pack.ref, [stored_fields(a) for a in pack.aliases])

    # -- chat ---------------------------------------------------------------------------------

    async def runnable(self, who: Requester) -> list[Alias]:
        """The enabled aliases whose action ``who`` may run."""
        policy = self.runtime.gate.policy
        return [
            a
            for a in await self.repo.list_aliases()
            if a.enabled and policy.allows(who.role, "run", a.action_ref)
        ]

    async def match(self, who: Requester, text: str) -> AliasMatch | None:
        """The alias ``text`` means: among those ``who`` may run first; else among all the
        enabled ones (the run is then refused with the reason, and audited, by the gate)."""
        mine = await self.runnable(who)
        found = best_match(mine, text)
        if found is None:
            found = best_match(await self.repo.list_aliases(), text)
        return found

    async def plan(self, found: AliasMatch, who: Requester) -> PlannedRun:
        """The parameters of a matched alias: the values cast by the action's schema (a list
        from ``a, b, c`` as StackStorm casts it), the author's templates rendered, and the
        ``immutable_parameters`` added (a value typed for one of them is refused)."""
        alias = found.alias
        action = await self.runtime.catalog.get_action(alias.action_ref)
        props: Mapping[str, Any] = action.param_schema.get("properties") or {}
        immutable = dict(alias.immutable_parameters or {})
        given = [k for k in found.extracted.values if k in immutable]
        given = [k for k in given if k not in found.extracted.defaulted]
        if given:
            raise InvalidParameters(
                f"the alias {alias.ref} sets {', '.join(sorted(given))} itself: it cannot be given"
            )
        context = {
            "user": who.identity,
            "source": who.source,
            "channel": who.channel,
            "alias": {"ref": alias.ref, "action_ref": alias.action_ref},
        }
        values: dict[str, Any] = {}
        for name, value in found.extracted.values.items():
            if name in found.extracted.defaulted and "{{" in value:
                value = await self.render(value, context, "a format's default")
            prop = props.get(name)
            values[name] = cast(value, prop) if isinstance(prop, Mapping) else value
        if immutable:
            values.update(await self.render(immutable, context, "immutable_parameters"))
        return PlannedRun(alias, alias.action_ref, values)

    async def render(self, template: Any, context: Mapping[str, Any], what: str) -> Any:
        """``template`` rendered in the sandbox's worker processes; InvalidRequest naming
        ``what`` when it fails."""
        safe = json.loads(json.dumps(context, default=str))
        out = await self.runtime.automation.templates.evaluate(None, template, safe, None)
        if out.get("problem"):
            raise InvalidRequest(f"{what}: {out['problem']}")
        return out.get("result")

    async def message(
        self, alias: Alias, which: str, execution: Mapping[str, Any]
    ) -> tuple[bool, str | None]:
        """The alias's ``ack`` or ``result`` for an execution: (enabled, rendered format or
        None for ours). A format that fails renders as the reason, as StackStorm does."""
        spec = alias.message(which)
        if spec is None:
            return True, None
        if not spec.enabled:
            return False, None
        if spec.format is None:
            return True, None
        context = {"execution": dict(execution), "actionalias": alias.as_dict()}
        context["alias"] = context["actionalias"]
        try:
            text = await self.render(spec.format, context, f"{which}.format")
        except InvalidRequest as exc:
            return True, f"Cannot render the alias's {which} format: {exc.message}"
        return True, "" if text is None else str(text)


def cast(value: str, prop: Mapping[str, Any]) -> Any:
    """A typed value as the action's schema wants it; an array from ``a, b`` (or JSON)."""
    types = prop.get("type")
    kinds = types if isinstance(types, list) else [types]
    if "array" in kinds and isinstance(value, str) and not value.strip().startswith("["):
        return [v.strip() for v in value.split(",")]
    return coerce_value(value, prop)


def execution_context(record: Any) -> dict[str, Any]:
    """An execution as the ``ack``/``result`` formats see it: our record, with StackStorm's
    names beside ours (``parameters``, ``action.ref``, ``context.user``)."""
    data = dict(record.as_dict())
    data["parameters"] = data.get("config") or {}
    data["action"] = {"ref": data.get("action_ref")}
    requester = data.get("requester") or {}
    data["context"] = {"user": requester.get("user_name") or requester.get("identity")}
    return data


def aliases_of(runtime: Runtime) -> AliasCatalog:
    """The aliases of a runtime (the service holds no state of its own)."""
    return AliasCatalog(runtime)
