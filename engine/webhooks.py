"""Webhooks: a trigger's webhook key (enable, disable, regenerate) and the public
``POST /api/v1/webhooks/{key}``: checked against the trigger's HMAC secret when it has one, then
rate-limited per key, recorded as an event of the trigger, its rules processed in the background.

The body is Attune's ``WebhookReceiverRequest``: ``{"payload": ..., "headers"?, "source_ip"?,
"user_agent"?}``. The event's ``config`` records where it came from, as Attune's does (the key
itself is left out: it is the webhook's credential).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select

from engine.automation import RateLimiter
from engine.crypto import SecretBox
from engine.enforcement import Enforcer
from engine.errors import InvalidRequest, NotFound, Unauthorized
from engine.schedules import RULE_TIMERS, TRIGGER_TIMERS
from engine.storage import Store
from engine.storage.tables import triggers

#: Webhook keys: a prefix and 32 random bytes.
WEBHOOK_PREFIX = "wh_"
#: Headers that carry the body's signature (``sha256=<hex HMAC-SHA256>``), ours and GitHub's.
SIGNATURE_HEADERS = ("X-Webhook-Signature", "X-Hub-Signature-256")


def new_webhook_key() -> str:
    return WEBHOOK_PREFIX + secrets.token_urlsafe(32)


def webhook_key_hash(key: str) -> str:
    """What a key is stored and looked up by (the key has 256 random bits: no salt needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def webhook_key_values(key: str, box: SecretBox) -> dict[str, Any]:
    """The trigger columns that store ``key``: its hash, and the key sealed."""
    return {"webhook_key_hash": webhook_key_hash(key), "webhook_key_sealed": box.seal({"k": key})}


def open_webhook_key(sealed: str | None, box: SecretBox) -> str | None:
    """The key of a trigger's sealed column (``None``: no key, or one kept only as a hash)."""
    key = box.open(sealed).get("k")
    return str(key) if key else None


def check_webhook_allowed(ref: str, trigger_type: str) -> None:
    """Timers fire themselves (or their rules do): they take no webhook."""
    if trigger_type in TRIGGER_TIMERS or trigger_type in RULE_TIMERS:
        raise InvalidRequest(f"trigger '{ref}' is a {trigger_type} timer; it has no webhook")


class Webhooks:
    def __init__(
        self, store: Store, secrets_box: SecretBox, enforcer: Enforcer, limiter: RateLimiter
    ) -> None:
        self.store = store
        self.secrets = secrets_box
        self.enforcer = enforcer
        self.limiter = limiter

    async def receive(
        self,
        key: str,
        body: bytes,
        signature: str | None,
        payload: Any,
        origin: dict[str, Any],
    ) -> dict[str, Any]:
        """Check a webhook call, record its event, and process the rules in the background.
        ``origin``: what the event's ``config`` records besides the source (headers, address,
        user agent)."""
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    select(triggers).where(triggers.c.webhook_key_hash == webhook_key_hash(key))
                )
            ).first()
        if row is None:
            raise NotFound("unknown webhook key")
        if not row.webhook_enabled or not row.enabled:
            raise InvalidRequest(f"the webhook of trigger '{row.ref}' is disabled")
        config: dict[str, Any] = {"source": "webhook", **origin}
        if row.webhook_secret is not None:
            secret = str(self.secrets.open(row.webhook_secret)["s"]).encode()
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
            given = (signature or "").removeprefix("sha256=").strip()
            if not given or not hmac.compare_digest(expected, given):
                raise Unauthorized(
                    "missing or bad X-Webhook-Signature (sha256=<hex HMAC-SHA256 of the body>)"
                )
            config["hmac_verified"] = True
        # Spent only by calls that passed the signature check: a caller without the secret
        # cannot use up the signed sender's budget.
        self.limiter.take(key)
        event = await self.enforcer.record_event(
            row.ref, payload, "webhook", trigger_id=row.id, config=config
        )
        self.enforcer.process_soon(event["id"])
        return {
            "event_id": event["id"],
            "trigger_ref": row.ref,
            "received_at": event["created"],
            "message": "Webhook received; the event is being processed",
        }
