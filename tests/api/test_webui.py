"""Serving a built web UI beside the API (``ATTUNE_WEB_UI_DIR``): its files, the runtime
config script it loads first, its index for the pages it routes itself, and JSON 404s kept for
the server's own paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from engine.api.http import error_middleware
from engine.api.webui import web_ui_routes

INDEX = "<!doctype html><title>ui</title><script src='/config/runtime-config.js'></script>"


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "app-1.js").write_text("console.log(1)")
    (tmp_path.parent / "secret.txt").write_text("not for you")
    app = web.Application(middlewares=[error_middleware])

    async def things(_request: web.Request) -> web.Response:
        return web.json_response({"items": []})

    app.add_routes([web.get("/api/v1/things", things)])
    app.add_routes(web_ui_routes(tmp_path, ws_url="ws://example/ws"))
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_pages_files_and_runtime_config(ui: TestClient[web.Request, web.Application]) -> None:
    for page in ("/", "/executions/42", "/login"):
        resp = await ui.get(page)
        assert resp.status == 200, page
        assert await resp.text() == INDEX
    resp = await ui.get("/assets/app-1.js")
    assert (resp.status, await resp.text()) == (200, "console.log(1)")
    assert "immutable" in resp.headers["Cache-Control"]
    resp = await ui.get("/config/runtime-config.js")
    text = await resp.text()
    assert text.startswith("window.__ATTUNE_RUNTIME_CONFIG__ = ")
    config = json.loads(text.split(" = ", 1)[1].rstrip(";\n"))
    assert config == {"apiUrl": "", "environment": "attune-chatops", "wsUrl": "ws://example/ws"}


async def test_server_paths_keep_their_json_and_nothing_outside_is_served(
    ui: TestClient[web.Request, web.Application],
) -> None:
    resp = await ui.get("/api/v1/things")
    assert await resp.json() == {"items": []}
    for path in ("/api/v1/nothing", "/auth/nothing", "/health/nothing"):
        resp = await ui.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["code"] == "NOT_FOUND"
    resp = await ui.get("/../secret.txt")
    assert "not for you" not in await resp.text()
    resp = await ui.get("/%2e%2e/secret.txt")
    assert "not for you" not in await resp.text()


def test_a_folder_without_an_index_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no index\.html"):
        web_ui_routes(tmp_path)
