"""The event-driven half: ``Trigger -> Event -> Rule -> Enforcement -> Execution``.

An event (a webhook POST, a timer tick) is recorded first; then every enabled rule of its
trigger is considered: conditions checked, ``action_params`` rendered from the event, an
enforcement recorded (one per rule and event, a unique key), and an execution submitted that
links it. The event is marked processed at the end; the sweep finishes events whose processing
was interrupted, and never creates a second execution for an enforcement.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row

from engine.errors import TooManyRequests

log = logging.getLogger("attune.rules")

REF_PATTERN = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$"
TriggerType = Literal["webhook", "interval", "cron", "date"]
#: Shortest interval of an interval timer.
MIN_INTERVAL_S = 0.5


class TriggerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(pattern=REF_PATTERN, max_length=256)
    label: str | None = Field(default=None, max_length=256)
    description: str = Field(default="", max_length=10_000)
    type: TriggerType = "webhook"
    parameters: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    #: Webhook callers must sign bodies with it (``X-Webhook-Signature``).
    webhook_secret: str | None = Field(default=None, min_length=8, max_length=256)

    @field_validator("parameters")
    @classmethod
    def _timer(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        kind = info.data.get("type", "webhook")
        if kind == "interval":
            seconds = value.get("seconds")
            if not isinstance(seconds, int | float) or seconds < MIN_INTERVAL_S:
                raise ValueError(f"an interval timer needs parameters.seconds >= {MIN_INTERVAL_S}")
        elif kind == "cron":
            expression = value.get("expression")
            if not isinstance(expression, str) or not croniter.is_valid(expression):
                raise ValueError(
                    "a cron timer needs a valid parameters.expression, e.g. '*/5 * * * *'"
                )
        elif kind == "date":
            try:
                datetime.fromisoformat(str(value.get("at")))
            except ValueError:
                raise ValueError("a date timer needs parameters.at, an ISO 8601 time") from None
        return value


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str = Field(pattern=REF_PATTERN, max_length=256)
    label: str | None = Field(default=None, max_length=256)
    description: str = Field(default="", max_length=10_000)
    trigger_ref: str = Field(pattern=REF_PATTERN, max_length=256)
    action_ref: str = Field(pattern=REF_PATTERN, max_length=256)
    conditions: list[dict[str, Any]] | dict[str, Any] | None = None
    action_params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    #: A Slack channel id (``C...``) that gets the card of each execution.
    chat_channel: str | None = Field(default=None, max_length=64, pattern=r"^[A-Z0-9]+$")
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")


def next_fire(kind: str, parameters: dict[str, Any], after: datetime) -> datetime | None:
    """When a timer fires next after ``after`` (None: a date timer that has fired)."""
    if kind == "interval":
        return after + timedelta(seconds=float(parameters["seconds"]))
    if kind == "cron":
        nxt: datetime = croniter(parameters["expression"], after).get_next(datetime)
        return nxt
    if kind == "date":
        at = datetime.fromisoformat(str(parameters["at"]))
        if at.tzinfo is None:
            at = at.replace(tzinfo=after.tzinfo)
        return at if at > after else None
    return None


def trigger_record(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "ref": m["ref"],
        "pack_ref": m["pack_ref"],
        "label": m["label"],
        "description": m["description"],
        "type": m["type"],
        "parameters": m["parameters"],
        "enabled": m["enabled"],
        "webhook_enabled": m["webhook_enabled"],
        "webhook_key": m["webhook_key"],
        "has_webhook_secret": m["webhook_secret"] is not None,
        "next_fire_at": m["next_fire_at"],
        "created": m["created"],
        "updated": m["updated"],
    }


def rule_record(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        k: m[k]
        for k in (
            "id",
            "ref",
            "pack_ref",
            "label",
            "description",
            "trigger_ref",
            "action_ref",
            "conditions",
            "action_params",
            "enabled",
            "chat_channel",
            "callback_url",
            "created",
            "updated",
        )
    }


def event_record(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        k: m[k] for k in ("id", "trigger_ref", "payload", "source", "received_at", "processed_at")
    }


def enforcement_record(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {
        k: m[k]
        for k in (
            "id",
            "rule_ref",
            "trigger_ref",
            "event_id",
            "status",
            "config",
            "execution_id",
            "error",
            "created",
        )
    }


class RateLimiter:
    """A token bucket per key: ``rate_per_s`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> None:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        if tokens < 1:
            wait_s = (1 - tokens) / self.rate_per_s
            raise TooManyRequests(f"too many webhook calls; retry in {wait_s:.1f} s", wait_s)
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > 10_000:
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 60}
