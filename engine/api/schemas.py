"""Request and response models of the REST API; the OpenAPI document is generated from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, WithJsonSchema

from engine.concurrency import ConcurrencyPolicy
from engine.packs import MAX_RETRIES
from engine.status import ExecutionStatus

T = TypeVar("T")

#: An execution's status: the values of :class:`engine.status.ExecutionStatus`, shown inline
#: in the OpenAPI document (an enum of strings, no separate component).
StatusName = Annotated[
    ExecutionStatus,
    WithJsonSchema(
        {"enum": [s.value for s in ExecutionStatus], "title": "Status", "type": "string"}
    ),
]


class Request(BaseModel):
    """Requests ignore fields nobody defines, as Attune's do (serde's default): a client
    written for Attune sends fields we have no use for, and they must not make a 400."""

    model_config = ConfigDict(extra="ignore")


class LoginRequest(Request):
    login: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class RegisterRequest(Request):
    """Attune's ``RegisterRequest``. A login of 3 to 128 characters and a password of 8 to 128
    are checked by the server (422 otherwise, as Attune answers)."""

    login: str = Field(max_length=1024, examples=["newuser"])
    password: str = Field(max_length=1024, examples=["SecurePass123!"])
    display_name: str | None = Field(default=None, max_length=255, examples=["New User"])


class RefreshTokenRequest(Request):
    refresh_token: str = Field(min_length=1, max_length=1024)


class ChangePasswordRequest(Request):
    """Attune's ``ChangePasswordRequest``: the new password needs 8 to 128 characters (422)."""

    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(max_length=1024)


class UpdateCurrentUserRequest(Request):
    """A blank ``display_name`` clears it."""

    display_name: str | None = Field(default=None, max_length=255)


class ExecuteRequest(Request):
    action_ref: str = Field(min_length=1, max_length=256, examples=["core.echo"])
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"message": "hello"}])
    #: Receives the execution record, signed, when it ends.
    callback_url: AnyHttpUrl | None = None


class BatchExecution(Request):
    action_ref: str = Field(min_length=1, max_length=256, examples=["core.echo"])
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"message": "hello"}])


class BatchRequest(Request):
    """Up to 100 executions, checked first and then recorded all together, or none."""

    executions: list[BatchExecution] = Field(min_length=1, max_length=100)


class RegisterPackRequest(Request):
    path: str = Field(min_length=1, max_length=4096, description="Pack folder on the server")
    force: bool = False
    #: Attune runs a pack's tests unless this is set; this server runs none (accepted, no-op).
    skip_tests: bool = False


class CreatePackRequest(Request):
    """Attune's ``CreatePackRequest``: a pack without a folder, for actions made over the API."""

    ref: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    label: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=10_000)
    version: str = Field(default="1.0.0", min_length=1, max_length=64)
    conf_schema: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list)
    runtime_deps: list[str] = Field(default_factory=list)
    dependencies: list[str] = Field(default_factory=list)
    is_standard: bool = False


_ACTION_REF = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$"


class ActionUpdate(Request):
    """Attune's ``UpdateActionRequest``: only the fields that change (ours accepted too)."""

    ref: str | None = Field(default=None, min_length=3, max_length=256, pattern=_ACTION_REF)
    pack_ref: str | None = Field(default=None, max_length=128)
    label: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=10_000)
    #: A script file in the pack's folder, or (with ``runtime_ref``) an inline script.
    entrypoint: str | None = Field(default=None, max_length=256 * 1024)
    #: Attune's runtime id (this server has no runtime table: accepted, not used).
    runtime: int | None = None
    #: ``core.shell``, ``core.python`` (others are accepted and leave the action disabled).
    runtime_ref: str | None = Field(default=None, max_length=128)
    entry_point: str | None = Field(default=None, max_length=4096)
    runner_type: str | None = Field(default=None, max_length=64)
    param_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
    parameters: dict[str, Any] | None = None
    parameter_delivery: Literal["stdin", "file"] | None = None
    parameter_format: Literal["json", "dotenv", "yaml"] | None = None
    output_format: Literal["text", "json", "yaml", "jsonl"] | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    enabled: bool | None = None
    confirm: bool | None = None
    #: At most ``limit`` runs at once (per group of ``parameters`` values); over it,
    #: ``enqueue`` (wait, first come first served) or ``cancel``. Null: no limit.
    concurrency: ConcurrencyPolicy | None = None
    #: Attune's: retries of a run that ends abandoned or timeout (0: none).
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)


