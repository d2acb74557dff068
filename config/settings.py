"""One typed settings object.

Sources, highest priority first: keyword arguments, environment variables ``ATTUNE_*`` (plus
Bolt's ``SLACK_BOT_TOKEN``/``SLACK_SIGNING_SECRET``), the TOML file named by ``ATTUNE_CONFIG``,
then defaults that run with nothing installed (SQLite file, in-process broker).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./attune.db"
#: The roles (engine.auth.Role), most powerful first; ``none`` may do nothing.
RoleName = Literal["admin", "operator", "viewer", "none"]


class Settings(BaseSettings):
    """Every setting of the process; field ``x`` reads ``ATTUNE_X``."""

    model_config = SettingsConfigDict(
        env_prefix="ATTUNE_", extra="ignore", populate_by_name=True, validate_default=True
    )

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    database_url: str = DEFAULT_DATABASE_URL
    #: PostgreSQL connections kept open per process (up to half as many more under bursts):
    #: at least the worker's slots, so a busy worker does not open and close connections.
    database_pool_size: int = Field(default=20, ge=1)
    amqp_url: str | None = None
    #: Exchange and queue-name prefix on RabbitMQ; tests isolate themselves with their own.
    amqp_exchange: str = "attune.executions"
    packs_path: str = "./packs"
    data_dir: Path = Path("./.attune")

    admin_login: str = "admin"
    admin_password: SecretStr | None = None
    secret_key: SecretStr | None = None
    #: Signs callback deliveries; by default derived from the secret key
    #: (``attune callback-secret`` prints it).
    callback_secret: SecretStr | None = None
    allow_registration: bool = False
    #: Role of users made by ``POST /auth/register``: viewer (read only) unless raised here
    #: (or lowered to ``none``: no access until an administrator grants a role); an
    #: administrator promotes people with ``attune user set-role``.
    registration_role: RoleName = "viewer"
    #: Role of each Slack user id (``U...``) or user group id (``S...``), e.g.
    #: ``ATTUNE_SLACK_ROLES='{"U0123": "admin", "S0456": "operator"}'``.
    slack_roles: dict[str, RoleName] = Field(default_factory=dict)
    #: Role of Slack users not named in ``slack_roles``: ``viewer`` (read only); ``none`` answers
    #: them that they have no access.
    slack_default_role: RoleName = "viewer"
    #: Per role, which actions (shell-style patterns) it may run, cancel and view; roles not
    #: named keep the defaults (see engine/policy.py).
    permissions: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    #: How long a Confirm button of a ``confirm: true`` action stays valid.
    confirm_ttl_s: float = Field(default=300.0, gt=0)
    #: ``attune chat``: how long a ``run`` waits for its result before the next prompt (a run
    #: that ends within it is answered before the prompt comes back); 0: never waits.
    chat_wait_s: float = Field(default=3.0, ge=0, le=300)
    #: Failed logins per login (and per client address) before ``/auth/login`` answers 429.
    login_max_failures: int = Field(default=5, ge=1)
    #: Window in which failed logins are counted, and the longest lock-out.
    login_window_s: float = Field(default=300.0, gt=0)
    #: Lifetime of tokens issued by ``POST /auth/login``.
    token_ttl_s: int = Field(default=8 * 3600, gt=0)
    #: Lifetime of the refresh tokens issued beside them (Attune's default: 7 days). Each use
    #: of one issues a new one; they end when the password changes or the user is disabled.
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)

    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    #: Concurrent executions one worker runs.
    worker_concurrency: int = Field(default=16, ge=1)
    #: Cap on captured stdout and on stderr, each.
    output_cap_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Least time between two writes of one run's live output (a line printed after a quiet
    #: spell is written at once; what comes sooner waits for the next write).
    output_flush_interval_s: float = Field(default=0.15, gt=0, le=5)
    #: Most server-sent event streams (change and log streams together) one process keeps
    #: open; one more is answered 429 with a Retry-After.
    max_streams: int = Field(default=500, ge=1)
    #: Time between SIGTERM and SIGKILL when a run times out or is cancelled.
    kill_grace_s: float = Field(default=5.0, ge=0)
    #: Time limit of an action that names none.
    default_timeout_s: float = Field(default=600.0, gt=0)
    #: How often the sweep looks for executions whose broker message was lost.
    sweep_interval_s: float = Field(default=5.0, gt=0)
    #: Back-off before the retry of a run that ended abandoned or timeout (an action's
    #: ``max_retries``): ``base * 2**retry``, at most the cap, less up to 20 % at random.
    retry_backoff_base_s: float = Field(default=1.0, gt=0)
    retry_backoff_max_s: float = Field(default=300.0, gt=0)
    #: How often ``attune serve`` looks for due retries.
    retry_poll_s: float = Field(default=1.0, gt=0)
    #: How often a worker marks its running executions alive.
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    #: A running execution whose worker has not marked it for this long ends ``abandoned``.
    heartbeat_timeout_s: float = Field(default=30.0, gt=0)
    #: While the broker is down, how often workers claim work straight from the database.
    db_poll_interval_s: float = Field(default=1.0, gt=0)
    #: A ``requested`` row older than this is published again by the sweep.
    requeue_after_s: float = Field(default=10.0, gt=0)
    #: On SIGTERM, how long running executions get to finish before they are marked abandoned.
    shutdown_grace_s: float = Field(default=8.0, ge=0)
    #: Largest webhook body, and webhook calls per second per key (with bursts of 2x).
    webhook_max_bytes: int = Field(default=64 * 1024, ge=1024)
    webhook_rate_per_s: float = Field(default=10.0, gt=0)
    #: How far a webhook's signed ``X-Webhook-Timestamp`` may be from the server's clock.
    webhook_tolerance_s: float = Field(default=300.0, gt=0)
    #: How often due timers are looked for.
    timer_poll_s: float = Field(default=0.25, gt=0)
    #: IANA time zone of a schedule that names none (``/api/v1/schedules``, chat ``schedule``).
    default_timezone: str = Field(default="UTC", min_length=1, max_length=64)
    #: Time limit of one evaluation of a rule's templated conditions and ``action_params`` on
    #: an event (in a worker process, killed past it: the enforcement fails with the reason).
    template_timeout_s: float = Field(default=2.0, gt=0)
    #: Worker processes that evaluate rule templates, each one rule at a time.
    template_workers: int = Field(default=2, ge=1, le=64)
    #: How long a process trusts its cached copy of an action (changes made by other
    #: processes are seen after at most this long).
    action_cache_s: float = Field(default=2.0, ge=0)
    #: How long a process trusts a bearer token it has looked up: a token revoked by another
    #: process (``attune user disable``, a password changed elsewhere) is refused within this
    #: time; the process that revokes it refuses it at once. Expiry is checked on every request.
    token_cache_s: float = Field(default=5.0, ge=0)
    #: Who may read ``GET /metrics``: ``authenticated`` (any valid bearer token, a viewer's
    #: included), ``public`` (anyone who reaches the port) or ``off`` (404).
    metrics: Literal["off", "public", "authenticated"] = "authenticated"
    #: A connection must send a whole request line and headers within this long (from when
    #: it opens, or from its previous answer: also how long an idle keep-alive connection
    #: stays open), its body within ``http_body_timeout_s`` after that, and the server
    #: answers within ``http_handler_timeout_s`` (503 otherwise; the notifier's ``/ws`` is
    #: exempt). A body too slow is answered 408 and the connection closed.
    http_header_timeout_s: float = Field(default=60.0, gt=0)
    http_body_timeout_s: float = Field(default=60.0, gt=0)
    http_handler_timeout_s: float = Field(default=120.0, gt=0)
    #: Public base URL of this server as people reach it (``https://attune.example.com``):
    #: chat cards and the terminal chat link to ``{public_url}/ui/executions/{id}``; unset, no
    #: link is shown.
    public_url: str | None = None
    #: Lifetime of a signed execution-page link (``?exp=&sig=``): anyone holding the link may
    #: view that one execution without logging in until then. A day: long enough to follow an
    #: incident from its chat card, short enough that a link pasted into a ticket goes stale.
    page_link_ttl_s: int = Field(default=24 * 3600, gt=0)
    #: Largest accepted request body on the API.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: A built web UI (Attune's ``web/dist``) to serve beside the API, from the same origin.
    web_ui_dir: Path | None = None
    #: Largest pack archive accepted by ``POST /api/v1/packs/upload``.
    pack_upload_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: Address ranges (CIDR) that ``core.http_request`` and callbacks may reach although they
    #: are loopback, link-local, private, multicast or reserved (refused by default), e.g.
    #: ``ATTUNE_OUTBOUND_ALLOW='["10.1.0.0/16"]'``.
    outbound_allow: list[str] = Field(default_factory=list)

    slack_bot_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ATTUNE_SLACK_BOT_TOKEN", "SLACK_BOT_TOKEN")
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ATTUNE_SLACK_SIGNING_SECRET", "SLACK_SIGNING_SECRET"),
    )
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``ATTUNE_SLACK_BOT_TOKEN=`` (an empty line in ``.env``, a compose variable passed
        through empty) means not set, never an empty token that turns Slack on."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        """Empty means unset; a trailing ``/`` is dropped; only http(s) URLs are accepted."""
        if value is None:
            return None
        if not isinstance(value, str):
            return value
        text = value.strip().rstrip("/")
        if not text:
            return None
        if not text.startswith(("http://", "https://")):
            raise ValueError(f"not an http(s) URL: {value!r}")
        return text

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"not an IANA time zone (e.g. Europe/Paris): {value!r}") from exc
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _cidr_ranges(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"not an address range (CIDR): {item!r}") from exc
        return value

    @property
    def pack_dirs(self) -> list[Path]:
        return [Path(p) for p in self.packs_path.split(":") if p.strip()]

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("ATTUNE_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


def slack_enabled(settings: Settings) -> bool:
    """A bot token, and a signing secret (HTTP mode) or an app token (Socket Mode)."""
    return settings.slack_bot_token is not None and (
        settings.slack_signing_secret is not None or settings.slack_app_token is not None
    )


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, the TOML file and ``overrides``."""
    return Settings(**overrides)
