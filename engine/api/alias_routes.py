"""Action aliases over the API (StackStorm's format): ``/api/v1/aliases``.

Listing and reading need ``view`` on the alias's action; creating, changing and deleting need
``manage`` on it (and, for a change of ``action_ref``, on the new action too), as actions do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from engine.aliases.records import Alias, AliasSpec, FormatSpec, MessageSpec
from engine.aliases.service import aliases_of
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, page_of
from engine.api.routes import requester
from engine.api.schemas import Page, Single
from engine.errors import Forbidden, InvalidRequest
from engine.packs import first_error


class AliasWrite(AliasSpec):
    """An alias to create: StackStorm's fields; the pack may come as ``pack`` or in ``ref``."""

    ref: str | None = None

    def spec(self) -> AliasSpec:
        pack = self.pack
        if pack is None and self.ref and "." in self.ref:
            pack, _, name = self.ref.partition(".")
            if name != self.name:
                raise InvalidRequest(f"ref '{self.ref}' does not end with name '{self.name}'")
        if self.ref and pack and self.ref != f"{pack}.{self.name}":
            raise InvalidRequest(f"ref '{self.ref}' is not pack.name ('{pack}.{self.name}')")
        fields = self.model_dump(exclude={"ref"}, exclude_unset=True)
        try:
            return AliasSpec.model_validate({**fields, "pack": pack})
        except ValidationError as exc:
            raise InvalidRequest(first_error(exc)) from None


class AliasUpdate(BaseModel):
    """A change: the fields given replace the alias's (its name and pack stay)."""

    model_config = ConfigDict(extra="ignore")

    ref: str | None = None
    name: str | None = None
    pack: str | None = None
    action_ref: str | None = None
    description: str | None = None
    enabled: bool | None = None
    formats: list[str | FormatSpec] | None = None
    ack: MessageSpec | None = None
    result: MessageSpec | None = None
    extra: dict[str, Any] | None = None
    immutable_parameters: dict[str, Any] | None = None


class AliasOut(BaseModel):
    id: int
    ref: str
    name: str
    pack: str
    pack_ref: str
    action_ref: str
    description: str
    enabled: bool
    formats: list[Any]
    ack: dict[str, Any] | None
    result: dict[str, Any] | None
    extra: dict[str, Any] | None
    immutable_parameters: dict[str, Any] | None
    adhoc: bool
    created: datetime
    updated: datetime


def _may_view(call: Call, alias: Alias) -> bool:
    return call.runtime.gate.policy.allows(call.caller.role, "view", alias.action_ref)


async def list_aliases(call: Call) -> Any:
    found = await aliases_of(call.runtime).list_aliases(call.request.query.get("pack_ref"))
    items = [a.as_dict() for a in found if _may_view(call, a)]
    return page_of(items, *call.paging())


async def get_alias(call: Call) -> Any:
    alias = await aliases_of(call.runtime).get(call.path_param("ref"))
    if not _may_view(call, alias):
        raise Forbidden(
            f"the {call.caller.role} role lacks the 'view' permission on {alias.action_ref}"
        )
    return {"data": alias.as_dict()}


async def create_alias(call: Call) -> Any:
    body: AliasWrite = call.body
    made = await aliases_of(call.runtime).create(requester(call), body.spec())
    return {"data": made.as_dict()}


async def update_alias(call: Call) -> Any:
    ref = call.path_param("ref")
    service = aliases_of(call.runtime)
    current = await service.get(ref)
    given = call.body.model_dump(exclude_unset=True)
    for key in ("ref", "name", "pack"):
        expected = {"ref": ref, "name": current.name, "pack": current.pack_ref}[key]
        if given.get(key, expected) != expected:
            raise InvalidRequest(f"body {key} '{given[key]}' differs from the alias's '{expected}'")
    merged = {
        "name": current.name,
        "pack": current.pack_ref,
        "action_ref": current.action_ref,
        "description": current.description,
        "enabled": current.enabled,
        "formats": current.formats,
        "ack": current.ack,
        "result": current.result,
        "extra": current.extra,
        "immutable_parameters": current.immutable_parameters,
    }
    merged.update({k: v for k, v in given.items() if k not in ("ref", "name", "pack")})
    try:
        spec = AliasSpec.model_validate(merged)
    except ValidationError as exc:
        raise InvalidRequest(first_error(exc)) from None
    return {"data": (await service.update(requester(call), ref, spec)).as_dict()}


async def delete_alias(call: Call) -> Any:
    await aliases_of(call.runtime).delete(requester(call), call.path_param("ref"))
    return web.Response(status=204)


TAGS = ("aliases",)

ALIAS_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/aliases",
        list_aliases,
        "List action aliases (those whose action you may view)",
        response=Page[AliasOut],
        query=(QueryParam("pack_ref", "string", "Only this pack's aliases"), *PAGING),
        errors=(401,),
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/aliases",
        create_alias,
        "Create an action alias (StackStorm's format; needs 'manage' on its action)",
        "operator",
        body=AliasWrite,
        response=Single[AliasOut],
        status=201,
        errors=(400, 401, 403, 409),
        tags=TAGS,
    ),
    RouteSpec(
        "GET",
        "/api/v1/aliases/{ref}",
        get_alias,
        "Get an action alias",
        response=Single[AliasOut],
        errors=(401, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "PUT",
        "/api/v1/aliases/{ref}",
        update_alias,
        "Change an action alias (fields not given keep their value)",
        "operator",
        body=AliasUpdate,
        response=Single[AliasOut],
        errors=(400, 401, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/aliases/{ref}",
        delete_alias,
        "Delete an action alias",
        "operator",
        status=204,
        raw=True,
        errors=(401, 403, 404),
        tags=TAGS,
    ),
]