class ActionWrite(ActionUpdate):
    """Create an action (Attune's ``CreateActionRequest`` and ours). ``entrypoint`` names a
    script file in the pack's folder (its runner from ``runtime_ref``, else from the file's
    extension), or, with ``runtime_ref`` and no such file, is an inline script (admin only)."""

    ref: str = Field(min_length=3, max_length=256, pattern=_ACTION_REF)
    parameter_delivery: Literal["stdin", "file"] = "stdin"
    parameter_format: Literal["json", "dotenv", "yaml"] = "json"
    output_format: Literal["text", "json", "yaml", "jsonl"] = "text"
    enabled: bool = True
    #: Chat asks the requester to confirm before it runs.
    confirm: bool = False
    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES)


class Error(BaseModel):
    error: str
    code: str


class UserInfo(BaseModel):
    id: int
    login: str
    display_name: str | None


class TokenResponse(BaseModel):
    """Attune's ``TokenResponse``: a bearer access token and the refresh token that renews it
    (``POST /auth/refresh``, once)."""

    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires")
    user: UserInfo | None = None


class EffectivePermission(BaseModel):
    """Attune's ``EffectivePermissionResponse``: what a user may do with one kind of
    resource (Attune's names: ``read``, ``create``, ``update``, ``delete``, ``execute``, ...)."""

    resource: str
    actions: list[str]


class CurrentUser(BaseModel):
    """Attune's ``CurrentUserResponse`` (local identities), with the user's role;
    ``effective_permissions`` follow from the role and the permission policy. There are no
    permission sets here: ``assigned_permission_set_refs`` is empty."""

    id: int
    login: str
    display_name: str | None
    role: Literal["admin", "operator", "viewer", "none"]
    auth_provider: Literal["local"] = "local"
    is_local: bool = True
    can_change_password: bool
    provider_profile: None = None
    effective_permissions: list[EffectivePermission]
    assigned_permission_set_refs: list[str]


class SuccessResponse(BaseModel):
    success: bool
    message: str


class AuthSettings(BaseModel):
    """Attune's ``AuthSettingsResponse``: what a login page offers (local passwords only)."""

    authentication_enabled: bool
    local_password_enabled: bool
    local_password_visible_by_default: bool
    oidc_enabled: bool
    oidc_visible_by_default: bool
    oidc_provider_name: str | None
    oidc_provider_label: str | None
    oidc_provider_icon_url: str | None
    ldap_enabled: bool
    ldap_visible_by_default: bool
    ldap_provider_name: str | None
    ldap_provider_label: str | None
    ldap_provider_icon_url: str | None
    self_registration_enabled: bool


class Pagination(BaseModel):
    page: int
    page_size: int
    total_items: int
    total_pages: int
    has_previous: bool
    has_next: bool


class Single(BaseModel, Generic[T]):
    data: T


class Page(BaseModel, Generic[T]):
    items: list[T]
    pagination: Pagination


class Executor(BaseModel):
    model_config = ConfigDict(extra="allow")

    identity: str
    source: str
    channel: str | None = None


class ExecutionResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    exit_code: int | None = None
    duration_ms: int | None = None
    succeeded: bool = False
    stdout: str = ""
    stderr: str = ""
    data: Any = None
    error: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False


class WorkflowTask(BaseModel):
    """Which workflow run and task an execution was started for (Attune's)."""

    workflow_execution: int
    task_name: str
    #: The item of a ``with_items`` task.
    task_index: int | None = None
    #: Which retry this run is (0: the first try), of ``max_retries``.
    retry_count: int = 0
    max_retries: int = 0
    #: The task's ``timeout``: the run's time limit.
    timeout_seconds: float | None = None


class Execution(BaseModel):
    """:class:`engine.records.Execution` as its JSON reads (the API writes the record itself;
    tests/api/test_record_models.py keeps the two field for field)."""

    id: int
    action_ref: str
    status: StatusName
    config: dict[str, Any]
    parent: int | None
    enforcement: int | None
    result: ExecutionResult | None
    created: datetime
    updated: datetime
    started_at: datetime | None
    finished_at: datetime | None
    #: Attune's: the requesting identity's id (null for Slack users, rules, the command line).
    executor: int | None
    #: Who asked, from where.
    requester: Executor
    #: Attune's: the first execution of the retry chain this one belongs to (null: not a
    #: retry).
    original_execution: int | None = None
    #: Which retry of its chain this is (0: the first run), and why it was retried
    #: (``abandoned``, ``timeout``).
    retry_count: int = 0
    retry_reason: Literal["abandoned", "timeout"] | None = None
    #: When this ended run is retried (null: no retry pending).
    retry_due_at: datetime | None = None
    #: Attune's: for a workflow's task run, ``{workflow_execution, task_name, task_index}``.
    workflow_task: WorkflowTask | None = None


