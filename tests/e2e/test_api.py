"""The REST API end to end: a real ``attune serve`` (and, on PostgreSQL + RabbitMQ, a separate
``attune worker``) driven over HTTP, on both backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import time
import uuid
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import (
    MAX_BODY_BYTES,
    POLL_S,
    START_TIMEOUT_S,
    TEST_PACK,
    Server,
    WaitForStatus,
    client,
    spawn,
    stop,
    wait_for_line,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

EXECUTE = "/api/v1/executions/execute"


# -- helpers ----------------------------------------------------------------------------------


async def post(
    session: aiohttp.ClientSession, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    async with session.post(path, json=body, **kwargs) as resp:
        return resp.status, await _body(resp)


async def get(session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with session.get(path) as resp:
        return resp.status, await _body(resp)


async def _body(resp: aiohttp.ClientResponse) -> Any:
    text = await resp.text()
    if resp.content_type == "application/json":
        return json.loads(text) if text else None
    return text


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> str:
    """The response is a JSON error ``{"error", "code"}``; return its message."""
    assert status == expected_status, body
    assert isinstance(body, dict), body
    assert set(body) >= {"error", "code"}, body
    assert isinstance(body["error"], str), body
    assert body["error"], body
    if code is not None:
        assert body["code"] == code, body
    return str(body["error"])


async def execute(
    session: aiohttp.ClientSession, ref: str, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Submit an execution that must be accepted; return its record."""
    body: dict[str, Any] = {"action_ref": ref}
    if parameters is not None:
        body["parameters"] = parameters
    status, resp = await post(session, EXECUTE, body)
    assert status == 201, resp
    record = resp["data"]
    assert isinstance(record["id"], int)
    return dict(record)


