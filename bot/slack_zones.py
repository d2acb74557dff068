"""A Slack user's own time zone (``users.info``'s ``tz``), for the times of chat's ``schedule``.
Needs the ``users:read`` scope; without it, or when Slack does not answer within a second, the
command uses ``ATTUNE_DEFAULT_TIMEZONE``. Answers are kept an hour per user."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cachetools import TTLCache

log = logging.getLogger(f"attune.{__name__}")

LOOKUP_TIMEOUT_S = 1.0


class UserZones:
    def __init__(self, client: Any) -> None:
        self.client = client
        self._known: TTLCache[str, str | None] = TTLCache(maxsize=10_000, ttl=3600)

    async def zone_of(self, user_id: str) -> str | None:
        if not user_id:
            return None
        if user_id in self._known:
            return self._known[user_id]
        zone: str | None = None
        try:
            resp = await asyncio.wait_for(self.client.users_info(user=user_id), LOOKUP_TIMEOUT_S)
            tz = (resp.get("user") or {}).get("tz")
            if isinstance(tz, str) and tz:
                ZoneInfo(tz)
                zone = tz
        except (ZoneInfoNotFoundError, ValueError) as exc:
            log.info("Slack user %s: time zone not usable: %s", user_id, exc)
        except Exception as exc:  # Slack's errors, a missing scope, a timeout
            log.info("Slack user %s: no time zone from users.info: %s", user_id, exc)
            return None  # not kept: asked again next time
        self._known[user_id] = zone
        return zone
