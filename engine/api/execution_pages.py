"""The execution pages: ``/ui/executions/{id}`` (one run, live while it runs) and
``/ui/executions`` (a filtered list), with ``/ui/login`` and ``/ui/logout``.

Server-rendered with Jinja2 (engine/api/templates), one stylesheet and one small script
(engine/api/static), no build step. Who may see what is the API's rule: a page shows an
execution the viewer may view through ``GET /api/v1/executions/{id}``; anything else, an unknown
id included, is the same 404. Cookies and signed links: engine/api/page_auth.py.

Cancel posts to the API (``POST /api/v1/executions/{id}/cancel``, with the login cookie);
Re-run posts to ``/ui/executions/{id}/rerun``, which re-runs on the server through the gate with
the original's sealed secret values (the page never holds them), so only those the gate allows
(the original requester, through the API, or an admin, when there were secrets) can.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from engine.api import page_auth, page_views
from engine.api.http import MAX_ID, MAX_PER_PAGE, RUNTIME_KEY
from engine.audit import AuditEntry
from engine.auth import Principal
from engine.errors import EngineError, Forbidden, InvalidRequest, NotFound, TooManyRequests
from engine.gate import Requester, Submitted
from engine.page_links import execution_page_path, verify_signed
from engine.records import Execution
from engine.runtime import Runtime

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
#: The static files served (nothing else under the folder is reachable).
STATIC_FILES = {"page.css": "text/css", "execution.js": "application/javascript"}
#: Rows per list page when none is asked for, and the choices offered.
DEFAULT_PER_PAGE = 25
PER_PAGE_CHOICES = (10, 25, 50, 100)
#: Longest ``next`` kept after a login (a page's path and query).
MAX_NEXT_CHARS = 2048
#: Headers of every page: scripts and styles from this server only, no framing, no referrer
#: leaving the site (a signed link's query stays here), nothing cached.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@functools.cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["time"] = page_views.show_time
    env.filters["duration"] = page_views.show_duration_ms
    env.globals["signs"] = page_views.STATUS_SIGNS
    return env


def render(
    template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> web.Response:
    context.setdefault("viewer", None)
    text = templates().get_template(template).render(**context)
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        headers={**PAGE_HEADERS, **(headers or {})},
    )


def _redirect(location: str) -> web.Response:
    """303 to ``location`` (returned, not raised: the API's error middleware would turn a
    raised one into JSON)."""
    return web.Response(status=303, headers={"Location": location, **PAGE_HEADERS})


def _runtime(request: web.Request) -> Runtime:
    return request.app[RUNTIME_KEY]


def _safe_next(raw: str | None) -> str:
    """Where to go after logging in: a path of these pages, never another site, and nothing a
    ``Location`` header cannot hold (a control character, CR/LF above all)."""
    if (
        raw
        and raw.startswith("/ui/")
        and "\\" not in raw
        and raw.isprintable()
        and len(raw) <= MAX_NEXT_CHARS
    ):
        return raw
    return "/ui/executions"


def _to_login(request: web.Request) -> web.Response:
    target = request.path_qs if request.method == "GET" else request.path
    return _redirect(f"/ui/login?{urlencode({'next': target})}")


#: Why Re-run is not offered to someone who may run the action (it had secrets, not theirs).
_RERUN_NOTE = (
    "Re-run is offered only to whoever requested this run through the API, or an admin: "
    "it had secret parameters, which a re-run re-uses without showing them."
)
_NOT_FOUND = "This execution does not exist, or you may not view it."


def _not_found(what: str = _NOT_FOUND) -> web.Response:
    return render("not_found.html", 404, message=what)


def requester(principal: Principal) -> Requester:
    """The pages act as the API does for the same user (source ``api``)."""
    extra: dict[str, Any] = {"token": principal.token_name}
    if principal.user_id is not None:
        extra["identity_id"] = principal.user_id
    return Requester(identity=principal.login, role=principal.role, source="api", extra=extra)


def _execution_id(request: web.Request) -> int | None:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
        return None
    return int(raw)


# -- login ------------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    target = _safe_next(request.query.get("next"))
    if await page_auth.session_principal(request, runtime) is not None:
        return _redirect(target)
    return render("login.html", next=target, error=None, login="")


async def login_submit(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    form = await request.post()
    target = _safe_next(str(form.get("next") or ""))
    login = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    if not page_auth.same_origin(request, runtime):
        return render(
            "login.html", 403, next=target, login=login,
            error="This form must be sent from this server's login page.",
        )  # fmt: skip
    if not login or not password:
        return render(
            "login.html", 400, next=target, login=login, error="Enter a login and a password."
        )
    try:
        session = await runtime.auth.login(login, password, request.remote or "")
    except EngineError as exc:
        await runtime.audit.record(
            AuditEntry(
                actor=login[:256],
                source="api",
                verb="login",
                outcome="denied",
                channel=request.remote or "",
                detail=exc.message,
            )
        )
        headers = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        return render(
            "login.html", exc.http_status, headers, next=target, login=login, error=exc.message
        )
    response = _redirect(target)
    page_auth.set_cookie(
        response,
        request,
        runtime,
        page_auth.SESSION_COOKIE,
        session.access_token,
        session.expires_in,
    )
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    if not page_auth.same_origin(request, runtime):
        return render(
            "not_found.html", 403, heading="Refused", message="Log out from this server's pages."
        )
    token = request.cookies.get(page_auth.SESSION_COOKIE)
    if token:
        await runtime.auth.revoke(token)
    response = _redirect("/ui/login")
    page_auth.clear_cookie(response, page_auth.SESSION_COOKIE)
    return response


# -- one execution ----------------------------------------------------------------------------


async def _enforcement(runtime: Runtime, enforcement_id: int | None) -> dict[str, Any] | None:
    if enforcement_id is None:
        return None
    try:
        found = await runtime.automation.get_enforcement(enforcement_id)
    except EngineError:
        return None
    return {
        "rule_ref": found.rule_ref,
        "trigger_ref": found.trigger_ref,
        "event_id": found.event_id,
    }


async def execution_page(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    execution_id = _execution_id(request)
    if execution_id is None:
        return _not_found()
    viewer = await page_auth.session_principal(request, runtime)
    exp, sig = request.query.get("exp"), request.query.get("sig")
    grant: str | None = None  # the signed link in force, as "exp.sig"
    fresh = False  # opened now from the link (its cookie is set)
    if exp is not None or sig is not None:
        if verify_signed(runtime.settings, execution_id, exp, sig, secret_key=runtime.secret_key):
            grant, fresh = f"{int(str(exp))}.{sig}", True
        elif viewer is None:  # expired or tampered with: a login is the way in
            return _redirect(f"/ui/login?{urlencode({'next': execution_page_path(execution_id)})}")
    elif page_auth.view_grant(request, runtime, execution_id):
        grant = request.cookies[page_auth.view_cookie_name(execution_id)]
    if viewer is None and grant is None:
        return _to_login(request)
    try:
        if viewer is not None:
            record = await runtime.gate.view(requester(viewer), execution_id)
        else:
            record = await runtime.service.get(execution_id)
    except (NotFound, Forbidden):
        if viewer is None or grant is None:
            return _not_found()
        try:
            record = await runtime.service.get(execution_id)  # the link shows it
        except NotFound:
            return _not_found()
        viewer = None  # as any holder of the link: read only
    response = await _show(request, runtime, record, viewer, grant)
    link_expires = int(grant.partition(".")[0]) if grant is not None else None
    if fresh and grant is not None and link_expires is not None:
        page_auth.set_cookie(
            response,
            request,
            runtime,
            page_auth.view_cookie_name(execution_id),
            grant,
            link_expires - int(time.time()),
        )
        for name in page_auth.surplus_view_cookies(request, runtime, execution_id):
            page_auth.clear_cookie(response, name)
    return response


async def _show(
    request: web.Request,
    runtime: Runtime,
    record: Execution,
    viewer: Principal | None,
    grant: str | None,
    *,
    message: str | None = None,
    status: int = 200,
) -> web.Response:
    """The page of ``record`` for ``viewer`` (None: the holder of a signed link)."""
    execution_id = record.id
    policy = runtime.gate.policy
    role = viewer.role if viewer is not None else None
    mine = viewer is not None and (record.requester or {}).get("identity") == viewer.login
    can_cancel = (
        role is not None
        # An ended run with a pending retry: Cancel calls the retry off.
        and (not page_views.is_terminal(record.status) or record.retry_due_at is not None)
        and policy.allows(role, "cancel", record.action_ref)
    )
    may_run = role is not None and policy.allows(role, "run", record.action_ref)
    can_rerun = (
        may_run
        and role is not None
        and policy.allows(role, "view", record.action_ref)
        and (
            not page_views.has_secrets(record)
            or role == "admin"
            or (mine and (record.requester or {}).get("source") == "api")
        )
    )
    link_expires = int(grant.partition(".")[0]) if grant is not None else None
    return render(
        "execution.html",
        status,
        ex=record,
        viewer=viewer,
        linked=grant is not None and viewer is None,
        link_until=page_views.show_time(
            datetime.fromtimestamp(link_expires, UTC) if link_expires is not None else None
        ),
        login_href="/ui/login?" + urlencode({"next": execution_page_path(execution_id)}),
        params=page_views.parameters(record.config),
        facts=page_views.origin_facts(record, await _enforcement(runtime, record.enforcement)),
        out=page_views.output(record),
        duration_ms=page_views.duration_ms(record),
        terminal=page_views.is_terminal(record.status),
        can_cancel=can_cancel,
        can_rerun=can_rerun,
        rerun_note=_RERUN_NOTE if may_run and not can_rerun else None,
        message=message,
    )


async def rerun(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    execution_id = _execution_id(request)
    if execution_id is None:
        return _not_found()
    viewer = await page_auth.session_principal(request, runtime)
    if viewer is None:
        return _to_login(request)
    if not page_auth.same_origin(request, runtime):
        return render(
            "not_found.html", 403, heading="Refused", message="Re-run from this server's pages."
        )
    who = requester(viewer)
    try:
        record = await runtime.gate.view(who, execution_id)
    except (NotFound, Forbidden):
        return _not_found()
    try:
        outcome = await runtime.gate.rerun(who, execution_id)
    except EngineError as exc:  # refused: the page again, saying why
        return await _show(
            request, runtime, record, viewer, None, message=exc.message, status=exc.http_status
        )
    assert isinstance(outcome, Submitted)  # source api: no confirmation asked
    return _redirect(execution_page_path(outcome.record.id))


# -- the list ---------------------------------------------------------------------------------


def _page_number(raw: str | None, default: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or not 1 <= int(raw) <= high:
        raise InvalidRequest(f"page numbers and sizes are whole numbers from 1 to {high}")
    return int(raw)


async def executions_page(request: web.Request) -> web.StreamResponse:
    runtime = _runtime(request)
    viewer = await page_auth.session_principal(request, runtime)
    if viewer is None:
        return _to_login(request)
    q = request.query
    filters = {
        "status": q.get("status", ""),
        "action": q.get("action", "").strip(),
        "requester": q.get("requester", "").strip(),
        "pack": q.get("pack", "").strip(),
    }
    error = None
    items: list[Any] = []
    total = 0
    page, per_page = 1, DEFAULT_PER_PAGE
    try:
        page = _page_number(q.get("page"), 1, 10**6)
        per_page = _page_number(q.get("per_page"), DEFAULT_PER_PAGE, MAX_PER_PAGE)
        if filters["status"] and filters["status"] not in page_views.STATUSES:
            raise InvalidRequest(
                f"unknown status '{filters['status'][:40]}' (one of "
                f"{', '.join(page_views.STATUSES)})"
            )
        policy = runtime.gate.policy
        narrowed = (
            None
            if policy.sees_everything(viewer.role)
            else policy.like_patterns(viewer.role, "view")
        )
        items, total = await runtime.service.list(
            status=[filters["status"]] if filters["status"] else None,
            action_ref=filters["action"] or None,
            action_like=narrowed,
            pack=filters["pack"] or None,
            requester=filters["requester"] or None,
            page=page,
            per_page=per_page,
        )
    except InvalidRequest as exc:
        error = exc.message
    pages = max(1, -(-total // per_page))
    kept = {k: v for k, v in filters.items() if v}
    if per_page != DEFAULT_PER_PAGE:
        kept["per_page"] = str(per_page)

    def page_href(number: int) -> str:
        return "/ui/executions?" + urlencode({**kept, "page": number})

    rows = [
        {
            "ex": ex,
            "duration_ms": page_views.duration_ms(ex),
            "who": str((ex.requester or {}).get("identity") or ""),
            "source": str((ex.requester or {}).get("source") or ""),
        }
        for ex in items
    ]
    return render(
        "executions.html",
        400 if error else 200,
        viewer=viewer,
        rows=rows,
        filters=filters,
        statuses=page_views.STATUSES,
        per_page=per_page,
        per_page_choices=PER_PAGE_CHOICES,
        page=page,
        pages=pages,
        total=total,
        prev_href=page_href(page - 1) if page > 1 else None,
        next_href=page_href(page + 1) if page < pages else None,
        error=error,
    )


# -- static files and routes ------------------------------------------------------------------


async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        return _not_found("No such file.")
    return web.FileResponse(
        STATIC_DIR / name,
        headers={
            "Content-Type": STATIC_FILES[name],
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def home(request: web.Request) -> web.StreamResponse:
    return _redirect("/ui/executions")


def page_routes() -> list[web.RouteDef]:
    """The pages' routes (added before a web UI's catch-all)."""
    return [
        web.get("/ui", home),
        web.get("/ui/", home),
        web.get("/ui/login", login_form),
        web.post("/ui/login", login_submit),
        web.post("/ui/logout", logout),
        web.get("/ui/executions", executions_page),
        web.get("/ui/executions/{id}", execution_page),
        web.post("/ui/executions/{id}/rerun", rerun),
        web.get("/ui/static/{name}", static_file),
    ]