async def create_inline_action(
    session: aiohttp.ClientSession,
    name: str,
    script: str,
    *,
    runtime_ref: str = "core.shell",
    parameters: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    ref = f"adhoc_{uuid.uuid4().hex[:8]}.{name}"
    body = {"ref": ref, "entrypoint": script, "runtime_ref": runtime_ref, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    status, resp = await post(session, "/api/v1/actions", body)
    assert status == 201, resp
    assert resp["data"]["ref"] == ref
    return ref


@pytest.fixture
async def test_pack_registered(api: aiohttp.ClientSession) -> None:
    """Make sure test_pack is registered (the register test may or may not have run)."""
    status, body = await post(api, "/api/v1/packs/register", {"path": str(TEST_PACK)})
    assert status in (201, 409), body


# -- health, auth -----------------------------------------------------------------------------


async def test_health(anon: aiohttp.ClientSession) -> None:
    status, body = await get(anon, "/health")
    assert status == 200, body
    assert body["status"] == "ok"
    status, body = await get(anon, "/health/live")
    assert status == 200, body
    status, body = await get(anon, "/health/ready")
    assert status == 200, body
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    status, body = await get(anon, "/health/detailed")  # Attune's shape
    assert status == 200, body
    assert (body["status"], body["database"], body["broker"]) == ("ok", "connected", "connected")
    assert isinstance(body["version"], str)


async def test_login_good(anon: aiohttp.ClientSession) -> None:
    from tests.e2e.conftest import ADMIN_LOGIN, ADMIN_PASSWORD

    status, body = await post(
        anon, "/auth/login", {"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
    )
    assert status == 200, body
    data = body["data"]
    assert isinstance(data["access_token"], str)
    assert data["access_token"]
    assert data["token_type"] == "Bearer"
    assert isinstance(data["expires_in"], int)
    assert data["expires_in"] > 0


async def test_login_bad_password(anon: aiohttp.ClientSession) -> None:
    from tests.e2e.conftest import ADMIN_LOGIN

    status, body = await post(anon, "/auth/login", {"login": ADMIN_LOGIN, "password": "wrong"})
    assert_error(status, body, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not-a-real-token", "Bearer att_garbage", "Basic YWRtaW46YWRtaW4="],
    ids=["no-token", "garbage", "garbage-prefixed", "basic"],
)
async def test_executions_need_a_valid_token(base_url: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with client(base_url) as session:
        async with session.get("/api/v1/executions", headers=headers) as resp:
            body = await _body(resp)
            assert_error(resp.status, body, 401, "UNAUTHORIZED")
        async with session.post(
            EXECUTE,
            json={"action_ref": "core.echo", "parameters": {"message": "x"}},
            headers=headers,
        ) as resp:
            assert_error(resp.status, await _body(resp), 401, "UNAUTHORIZED")


# -- packs and actions ------------------------------------------------------------------------


async def test_register_pack(api: aiohttp.ClientSession) -> None:
    path = str(TEST_PACK)
    already, _ = await get(api, "/api/v1/packs/test_pack")
    if already == 404:  # the first registration in this session
        status, body = await post(api, "/api/v1/packs/register", {"path": path})
        assert status == 201, body
        assert body["data"]["ref"] == "test_pack"
    status, body = await post(api, "/api/v1/packs/register", {"path": path})
    message = assert_error(status, body, 409, "CONFLICT")
    assert "test_pack" in message
    status, body = await post(api, "/api/v1/packs/register", {"path": path, "force": True})
    assert status == 201, body
    assert body["data"]["ref"] == "test_pack"
    assert body["data"]["action_count"] >= 1

    status, body = await get(api, "/api/v1/packs")
    assert status == 200, body
    refs = {p["ref"] for p in body["items"]}
    assert {"test_pack", "examples", "core"} <= refs
    assert body["pagination"]["total_items"] == len(body["items"])


@pytest.mark.usefixtures("test_pack_registered")
async def test_execute_test_pack_echo(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    record = await execute(api, "test_pack.echo", {"message": "hi", "count": 2})
    assert record["status"] == "requested"
    assert record["action_ref"] == "test_pack.echo"
    assert record["requester"]["source"] == "api"
    # Attune's executor: the requesting identity's id (the admin is the first user).
    assert record["executor"] == record["requester"]["identity_id"] == 1
    done = await wait_for_status(api, record["id"], "completed", 15)
    result = done["result"]
    assert result["data"] == {"message": "hi", "repeated": ["hi", "hi"]}
    assert result["succeeded"] is True
    assert result["exit_code"] == 0
    assert done["config"] == {"message": "hi", "count": 2}
    assert done["started_at"]
    assert done["finished_at"]


async def test_adhoc_action(api: aiohttp.ClientSession, wait_for_status: WaitForStatus) -> None:
    ref = await create_inline_action(
        api, "hello", "#!/bin/sh\ncat\n", parameters={"who": {"type": "string", "required": True}}
    )
    status, body = await get(api, f"/api/v1/actions/{ref}")
    assert status == 200, body
    assert body["data"]["has_inline_script"] is True
    record = await execute(api, ref, {"who": "world"})
    done = await wait_for_status(api, record["id"], "completed", 15)
    assert json.loads(done["result"]["stdout"]) == {"who": "world"}


async def test_viewer_cannot_execute(
    base_url: str, viewer_token: str, wait_for_status: WaitForStatus
) -> None:
    async with client(base_url, viewer_token) as viewer:
        status, body = await get(viewer, "/api/v1/executions?per_page=1")
        assert status == 200, body  # the token is valid: reading is allowed
        status, body = await post(
            viewer, EXECUTE, {"action_ref": "core.echo", "parameters": {"message": "no"}}
        )
        message = assert_error(status, body, 403, "FORBIDDEN")
        assert "viewer" in message


# -- outcomes ---------------------------------------------------------------------------------


async def test_failing_action(api: aiohttp.ClientSession, wait_for_status: WaitForStatus) -> None:
    record = await execute(api, "examples.fail")
    done = await wait_for_status(api, record["id"], "failed", 15)
    result = done["result"]
    assert result["exit_code"] == 3
    assert result["succeeded"] is False
    assert "something went wrong" in result["stderr"]
    assert "exit code 3" in result["error"]


async def test_time_limit(api: aiohttp.ClientSession, wait_for_status: WaitForStatus) -> None:
    ref = await create_inline_action(api, "slow", "sleep 30\n", timeout_seconds=1)
    started = time.monotonic()
    record = await execute(api, ref)
    done = await wait_for_status(api, record["id"], "timeout", 10)
    assert time.monotonic() - started < 10
    assert "timed out" in done["result"]["error"]
    assert done["result"]["succeeded"] is False


async def test_cancel_running(api: aiohttp.ClientSession, wait_for_status: WaitForStatus) -> None:
    record = await execute(api, "examples.wait", {"seconds": 60})
    await wait_for_status(api, record["id"], "running", 10)
    started = time.monotonic()
    status, body = await post(api, f"/api/v1/executions/{record['id']}/cancel")
    assert status == 200, body
    assert body["data"]["status"] in ("canceling", "cancelled")
    done = await wait_for_status(api, record["id"], "cancelled", 10)
    assert time.monotonic() - started < 10
    assert done["result"]["succeeded"] is False


async def test_cancel_finished_is_conflict(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    record = await execute(api, "core.echo", {"message": "done already"})
    await wait_for_status(api, record["id"], "completed", 10)
    status, body = await post(api, f"/api/v1/executions/{record['id']}/cancel")
    message = assert_error(status, body, 409, "CONFLICT")
    assert "completed" in message


# -- errors -----------------------------------------------------------------------------------


async def test_unknown_execution(api: aiohttp.ClientSession) -> None:
    status, body = await get(api, "/api/v1/executions/987654321")
    assert_error(status, body, 404, "NOT_FOUND")
    status, body = await get(api, "/api/v1/executions/not-a-number")
    assert_error(status, body, 400)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_out_of_range_execution_id(api: aiohttp.ClientSession, method: str) -> None:
    path = f"/api/v1/executions/{2**63}" + ("/cancel" if method == "POST" else "")
    async with api.request(method, path) as resp:
        body = await _body(resp)
        assert resp.status in (400, 404), body


async def test_out_of_range_page(api: aiohttp.ClientSession) -> None:
    status, body = await get(api, "/api/v1/executions?page=99999999999999999999")
    assert_error(status, body, 400)


async def test_execute_unknown_action(api: aiohttp.ClientSession) -> None:
    status, body = await post(api, EXECUTE, {"action_ref": "nope.missing_action"})
    message = assert_error(status, body, 404, "NOT_FOUND")
    assert "nope.missing_action" in message


@pytest.mark.usefixtures("test_pack_registered")
@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"count": 2}, "message"),
        ({"message": "hi", "count": "abc"}, "count"),
        ({"message": "hi", "colour": "red"}, "colour"),
    ],
    ids=["missing-required", "wrong-type", "unknown-parameter"],
)
async def test_invalid_parameters(
    api: aiohttp.ClientSession, parameters: dict[str, Any], named: str
) -> None:
    status, body = await post(
        api, EXECUTE, {"action_ref": "test_pack.echo", "parameters": parameters}
    )
    message = assert_error(status, body, 400)
    assert named in message


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"action_ref": "core.echo", ', None),
        (b'["core.echo"]', None),
        (b"", None),
        (b'{"action_ref": "core.echo", "parameters": ["x"]}', "parameters"),
    ],
    ids=["malformed", "array", "empty", "parameters-not-object"],
)
async def test_invalid_body(api: aiohttp.ClientSession, raw: bytes, named: str | None) -> None:
    async with api.post(EXECUTE, data=raw, headers={"Content-Type": "application/json"}) as resp:
        message = assert_error(resp.status, await _body(resp), 400)
    if named:
        assert named in message


