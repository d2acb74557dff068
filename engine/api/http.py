"""HTTP plumbing of the API: route specs, JSON bodies, auth, and errors as ``{"error", "code"}``.

Every route is declared once as a :class:`RouteSpec`; the aiohttp router and the OpenAPI
document are both built from that list, so they cannot disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from engine.api.page_auth import cookie_principal
from engine.audit import AuditEntry
from engine.auth import ROLES, Principal
from engine.errors import EngineError, Forbidden, InvalidRequest, TooManyRequests, Unauthorized
from engine.execution_tokens import EXECUTION_TOKEN_PREFIX
from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: Who may call a route: anyone, any signed-in principal (the ``none`` role included), or a
#: role at least as powerful as the one named.
Access = Literal["public", "signed-in", "viewer", "operator", "admin"]
RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
#: Largest id a database column holds (signed 64 bits).
MAX_ID = 2**63 - 1
#: Largest page number accepted (keeps OFFSET within 64 bits for any per_page).
MAX_PAGE = 10**9
#: Items per page when a list request names none, and the most it may ask for (Attune's).
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
#: Longest wait a request may ask for with ``?wait=SECONDS``.
MAX_WAIT_S = 300.0
#: Time a waiting request is given beyond its wait (to submit, read the state and answer).
WAIT_MARGIN_S = 10.0
#: The requests that may wait: ``POST /api/v1/executions/execute``, ``GET .../{id}``.
WAITING_PATH = re.compile(r"^/api/v1/executions/(?:execute|[0-9]+)$")


@dataclass(frozen=True)
class QueryParam:
    name: str
    type: Literal["string", "integer", "number"]
    description: str
    location: Literal["query", "header"] = "query"


@dataclass(frozen=True)
class Call:
    """What a handler receives: the request, the caller, the validated body, the runtime."""

    request: web.Request
    runtime: Runtime
    principal: Principal | None
    body: Any

    def path_param(self, name: str) -> str:
        return self.request.match_info[name]

    def int_path_param(self, name: str) -> int:
        return _bounded_int(name, self.request.match_info[name], 1, MAX_ID)

    def query_int(self, name: str, default: int, *aliases: str) -> int:
        for key in (name, *aliases):
            raw = self.request.query.get(key)
            if raw is not None:
                return _bounded_int(f"query parameter '{key}'", raw, 1, MAX_PAGE)
        return default

    def query_id(self, name: str) -> int | None:
        """An id query parameter (1 to :data:`MAX_ID`), or None when absent or empty."""
        raw = self.request.query.get(name)
        return _bounded_int(f"query parameter '{name}'", raw, 1, MAX_ID) if raw else None

    def paging(self) -> tuple[int, int]:
        """``page`` (from 1) and ``per_page`` (alias ``page_size``, ``limit``), capped at
        :data:`MAX_PER_PAGE` as Attune caps it."""
        per_page = self.query_int("per_page", DEFAULT_PER_PAGE, "page_size", "limit")
        return self.query_int("page", 1), min(per_page, MAX_PER_PAGE)

    def query_time(self, name: str) -> datetime | None:
        """An ISO 8601 query parameter (UTC when it names no zone), or None."""
        raw = self.request.query.get(name)
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidRequest(
                f"{name} must be an ISO 8601 time, e.g. 2026-11-26T10:00:00Z"
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def caller(self) -> Principal:
        if self.principal is None:
            raise Unauthorized("missing bearer token")
        return self.principal


Handler = Callable[[Call], Awaitable[Any]]


def wait_seconds(request: web.Request) -> float | None:
    """The ``wait`` query parameter: None when absent, else seconds in (0, MAX_WAIT_S]."""
    raw = request.query.get("wait")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_WAIT_S:  # NaN fails too
        raise InvalidRequest(
            f"query parameter 'wait' must be a number of seconds, more than 0 and at most "
            f"{MAX_WAIT_S:g}, got '{raw[:40]}'"
        )
    return value


#: The query parameters of every list (what :meth:`Call.paging` reads), for the OpenAPI document.
PAGING = (
    QueryParam("page", "integer", "Page number, from 1"),
    QueryParam("per_page", "integer", "Items per page, 1-100 (default 50; alias page_size)"),
)


def _bounded_int(what: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{what} must be an integer, got '{raw[:40]}'") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{what} must be between {low} and {high}")
    return value


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Handler
    summary: str
    access: Access = "viewer"
    body: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()
    tags: tuple[str, ...] = field(default=())
    raw: bool = False
    #: Other success statuses (with the same body), e.g. 200 and 202 of a waiting request.
    also: tuple[int, ...] = ()


def paged(items: list[Any], page: int, per_page: int, total: int) -> dict[str, Any]:
    """A list in Attune's shape: ``{"items": [...], "pagination": {...}}``."""
    pages = -(-total // per_page) if per_page else 0
    return {
        "items": items,
        "pagination": {
            "page": page,
            "page_size": per_page,
            "total_items": total,
            "total_pages": pages,
            "has_previous": page > 1,
            "has_next": page < pages,
        },
    }


def page_of(items: list[Any], page: int, per_page: int) -> dict[str, Any]:
    """One page of a list held whole in memory (packs, actions, triggers, rules)."""
    start = (page - 1) * per_page
    return paged(items[start : start + per_page], page, per_page, len(items))


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, message: str, code: str) -> web.Response:
    return json_response({"error": message, "code": code}, status)


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown field '{loc}'")
        elif err["type"] == "missing":
            parts.append(f"missing field '{loc}'")
        else:
            parts.append(f"field '{loc}': {err['msg']}" if loc else str(err["msg"]))
    return "; ".join(parts)


