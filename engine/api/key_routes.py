"""``/api/v1/keys``: Attune's key-value store (engine/keys.py holds the rules of who may do
what). Paths, bodies, status codes and envelopes are Attune's (``crates/api/src/routes/keys.rs``):
201 on create, 409 for a ref that is taken, 404 for a missing (or expired) key, ``{"success",
"message"}`` on delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from engine.api import schemas as s
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, paged
from engine.keys import KeyCreate, KeyUpdate, OwnerType


class KeySummary(BaseModel):
    """A key in a list (no value), Attune's KeySummary with ``updated`` and ``expires_at``."""

    id: int
    ref: str
    owner_type: OwnerType
    owner: str | None
    name: str
    encrypted: bool
    created: datetime
    updated: datetime
    expires_at: datetime | None


class KeyResponse(KeySummary):
    """One key, Attune's KeyResponse: ``value`` is null for an encrypted key the caller may
    not decrypt."""

    owner_identity: int | None
    owner_pack: int | None
    owner_pack_ref: str | None
    owner_action: int | None
    owner_action_ref: str | None
    owner_sensor: int | None
    owner_sensor_ref: str | None
    value: Any


class KeyWritten(BaseModel):
    data: KeyResponse
    message: str


class Success(BaseModel):
    success: bool
    message: str


async def list_keys(call: Call) -> Any:
    page, per_page = call.paging()
    q = call.request.query
    items, total = await call.runtime.keys.list(
        call.caller,
        owner_type=q.get("owner_type") or None,
        owner=q.get("owner") or None,
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def get_key(call: Call) -> Any:
    return {"data": await call.runtime.keys.get(call.caller, call.path_param("ref"))}


async def create_key(call: Call) -> Any:
    key = await call.runtime.keys.create(call.caller, call.body)
    return {"data": key, "message": "Key created successfully"}


async def update_key(call: Call) -> Any:
    key = await call.runtime.keys.update(call.caller, call.path_param("ref"), call.body)
    return {"data": key, "message": "Key updated successfully"}


async def delete_key(call: Call) -> Any:
    await call.runtime.keys.delete(call.caller, call.path_param("ref"))
    return {"success": True, "message": "Key deleted successfully"}


K = ("secrets",)

KEY_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/keys",
        list_keys,
        "List keys (values left out; another identity's keys are not listed)",
        response=s.Page[KeySummary],
        errors=(400,),
        tags=K,
        query=(
            QueryParam("owner_type", "string", "system, identity, pack, action or sensor"),
            QueryParam("owner", "string", "Only keys with this owner"),
            *PAGING,
        ),
    ),
    RouteSpec(
        "POST",
        "/api/v1/keys",
        create_key,
        "Create a key (encrypted: sealed at rest; ttl: seconds until it expires)",
        "operator",
        body=KeyCreate,
        response=KeyWritten,
        status=201,
        errors=(400, 403, 409),
        tags=K,
    ),
    RouteSpec(
        "GET",
        "/api/v1/keys/{ref}",
        get_key,
        "Get a key with its value (an encrypted value is null unless the role may decrypt)",
        response=s.Single[KeyResponse],
        errors=(404,),
        tags=K,
    ),
    RouteSpec(
        "PUT",
        "/api/v1/keys/{ref}",
        update_key,
        "Update a key's name, value, encryption or ttl",
        "operator",
        body=KeyUpdate,
        response=KeyWritten,
        errors=(400, 403, 404),
        tags=K,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/keys/{ref}",
        delete_key,
        "Delete a key",
        "operator",
        response=Success,
        errors=(403, 404),
        tags=K,
    ),
]
