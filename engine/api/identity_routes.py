"""Identities as Attune's clients read them (``IdentityResponse``): our users, each with the
one role it holds (``admin``, ``operator``, ``viewer`` or ``none``) as a role assignment. Read
only; users are managed with ``attune user`` and ``/auth``. Attune's web UI links an execution's
``executor`` to its identity."""

from __future__ import annotations

from typing import Any

from engine.api.http import PAGING, Call, RouteSpec, page_of
from engine.auth import User
from engine.users import Users


def identity_record(user: User) -> dict[str, Any]:
    assignment = {
        "id": user.id,
        "identity_id": user.id,
        "role": user.role,
        "source": "local",
        "managed": True,
        "created": user.created,
        "updated": user.created,
    }
    return {
        "id": user.id,
        "login": user.login,
        "display_name": user.display_name,
        "frozen": user.disabled,
        "attributes": {},
        "roles": [assignment],
        "direct_permissions": [],
        "role": user.role,
    }


async def list_identities(call: Call) -> Any:
    users = await Users(call.runtime.auth).all()
    return page_of([identity_record(u) for u in users], *call.paging())


async def get_identity(call: Call) -> Any:
    user = await Users(call.runtime.auth).get_by_id(call.int_path_param("id"))
    return {"data": identity_record(user)}


IDENTITY_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/identities",
        list_identities,
        "Users, as Attune's identities (admin)",
        "admin",
        query=PAGING,
        errors=(401, 403),
        tags=("identities",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/identities/{id}",
        get_identity,
        "One user as Attune's identity (login, display name, role): who ran an execution",
        errors=(401, 404),
        tags=("identities",),
    ),
]