async def parse_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw = await request.read()
    if not raw:
        raise InvalidRequest("request body must be a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(_describe_validation(exc)) from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None


async def authenticate(request: web.Request, runtime: Runtime) -> Principal | None:
    """The caller of an API request: its bearer token; without an ``Authorization`` header,
    the execution pages' cookies (engine/api/page_auth.py), else None."""
    header = request.headers.get("Authorization")
    if not header:
        return await cookie_principal(request, runtime)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    if token.strip().startswith(EXECUTION_TOKEN_PREFIX):  # an action calling back
        return await runtime.execution_tokens.authenticate(token.strip())
    return await runtime.auth.authenticate(token.strip())


def require(principal: Principal | None, access: Access) -> None:
    if access == "public":
        return
    if principal is None:
        raise Unauthorized("missing bearer token")
    if access == "signed-in":
        return
    if ROLES.index(principal.role) > ROLES.index(access):
        raise Forbidden(
            f"this needs the {access} role; your token has {principal.role}"
            + (
                "; an administrator grants one with 'attune user set-role'"
                if principal.role == "none"
                else ""
            )
        )


def make_handler(spec: RouteSpec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = request.app[RUNTIME_KEY]
        principal = None
        if spec.access != "public" or request.headers.get("Authorization"):
            principal = await authenticate(request, runtime)
        try:
            require(principal, spec.access)
        except Forbidden as exc:
            assert principal is not None
            await runtime.audit.record(
                AuditEntry(
                    actor=principal.login,
                    role=principal.role,
                    source="api",
                    verb=spec.handler.__name__,
                    outcome="denied",
                    target=request.path[:256],
                    detail=exc.message,
                    channel=f"token:{principal.token_name}",
                )
            )
            raise
        body = await parse_body(request, spec.body) if spec.body is not None else None
        result = await spec.handler(Call(request, runtime, principal, body))
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result, spec.status)

    return handle


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except EngineError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        response = error_response(exc.http_status, exc.message, exc.code)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        return response
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[RUNTIME_KEY].settings.max_body_bytes
        return error_response(
            413, f"request body too large (limit {limit} bytes)", "PAYLOAD_TOO_LARGE"
        )
    except web.HTTPNotFound:
        return error_response(
            404, f"no such endpoint: {request.method} {request.path}", "NOT_FOUND"
        )
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(
            405, f"{request.method} is not allowed here (allowed: {allowed})", "METHOD_NOT_ALLOWED"
        )
    except web.HTTPException as exc:
        return error_response(exc.status, exc.reason, exc.reason.upper().replace(" ", "_"))
    except ConnectionError:
        raise  # the client went away mid-request: aiohttp drops it quietly
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error; see the server log", "INTERNAL_ERROR")


#: Paths whose connections live on by design (the notifier's WebSocket): no handler time limit.
UNBOUNDED_PATHS = frozenset({"/ws"})
#: So do the server-sent event streams, by their routes (they bound each write instead): the
#: route, not a path ending in ``/stream``, which ``POST /api/v1/webhooks/stream`` (public) or
#: ``PUT /api/v1/keys/stream`` would be too, freed from the body and handler time limits.
UNBOUNDED_ROUTES = frozenset(
    {"/api/v1/executions/stream", "/api/v1/executions/{id}/logs/{stream}/stream"}
)


def unbounded(request: web.Request) -> bool:
    """Whether ``request`` is one whose connection lives on by design (no time limits)."""
    if request.path in UNBOUNDED_PATHS:
        return True
    resource = getattr(request.match_info.route, "resource", None)
    return (
        request.method == "GET" and resource is not None and resource.canonical in UNBOUNDED_ROUTES
    )


@web.middleware
async def deadline_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A slow client or a stuck handler cannot hold a connection for ever: a request body
    must arrive within ``http_body_timeout_s`` (else 408, and the connection is closed), and
    a handler must answer within ``http_handler_timeout_s`` (else 503). The request line and
    headers are bounded by the server's keep-alive timer (``http_header_timeout_s``, set
    where the server is made). A multipart upload is read by its handler, within the
    handler's limit."""
    settings = request.app[RUNTIME_KEY].settings
    if unbounded(request):
        return await handler(request)  # type: ignore[no-any-return]
    if request.body_exists and not request.content_type.startswith("multipart/"):
        try:
            async with asyncio.timeout(settings.http_body_timeout_s):
                await request.read()  # kept: the handler reads it again from memory
        except TimeoutError:
            response = error_response(
                408,
                f"request body not received within {settings.http_body_timeout_s:g} s "
                "(ATTUNE_HTTP_BODY_TIMEOUT_S)",
                "REQUEST_TIMEOUT",
            )
            response.force_close()
            return response
    limit_s = settings.http_handler_timeout_s
    if WAITING_PATH.match(request.path):
        with contextlib.suppress(InvalidRequest):  # the handler answers a bad wait with 400
            waited = wait_seconds(request)
            if waited is not None:  # a long-poll: its wait and a margin, never unbounded
                limit_s = max(limit_s, waited + WAIT_MARGIN_S)
    limit = asyncio.timeout(limit_s)
    try:
        async with limit:
            return await handler(request)  # type: ignore[no-any-return]
    except TimeoutError:
        if not limit.expired():
            raise  # a time limit of the handler's own, not this one: its own error
        log.warning("%s %s: no answer within %g s", request.method, request.path, limit_s)
        response = error_response(
            503,
            f"the server did not answer within {limit_s:g} s "
            "(ATTUNE_HTTP_HANDLER_TIMEOUT_S, or the request's wait); try again later",
            "TIMEOUT",
        )
        response.headers["Retry-After"] = "5"
        return response
