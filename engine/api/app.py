"""The aiohttp application: routes from :data:`engine.api.routes.ROUTES`, the OpenAPI document
generated from the same specs and their pydantic models, and the error middleware."""

from __future__ import annotations

import weakref
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from engine.api import schemas
from engine.api.alias_routes import ALIAS_ROUTES
from engine.api.auth_routes import AUTH_ROUTES
from engine.api.automation_routes import AUTOMATION_ROUTES
from engine.api.catalog_routes import CATALOG_ROUTES
from engine.api.execution_pages import page_routes
from engine.api.http import (
    RUNTIME_KEY,
    RouteSpec,
    deadline_middleware,
    error_middleware,
    json_response,
    make_handler,
)
from engine.api.identity_routes import IDENTITY_ROUTES
from engine.api.inquiry_routes import INQUIRY_ROUTES
from engine.api.key_routes import KEY_ROUTES
from engine.api.log_routes import LOG_ROUTES
from engine.api.notify_routes import SOCKETS_KEY, close_sockets, notifications
from engine.api.routes import ROUTES, VERSION
from engine.api.schedule_routes import SCHEDULE_ROUTES
from engine.api.stream_routes import STREAM_ROUTES, add_change_stream
from engine.api.stream_slots import STREAM_SLOTS_KEY, StreamSlots
from engine.api.template_routes import TEMPLATE_ROUTES
from engine.api.ui_routes import UI_ROUTES
from engine.api.webui import web_ui_routes
from engine.api.workflow_routes import WORKFLOW_ROUTES
from engine.runtime import Runtime

_REF = "#/components/schemas/{model}"
ALL_ROUTES = [
    *STREAM_ROUTES,  # before ROUTES: /api/v1/executions/{id} would take "stream"
    *ROUTES,
    *AUTH_ROUTES,
    *CATALOG_ROUTES,
    *AUTOMATION_ROUTES,
    *KEY_ROUTES,
    *UI_ROUTES,
    *IDENTITY_ROUTES,
    *LOG_ROUTES,
    *TEMPLATE_ROUTES,
    *SCHEDULE_ROUTES,
    *INQUIRY_ROUTES,
    *WORKFLOW_ROUTES,
    *ALIAS_ROUTES,
]
_ERROR_TEXT = {
    400: "Invalid request",
    401: "Missing, invalid or expired token",
    403: "Not allowed for this role",
    404: "Not found",
    409: "Conflict",
    422: "The values cannot be used (a weak password, a template or condition that cannot work)",
    429: "Too many requests (see Retry-After)",
    413: "Body too large",
    503: "Not ready",
}


def _schema_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, mode="serialization")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    name = schema.get("title", model.__name__)
    components[name] = schema
    return {"$ref": _REF.format(model=name)}


def _request_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, mode="validation")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def build_openapi(routes: list[RouteSpec]) -> dict[str, Any]:
    """OpenAPI 3.1 document generated from the route specs and their pydantic models."""
    components: dict[str, Any] = {}
    error_ref = _schema_ref(schemas.Error, components)
    paths: dict[str, Any] = {}
    for spec in routes:
        op: dict[str, Any] = {
            "summary": spec.summary,
            "tags": list(spec.tags),
            "operationId": spec.handler.__name__,
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if name == "id" else "string"},
            }
            for name in _path_params(spec.path)
        ]
        params += [
            {
                "name": q.name,
                "in": q.location,
                "required": False,
                "description": q.description,
                "schema": {"type": q.type},
            }
            for q in spec.query
        ]
        if params:
            op["parameters"] = params
        if spec.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _request_ref(spec.body, components)}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if spec.response is not None:
            ok["content"] = {"application/json": {"schema": _schema_ref(spec.response, components)}}
        elif spec.path == "/metrics":
            ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
        responses: dict[str, Any] = {str(code): ok for code in sorted({spec.status, *spec.also})}
        codes = set(spec.errors) | ({400, 413} if spec.body is not None else set())
        if spec.query or "{id}" in spec.path:
            codes.add(400)  # a query or id parameter that is not what it must be
        if spec.access != "public":
            codes.add(401)
        for code in sorted(codes):
            responses[str(code)] = {
                "description": _ERROR_TEXT.get(code, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        op["responses"] = responses
        if spec.access != "public":
            op["security"] = [{"bearer": []}]
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    paths["/api/v1/openapi.json"] = {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "tags": ["meta"],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Attune chat-ops API", "version": VERSION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def build_app(
    runtime: Runtime, *, extra_routes: list[web.RouteDef] | None = None
) -> web.Application:
    """The whole HTTP surface of ``attune serve``; the bot adds its ``/slack/events`` route."""
    app = web.Application(
        middlewares=[error_middleware, deadline_middleware],
        client_max_size=runtime.settings.max_body_bytes,
    )
    app[RUNTIME_KEY] = runtime
    app[STREAM_SLOTS_KEY] = StreamSlots(runtime.settings.max_streams)
    for spec in ALL_ROUTES:
        app.router.add_route(spec.method, spec.path, make_handler(spec))
    document = build_openapi(ALL_ROUTES)

    async def openapi(_request: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/ws", notifications)  # Attune's notifier protocol (its web UI)
    app.add_routes(page_routes())  # the execution pages (/ui/...)
    app[SOCKETS_KEY] = weakref.WeakSet()
    app.on_shutdown.append(close_sockets)
    add_change_stream(app)
    if extra_routes:
        app.add_routes(extra_routes)
    ui = runtime.settings.web_ui_dir
    if ui is not None:  # last: its catch-all serves the UI's pages
        app.add_routes(web_ui_routes(ui))
    return app