async def test_fields_nobody_defines_are_ignored_as_attune_ignores_them(
    api: aiohttp.ClientSession,
) -> None:
    """Attune's clients send fields we have no use for (``env_vars``, ``priority``): not a 400."""
    body = {"action_ref": "core.echo", "parameters": {"message": "x"}, "priority": 1}
    status, resp = await post(api, EXECUTE, {**body, "env_vars": {"A": "1"}})
    assert status == 201, resp
    assert resp["data"]["config"] == {"message": "x"}
    assert "priority" not in resp["data"]


async def test_body_too_large(api: aiohttp.ClientSession) -> None:
    body = {"action_ref": "core.echo", "parameters": {"message": "x" * 100_000}}
    status, resp = await post(api, EXECUTE, body)
    message = assert_error(status, resp, 413)
    assert str(MAX_BODY_BYTES) in message


async def test_unknown_route(anon: aiohttp.ClientSession, api: aiohttp.ClientSession) -> None:
    for session in (anon, api):
        status, body = await get(session, "/api/v1/no-such-thing")
        assert_error(status, body, 404, "NOT_FOUND")


# -- awkward text ----------------------------------------------------------------------------


async def test_nul_character_in_parameter(api: aiohttp.ClientSession) -> None:
    body = {"action_ref": "core.echo", "parameters": {"message": "a\u0000b"}}
    status, resp = await post(api, EXECUTE, body)
    # Refused the same way on every backend (PostgreSQL cannot store NUL in JSON text).
    message = assert_error(status, resp, 400)
    assert "'message'" in message
    assert "NUL" in message


