"""Who a browser is, for the execution pages and the API calls they make: cookies.

Two cookies, both ``HttpOnly``, ``SameSite=Strict``, ``Path=/``, ``Secure`` when the page was
reached over https (or ``ATTUNE_PUBLIC_URL`` is https):

- ``attune_session``: the access token of a login through ``/ui/login`` (the same JWT
  ``POST /auth/login`` returns, revoked at ``/ui/logout``). Without an ``Authorization``
  header it authenticates any API request as that user: reads (``GET``, so ``EventSource``
  works) as they are; writes only when the request's ``Origin`` (or, without one, its
  ``Referer``) is this server, so another site cannot make the browser post with it.
- ``attune_view_<id>``: set when a valid signed link (``?exp=&sig=``, engine/page_links.py) is
  opened; its value is the link's own ``exp.sig``, verified again on every request until
  ``exp``. It lets its bearer read that one execution and nothing else: the page, and ``GET``
  of ``/api/v1/executions/<id>``, its ``/logs/...`` and ``/api/v1/executions/stream?
  execution_id=<id>``, as a principal named ``page-link`` (:func:`link_principal`), a
  session or not (whose user may not view it). It never allows a write. A browser keeps at
  most :data:`MAX_VIEW_COOKIES` of them (see :func:`surplus_view_cookies`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web

from engine.auth import Principal
from engine.errors import Forbidden, Unauthorized
from engine.page_links import verify_signed
from engine.runtime import Runtime

SESSION_COOKIE = "attune_session"
VIEW_COOKIE_PREFIX = "attune_view_"
#: Login of the principal a signed link stands for (audit entries name it).
LINK_LOGIN = "page-link"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: API paths of one execution that a signed link's cookie may read.
_EXECUTION_PATH = re.compile(
    r"^/api/v1/executions/(\d{1,18})(?:/logs/(?:stdout|stderr)(?:/stream)?)?$"
)
_STREAM_PATH = "/api/v1/executions/stream"
#: Most signed-link cookies a browser is left holding (the newest; see
#: :func:`surplus_view_cookies`).
MAX_VIEW_COOKIES = 20


def secure_cookies(request: web.Request, runtime: Runtime) -> bool:
    public = runtime.settings.public_url or ""
    return request.secure or public.startswith("https://")


def set_cookie(
    response: web.StreamResponse,
    request: web.Request,
    runtime: Runtime,
    name: str,
    value: str,
    max_age_s: int,
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max(0, max_age_s),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request, runtime),
    )


def clear_cookie(response: web.StreamResponse, name: str) -> None:
    response.del_cookie(name, path="/")


def view_cookie_name(execution_id: int) -> str:
    return f"{VIEW_COOKIE_PREFIX}{execution_id}"


def link_principal(execution_id: int) -> Principal:
    """Who a signed link's bearer is on the API. The link is the server's own word that its
    bearer may read that execution, whatever the viewer role's patterns say, so the principal
    holds the ``admin`` role; it is only ever returned for reads of that one execution (see
    :func:`_scoped_execution`), where the role can open nothing else."""
    return Principal(login=LINK_LOGIN, role="admin", token_name=f"page-link:{execution_id}")


#: The port a browser leaves out of an origin, by scheme.
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _without_default_port(netloc: str, scheme: str) -> str:
    default = _DEFAULT_PORTS.get(scheme)
    return netloc[: -len(default)] if default and netloc.endswith(default) else netloc


def _origin_of(url: str) -> tuple[str, str] | None:
    """``(scheme, host[:port])`` of ``url``, lower case, without the scheme's default port
    (``https://a.example:443`` is the origin ``https://a.example`` a browser sends)."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    scheme = parts.scheme.lower()
    return scheme, _without_default_port(parts.netloc.lower(), scheme)


def same_origin(request: web.Request, runtime: Runtime) -> bool:
    """Whether an unsafe request comes from a page of this server: its ``Origin`` (else its
    ``Referer``) names the host it was sent to, or ``ATTUNE_PUBLIC_URL``'s origin. Neither
    header (or ``Origin: null``): not from us."""
    sent = request.headers.get("Origin") or request.headers.get("Referer") or ""
    origin = _origin_of(sent)
    if origin is None:
        return False
    if origin[1] == _without_default_port(request.host.lower(), origin[0]):
        return True
    public = runtime.settings.public_url
    return public is not None and origin == _origin_of(public)


def require_same_origin(request: web.Request, runtime: Runtime) -> None:
    if not same_origin(request, runtime):
        raise Forbidden(
            "cross-site request refused: a request made with the login cookie must come from "
            "this server's pages (Origin or Referer); other clients send a bearer token"
        )


def view_grant(request: web.Request, runtime: Runtime, execution_id: int) -> bool:
    """Whether the request carries a valid signed-link cookie for ``execution_id``."""
    raw = request.cookies.get(view_cookie_name(execution_id))
    if not raw:
        return False
    exp, _, sig = raw.partition(".")
    return verify_signed(runtime.settings, execution_id, exp, sig, secret_key=runtime.secret_key)


def surplus_view_cookies(request: web.Request, runtime: Runtime, opened: int) -> list[str]:
    """The view cookies to clear as the link of ``opened`` is opened: those no longer valid,
    and the soonest to expire beyond the newest :data:`MAX_VIEW_COOKIES` - 1 others. Every
    one rides on every request: left to pile up (a day of links clicked in Slack) they
    would make the ``Cookie`` header too long for the server, and then every page fails."""
    valid: list[tuple[int, str]] = []
    gone: list[str] = []
    for name, value in request.cookies.items():
        if not name.startswith(VIEW_COOKIE_PREFIX) or name == view_cookie_name(opened):
            continue
        raw_id = name[len(VIEW_COOKIE_PREFIX) :]
        exp, _, sig = value.partition(".")
        if (
            raw_id.isascii()
            and raw_id.isdigit()
            and len(raw_id) <= 19
            and verify_signed(
                runtime.settings, int(raw_id), exp, sig, secret_key=runtime.secret_key
            )
        ):
            valid.append((int(exp), name))
        else:
            gone.append(name)
    valid.sort(reverse=True)
    return gone + [name for _, name in valid[MAX_VIEW_COOKIES - 1 :]]


def _scoped_execution(request: web.Request) -> int | None:
    """The one execution an API read is about, when it is one a link may read."""
    if request.method not in _SAFE_METHODS:
        return None
    match = _EXECUTION_PATH.match(request.path)
    if match:
        return int(match.group(1))
    if request.path == _STREAM_PATH:
        wanted = request.query.get("execution_id", "")
        if wanted.isascii() and wanted.isdigit() and len(wanted) <= 18:
            return int(wanted)
    return None


async def session_principal(request: web.Request, runtime: Runtime) -> Principal | None:
    """The user of a valid session cookie, or None (no cookie, or expired/revoked)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return await runtime.auth.authenticate(token)
    except Unauthorized:
        return None


async def cookie_principal(request: web.Request, runtime: Runtime) -> Principal | None:
    """Who an API request without an ``Authorization`` header is, by its cookies (see the
    module's docstring); None when it has none that count."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and request.method not in _SAFE_METHODS:
        require_same_origin(request, runtime)
    execution_id = _scoped_execution(request)
    if execution_id is not None and view_grant(request, runtime, execution_id):
        # The link reads its execution whoever is logged in: the page shows it to a user whose
        # role may not view it, and its script must read it too.
        return link_principal(execution_id)
    if token:
        try:
            return await runtime.auth.authenticate(token)
        except Unauthorized:
            raise Unauthorized("session expired; log in again at /ui/login") from None
    return None
