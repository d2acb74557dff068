"""Helpers the HTTP suites of the event-driven half share: requests that return (status, body),
unique refs, and bounded polls of events, enforcements and executions."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server, _fresh_postgres_database
from tests.scenario.harness import get_json, poll_api, running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn

TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
#: The databases an HTTP suite runs on (``attune serve`` on each, the in-process broker).
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.asynccontextmanager
async def serving(
    database: str, standin: SlackStandIn, tmp: Path, **env: str
) -> AsyncIterator[Server]:
    """``attune serve`` on a fresh SQLite file or PostgreSQL database."""
    async with contextlib.AsyncExitStack() as stack:
        if database == "postgres":
            env["ATTUNE_DATABASE_URL"] = await stack.enter_async_context(_fresh_postgres_database())
        yield await stack.enter_async_context(
            running_server("serve", scenario_env(tmp, standin, **env), tmp)
        )


def uniq() -> str:
    return uuid.uuid4().hex[:8]


async def call(
    session: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, path, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def ok(session: aiohttp.ClientSession, method: str, path: str, body: Any = None) -> Any:
    """The ``data`` (or the whole list body) of a request that must succeed."""
    status, got = await call(session, method, path, body)
    assert status in (200, 201), (method, path, status, got)
    return got["data"] if isinstance(got, dict) and "data" in got else got


async def items(session: aiohttp.ClientSession, path: str, **query: Any) -> list[dict[str, Any]]:
    async with session.get(path, params={"per_page": 100, **query}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    assert set(body) == {"items", "pagination"}, body
    return list(body["items"])


async def wait_items(
    session: aiohttp.ClientSession,
    path: str,
    done: Callable[[list[dict[str, Any]]], bool],
    what: str,
    timeout_s: float = 10.0,
    **query: Any,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await poll_api(
        lambda: items(session, path, **query), done, what, timeout_s
    )
    return rows


async def finished(
    api: aiohttp.ClientSession, execution_id: int, timeout_s: float = 15.0
) -> dict[str, Any]:
    body = await poll_api(
        lambda: get_json(api, f"/api/v1/executions/{execution_id}"),
        lambda b: b["data"]["status"] in TERMINAL,
        f"execution {execution_id} to finish",
        timeout_s,
    )
    return dict(body["data"])


async def inline_action(api: aiohttp.ClientSession, pack: str = "core") -> str:
    """A fresh action of this test only (it prints its parameters), so its runs can be counted."""
    ref = f"{pack}.act_{uniq()}"
    body = {"ref": ref, "entrypoint": "#!/bin/sh\ncat\n", "runtime_ref": "core.shell"}
    status, resp = await call(api, "POST", "/api/v1/actions", body)
    assert status == 201, resp
    return ref


async def webhook_key(api: aiohttp.ClientSession, trigger_ref: str) -> str:
    data = await ok(api, "POST", f"/api/v1/triggers/{trigger_ref}/webhooks/enable")
    assert data["webhook_enabled"] is True, data
    return str(data["webhook_key"])


async def post_webhook(
    anon: aiohttp.ClientSession, key: str, body: Any, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    status, got = await call(anon, "POST", f"/api/v1/webhooks/{key}", body, headers=headers)
    assert status == 200, got
    return dict(got["data"])


async def processed(api: aiohttp.ClientSession, event_id: int) -> dict[str, Any]:
    """Wait until the event's rules have all been considered (``processed_at`` set)."""
    body = await poll_api(
        lambda: get_json(api, f"/api/v1/events/{event_id}"),
        lambda b: b["data"]["processed_at"] is not None,
        f"event {event_id} to be processed",
        10.0,
    )
    return dict(body["data"])
