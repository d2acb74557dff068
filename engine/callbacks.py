"""Delivery of finished executions to a ``callback_url`` given at submit time.

The body is the execution record as the API shows it (secrets redacted), JSON. Headers:

- ``X-Attune-Signature: sha256=<hex HMAC-SHA256(callback secret, body)>``
- ``X-Attune-Timestamp: <unix seconds>`` (also inside the body as ``delivered_at``, so it is
  covered by the signature; receivers should refuse stale ones)
- ``X-Attune-Delivery: <id>``, stable across retries: receivers de-duplicate with it
- ``X-Attune-Event: execution.completed``

2xx is success; 408, 425, 429 and 5xx (and network errors) are retried with backoff; any other
answer is a permanent failure, recorded on the delivery and shown by the API.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import aiohttp
import orjson
import yarl

from engine import outbound
from engine.outbound import OutboundPolicy
from engine.outbox import DeliveryFailed
from engine.records import Delivery, Execution, Route
from engine.url_display import shown_url

#: Time allowed for one callback request.
CALLBACK_TIMEOUT_S = 10.0
_RETRYABLE = {408, 425, 429}


def callback_secret(secret_key: str) -> bytes:
    """The key that signs callbacks, derived from the secret key (``attune callback-secret``)."""
    return hmac.new(secret_key.encode(), b"attune-callbacks", hashlib.sha256).hexdigest().encode()


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class CallbackSink:
    def __init__(
        self,
        secret: bytes,
        *,
        timeout_s: float = CALLBACK_TIMEOUT_S,
        policy: OutboundPolicy | None = None,
    ) -> None:
        self.secret = secret
        self.timeout_s = timeout_s
        #: Where callbacks may go (by default no loopback, link-local, private, multicast or
        #: reserved address: ``ATTUNE_OUTBOUND_ALLOW`` widens it).
        self.policy = policy if policy is not None else OutboundPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        url = route.callback_url
        if not url:
            raise DeliveryFailed("execution has no callback_url", permanent=True)
        now = int(time.time())
        body = orjson.dumps(execution.as_dict() | {"delivered_at": now})
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "attune-chatops-callback/1",
            "X-Attune-Signature": sign(self.secret, body),
            "X-Attune-Timestamp": str(now),
            "X-Attune-Delivery": str(delivery.id),
            "X-Attune-Event": f"execution.{delivery.event}",
        }
        try:
            self.policy.check_url(yarl.URL(url))
        except (ValueError, outbound.DestinationNotAllowed) as exc:
            text = outbound.failure_text(exc)
            raise DeliveryFailed(f"POST {shown_url(url)}: {text}", permanent=True) from exc
        if self._session is None:
            self._session = outbound.session(
                self.policy, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                retry_after = _retry_after_s(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise DeliveryFailed(f"POST {shown_url(url)}: no answer") from exc
        except (aiohttp.ClientError, OSError) as exc:
            # One text for a refused destination, a closed port and an unknown host alike.
            text = outbound.failure_text(exc)
            permanent = text == outbound.NOT_ALLOWED
            raise DeliveryFailed(f"POST {shown_url(url)}: {text}", permanent=permanent) from exc
        if 200 <= status < 300:
            return
        retryable = status in _RETRYABLE or status >= 500
        raise DeliveryFailed(
            f"POST {shown_url(url)}: HTTP {status}",
            permanent=not retryable,
            retry_after_s=retry_after if retryable else None,
        )


def _retry_after_s(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        return None
