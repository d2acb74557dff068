"""Response types of the read endpoints Attune's web UI calls (engine/api/ui_routes.py and
engine/api/empty_routes.py), with Attune's field names (its ``crates/api/src/dto``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class TimeSeriesPoint(BaseModel):
    bucket: datetime
    label: str | None
    value: int


class FailureRate(BaseModel):
    since: datetime
    until: datetime
    total_terminal: int
    failed_count: int
    timeout_count: int
    completed_count: int
    failure_rate_pct: float


class TimeSeries(BaseModel):
    since: datetime
    until: datetime
    data: list[TimeSeriesPoint]


class DashboardAnalytics(BaseModel):
    since: datetime
    until: datetime
    execution_throughput: list[TimeSeriesPoint]
    execution_status: list[TimeSeriesPoint]
    event_volume: list[TimeSeriesPoint]
    enforcement_volume: list[TimeSeriesPoint]
    worker_status: list[TimeSeriesPoint]
    failure_rate: FailureRate


class HistoryRecord(BaseModel):
    time: datetime
    operation: Literal["INSERT", "UPDATE", "DELETE"]
    entity_id: int
    entity_ref: str | None
    changed_fields: list[str]
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None


class WorkerRuntimeSupport(BaseModel):
    name: str
    versions: list[str]


class WorkerLoad(BaseModel):
    requested: int
    scheduling: int
    scheduled: int
    running: int
    canceling: int
    total_active: int
    max_concurrent_executions: int | None
    utilization_percent: int | None
    queue_depth: int | None
    sensor_processes_running: int | None
    sensor_processes_monitored: int | None
    active_rules: int | None
    max_concurrent_sensors: int | None


class WorkerSummary(BaseModel):
    id: int
    name: str
    worker_type: Literal["local", "remote", "container"]
    worker_role: Literal["action", "sensor"]
    host: str | None
    port: int | None
    status: Literal["active", "inactive", "busy", "error"] | None
    last_heartbeat: datetime | None
    heartbeat_age_seconds: int | None
    heartbeat_stale: bool
    cordoned: bool
    cordon_reason: str | None
    cordoned_by: int | None
    cordoned_at: datetime | None
    health_state: Literal["active", "busy", "cordoned", "offline", "error", "inactive"]
    supported_runtimes: list[WorkerRuntimeSupport]
    load: WorkerLoad
    created: datetime
    updated: datetime


class Runtime(BaseModel):
    """Attune's ``RuntimeResponse`` (lists answer it too: a superset of ``RuntimeSummary``),
    and the runner it stands for."""

    id: int
    ref: str
    pack: int | None
    pack_ref: str | None
    description: str | None
    name: str
    distributions: dict[str, Any]
    installation: dict[str, Any] | None
    execution_config: dict[str, Any]
    created: datetime
    updated: datetime
    runner_type: str


class AuditEvent(BaseModel):
    """Attune's ``AuditEventResponse`` (lists answer it too: a superset of its summary), and our
    own fields beside."""

    id: int
    created: datetime
    category: str
    event_type: str
    outcome: Literal["success", "failure", "denied"]
    actor_identity: int | None
    actor_login: str | None
    actor_token_type: str | None
    actor_ip: str | None
    actor_user_agent: str | None
    request_id: str | None
    resource_type: str | None
    resource_id: int | None
    resource_ref: str | None
    http_method: str | None
    http_path: str | None
    http_status: int | None
    duration_ms: int | None
    details: dict[str, Any] | None
    correlation_chain: dict[str, Any] | None
    role: str | None
    source: str
    channel: str | None
    verb: str
    target: str | None
    execution_id: int | None


# -- what we have none of yet: the types of Attune's lists, for the document ------------------


class SensorSummary(BaseModel):
    id: int
    ref: str
    label: str
    description: str | None
    pack_ref: str | None
    trigger_ref: str
    enabled: bool
    created: datetime
    updated: datetime


class QueueSummary(BaseModel):
    id: int
    ref: str
    pack_ref: str | None
    label: str
    description: str | None
    dispatch_action_ref: str
    enabled: bool
    accepting_new_items: bool
    is_adhoc: bool
    created: datetime
    updated: datetime


class ArtifactSummary(BaseModel):
    id: int
    ref: str
    type: str
    visibility: str
    name: str | None
    content_type: str | None
    size_bytes: int | None
    scope: str
    owner: str
    created: datetime
    updated: datetime
