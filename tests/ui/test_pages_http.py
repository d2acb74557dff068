"""The execution pages over HTTP (no browser): login and its cookie, the cookie on the API with
its cross-site defence, signed links and what they open, 404s, re-run, the list's filters.

One runtime per backend (SQLite, PostgreSQL) in-process over real HTTP with a worker; the
viewer role may view only ``core.*`` here, to show what a user who may not view a run gets.
Cookies are carried by hand (aiohttp's jar keeps none for an IP address).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.api.page_auth import MAX_VIEW_COOKIES
from engine.page_links import execution_page_url, signed_query
from engine.runtime import Runtime, build_runtime
from tests.e2e.conftest import _fresh_postgres_database
from tests.ui.pack import PACK, write_pack
from tests.waiting import eventually

TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
RUN_TIMEOUT_S = 20.0
SECRET = "s3cr3t-value-91"


@dataclass
class Env:
    rt: Runtime
    url: str
    http: aiohttp.ClientSession
    admin_token: str

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        async with self.http.request(method, self.url + path, json=body, headers=headers) as r:
            return r.status, await r.json()

    async def start(self, action_ref: str, **params: Any) -> int:
        status, body = await self.api(
            "POST", "/api/v1/executions/execute", {"action_ref": action_ref, "parameters": params}
        )
        assert status == 201, body
        return int(body["data"]["id"])

    async def until(self, execution_id: int, statuses: set[str]) -> dict[str, Any]:
        async def probe() -> dict[str, Any]:
            return dict((await self.api("GET", f"/api/v1/executions/{execution_id}"))[1]["data"])

        return await eventually(
            probe, f"execution {execution_id} in {statuses}", RUN_TIMEOUT_S,
            interval_s=0.05, done=lambda r: r["status"] in statuses,
        )  # fmt: skip

    async def get(
        self, path: str, cookies: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        return await self.request("GET", path, cookies, **headers)

    async def request(
        self,
        method: str,
        path: str,
        cookies: dict[str, str] | None = None,
        data: Any = None,
        **headers: str,
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        async with self.http.request(
            method, self.url + path, headers=headers, data=data, allow_redirects=False
        ) as resp:
            return resp.status, await resp.text(), resp

    async def login(self, login: str, password: str) -> dict[str, str]:
        status, _, resp = await self.request(
            "POST",
            "/ui/login",
            data={"username": login, "password": password, "next": "/ui/executions"},
            Origin=self.url,
        )
        assert status == 303, status
        return {"attune_session": _set_cookies(resp)["attune_session"].value}


def _set_cookies(resp: aiohttp.ClientResponse) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp(f"pages-{request.param}")
    write_pack(tmp / "packs")
    url_cm = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'pages.db'}"
    else:
        url_cm = _fresh_postgres_database()
        database_url = await url_cm.__aenter__()
    rt = await build_runtime(
        Settings(
            database_url=database_url,
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            kill_grace_s=1,
            worker_concurrency=4,
            database_pool_size=3,
            permissions={"viewer": {"view": ["core.*"]}},
            public_url="https://attune.example.com",
        )
    )
    await rt.sync_packs()
    server = TestServer(build_app(rt))
    await server.start_server()
    await rt.start_worker(worker_id="pages-test:1")
    await rt.auth.create_user("vic", "password-vic-123", "viewer")
    await rt.auth.create_user("olga", "password-olga-123", "operator")
    token = await rt.auth.issue_token("admin", name="t", ttl_s=3600)
    http = aiohttp.ClientSession()
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), http, token)
    finally:
        await http.close()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


def _signed_path(env: Env, execution_id: int, now: float | None = None) -> str:
    url = execution_page_url(env.rt.settings, execution_id, now=now, secret_key=env.rt.secret_key)
    assert url is not None
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


# -- login ------------------------------------------------------------------------------------


async def test_pages_need_a_login(env: Env) -> None:
    for path in ("/ui/executions", "/ui/executions/1"):
        status, _, resp = await env.get(path)
        assert status == 303
        location = resp.headers["Location"]
        assert location.startswith("/ui/login?")
        assert parse_qs(urlsplit(location).query)["next"] == [path]
    status, page, _ = await env.get("/ui/login?next=/ui/executions/1")
    assert status == 200
    assert '<label for="username">' in page
    assert '<label for="password">' in page
    assert 'value="/ui/executions/1"' in page
    # Another site is never where a login leads.
    _, page, _ = await env.get("/ui/login?next=//evil.example/x")
    assert 'value="/ui/executions"' in page


async def test_a_next_with_a_line_break_is_not_followed(env: Env) -> None:
    """A ``next`` that no ``Location`` header can hold (CR/LF) leads to the list, both for a
    user already logged in and after a login (aiohttp would refuse the header: no answer)."""
    crlf = "/ui/x%0D%0ASet-Cookie:%20a=b"
    cookies = await env.login("admin", "admin-password-1")
    status, _, resp = await env.get(f"/ui/login?next={crlf}", cookies)
    assert status == 303
    assert resp.headers["Location"] == "/ui/executions"
    assert "a" not in _set_cookies(resp)
    status, _, resp = await env.request(
        "POST",
        "/ui/login",
        data={"username": "admin", "password": "admin-password-1", "next": "/ui/x\r\nA: b"},
        Origin=env.url,
    )
    assert status == 303
    assert resp.headers["Location"] == "/ui/executions"
    assert _set_cookies(resp)["attune_session"].value


async def test_login_sets_a_strict_http_only_cookie(env: Env) -> None:
    status, _, resp = await env.request(
        "POST",
        "/ui/login",
        data={"username": "admin", "password": "admin-password-1", "next": "/ui/executions/5"},
        Origin=env.url,
    )
    assert status == 303
    assert resp.headers["Location"] == "/ui/executions/5"
    cookie = _set_cookies(resp)["attune_session"]
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["secure"]  # ATTUNE_PUBLIC_URL is https here
    # The cookie is an access token the API accepts (reads without Origin, as EventSource).
    status, body, _ = await env.get("/auth/me", {"attune_session": cookie.value})
    assert status == 200
    assert '"login":"admin"' in body


async def test_a_bad_login_says_so(env: Env) -> None:
    status, page, resp = await env.request(
        "POST", "/ui/login", data={"username": "admin", "password": "wrong"}, Origin=env.url
    )
    assert status == 401
    assert "invalid login or password" in page
    assert 'role="alert"' in page
    assert "attune_session" not in _set_cookies(resp)
    status, page, _ = await env.request(
        "POST", "/ui/login", data={"username": "admin", "password": "admin-password-1"}
    )
    assert status == 403, "a login form posted from elsewhere (no Origin) is refused"


async def test_logout_ends_the_session(env: Env) -> None:
    cookies = await env.login("olga", "password-olga-123")
    assert (await env.get("/auth/me", cookies))[0] == 200
    status, _, resp = await env.request("POST", "/ui/logout", cookies, Origin=env.url)
    assert status == 303
    assert resp.headers["Location"] == "/ui/login"
    assert _set_cookies(resp)["attune_session"].value == ""
    status, body, _ = await env.get("/auth/me", cookies)
    assert status == 401, body


# -- the cookie on the API --------------------------------------------------------------------


async def test_cookie_writes_need_this_origin(env: Env) -> None:
    cookies = await env.login("admin", "admin-password-1")
    execution_id = await env.start(f"{PACK}.sleeper")
    await env.until(execution_id, {"running"})
    path = f"/api/v1/executions/{execution_id}/cancel"
    for headers in ({}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/"}):
        status, body, _ = await env.request("POST", path, cookies, **headers)
        assert status == 403, (headers, body)
        assert "cross-site" in body
    assert (await env.until(execution_id, {"running"}))["status"] == "running"
    status, body, _ = await env.request("POST", path, cookies, Origin=env.url)
    assert status == 200, body
    await env.until(execution_id, {"cancelled"})


# -- one execution ----------------------------------------------------------------------------


async def test_page_shows_the_run_with_secrets_masked(env: Env) -> None:
    cookies = await env.login("admin", "admin-password-1")
    execution_id = await env.start(f"{PACK}.secretive", name="web1", token=SECRET)
    await env.until(execution_id, {"completed"})
    status, page, resp = await env.get(f"/ui/executions/{execution_id}", cookies)
    assert status == 200
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert f"{PACK}.secretive" in page
    assert "web1" in page
    assert "used the token" in page
    assert SECRET not in page
    assert "hidden (secret)" in page
    assert 'role="status"' in page
    assert 'aria-live="polite"' in page
    assert re.search(r'id="status-text">completed<', page)
    assert "Requested by" in page
    assert "admin" in page
    assert 'id="cancel"' not in page  # over
    assert 'id="rerun"' in page  # the admin may re-run it, secrets and all


async def test_not_viewable_is_the_same_404_as_unknown(env: Env) -> None:
    cookies = await env.login("vic", "password-vic-123")  # views core.* only
    hidden = await env.start(f"{PACK}.secretive", name="x", token="t")
    seen = await env.start("core.echo", message="hello")
    status, page_hidden, _ = await env.get(f"/ui/executions/{hidden}", cookies)
    status_unknown, page_unknown, _ = await env.get("/ui/executions/987654321", cookies)
    assert (status, status_unknown) == (404, 404)
    assert page_hidden == page_unknown
    assert PACK not in page_hidden
    assert (await env.get("/ui/executions/abc", cookies))[0] == 404
    status, page, _ = await env.get(f"/ui/executions/{seen}", cookies)
    assert status == 200
    assert "core.echo" in page
    assert 'id="cancel"' not in page
    assert 'id="rerun"' not in page


async def test_rerun_reuses_the_sealed_secrets(env: Env) -> None:
    admin = await env.login("admin", "admin-password-1")
    first = await env.start(f"{PACK}.secretive", name="db", token=SECRET)
    await env.until(first, {"completed"})
    status, _, resp = await env.request(
        "POST", f"/ui/executions/{first}/rerun", admin, Origin=env.url
    )
    assert status == 303
    second = int(resp.headers["Location"].rsplit("/", 1)[1])
    assert second != first
    _, params = await env.rt.service.parameters_of(second)
    assert params == {"name": "db", "token": SECRET}
    # An operator may run the action but not re-use someone else's secret: no button, refused.
    olga = await env.login("olga", "password-olga-123")
    _, page, _ = await env.get(f"/ui/executions/{first}", olga)
    assert 'id="rerun"' not in page
    assert "secret parameters" in page
    status, page, _ = await env.request(
        "POST", f"/ui/executions/{first}/rerun", olga, Origin=env.url
    )
    assert status == 403
    assert "only they or an admin can re-run it" in page
    assert SECRET not in page
    status, _, _ = await env.request("POST", f"/ui/executions/{first}/rerun", admin)
    assert status == 403  # no Origin: refused


# -- signed links -----------------------------------------------------------------------------


async def test_signed_link_opens_one_execution_read_only(env: Env) -> None:
    execution_id = await env.start(f"{PACK}.secretive", name="n", token="t")
    other = await env.start("core.echo", message="other")
    await env.until(execution_id, {"completed"})
    status, page, resp = await env.get(_signed_path(env, execution_id))
    assert status == 200
    assert f"{PACK}.secretive" in page
    assert "shared link" in page
    assert 'id="rerun"' not in page
    assert 'id="cancel"' not in page
    grant = _set_cookies(resp)[f"attune_view_{execution_id}"]
    assert grant["httponly"]
    assert grant["samesite"] == "Strict"
    assert 0 < int(grant["max-age"]) <= env.rt.settings.page_link_ttl_s
    view = {f"attune_view_{execution_id}": grant.value}
    # The cookie reads that execution over the API (the page's script), nothing else.
    assert (await env.get(f"/ui/executions/{execution_id}", view))[0] == 200
    assert (await env.get(f"/api/v1/executions/{execution_id}", view))[0] == 200
    assert (await env.get(f"/api/v1/executions/{other}", view))[0] == 401
    assert (await env.get("/api/v1/executions", view))[0] == 401
    assert (await env.get(f"/ui/executions/{other}", view))[0] == 303
    status, _, _ = await env.request(
        "POST", f"/api/v1/executions/{execution_id}/cancel", view, Origin=env.url
    )
    assert status == 401


async def test_a_link_reads_its_execution_for_a_user_who_may_not_view_it(env: Env) -> None:
    """Logged in as a viewer whose role may not view the run, a signed link still shows its
    page, and the page's script reads it over the API (the link's cookie counts there too);
    another execution stays the session's own business."""
    vic = await env.login("vic", "password-vic-123")  # views core.* only
    execution_id = await env.start(f"{PACK}.secretive", name="n", token="t")
    other = await env.start(f"{PACK}.secretive", name="o", token="t")
    await env.until(execution_id, {"completed"})
    status, page, resp = await env.get(_signed_path(env, execution_id), vic)
    assert status == 200
    assert "shared link" in page
    both = {
        **vic,
        f"attune_view_{execution_id}": _set_cookies(resp)[f"attune_view_{execution_id}"].value,
    }
    base = f"/api/v1/executions/{execution_id}"
    for path in (
        base,
        f"{base}/logs/stdout",
        f"/api/v1/executions/stream?execution_id={execution_id}",
    ):
        if path.startswith("/api/v1/executions/stream"):
            async with env.http.get(env.url + path, headers={"Cookie": _cookie_header(both)}) as r:
                assert r.status == 200, path
            continue
        status, body, _ = await env.get(path, both)
        assert status == 200, (path, body)
    assert "used the token" in (await env.get(f"{base}/logs/stdout", both))[1]
    assert (await env.get(f"/api/v1/executions/{other}", both))[0] == 403
    assert (await env.get(f"/api/v1/executions/{other}/logs/stdout", both))[0] == 404
    status, _, _ = await env.request("POST", f"{base}/cancel", both, Origin=env.url)
    assert status == 403  # a write is the session's: vic may not


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def _view_value(env: Env, execution_id: int, now: float) -> str:
    query = parse_qs(
        signed_query(env.rt.settings, execution_id, now=now, secret_key=env.rt.secret_key)
    )
    return f"{query['exp'][0]}.{query['sig'][0]}"


