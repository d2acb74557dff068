"""Webhooks: a trigger's webhook key (made, stored, opened; :mod:`engine.automation.triggers`
enables, disables and regenerates it) and the public ``POST /api/v1/webhooks/{key}``: checked
against the trigger's HMAC secret when it has one, then rate-limited per key, recorded as an
event of the trigger, its rules processed in the background.

The body is Attune's ``WebhookReceiverRequest``: ``{"payload": ..., "headers"?, "source_ip"?,
"user_agent"?}``. The event's ``config`` records where it came from, as Attune's does (the key
itself is left out: it is the webhook's credential).

Replays: a sender that sends ``X-Webhook-Timestamp`` (Unix seconds) signs ``<timestamp>.<body>``;
such a call is refused outside the tolerance window of the server's clock, and the same signed
call twice within it is refused the second time (remembered per process). A signature of the
body alone keeps working, and can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from engine.automation.records import TriggerRepository, WebhookAccepted
from engine.automation.schedules import RULE_TIMERS, TRIGGER_TIMERS
from engine.crypto import SecretBox
from engine.errors import (
    Conflict,
    EngineError,
    InvalidRequest,
    NotFound,
    TooManyRequests,
    Unauthorized,
)

if TYPE_CHECKING:
    from engine.automation.enforcement import Enforcer
    from engine.automation.events import Events

#: Webhook keys: a prefix and 32 random bytes.
WEBHOOK_PREFIX = "wh_"
#: Headers that carry the body's signature (``sha256=<hex HMAC-SHA256>``), ours and GitHub's.
SIGNATURE_HEADERS = ("X-Webhook-Signature", "X-Hub-Signature-256")
#: Header of a signed call's time (Unix seconds): with it the signature covers
#: ``<timestamp>.<body>``.
TIMESTAMP_HEADER = "X-Webhook-Timestamp"
#: Timestamped calls remembered at most per process (the oldest are forgotten first).
SEEN_MAX = 100_000


def new_webhook_key() -> str:
    return WEBHOOK_PREFIX + secrets.token_urlsafe(32)


def webhook_key_hash(key: str) -> str:
    """What a key is stored and looked up by (the key has 256 random bits: no salt needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def webhook_key_values(key: str, box: SecretBox) -> dict[str, Any]:
    """The trigger columns that store ``key``: its hash, and the key sealed."""
    return {"webhook_key_hash": webhook_key_hash(key), "webhook_key_sealed": box.seal({"k": key})}


def open_webhook_key(sealed: str | None, box: SecretBox) -> str | None:
    """The key of a trigger's sealed column (``None``: no key, one kept only as a hash, or one
    sealed with another secret key: regenerating shows a new one; calls find it by hash)."""
    try:
        key = box.open(sealed).get("k")
    except EngineError:
        return None
    return str(key) if key else None


def body_signature(secret: bytes, body: bytes, timestamp: str | None) -> str:
    """Hex HMAC-SHA256 of the body, or of ``<timestamp>.<body>`` when a timestamp is sent."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_fresh(timestamp: str, tolerance_s: float, now_s: float) -> None:
    """A signed timestamp must be within ``tolerance_s`` of the server's clock."""
    try:
        sent_s = int(timestamp)
    except ValueError:
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be Unix seconds") from None
    if abs(now_s - sent_s) > tolerance_s:
        raise Unauthorized(
            f"{TIMESTAMP_HEADER} is more than {tolerance_s:g} s from the server's time "
            "(ATTUNE_WEBHOOK_TOLERANCE_S); sign each call with the current time"
        )


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


def _monotonic_s() -> float:
    """``time.monotonic()``, looked up at each call (a test moves the clock by patching it)."""
    return time.monotonic()


class SeenCalls:
    """Signatures of timestamped calls still within the tolerance window: a second one is a
    replay. Bounded: past ``max_size`` the expired go, then the least recently remembered."""

    def __init__(self, tolerance_s: float, max_size: int = SEEN_MAX) -> None:
        #: A timestamp may be up to the tolerance ahead: remember twice that long.
        self.keep_s = 2 * tolerance_s
        self._seen: TTLCache[str, bool] = TTLCache(
            maxsize=max_size, ttl=self.keep_s, timer=_monotonic_s
        )

    @property
    def max_size(self) -> int:
        return int(self._seen.maxsize)

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str) -> bool:
        return key in self._seen

    def remember(self, key: str) -> None:
        self._seen[key] = True

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)


def check_webhook_allowed(ref: str, trigger_type: str) -> None:
    """Timers fire themselves (or their rules do): they take no webhook."""
    if trigger_type in TRIGGER_TIMERS or trigger_type in RULE_TIMERS:
        raise InvalidRequest(f"trigger '{ref}' is a {trigger_type} timer; it has no webhook")


class Webhooks:
    def __init__(
        self,
        repo: TriggerRepository,
        secrets_box: SecretBox,
        events: Events,
        enforcer: Enforcer,
        limiter: RateLimiter,
        tolerance_s: float = 300.0,
    ) -> None:
        self.repo = repo
        self.secrets = secrets_box
        self.events = events
        self.enforcer = enforcer
        self.limiter = limiter
        self.tolerance_s = tolerance_s
        self.seen_calls = SeenCalls(tolerance_s)

    async def receive(
        self,
        key: str,
        body: bytes,
        signature: str | None,
        payload: Any,
        origin: dict[str, Any],
        timestamp: str | None = None,
    ) -> WebhookAccepted:
        """Check a webhook call, record its event, and process the rules in the background.
        ``origin``: what the event's ``config`` records besides the source (headers, address,
        user agent); ``timestamp``: the ``X-Webhook-Timestamp`` header, if sent."""
        row = await self.repo.trigger_by_key_hash(webhook_key_hash(key))
        if row is None:
            raise NotFound("unknown webhook key")
        if not row.webhook_enabled or not row.enabled:
            raise InvalidRequest(f"the webhook of trigger '{row.ref}' is disabled")
        config: dict[str, Any] = {"source": "webhook", **origin}
        replay_key = None
        if row.webhook_secret is not None:
            secret = str(self.secrets.open(row.webhook_secret)["s"]).encode()
            expected = body_signature(secret, body, timestamp)
            given = (signature or "").removeprefix("sha256=").strip()
            if not given or not hmac.compare_digest(expected, given):
                raise Unauthorized(
                    "missing or bad X-Webhook-Signature (sha256=<hex HMAC-SHA256 of the body, "
                    f"or of '<timestamp>.<body>' when {TIMESTAMP_HEADER} is sent>)"
                )
            config["hmac_verified"] = True
            if timestamp is not None:
                check_fresh(timestamp, self.tolerance_s, time.time())
                replay_key = f"{row.id}:{expected}"
                if self.seen_calls.seen(replay_key):
                    raise Conflict(
                        "this signed call was already received (a replay); "
                        f"sign each call with a new {TIMESTAMP_HEADER}"
                    )
        # Spent only by calls that passed the signature check: a caller without the secret
        # cannot use up the signed sender's budget.
        self.limiter.take(key)
        if replay_key is not None:
            self.seen_calls.remember(replay_key)
        event = await self.events.record(
            row.ref, payload, "webhook", trigger_id=row.id, config=config
        )
        self.enforcer.process_soon(event.id)
        return WebhookAccepted(event.id, row.ref, event.received_at)
