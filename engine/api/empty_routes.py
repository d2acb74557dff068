"""Attune's sensors, work queues and artifacts: we have none yet, and say so in
Attune's shapes, so the pages of its web UI that list them load: empty lists in Attune's
envelope, 404 for one of them, and 404 when the pack or trigger asked about does not exist (as
Attune answers, ``crates/api/src/routes/{triggers,workflows,work_queues,artifacts}.rs``)."""

from __future__ import annotations

from typing import Any

from engine.api import schemas as s
from engine.api import ui_schemas as u
from engine.api.http import PAGING, Call, RouteSpec, page_of
from engine.api.routes import requester
from engine.errors import NotFound


def _none(call: Call) -> dict[str, Any]:
    return page_of([], *call.paging())


async def list_sensors(call: Call) -> Any:
    return _none(call)


async def list_enabled_sensors(call: Call) -> Any:
    return _none(call)


async def get_sensor(call: Call) -> Any:
    raise NotFound(f"sensor '{call.path_param('ref')}' not found (this server has no sensors)")


async def list_pack_sensors(call: Call) -> Any:
    await call.runtime.catalog.pack(call.path_param("ref"))
    return _none(call)


async def list_trigger_sensors(call: Call) -> Any:
    await call.runtime.automation.get_trigger(call.path_param("ref"))
    return _none(call)


async def list_queues(call: Call) -> Any:
    return _none(call)


async def get_queue(call: Call) -> Any:
    raise NotFound(f"queue '{call.path_param('ref')}' not found (this server has none)")


async def list_pack_queues(call: Call) -> Any:
    await call.runtime.catalog.pack(call.path_param("ref"))
    return _none(call)


async def list_artifacts(call: Call) -> Any:
    return _none(call)


async def get_artifact(call: Call) -> Any:
    raise NotFound(f"artifact {call.int_path_param('id')} not found (this server has none)")


async def list_execution_artifacts(call: Call) -> Any:
    await call.runtime.gate.view(requester(call), call.int_path_param("id"))
    return {"data": []}  # Attune answers this one as a plain list in "data"


def _list(path: str, handler: Any, summary: str, item: Any, tag: str) -> RouteSpec:
    missing = (404,) if "{" in path else ()
    return RouteSpec(
        "GET",
        path,
        handler,
        summary,
        response=s.Page[item],
        query=PAGING,
        errors=(400, *missing),
        tags=(tag,),
    )


def _one(path: str, handler: Any, summary: str, item: Any, tag: str) -> RouteSpec:
    errors = (400, 404) if "{id}" in path else (404,)
    return RouteSpec(
        "GET", path, handler, summary, response=s.Single[item], errors=errors, tags=(tag,)
    )


EMPTY_ROUTES: list[RouteSpec] = [
    _list("/api/v1/sensors", list_sensors, "Sensors (none here)", u.SensorSummary, "sensors"),
    _list(
        "/api/v1/sensors/enabled",
        list_enabled_sensors,
        "Enabled sensors (none here)",
        u.SensorSummary,
        "sensors",
    ),
    _one("/api/v1/sensors/{ref}", get_sensor, "A sensor (none here)", u.SensorSummary, "sensors"),
    _list(
        "/api/v1/packs/{ref}/sensors",
        list_pack_sensors,
        "A pack's sensors (none here)",
        u.SensorSummary,
        "sensors",
    ),
    _list(
        "/api/v1/triggers/{ref}/sensors",
        list_trigger_sensors,
        "A trigger's sensors (none here: webhooks and timers make our events)",
        u.SensorSummary,
        "sensors",
    ),
    _list("/api/v1/queues", list_queues, "Work queues (none here)", u.QueueSummary, "queues"),
    _one("/api/v1/queues/{ref}", get_queue, "A work queue (none here)", u.QueueSummary, "queues"),
    _list(
        "/api/v1/packs/{ref}/queues",
        list_pack_queues,
        "A pack's work queues (none here)",
        u.QueueSummary,
        "queues",
    ),
    _list(
        "/api/v1/artifacts", list_artifacts, "Artifacts (none here)", u.ArtifactSummary, "artifacts"
    ),
    _one(
        "/api/v1/artifacts/{id}",
        get_artifact,
        "An artifact (none here)",
        u.ArtifactSummary,
        "artifacts",
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}/artifacts",
        list_execution_artifacts,
        "An execution's artifacts (none here)",
        response=s.Single[list[u.ArtifactSummary]],
        errors=(400, 403, 404),
        tags=("artifacts",),
    ),
]