async def test_opening_a_link_clears_surplus_view_cookies(env: Env) -> None:
    """Each view cookie rides on every request: opening a link clears the invalid ones and the
    soonest to expire beyond the newest MAX_VIEW_COOKIES, so the Cookie header stays short."""
    execution_id = await env.start("core.echo", message="many links")
    now = time.time()
    held = {  # 25 valid links to other executions, the first ones opened earliest
        f"attune_view_{900_000 + n}": _view_value(env, 900_000 + n, now - 3600 + n)
        for n in range(25)
    }
    held["attune_view_800001"] = _view_value(env, 800_001, now - 2 * 86400)  # expired
    held["attune_view_800002"] = _view_value(env, 800_003, now)  # another's signature
    held["attune_view_x"] = "garbage"
    status, _, resp = await env.get(_signed_path(env, execution_id), held)
    assert status == 200
    jar = _set_cookies(resp)
    cleared = {
        name
        for name, morsel in jar.items()
        if morsel.value == "" and name != f"attune_view_{execution_id}"
    }
    oldest = {f"attune_view_{900_000 + n}" for n in range(25 - (MAX_VIEW_COOKIES - 1))}
    assert cleared == {"attune_view_800001", "attune_view_800002", "attune_view_x"} | oldest
    assert jar[f"attune_view_{execution_id}"].value  # the one just opened
    kept = [name for name in held if name not in cleared]
    assert len(kept) + 1 == MAX_VIEW_COOKIES
    # A page opened by its cookie (not a fresh link) clears nothing.
    view = {f"attune_view_{execution_id}": jar[f"attune_view_{execution_id}"].value}
    _, _, resp = await env.get(f"/ui/executions/{execution_id}", {**held, **view})
    assert not _set_cookies(resp)


