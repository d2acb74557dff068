"""Helpers of the workflow end-to-end tests: a marking action (appends a line to a file, so a
test counts how often each task really ran), workflows saved over the API, runs and waits."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.conftest import POLL_S, wait_for_status
from tests.e2e.test_api import create_inline_action, execute, get, post
from tests.waiting import eventually

#: Appends ``line`` to ``file`` after ``sleep`` seconds (``start`` lines too when ``trace``),
#: then fails when ``fail`` is true; prints ``{"line": ...}``.
MARK_SCRIPT = """#!/bin/bash
if [ "$trace" = "true" ]; then echo "start $line" >> "$file"; fi
sleep "$sleep"
echo "$line" >> "$file"
if [ "$fail" = "true" ]; then echo "failing $line" >&2; exit 4; fi
echo "{\\"line\\": \\"$line\\"}"
"""
MARK_PARAMS = {
    "file": {"type": "string", "required": True},
    "line": {"type": "string", "required": True},
    "sleep": {"type": "number", "default": 0},
    "fail": {"type": "boolean", "default": False},
    "trace": {"type": "boolean", "default": False},
}


async def mark_action(api: aiohttp.ClientSession) -> str:
    """A new marking action (in a new ad-hoc pack); its ref."""
    return await create_inline_action(
        api, "mark", MARK_SCRIPT, parameters=MARK_PARAMS, output_format="json"
    )


async def save_workflow(
    api: aiohttp.ClientSession, pack_ref: str, tasks: list[dict[str, Any]], **extra: Any
) -> str:
    ref = f"{pack_ref}.wf_{uuid.uuid4().hex[:8]}"
    body = {
        "ref": ref,
        "pack_ref": pack_ref,
        "label": "test workflow",
        "version": "1.0.0",
        "definition": {"tasks": tasks, **extra},
    }
    status, resp = await post(api, "/api/v1/workflows", body)
    assert status == 201, resp
    return ref


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def children(api: aiohttp.ClientSession, parent: int) -> list[dict[str, Any]]:
    status, body = await get(api, f"/api/v1/executions?parent={parent}&per_page=100")
    assert status == 200, body
    return sorted(body["items"], key=lambda r: r["id"])


async def run_workflow(
    api: aiohttp.ClientSession,
    ref: str,
    parameters: dict[str, Any] | None = None,
    *,
    end: str | tuple[str, ...] = "completed",
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    record = await execute(api, ref, parameters or {})
    return await wait_for_status(api, record["id"], end, timeout_s)


async def wait_for_child(
    api: aiohttp.ClientSession, parent: int, task: str, status: str, timeout_s: float = 15.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for child in await children(api, parent):
            if child["workflow_task"]["task_name"] == task and child["status"] == status:
                return child
        return None

    found: dict[str, Any] = await eventually(
        probe, f"task {task} of {parent} to be {status}", timeout_s, interval_s=POLL_S
    )
    return found
