"""Retries end to end over HTTP, with real workers: an action's ``max_retries`` reruns a run
that ended ``timeout`` or ``abandoned``, linked by ``original_execution``; a plain ``failed``
is not retried; a cancel calls a pending retry off.

Two deployments, started once for the module: ``sqlite`` (one ``attune serve``: API, worker,
retry sweep) and ``postgres`` (``serve --no-worker`` beside one ``attune worker``, on PostgreSQL
and a private RabbitMQ exchange). The back-off is short (2 s doubling to 4 s) and the retry
sweep looks every 0.1 s, so a chain of two retries takes seconds. The abandonment tests come
last: they kill the process that runs the action (the worker; on SQLite the one serve process,
then started again on the same database).
"""

from __future__ import annotations

import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import AMQP_URL
from tests.e2e.conftest import (
    _LISTENING,
    _WORKER_UP,
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    BACKENDS,
    START_TIMEOUT_S,
    Proc,
    _fresh_postgres_database,
    _private_exchange,
    client,
    engine_env,
    spawn,
    stop,
    wait_for_line,
    wait_for_status,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 4.0
KNOBS = {
    "ATTUNE_RETRY_BACKOFF_BASE_S": str(BACKOFF_BASE_S),
    "ATTUNE_RETRY_BACKOFF_MAX_S": str(BACKOFF_MAX_S),
    "ATTUNE_RETRY_POLL_S": "0.1",
    "ATTUNE_HEARTBEAT_INTERVAL_S": "0.2",
    "ATTUNE_HEARTBEAT_TIMEOUT_S": "1.5",
    "ATTUNE_SWEEP_INTERVAL_S": "0.2",
    "ATTUNE_KILL_GRACE_S": "0.5",
    "ATTUNE_SHUTDOWN_GRACE_S": "1",
}
#: Bound on a whole chain (runs of 0.5 s, back-offs of at most 2 s and 4 s, slow machines).
CHAIN_S = 30.0


@dataclass
class Deployment:
    backend: str
    env: dict[str, str]
    tmp: Path
    serve: Proc
    base_url: str = ""
    worker: Proc | None = None
    token: str = ""

    def procs(self) -> list[Proc]:
        return [p for p in (self.serve, self.worker) if p is not None]


async def _login(base_url: str) -> str:
    async with (
        aiohttp.ClientSession(base_url=base_url) as session,
        session.post(
            "/auth/login", json={"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["data"]["access_token"])


async def _start_serve(dep: Deployment, name: str) -> None:
    args = ["serve"] if dep.backend == "sqlite" else ["serve", "--no-worker"]
    dep.serve = spawn(name, args, dep.env, dep.tmp)
    dep.base_url = (await wait_for_line(dep.serve, _LISTENING, START_TIMEOUT_S)).group(1)
    dep.base_url = dep.base_url.rstrip("/")
    dep.token = await _login(dep.base_url)


async def _start_worker(dep: Deployment, name: str) -> None:
    dep.worker = spawn(name, ["worker"], dep.env, dep.tmp)
    await wait_for_line(dep.worker, _WORKER_UP, START_TIMEOUT_S)


@pytest.fixture(scope="module", params=BACKENDS)
async def dep(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"retries-{backend}")
    async with contextlib.AsyncExitStack() as stack:
        overrides = dict(KNOBS)
        if backend == "postgres":
            overrides["ATTUNE_DATABASE_URL"] = await stack.enter_async_context(
                _fresh_postgres_database()
            )
            overrides["ATTUNE_AMQP_URL"] = AMQP_URL
            overrides["ATTUNE_AMQP_EXCHANGE"] = await stack.enter_async_context(_private_exchange())
        deployment = Deployment(backend, engine_env(tmp, **overrides), tmp, serve=None)  # type: ignore[arg-type]
        try:
            await _start_serve(deployment, "serve")
            if backend == "postgres":
                await _start_worker(deployment, "worker")
            yield deployment
        finally:
            problems = [p for p in [await stop(p) for p in deployment.procs()] if p]
        assert not problems, problems


@pytest.fixture
async def api(dep: Deployment) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(dep.base_url, dep.token) as session:
        yield session


async def _post(api: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    async with api.post(path, json=body) as resp:
        data = await resp.json()
        return resp.status, data


async def _action(
    api: aiohttp.ClientSession, script: str, *, max_retries: int, timeout_s: float = 30
) -> str:
    """An inline shell action of a new pack (its parameters: ``host``, secret ``token``)."""
    pack = f"retry_{uuid.uuid4().hex[:8]}"
    status, body = await _post(api, "/api/v1/packs", {"ref": pack, "label": pack})
    assert status == 201, body
    ref = f"{pack}.job"
    status, body = await _post(
        api,
        "/api/v1/actions",
        {
            "ref": ref,
            "pack_ref": pack,
            "label": "job",
            "entrypoint": script,
            "runtime_ref": "core.shell",
            "timeout_seconds": timeout_s,
            "max_retries": max_retries,
            "param_schema": {
                "host": {"type": "string"},
                "token": {"type": "string", "secret": True},
            },
        },
    )
    assert status == 201, body
    assert body["data"]["max_retries"] == max_retries
    return ref


async def _run(api: aiohttp.ClientSession, ref: str, **parameters: Any) -> dict[str, Any]:
    status, body = await _post(
        api, "/api/v1/executions/execute", {"action_ref": ref, "parameters": parameters}
    )
    assert status == 201, body
    record: dict[str, Any] = body["data"]
    assert (record["original_execution"], record["retry_count"]) == (None, 0)
    return record


async def _get(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    async with api.get(f"/api/v1/executions/{execution_id}") as resp:
        body = await resp.json()
        assert resp.status == 200, body
        record: dict[str, Any] = body["data"]
        return record


async def _chain(api: aiohttp.ClientSession, original: int) -> list[dict[str, Any]]:
    async with api.get(f"/api/v1/executions?original_execution={original}") as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return sorted(body["items"], key=lambda r: r["id"])


async def _retry_number(api: aiohttp.ClientSession, original: int, n: int) -> dict[str, Any]:
    """Wait for retry ``n`` of the chain ``original`` to be submitted."""

    async def probe() -> dict[str, Any] | None:
        found = [r for r in await _chain(api, original) if r["retry_count"] == n]
        return found[0] if found else None

    found: dict[str, Any] = await eventually(
        probe, f"retry {n} of #{original}", CHAIN_S, interval_s=0.05
    )
    return found


async def test_max_retries_is_read_from_pack_yaml_and_kept_by_the_api(
    dep: Deployment, api: aiohttp.ClientSession
) -> None:
    pack = f"yaml_{uuid.uuid4().hex[:8]}"
    folder = dep.tmp / pack
    (folder / "actions").mkdir(parents=True)
    (folder / "pack.yaml").write_text(f"ref: {pack}\nlabel: Retries\nversion: 1.0.0\n")
    (folder / "actions" / "flaky.yaml").write_text(
        "name: flaky\nrunner_type: shell\nentry_point: flaky.sh\nmax_retries: 3\n"
    )
    (folder / "actions" / "flaky.sh").write_text("#!/bin/sh\nexit 0\n")
    status, body = await _post(api, "/api/v1/packs/register", {"path": str(folder)})
    assert status in (200, 201), body
    ref = f"{pack}.flaky"
    async with api.get(f"/api/v1/actions/{ref}") as resp:
        assert (await resp.json())["data"]["max_retries"] == 3
    # An update that does not name max_retries keeps it; one that does changes it.
    async with api.put(f"/api/v1/actions/{ref}", json={"description": "now described"}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        assert body["data"]["max_retries"] == 3
    async with api.put(f"/api/v1/actions/{ref}", json={"max_retries": 1}) as resp:
        assert (await resp.json())["data"]["max_retries"] == 1
    async with api.put(f"/api/v1/actions/{ref}", json={"max_retries": -1}) as resp:
        body = await resp.json()
        assert resp.status == 400, body
        assert "max_retries" in body["error"]
    (folder / "actions" / "bad.yaml").write_text(
        "name: bad\nrunner_type: shell\nentry_point: flaky.sh\nmax_retries: many\n"
    )
    status, body = await _post(api, "/api/v1/packs/register", {"path": str(folder), "force": True})
    assert status == 400, body
    assert "max_retries" in body["error"]


async def test_a_timed_out_run_is_retried_up_to_max_retries_then_stops(
    api: aiohttp.ClientSession,
) -> None:
    ref = await _action(api, "sleep 30", max_retries=2, timeout_s=0.5)
    first = await _run(api, ref, host="web1", token="s3cret")
    ended = await wait_for_status(api, first["id"], "timeout", CHAIN_S)
    ids = [first["id"]]
    for n in (1, 2):
        retry = await _retry_number(api, first["id"], n)
        assert (retry["action_ref"], retry["original_execution"], retry["retry_reason"]) == (
            ref,
            first["id"],
            "timeout",
        )
        assert retry["config"] == {"host": "web1", "token": "********"}
        assert retry["requester"]["identity"] == ADMIN_LOGIN
        ids.append(retry["id"])
        ended = await wait_for_status(api, retry["id"], "timeout", CHAIN_S)
    # The last run ended with no retry planned (set, or not, by the statement that ended it).
    assert ended["retry_due_at"] is None
    chain = await _chain(api, first["id"])
    assert [(r["id"], r["retry_count"]) for r in chain] == [(ids[1], 1), (ids[2], 2)]
    for execution_id in ids[:2]:
        assert (await _get(api, execution_id))["retry_due_at"] is None, "taken"


async def test_a_failed_run_is_not_retried(api: aiohttp.ClientSession) -> None:
    ref = await _action(api, "exit 3", max_retries=2)
    first = await _run(api, ref)
    ended = await wait_for_status(api, first["id"], "failed", CHAIN_S)
    assert ended["result"]["exit_code"] == 3
    assert ended["retry_due_at"] is None
    assert await _chain(api, first["id"]) == []


async def test_cancel_calls_a_pending_retry_off(api: aiohttp.ClientSession) -> None:
    ref = await _action(api, "sleep 30", max_retries=3, timeout_s=0.5)
    first = await _run(api, ref)
    ended = await wait_for_status(api, first["id"], "timeout", CHAIN_S)
    assert ended["retry_due_at"] is not None, "its retry is pending"
    status, body = await _post(api, f"/api/v1/executions/{first['id']}/cancel", {})
    assert status == 200, body
    assert (body["data"]["status"], body["data"]["retry_due_at"]) == ("timeout", None)
    assert (await _get(api, first["id"]))["retry_due_at"] is None
    assert await _chain(api, first["id"]) == []
    status, body = await _post(api, f"/api/v1/executions/{first['id']}/cancel", {})
    assert status == 409, body
    assert "already timeout" in body["error"]


def _marker_script(folder: Path) -> str:
    """First run: leave a marker and hang (until its process is killed). Any later run:
    print the parameters it was given and succeed."""
    marker = folder / "started"
    return (
        "params=$(cat)\n"
        f"if [ -e '{marker}' ]; then printf '%s' \"$params\"; exit 0; fi\n"
        f"touch '{marker}'\n"
        "sleep 20\n"
    )


async def test_a_run_whose_worker_died_is_abandoned_and_retried(
    dep: Deployment, api: aiohttp.ClientSession
) -> None:
    folder = dep.tmp / f"abandon-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    ref = await _action(api, _marker_script(folder), max_retries=1)
    first = await _run(api, ref, host="web2", token="t0ken")
    await wait_for_status(api, first["id"], "running", CHAIN_S)
    await eventually(lambda: (folder / "started").exists(), "the first run to start", CHAIN_S)
    if dep.backend == "sqlite":
        # The one process that runs everything dies, and is started again on its database.
        dep.serve.popen.send_signal(signal.SIGKILL)
        await stop(dep.serve, signalled=True)
        await _start_serve(dep, "serve-2")
    else:
        assert dep.worker is not None
        dep.worker.popen.send_signal(signal.SIGKILL)
        await stop(dep.worker, signalled=True)
        await _start_worker(dep, "worker-2")
    async with client(dep.base_url, dep.token) as fresh:
        ended = await wait_for_status(fresh, first["id"], "abandoned", CHAIN_S)
        assert "abandoned" in ended["result"]["error"]
        retry = await _retry_number(fresh, first["id"], 1)
        assert retry["retry_reason"] == "abandoned"
        done = await wait_for_status(fresh, retry["id"], "completed", CHAIN_S)
        # The retry ran with the first run's parameters, its secret included.
        assert '"token": "t0ken"' in done["result"]["stdout"] or (
            '"token":"t0ken"' in done["result"]["stdout"]
        )
        assert '"host"' in done["result"]["stdout"]


async def test_the_openapi_document_covers_the_retry_fields(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/v1/openapi.json") as resp:
        document = await resp.json()
    schemas = document["components"]["schemas"]
    assert {"original_execution", "retry_count", "retry_reason", "retry_due_at"} <= set(
        schemas["Execution"]["properties"]
    )
    assert "max_retries" in schemas["Action"]["properties"]
    listing = document["paths"]["/api/v1/executions"]["get"]["parameters"]
    assert "original_execution" in {p["name"] for p in listing}