async def test_expired_or_tampered_link_leads_to_login(env: Env) -> None:
    execution_id = await env.start("core.echo", message="x")
    expired = _signed_path(env, execution_id, now=time.time() - 2 * 86400)
    good = _signed_path(env, execution_id)
    tampered = re.sub(r"sig=.", lambda m: "sig=" + ("A" if m.group(0)[-1] != "A" else "B"), good)
    other_id = good.replace(f"/{execution_id}?", f"/{execution_id + 1}?")
    for path in (expired, tampered, other_id):
        status, _, resp = await env.get(path)
        assert status == 303, path
        assert resp.headers["Location"].startswith("/ui/login?next=%2Fui%2Fexecutions%2F")
        assert not any(k.startswith("attune_view_") for k in _set_cookies(resp))


# -- the list ---------------------------------------------------------------------------------


async def test_list_filters(env: Env) -> None:
    cookies = await env.login("admin", "admin-password-1")
    marker = f"m{time.time_ns()}"
    done = await env.start("core.echo", message=marker)
    await env.until(done, {"completed"})
    sleeping = await env.start(f"{PACK}.sleeper")
    await env.until(sleeping, {"running"})
    try:
        _, page, _ = await env.get("/ui/executions?status=running", cookies)
        assert f">#{sleeping}<" in page
        assert f">#{done}<" not in page
        _, page, _ = await env.get("/ui/executions?action=core.echo", cookies)
        assert f">#{done}<" in page
        assert f">#{sleeping}<" not in page
        _, page, _ = await env.get(f"/ui/executions?pack={PACK}", cookies)
        assert f">#{sleeping}<" in page
        assert f">#{done}<" not in page
        _, page, _ = await env.get("/ui/executions?requester=admin&per_page=10", cookies)
        assert f">#{sleeping}<" in page
        _, page, _ = await env.get("/ui/executions?requester=nobody", cookies)
        assert "No execution matches." in page
        status, page, _ = await env.get("/ui/executions?status=bogus", cookies)
        assert status == 400
        assert "unknown status &#39;bogus&#39;" in page
        status, page, _ = await env.get("/ui/executions?page=0", cookies)
        assert status == 400
        assert "whole numbers" in page
        _, page, _ = await env.get("/ui/executions?per_page=1", cookies)
        assert 'rel="next"' in page
        assert 'rel="prev"' not in page
        assert f">#{sleeping}<" in page  # the newest first
        _, page, _ = await env.get("/ui/executions?per_page=1&page=2", cookies)
        assert 'rel="prev"' in page
        assert f">#{done}<" in page
        # A viewer sees only what they may view (core.* here).
        vic = await env.login("vic", "password-vic-123")
        _, page, _ = await env.get("/ui/executions", vic)
        assert f">#{done}<" in page
        assert f">#{sleeping}<" not in page
    finally:
        await env.api("POST", f"/api/v1/executions/{sleeping}/cancel")
        await env.until(sleeping, TERMINAL)


async def test_bearer_token_wins_over_the_cookie(env: Env) -> None:
    stale = {"attune_session": "eyJub3Q.a.token"}
    status, body, _ = await env.get("/auth/me", stale)
    assert status == 401
    assert "log in again at /ui/login" in body
    status, body, _ = await env.get("/auth/me", stale, Authorization=f"Bearer {env.admin_token}")
    assert status == 200, body
    # A stale cookie sends the page to the login form, not to an error.
    status, _, resp = await env.get("/ui/executions", stale)
    assert status == 303
    assert resp.headers["Location"].startswith("/ui/login?")
