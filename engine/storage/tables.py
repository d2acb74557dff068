"""Table definitions (SQLAlchemy Core metadata). Alembic migrations mirror these exactly;
``tests/engine/test_migrations.py`` checks that they agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.expression import false, text, true

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (
            value.astimezone(UTC)
            if dialect.name != "sqlite"
            else value.astimezone(UTC).replace(tzinfo=None)
        )

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    # SQLite: the text SQLAlchemy's DATETIME stores ("2026-11-27 04:41:50.123456"), written and
    # read in one step (its own regex parsing and formatting cost 3% of an execution's CPU).
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return _sqlite_datetime_text

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        return _sqlite_datetime


def _sqlite_datetime_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


JsonType: Any = JSON().with_variant(JSONB(), "postgresql")
# SQLite needs INTEGER PRIMARY KEY for rowid aliasing; PostgreSQL gets a 64-bit identity.
IdType: Any = BigInteger().with_variant(Integer(), "sqlite")


packs = Table(
    "packs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(128), nullable=False, unique=True),
    Column("label", String(256), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("version", String(64), nullable=False, default="0.0.0"),
    Column("path", Text, nullable=True),
    #: Attune's pack fields, as pack.yaml (or the API) gives them; null reads as empty.
    Column("conf_schema", JsonType, nullable=True),
    Column("config", JsonType, nullable=True),
    Column("meta", JsonType, nullable=True),
    Column("tags", JsonType, nullable=True),
    Column("runtime_deps", JsonType, nullable=True),
    Column("dependencies", JsonType, nullable=True),
    Column("is_standard", Boolean, nullable=False, default=False, server_default=false()),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)

actions = Table(
    "actions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("pack_id", IdType, ForeignKey("packs.id", ondelete="CASCADE"), nullable=False),
    Column("pack_ref", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("label", String(256), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("runner_type", String(32), nullable=False),
    Column("entry_point", Text, nullable=True),
    Column("script", Text, nullable=True),
    Column("param_schema", JsonType, nullable=False),
    Column("parameter_delivery", String(16), nullable=False, default="stdin"),
    Column("parameter_format", String(16), nullable=False, default="json"),
    Column("output_format", String(16), nullable=False, default="text"),
    Column("timeout_s", Float, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    #: Chat asks the requester to confirm before it runs.
    Column("confirm", Boolean, nullable=False, default=False, server_default=false()),
    Column("base_dir", Text, nullable=True),
    #: True for actions created over the API (kept when their pack is re-registered from disk).
    Column("adhoc", Boolean, nullable=False, default=False),
    Column("out_schema", JsonType, nullable=True),
    #: The runtime as the author named it (Attune's ``runtime_ref``, e.g. ``core.python``).
    Column("runtime_ref", String(128), nullable=True),
    #: Why a loaded action cannot run here (e.g. a runner this server does not have).
    Column("disabled_reason", Text, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    #: Automatic retries of a transient failure (abandoned, timed out), Attune's; 0: none.
    Column("max_retries", Integer, nullable=False, default=0, server_default=text("0")),
    #: Concurrency policy: at most ``concurrency_limit`` runs at once per group (the values of
    #: ``concurrency_parameters``); over it, ``concurrency_method`` ``enqueue`` (FIFO) or
    #: ``cancel``. Null limit: no policy.
    Column("concurrency_limit", Integer, nullable=True),
    Column("concurrency_method", String(8), nullable=True),
    Column("concurrency_parameters", JsonType, nullable=True),
)
Index("ix_actions_pack_ref", actions.c.pack_ref)

executions = Table(
    "executions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("action_ref", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    #: Parameters as shown to people: secrets replaced by a marker.
    Column("config", JsonType, nullable=False),
    #: Secret parameter values, encrypted with the secret key (Fernet); null when none.
    Column("secrets", Text, nullable=True),
    Column("parent", BigInteger, nullable=True),
    Column("enforcement", BigInteger, nullable=True),
    Column("executor", JsonType, nullable=False),
    Column("result", JsonType, nullable=True),
    Column("timeout_s", Float, nullable=False),
    Column("callback_url", Text, nullable=True),
    #: Where chat results go (sink, channel, response_url); set at submission, never after
    #: (what the sink posted is its own: ``chat_messages``).
    Column("chat", JsonType, nullable=True),
    Column("worker", String(128), nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    #: Process group of a running process action and its start time (clock ticks after boot,
    #: from /proc), so a restarted worker on the same host can kill what a dead one left.
    Column("pid", Integer, nullable=True),
    Column("pid_start", BigInteger, nullable=True),
    #: ``<login>:<Idempotency-Key header>``: a retried request returns the first execution.
    Column("idempotency_key", String(512), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    #: The retry chain (Attune's): attempt number, the first run of the chain, why retried.
    Column("retry_count", Integer, nullable=False, default=0, server_default=text("0")),
    Column("original_execution", BigInteger, nullable=True),
    Column("retry_reason", String(32), nullable=True),
    #: When the retry of this (transiently failed) run is due; cleared by whoever submits it.
    Column("retry_due_at", UTCDateTime, nullable=True),
    #: The concurrency group of a run of an action with a limit (``concurrency_groups.key``).
    Column("concurrency_key", String(512), nullable=True),
    #: Attune's: for a task run of a workflow, ``{workflow_execution, task_name, task_index}``.
    Column("workflow_task", JsonType, nullable=True),
)
Index("ix_executions_status_id", executions.c.status, executions.c.id)
Index("ix_executions_action_ref_id", executions.c.action_ref, executions.c.id)
Index("ix_executions_created", executions.c.created)
Index("ix_executions_idempotency_key", executions.c.idempotency_key, unique=True)
Index("ix_executions_worker", executions.c.worker)
Index("ix_executions_enforcement", executions.c.enforcement)
Index("ix_executions_parent", executions.c.parent)
#: The change stream finds executions that ended since a point (only ended ones are indexed:
#: one index write per execution, at its end).
Index(
    "ix_executions_finished_at",
    executions.c.finished_at,
    sqlite_where=executions.c.finished_at.is_not(None),
    postgresql_where=executions.c.finished_at.is_not(None),
)

Index(
    "ix_executions_retry_due_at",
    executions.c.retry_due_at,
    sqlite_where=executions.c.retry_due_at.is_not(None),
    postgresql_where=executions.c.retry_due_at.is_not(None),
)
Index(
    "ix_executions_original_execution",
    executions.c.original_execution,
    sqlite_where=executions.c.original_execution.is_not(None),
    postgresql_where=executions.c.original_execution.is_not(None),
)
Index(
    "ix_executions_concurrency_key_id",
    executions.c.concurrency_key,
    executions.c.id,
    sqlite_where=executions.c.concurrency_key.is_not(None),
    postgresql_where=executions.c.concurrency_key.is_not(None),
)

#: How many runs of a concurrency group hold a slot (``running`` moves in the same transaction
#: as the status of the run that takes or frees the slot).
concurrency_groups = Table(
    "concurrency_groups",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("running", Integer, nullable=False, default=0, server_default=text("0")),
    Column("updated", UTCDateTime, nullable=False),
)

#: The output of a running action, in the chunks its worker flushed (``offset``: the chunk's
#: first byte in its stream, UTF-8). Removed when the run ends: the result holds it all.
execution_output = Table(
    "execution_output",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        BigInteger,
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("stream", String(8), nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("data", Text, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)
Index(
    "ix_execution_output_execution_stream_offset",
    execution_output.c.execution_id,
    execution_output.c.stream,
    execution_output.c.offset,
)

#: What a chat sink remembers of the message it posted for an execution (its own row, not the
#: execution's): the message's id in its channel, the status the message shows, whether the
#: output went out, and ``fallback`` when the sink answers through the command's reply URL.
chat_messages = Table(
    "chat_messages",
    metadata,
    Column(
        "execution_id",
        BigInteger,
        ForeignKey("executions.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("sink", String(32), primary_key=True),
    Column("channel", String(64), nullable=True),
    Column("message_id", String(64), nullable=True),
    Column("shows_status", String(16), nullable=True),
    Column("output_posted", Boolean, nullable=False, default=False, server_default=false()),
    Column("fallback", Boolean, nullable=False, default=False, server_default=false()),
    Column("updated", UTCDateTime, nullable=False),
    #: The thread message kept updated with the last lines while the run lasts.
    Column("live_message_id", String(64), nullable=True),
    #: The requester was mentioned on failure (once).
    Column("notified", Boolean, nullable=False, default=False, server_default=false()),
)

#: The outbox: one row per delivery of an execution's news (chat card, callback URL), written in
#: the same transaction as the status change it reports.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "execution_id", BigInteger, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False
    ),
    #: ``slack``, ``callback`` or ``terminal:<session>``.
    Column("target", String(128), nullable=False),
    Column("event", String(32), nullable=False),
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    #: While ``sending``: when another listener may take the delivery over.
    Column("lease_until", UTCDateTime, nullable=True),
)
Index("ix_deliveries_state_next", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_deliveries_execution_id", deliveries.c.execution_id)
#: The rows still to deliver, in order, and per stream: the outbox's claim reads only these
#: (partial indexes: delivered rows, nearly all of the table, are not in them).
OPEN_DELIVERY = text("state IN ('pending', 'sending')")
Index(
    "ix_deliveries_open_id",
    deliveries.c.id,
    sqlite_where=OPEN_DELIVERY,
    postgresql_where=OPEN_DELIVERY,
)
Index(
    "ix_deliveries_open_stream",
    deliveries.c.execution_id,
    deliveries.c.target,
    deliveries.c.id,
    sqlite_where=OPEN_DELIVERY,
    postgresql_where=OPEN_DELIVERY,
)

users = Table(
    "users",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("login", String(128), nullable=False, unique=True),
    #: The login as logins are compared (:func:`engine.logins.login_key`: no case, no
    #: surrounding spaces, NFKC); null only for a user whose login shared a key with an older
    #: one before migration 0013 (found by their exact login).
    Column("login_key", String(128), nullable=True, unique=True),
    Column("password_hash", Text, nullable=True),
    Column("display_name", String(256), nullable=True),
    Column("role", String(32), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    #: A disabled user cannot log in, and none of their tokens is accepted.
    Column("disabled", Boolean, nullable=False, default=False, server_default=false()),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    #: SHA-256 of the token; the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", IdType, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("role", String(32), nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created", UTCDateTime, nullable=False),
)
Index("ix_tokens_user_id", tokens.c.user_id)

#: Refresh tokens of login sessions: used once (each use issues a new one), only their SHA-256
#: is stored, and they end when the user's password changes or the user is disabled.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("user_id", IdType, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created", UTCDateTime, nullable=False),
)
Index("ix_refresh_tokens_user_id", refresh_tokens.c.user_id)

#: Who asked for what, from where, with what parameters (secrets redacted), and what came of it.
audit = Table(
    "audit",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("role", String(32), nullable=True),
    Column("source", String(16), nullable=False),
    Column("channel", String(128), nullable=True),
    Column("verb", String(32), nullable=False),
    Column("target", String(256), nullable=True),
    Column("parameters", JsonType, nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=True),
    Column("execution_id", BigInteger, nullable=True),
)
Index("ix_audit_at", audit.c.at)
Index("ix_audit_actor_at", audit.c.actor, audit.c.at)

#: Chat requests of ``confirm: true`` actions waiting for the requester's Confirm (or Abort).
confirmations = Table(
    "confirmations",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("code", String(32), nullable=False, unique=True),
    Column("action_ref", String(256), nullable=False),
    #: Every parameter, sealed with the secret key (secrets included); ``config`` is for display.
    Column("sealed", Text, nullable=False),
    Column("config", JsonType, nullable=False),
    Column("requester", String(256), nullable=False),
    Column("executor", JsonType, nullable=False),
    Column("chat", JsonType, nullable=True),
    Column("state", String(16), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("execution_id", BigInteger, nullable=True),
)

#: Triggers: ``webhook`` (events from POST /api/v1/webhooks/{key}, or any source), the timers
#: ``interval``, ``cron`` and ``date`` (the trigger fires), and ``intervaltimer``, ``crontimer``
#: and ``datetimetimer`` (each rule fires on its own ``trigger_params``).
triggers = Table(
    "triggers",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("pack_ref", String(128), nullable=False),
    Column("label", String(256), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("type", String(16), nullable=False),
    #: Timer settings: ``{"seconds": N}``, ``{"expression": "*/5 * * * *"}``, ``{"at": iso}``.
    Column("parameters", JsonType, nullable=False),
    #: Attune's schemas of a rule's ``trigger_params`` and of an event's payload.
    Column("param_schema", JsonType, nullable=True),
    Column("out_schema", JsonType, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("webhook_enabled", Boolean, nullable=False, default=False),
    #: A webhook key is a credential: its SHA-256 (what a call is looked up by) and the key
    #: sealed with the secret key (shown to those who may manage the trigger), never in clear.
    Column("webhook_key_hash", String(64), nullable=True, unique=True),
    Column("webhook_key_sealed", Text, nullable=True),
    #: HMAC key webhook callers sign bodies with, sealed with the secret key; null: unsigned.
    Column("webhook_secret", Text, nullable=True),
    #: Next firing of a timer; the process that moves it on fires the tick (once).
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("from_pack", Boolean, nullable=False, default=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_triggers_next_fire_at", triggers.c.next_fire_at)

events = Table(
    "events",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("trigger_ref", String(256), nullable=False),
    #: The trigger's id when the event was made (Attune's ``trigger``).
    Column("trigger_id", BigInteger, nullable=True),
    #: A rule timer's tick names its rule: only that rule runs.
    Column("rule_id", BigInteger, nullable=True),
    Column("rule_ref", String(256), nullable=True),
    #: Where the event came from (a webhook's origin, a timer's trigger_params).
    Column("config", JsonType, nullable=True),
    Column("payload", JsonType, nullable=False),
    Column("source", String(32), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    #: Set once every rule of the trigger has been considered (the sweep finishes the rest).
    Column("processed_at", UTCDateTime, nullable=True),
)
Index("ix_events_trigger_ref_id", events.c.trigger_ref, events.c.id)
Index("ix_events_received_at", events.c.received_at)
Index("ix_events_processed_at", events.c.processed_at)
Index("ix_events_trigger_id_id", events.c.trigger_id, events.c.id)
Index("ix_events_rule_id_id", events.c.rule_id, events.c.id)

rules = Table(
    "rules",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("pack_ref", String(128), nullable=False),
    Column("label", String(256), nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("trigger_ref", String(256), nullable=False),
    Column("action_ref", String(256), nullable=False),
    Column("conditions", JsonType, nullable=True),
    #: The parameters given to the action; a secret one's value is a marker here and is
    #: sealed in ``action_params_sealed`` (see :mod:`engine.rule_secrets`).
    Column("action_params", JsonType, nullable=False),
    Column("action_params_sealed", Text, nullable=True),
    #: The rule's settings for its trigger; on a rule-timer trigger, its schedule.
    Column("trigger_params", JsonType, nullable=True),
    #: A rule timer's next tick (the process that moves it on fires the tick, once), and the
    #: ticks fired so far.
    Column("next_fire_at", UTCDateTime, nullable=True),
    Column("fire_count", Integer, nullable=False, default=0, server_default=text("0")),
    Column("enabled", Boolean, nullable=False, default=True),
    #: Where results go: a Slack channel id and/or a callback URL.
    Column("chat_channel", String(64), nullable=True),
    Column("callback_url", Text, nullable=True),
    #: Who is told when a run this rule started fails: Slack user ids (``U...``) or logins.
    Column("owners", JsonType, nullable=True),
    Column("from_pack", Boolean, nullable=False, default=False),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_rules_trigger_ref", rules.c.trigger_ref)
Index("ix_rules_next_fire_at", rules.c.next_fire_at)

#: One per (rule, event) that matched: the execution it created, or why it failed.
enforcements = Table(
    "enforcements",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    #: The rule's id when the enforcement was made (Attune's ``rule``).
    Column("rule_id", BigInteger, nullable=True),
    Column("rule_ref", String(256), nullable=False),
    Column("trigger_ref", String(256), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    #: The rule's conditions when it was enforced, and when the enforcement was settled.
    Column("conditions", JsonType, nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
    Column("config", JsonType, nullable=True),
    Column("execution_id", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    UniqueConstraint("rule_ref", "event_id", name="uq_enforcements_rule_ref_event_id"),
)
Index("ix_enforcements_event_id", enforcements.c.event_id)
Index("ix_enforcements_created", enforcements.c.created)
Index("ix_enforcements_rule_id", enforcements.c.rule_id)

#: Attune's key-value store (``/api/v1/keys``). A value is JSON; an ``encrypted`` key keeps it
#: only sealed with the secret key (``sealed``, Fernet) and ``value`` is null.
keys = Table(
    "keys",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(255), nullable=False, unique=True),
    Column("owner_type", String(16), nullable=False),
    Column("owner", String(255), nullable=True),
    #: users.id of the identity that owns the key (``owner_type`` identity).
    Column("owner_identity", BigInteger, nullable=True),
    Column("owner_pack", BigInteger, nullable=True),
    Column("owner_pack_ref", String(255), nullable=True),
    Column("owner_action", BigInteger, nullable=True),
    Column("owner_action_ref", String(255), nullable=True),
    Column("owner_sensor", BigInteger, nullable=True),
    Column("owner_sensor_ref", String(255), nullable=True),
    Column("name", String(255), nullable=False),
    Column("encrypted", Boolean, nullable=False),
    #: ``{"v": value}``: wrapped, as SQLite would store a bare number's JSON text as a number.
    Column("value", JsonType, nullable=True),
    Column("sealed", Text, nullable=True),
    #: Set by a TTL: from then on the key reads as missing and is removed.
    Column("expires_at", UTCDateTime, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_keys_owner_type_owner", keys.c.owner_type, keys.c.owner)
Index("ix_keys_expires_at", keys.c.expires_at)


#: A saved execution configuration: an action and its parameters (secret values sealed in
#: ``parameters_sealed``, shown as a marker in ``parameters``).
execution_templates = Table(
    "execution_templates",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("action_ref", String(256), nullable=False),
    Column("parameters", JsonType, nullable=False),
    Column("parameters_sealed", Text, nullable=True),
    Column("description", Text, nullable=False, default="", server_default=""),
    #: Login of who made it.
    Column("owner", String(255), nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)

#: A run of an action (or a template) later: once ``at``, ``every`` N seconds or by ``cron``,
#: in ``timezone``. ``next_fire_at``: the next tick; the process that moves it on fires it, once.
schedules = Table(
    "schedules",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("action_ref", String(256), nullable=True),
    Column("template_ref", String(256), nullable=True),
    Column("parameters", JsonType, nullable=False),
    Column("parameters_sealed", Text, nullable=True),
    #: ``at`` | ``every`` | ``cron``.
    Column("kind", String(8), nullable=False),
    Column("at", UTCDateTime, nullable=True),
    Column("every_s", Float, nullable=True),
    Column("cron", String(128), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("next_fire_at", UTCDateTime, nullable=True),
    #: Ticks missed while nothing ran: ``once`` (run once for them all) | ``skip``.
    Column("missed", String(8), nullable=False, default="once", server_default="once"),
    Column("paused", Boolean, nullable=False, default=False, server_default=false()),
    #: Who asked (as an execution's executor) and where results go (as an execution's chat).
    Column("requester", JsonType, nullable=False),
    Column("chat", JsonType, nullable=True),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("fire_count", Integer, nullable=False, default=0, server_default=text("0")),
    Column("last_fired_at", UTCDateTime, nullable=True),
    Column("last_execution", BigInteger, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
    #: ``<who>:<key>`` of the request that made it (a Slack retry, an API Idempotency-Key).
    Column("idempotency_key", String(512), nullable=True),
    #: Ids are never reused (a card names its schedule by id).
    sqlite_autoincrement=True,
)
Index("ix_schedules_next_fire_at", schedules.c.next_fire_at)
Index("ix_schedules_idempotency_key", schedules.c.idempotency_key, unique=True)

#: A run paused for a human answer (Attune's inquiry): who may answer (``assigned_to``, an
#: identity id as Attune's, and ``assignees``: logins, Slack user ids or roles), the schema an
#: answer must fit, the status (``pending`` | ``responded`` | ``timeout`` | ``cancelled``), the
#: answer and who gave it, the deadline, and the chat message that asks (``chat``).
inquiries = Table(
    "inquiries",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "execution",
        BigInteger,
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("prompt", Text, nullable=False),
    Column("response_schema", JsonType, nullable=True),
    Column("assigned_to", BigInteger, nullable=True),
    Column("assignees", JsonType, nullable=True),
    Column("status", String(16), nullable=False),
    Column("response", JsonType, nullable=True),
    Column("responded_by", String(255), nullable=True),
    Column("responded_at", UTCDateTime, nullable=True),
    Column("timeout_at", UTCDateTime, nullable=True),
    Column("chat", JsonType, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_inquiries_execution", inquiries.c.execution)
Index("ix_inquiries_status_timeout_at", inquiries.c.status, inquiries.c.timeout_at)
Index("ix_inquiries_updated", inquiries.c.updated)

#: An action alias (StackStorm's format): chat text matched by ``formats`` runs ``action_ref``.
#: ``adhoc``: created over the API (kept when its pack is re-registered from disk).
action_aliases = Table(
    "action_aliases",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("pack_ref", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("action_ref", String(256), nullable=False),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("enabled", Boolean, nullable=False, default=True, server_default=true()),
    Column("formats", JsonType, nullable=False),
    Column("ack", JsonType, nullable=True),
    Column("result", JsonType, nullable=True),
    Column("extra", JsonType, nullable=True),
    Column("immutable_parameters", JsonType, nullable=True),
    Column("adhoc", Boolean, nullable=False, default=False, server_default=false()),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_action_aliases_pack_ref", action_aliases.c.pack_ref)

#: An Attune workflow definition (``definition``: the YAML as JSON); the workflow is also an
#: action of the same ref. ``adhoc``: created over the API.
workflow_definitions = Table(
    "workflow_definitions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("ref", String(256), nullable=False, unique=True),
    Column("pack_ref", String(128), nullable=False),
    Column("label", String(256), nullable=False, default="", server_default=""),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("version", String(50), nullable=False, default="1.0.0", server_default="1.0.0"),
    Column("param_schema", JsonType, nullable=True),
    Column("out_schema", JsonType, nullable=True),
    Column("definition", JsonType, nullable=False),
    Column("tags", JsonType, nullable=True),
    Column("adhoc", Boolean, nullable=False, default=False, server_default=false()),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_workflow_definitions_pack_ref", workflow_definitions.c.pack_ref)

#: A running (or ended) workflow: its execution (the parent of its task runs), the definition it
#: started with, its progress (:class:`engine.workflows.plan.Progress` as JSON) and ``revision``:
#: every advance is a conditional update on it.
workflow_executions = Table(
    "workflow_executions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "execution",
        BigInteger,
        ForeignKey("executions.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("workflow_ref", String(256), nullable=False),
    Column("definition", JsonType, nullable=False),
    Column("progress", JsonType, nullable=False),
    Column("revision", Integer, nullable=False, default=0, server_default=text("0")),
    Column("status", String(16), nullable=False),
    Column("error", Text, nullable=True),
    Column("created", UTCDateTime, nullable=False),
    Column("updated", UTCDateTime, nullable=False),
)
Index("ix_workflow_executions_status", workflow_executions.c.status)

#: A task run a workflow decided to start, once: unique by ``dispatch_key`` (task, item, run,
#: attempt) within its workflow. ``execution_id``: the execution started for it (null until
#: submitted); ``due_at``: when it may start (a retry's delay); ``counted``: its end is in the
#: workflow's progress.
workflow_tasks = Table(
    "workflow_tasks",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column(
        "workflow_execution",
        BigInteger,
        ForeignKey("workflow_executions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("dispatch_key", String(300), nullable=False),
    Column("task_name", String(128), nullable=False),
    Column("task_index", Integer, nullable=True),
    Column("execution_id", BigInteger, nullable=True),
    Column("due_at", UTCDateTime, nullable=False),
    Column("counted", Boolean, nullable=False, default=False, server_default=false()),
    Column("created", UTCDateTime, nullable=False),
    UniqueConstraint("workflow_execution", "dispatch_key"),
)
Index("ix_workflow_tasks_execution_id", workflow_tasks.c.execution_id)
Index(
    "ix_workflow_tasks_uncounted",
    workflow_tasks.c.due_at,
    sqlite_where=workflow_tasks.c.counted == false(),
    postgresql_where=workflow_tasks.c.counted == false(),
)
