"""Slack users' roles: by user id, or by membership of a user group, from configuration.

Group memberships are loaded from Slack (``usergroups.users.list``) in the background and
cached, so a command's acknowledgement never waits on Slack's API. Until the first load ends
(or while Slack is unreachable) a user is judged by user id, then by the default role.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from engine.policy import slack_role

log = logging.getLogger(f"attune.{__name__}")

#: How often group memberships are read again.
REFRESH_S = 300.0


class SlackRoles:
    def __init__(self, mapping: Mapping[str, str], default: str) -> None:
        self.mapping = dict(mapping)
        self.default = default
        self.groups = [key for key in self.mapping if key.startswith("S")]
        self._members: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def role_for(self, user_id: str) -> str:
        groups = [g for g in self.groups if user_id in self._members.get(g, set())]
        return slack_role(user_id, groups, self.mapping, self.default)

    def start(self, client: AsyncWebClient) -> None:
        if self.groups:
            self._task = asyncio.create_task(self._refresh_loop(client), name="slack-roles")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def refresh(self, client: AsyncWebClient) -> None:
        for group in self.groups:
            try:
                resp = await client.usergroups_users_list(usergroup=group)
                self._members[group] = set(resp.get("users") or [])
            except SlackClientError as exc:
                log.warning("cannot read members of user group %s: %s", group, exc)

    async def _refresh_loop(self, client: AsyncWebClient) -> None:
        while True:
            await self.refresh(client)
            await asyncio.sleep(REFRESH_S)
