"""Serving a built single-page web UI (Attune's ``web/`` after ``npm run build``) beside the
API, from one origin: its files, the ``/config/runtime-config.js`` it loads first, and its
``index.html`` for every other page path (the UI routes in the browser).

We never ship the UI: ``ATTUNE_WEB_UI_DIR`` points at a folder someone built (see the README).
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

#: Paths that belong to the server, never to the UI: a miss there is the API's JSON 404.
SERVER_PREFIXES = ("/api/", "/auth/", "/health", "/metrics", "/slack/", "/ws")


def runtime_config_js(ws_url: str | None) -> str:
    """The script the UI reads its API and WebSocket addresses from ("" = this origin)."""
    config: dict[str, str] = {"apiUrl": "", "environment": "attune-chatops"}
    if ws_url:
        config["wsUrl"] = ws_url
    return f"window.__ATTUNE_RUNTIME_CONFIG__ = {json.dumps(config)};\n"


def web_ui_routes(folder: Path, ws_url: str | None = None) -> list[web.RouteDef]:
    """Routes serving the UI in ``folder`` (which must hold ``index.html``); add them last."""
    root = folder.resolve()
    index = root / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{root} holds no index.html: build the UI first")
    script = runtime_config_js(ws_url)

    async def runtime_config(_request: web.Request) -> web.Response:
        return web.Response(
            text=script,
            content_type="application/javascript",
            headers={"Cache-Control": "no-store"},
        )

    async def page(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(SERVER_PREFIXES):
            raise web.HTTPNotFound()
        target = (root / path.lstrip("/")).resolve()
        if path != "/" and root in target.parents and target.is_file():
            cache = "public, max-age=31536000, immutable" if "/assets/" in path else "no-cache"
            return web.FileResponse(target, headers={"Cache-Control": cache})
        return web.FileResponse(index, headers={"Cache-Control": "no-cache"})

    return [
        web.get("/config/runtime-config.js", runtime_config),
        web.get("/{tail:.*}", page),
    ]
