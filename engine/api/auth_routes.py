"""The ``/auth`` endpoints, as Attune's (``crates/api/src/routes/auth.rs``): login, refresh,
register, the current user (with Attune's ``effective_permissions``), change-password, the
login page's settings and logout.

A session is an access token and a refresh token, both JWTs (:class:`engine.auth.Session`); the
body of login, register and refresh is Attune's ``TokenResponse`` in ``{"data": ...}``.
``GET /auth/logout`` is where Attune's web UI sends the browser once it has forgotten its
tokens: a redirect to its login page, as Attune's without single sign-on. Sessions end on the
server when the password changes or the user is disabled (and their tokens expire). Refused logins
(wrong password, throttled, disabled account) are in the audit log, as are registrations and
password changes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api import schemas as s
from engine.api.http import Call, RouteSpec
from engine.audit import AuditEntry
from engine.auth import MAX_LOGIN_CHARS, SESSION_TOKEN_NAME, ValidationFailed
from engine.errors import EngineError, Forbidden, TooManyRequests, Unauthorized
from engine.logins import normal_login
from engine.users import Users

#: Attune's shortest login at registration (RegisterRequest).
MIN_REGISTER_LOGIN_CHARS = 3


async def _audit(call: Call, actor: str, verb: str, outcome: str, detail: str | None) -> None:
    await call.runtime.audit.record(
        AuditEntry(
            actor=actor[:256],
            source="api",
            verb=verb,
            outcome=outcome,
            channel=call.request.remote or "",
            detail=detail,
        )
    )


async def login(call: Call) -> Any:
    client = call.request.remote or ""
    try:
        session = await call.runtime.auth.login(call.body.login, call.body.password, client)
    except (Unauthorized, TooManyRequests, Forbidden) as exc:
        await _audit(call, call.body.login, "login", "denied", exc.message)
        raise
    return {"data": session.token_response()}


async def refresh(call: Call) -> Any:
    session = await call.runtime.auth.refresh(call.body.refresh_token)
    return {"data": session.token_response()}


async def register(call: Call) -> Any:
    settings = call.runtime.settings
    if not settings.allow_registration:
        raise Forbidden(
            "self-service registration is disabled on this server; an administrator creates "
            "users with `attune user create`"
        )
    body: s.RegisterRequest = call.body
    if not MIN_REGISTER_LOGIN_CHARS <= len(normal_login(body.login)) <= MAX_LOGIN_CHARS:
        raise ValidationFailed(
            f"login must be {MIN_REGISTER_LOGIN_CHARS} to {MAX_LOGIN_CHARS} characters long"
        )
    users = Users(call.runtime.auth)
    try:
        user = await users.create(
            body.login, body.password, settings.registration_role, body.display_name
        )
    except EngineError as exc:
        await _audit(call, body.login, "register", "refused", exc.message)
        raise
    await _audit(call, user.login, "register", "accepted", f"role {user.role}")
    return {"data": (await call.runtime.auth.start_session(user)).token_response()}


async def current_user(call: Call) -> Any:
    user = await Users(call.runtime.auth).get(call.caller.login)
    return {"data": _current(user.id, user.login, user.display_name, call, user.has_password)}


def _current(
    user_id: int, login: str, display_name: str | None, call: Call, has_password: bool
) -> dict[str, Any]:
    role = call.caller.role
    return {
        "id": user_id,
        "login": login,
        "display_name": display_name,
        "role": role,
        "auth_provider": "local",
        "is_local": True,
        "can_change_password": has_password,
        "provider_profile": None,
        "effective_permissions": call.runtime.gate.policy.grants(role),
        "assigned_permission_set_refs": [],
    }


def _session_only(call: Call, what: str) -> None:
    """As Attune: profile changes need a login session's token, not an integration token."""
    if call.caller.token_name != SESSION_TOKEN_NAME:
        raise Forbidden(f"{what} needs the token of a login session, not an integration token")


async def update_current_user(call: Call) -> Any:
    _session_only(call, "changing your profile")
    user = await Users(call.runtime.auth).set_display_name(
        call.caller.login, call.body.display_name
    )
    return {"data": _current(user.id, user.login, user.display_name, call, user.has_password)}


async def change_password(call: Call) -> Any:
    _session_only(call, "changing your password")
    body: s.ChangePasswordRequest = call.body
    who = call.caller.login
    try:
        await Users(call.runtime.auth).change_password(
            who, body.current_password, body.new_password
        )
    except (Unauthorized, TooManyRequests) as exc:
        await _audit(call, who, "change-password", "denied", exc.message)
        raise
    await _audit(call, who, "change-password", "accepted", "sessions ended")
    return {"data": {"success": True, "message": "Password changed successfully"}}


async def logout_redirect(call: Call) -> Any:
    """As Attune's without single sign-on: to the login page (the browser has already
    forgotten its tokens)."""
    return web.Response(status=307, headers={"Location": "/login"})


async def auth_settings(call: Call) -> Any:
    return {
        "data": {
            "authentication_enabled": True,
            "local_password_enabled": True,
            "local_password_visible_by_default": True,
            "oidc_enabled": False,
            "oidc_visible_by_default": False,
            "oidc_provider_name": None,
            "oidc_provider_label": None,
            "oidc_provider_icon_url": None,
            "ldap_enabled": False,
            "ldap_visible_by_default": False,
            "ldap_provider_name": None,
            "ldap_provider_label": None,
            "ldap_provider_icon_url": None,
            "self_registration_enabled": call.runtime.settings.allow_registration,
        }
    }


_TAGS = ("auth",)

AUTH_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "POST",
        "/auth/login",
        login,
        "Exchange a login and password for an access token and a refresh token",
        "public",
        body=s.LoginRequest,
        response=s.Single[s.TokenResponse],
        errors=(400, 401, 403, 429),
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/auth/refresh",
        refresh,
        "Trade a refresh token (usable once) for a new access token and refresh token",
        "public",
        body=s.RefreshTokenRequest,
        response=s.Single[s.TokenResponse],
        errors=(400, 401),
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/auth/register",
        register,
        "Self-service registration (off by default); answers as a login does",
        "public",
        body=s.RegisterRequest,
        response=s.Single[s.TokenResponse],
        errors=(400, 403, 409, 422),
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/auth/me",
        current_user,
        "The current user, with the role the token acts with",
        "signed-in",
        response=s.Single[s.CurrentUser],
        errors=(401, 404),
        tags=_TAGS,
    ),
    RouteSpec(
        "PUT",
        "/auth/me",
        update_current_user,
        "Change your display name",
        "signed-in",
        body=s.UpdateCurrentUserRequest,
        response=s.Single[s.CurrentUser],
        errors=(400, 401, 403, 404),
        tags=_TAGS,
    ),
    RouteSpec(
        "POST",
        "/auth/change-password",
        change_password,
        "Change your password; every session of yours ends (log in again)",
        "signed-in",
        body=s.ChangePasswordRequest,
        response=s.Single[s.SuccessResponse],
        errors=(400, 401, 403, 422, 429),
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/auth/settings",
        auth_settings,
        "What the login page offers: local passwords, and whether registration is open",
        "public",
        response=s.Single[s.AuthSettings],
        tags=_TAGS,
    ),
    RouteSpec(
        "GET",
        "/auth/logout",
        logout_redirect,
        "Where a web client sends the browser to log out: a redirect to its /login page",
        "public",
        status=307,
        tags=_TAGS,
    ),
]