class Pack(BaseModel):
    id: int
    ref: str
    label: str
    description: str
    version: str
    conf_schema: dict[str, Any]
    config: dict[str, Any]
    meta: dict[str, Any]
    tags: list[str]
    runtime_deps: list[str]
    dependencies: list[str]
    is_standard: bool
    path: str | None
    action_count: int
    created: datetime
    updated: datetime


class PackInstalled(BaseModel):
    pack: Pack
    test_result: Any = None
    tests_skipped: bool


class Success(BaseModel):
    success: bool
    message: str


class Action(BaseModel):
    id: int
    ref: str
    pack: int
    pack_ref: str
    entrypoint: str
    runtime: int | None
    runtime_ref: str | None
    out_schema: dict[str, Any] | None
    is_adhoc: bool
    accesses_mcp: bool
    disabled_reason: str | None
    name: str
    label: str
    description: str
    runner_type: str
    entry_point: str | None
    has_inline_script: bool
    #: Attune's flat map ``{name: {type, required, secret, default, ...}}``.
    param_schema: dict[str, Any]
    #: The same parameters as the JSON Schema submissions are validated against.
    param_json_schema: dict[str, Any]
    parameter_delivery: str
    parameter_format: str
    output_format: str
    timeout_seconds: float | None
    enabled: bool
    confirm: bool
    #: The concurrency policy (``limit``, ``method``, ``parameters``); null: no limit.
    concurrency: ConcurrencyPolicy | None = None
    max_retries: int
    adhoc: bool
    created: datetime
    updated: datetime


class Delivery(BaseModel):
    """:class:`engine.records.Delivery` as its JSON reads."""

    id: int
    execution_id: int
    target: str
    event: Literal["created", "started", "completed"]
    state: Literal["pending", "sending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    created: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str | None
    source: str
    channel: str | None
    verb: str
    target: str | None
    parameters: dict[str, Any] | None
    outcome: str
    detail: str | None
    execution_id: int | None


class Trigger(BaseModel):
    """Attune's ``TriggerResponse`` and our own fields."""

    id: int
    ref: str
    pack: int | None
    pack_ref: str
    label: str
    description: str
    enabled: bool
    is_adhoc: bool
    param_schema: dict[str, Any] | None
    out_schema: dict[str, Any] | None
    webhook_enabled: bool
    webhook_key: str | None
    created: datetime
    updated: datetime
    type: Literal[
        "webhook", "interval", "cron", "date", "intervaltimer", "crontimer", "datetimetimer"
    ]
    parameters: dict[str, Any]
    has_webhook_secret: bool
    next_fire_at: datetime | None


class Rule(BaseModel):
    """Attune's ``RuleResponse`` and our own fields."""

    id: int
    ref: str
    pack: int | None
    pack_ref: str
    label: str
    description: str
    action: int | None
    action_ref: str
    trigger: int | None
    trigger_ref: str
    conditions: list[dict[str, Any]] | dict[str, Any]
    action_params: dict[str, Any]
    trigger_params: dict[str, Any]
    permission_set_refs: list[str] | None
    enabled: bool
    is_adhoc: bool
    owner_identity: int | None
    created: datetime
    updated: datetime
    chat_channel: str | None
    callback_url: str | None
    #: A rule timer's next tick.
    next_fire_at: datetime | None
    #: Mentioned when a run the rule started fails (Slack user ids or logins).
    owners: list[str] | None = None


class Event(BaseModel):
    """Attune's ``EventResponse`` (``source`` names what made the event: webhook, timer, api)
    and our own fields."""

    id: int
    trigger: int | None
    trigger_ref: str
    config: dict[str, Any] | None
    payload: Any
    has_payload: bool
    source: str
    source_ref: str
    rule: int | None
    rule_ref: str | None
    created: datetime
    received_at: datetime
    processed_at: datetime | None


class Enforcement(BaseModel):
    """Attune's ``EnforcementResponse`` and our own fields (``outcome``: creating, scheduled
    or failed, with the ``error``)."""

    id: int
    rule: int | None
    rule_ref: str
    trigger_ref: str
    config: dict[str, Any] | None
    event: int
    status: Literal["created", "processed", "disabled"]
    payload: dict[str, Any]
    condition: Literal["all", "any"]
    conditions: list[dict[str, Any]] | dict[str, Any]
    created: datetime
    resolved_at: datetime | None
    event_id: int
    outcome: Literal["creating", "scheduled", "failed"]
    execution_id: int | None
    error: str | None


class WebhookBody(Request):
    """Attune's ``WebhookReceiverRequest``."""

    payload: Any = None
    headers: dict[str, Any] | None = None
    source_ip: str | None = None
    user_agent: str | None = None


class WebhookAccepted(BaseModel):
    event_id: int
    trigger_ref: str
    received_at: datetime
    message: str


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