async def test_nul_byte_in_action_output(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    ref = await create_inline_action(api, "nul", "printf 'a\\000b\\n'\n")
    record = await execute(api, ref)
    # A process action finishes in well under a second; 2 s is generous.
    done = await wait_for_status(api, record["id"], "completed", 2)
    assert done["result"]["exit_code"] == 0
    assert done["result"]["stdout"] == "a\ufffdb\n"  # NUL shown as U+FFFD, never lost silently


async def test_invalid_utf8_in_action_output(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    ref = await create_inline_action(api, "latin1", "printf 'caf\\351\\n'\n")
    record = await execute(api, ref)
    done = await wait_for_status(api, record["id"], "completed", 5)
    assert done["result"]["stdout"] == "caf\ufffd\n"


# -- secrets ----------------------------------------------------------------------------------

_SECRET_CHECK = """\
import hashlib, json, sys
params = json.load(sys.stdin)
got = hashlib.sha256(params["token"].encode()).hexdigest()
print("match" if got == "{digest}" else "mismatch")
"""


async def test_secret_parameter(
    api: aiohttp.ClientSession, server: Server, wait_for_status: WaitForStatus
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    ref = await create_inline_action(
        api,
        "secret",
        _SECRET_CHECK.format(digest=digest),
        runtime_ref="core.python",
        parameters={
            "token": {"type": "string", "secret": True, "required": True},
            "note": {"type": "string"},
        },
    )
    record = await execute(api, ref, {"token": secret, "note": "visible"})
    assert record["config"] == {"token": "********", "note": "visible"}
    done = await wait_for_status(api, record["id"], "completed", 15)
    assert done["result"]["stdout"].strip() == "match"  # the script saw the real value
    assert done["config"] == {"token": "********", "note": "visible"}

    async with api.get(f"/api/v1/executions/{record['id']}") as resp:
        assert secret not in await resp.text()
    async with api.get(f"/api/v1/executions?action_ref={ref}") as resp:
        listing = await resp.text()
        assert resp.status == 200
        assert "********" in listing
        assert secret not in listing

    # The end of the run is logged (JSON lines on stderr) by whichever process ran it; once that
    # line is there, everything the run caused has been logged.
    def end_logged() -> bool:
        return any(
            entry.get("execution_id") == record["id"] and entry.get("status") == "completed"
            for entry in _json_lines(server.logs())
        )

    await eventually(
        end_logged, f"the log line of execution {record['id']} completing", interval_s=POLL_S
    )
    assert secret not in server.logs()


def _json_lines(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


# -- volume and listing -----------------------------------------------------------------------


async def _echo_many(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus, n: int
) -> list[tuple[str, dict[str, Any]]]:
    tag = uuid.uuid4().hex[:8]
    messages = [f"message {i} of {tag}" for i in range(n)]
    records = await asyncio.gather(*(execute(api, "core.echo", {"message": m}) for m in messages))
    assert len({r["id"] for r in records}) == n
    done = await asyncio.gather(*(wait_for_status(api, r["id"], "completed", 15) for r in records))
    return list(zip(messages, done, strict=True))


async def test_concurrent_executions(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    for message, record in await _echo_many(api, wait_for_status, 10):
        assert record["config"] == {"message": message}
        assert record["result"]["stdout"] == message + "\n"
        assert record["result"]["succeeded"] is True


async def test_list_executions(api: aiohttp.ClientSession, wait_for_status: WaitForStatus) -> None:
    await _echo_many(api, wait_for_status, 10)
    status, body = await get(
        api, "/api/v1/executions?status=completed&action_ref=core.echo&per_page=5&page=1"
    )
    assert status == 200, body
    items = body["items"]
    assert 0 < len(items) <= 5
    assert all(i["status"] == "completed" and i["action_ref"] == "core.echo" for i in items)
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)  # newest first
    pagination = body["pagination"]
    assert pagination["total_items"] >= 10
    assert pagination["page"] == 1
    assert pagination["page_size"] == 5
    assert pagination["total_pages"] >= 2
    assert (pagination["has_previous"], pagination["has_next"]) == (False, True)

    status, body = await get(
        api, "/api/v1/executions?status=completed&action_ref=core.echo&per_page=5&page=2"
    )
    assert status == 200, body
    assert not {i["id"] for i in body["items"]} & set(ids)
    assert body["pagination"]["has_previous"] is True

    status, body = await get(api, "/api/v1/executions?per_page=1000")
    assert status == 200, body
    assert body["pagination"]["page_size"] == 100  # capped, as Attune caps it

    status, body = await get(api, "/api/v1/executions?status=bogus")
    assert_error(status, body, 400)


# -- documents --------------------------------------------------------------------------------


async def test_openapi(anon: aiohttp.ClientSession) -> None:
    status, body = await get(anon, "/api/v1/openapi.json")
    assert status == 200, body
    assert "/api/v1/executions/execute" in body["paths"]
    assert "post" in body["paths"]["/api/v1/executions/execute"]
    assert body["components"]["schemas"]


async def test_metrics(anon: aiohttp.ClientSession, api: aiohttp.ClientSession) -> None:
    await execute(api, "core.noop")  # at least one transition in this process
    async with anon.get("/metrics") as resp:  # ATTUNE_METRICS=authenticated by default
        assert resp.status == 401, await resp.text()
    async with api.get("/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert resp.content_type == "text/plain"
    assert "attune_execution_transitions_total" in text
    assert "attune_queue_depth" in text


# -- cluster ----------------------------------------------------------------------------------


@pytest.mark.cluster_only
async def test_separate_worker_takes_work(
    api: aiohttp.ClientSession, server: Server, wait_for_status: WaitForStatus
) -> None:
    """On RabbitMQ the separate ``attune worker`` competes for executions with serve's own."""
    worker = server.worker
    for _ in range(10):
        done = await _echo_many(api, wait_for_status, 4)
        ids = {record["id"] for _, record in done}
        ran_there = {
            e["execution_id"]
            for e in _json_lines(worker.stderr())
            if e.get("status") == "running" and e.get("execution_id") in ids
        }
        if ran_there:
            return
    pytest.fail(f"the separate worker ran none of 40 executions\n{worker.stderr()[-3000:]}")


def _claimed(text: str) -> set[int]:
    return {e["execution_id"] for e in _json_lines(text) if e.get("status") == "running"}


@pytest.mark.cluster_only
async def test_worker_stops_taking_work_on_sigterm(
    api: aiohttp.ClientSession, server: Server, wait_for_status: WaitForStatus
) -> None:
    """DESIGN: "on SIGTERM a worker stops taking work and finishes or hands back what it runs"."""
    extra = spawn(f"worker-extra-{uuid.uuid4().hex[:6]}", ["worker"], server.env, server.tmp)
    signalled = False
    try:
        await wait_for_line(extra, re.compile(r"Attune worker \S+ running"), START_TIMEOUT_S)
        # Give it something to finish: submit 1 s sleeps until one lands on this worker.
        busy: int | None = None
        for _ in range(12):
            record = await execute(api, "core.sleep", {"seconds": 1})
            await wait_for_status(api, record["id"], ("running", "completed"), 5)
            if record["id"] in _claimed(extra.stderr()):
                busy = record["id"]
                break
        assert busy is not None, "the extra worker took none of 12 executions"
        extra.popen.send_signal(signal.SIGTERM)
        signalled = True
        later = await asyncio.gather(*(execute(api, "core.noop") for _ in range(6)))
        await asyncio.gather(*(wait_for_status(api, r["id"], "completed", 10) for r in later))
        done = await wait_for_status(api, busy, "completed", 10)  # finished, not abandoned
        assert done["result"]["succeeded"] is True
    finally:
        problem = await stop(extra, signalled=signalled)
    assert problem is None, problem
    taken = _claimed(extra.stderr()) & {r["id"] for r in later}
    assert not taken, f"the worker claimed executions {sorted(taken)} after SIGTERM"
