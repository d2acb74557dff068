"""Workflows run end to end over HTTP, on both backends (SQLite embedded; PostgreSQL and
RabbitMQ with a separate worker): each task is a child execution (``parent``,
``workflow_task``), the workflow's status follows its tasks and its result is its output.
Every task appends a line to a file, so the tests count what really ran."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.e2e.conftest import Server, wait_for_status
from tests.e2e.test_api import create_inline_action, get, post
from tests.e2e.workflow_helpers import (
    children,
    execute,
    lines,
    mark_action,
    run_workflow,
    save_workflow,
    wait_for_child,
)
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _mark(
    name: str, mark: str, path: Path, line: str | None = None, **extra: Any
) -> dict[str, Any]:
    task_input = {"file": str(path), "line": line or name}
    task_input.update(extra.pop("input", {}))
    return {"name": name, "action": mark, "input": task_input, **extra}


@pytest.fixture
async def mark(api: aiohttp.ClientSession) -> str:
    return await mark_action(api)


def _pack(ref: str) -> str:
    return ref.split(".", 1)[0]


async def test_sequential(
    api: aiohttp.ClientSession, mark: str, server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "seq.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("a", mark, out, on_success="b"),
            _mark("b", mark, out, on_success="c"),
            _mark("c", mark, out),
        ],
        output_map={"last": "{{ task.c.result.data.line }}", "n": 3},
    )
    record = await run_workflow(api, ref)
    assert lines(out) == ["a", "b", "c"], repr(await children(api, record["id"]))[:3000]
    assert record["result"]["data"] == {"last": "c", "n": 3}
    assert record["result"]["succeeded"] is True
    kids = await children(api, record["id"])
    assert [k["workflow_task"]["task_name"] for k in kids] == ["a", "b", "c"]
    assert {k["parent"] for k in kids} == {record["id"]}
    assert all(k["status"] == "completed" for k in kids)
    assert all(k["action_ref"] == mark for k in kids)
    run_ids = {k["workflow_task"]["workflow_execution"] for k in kids}
    assert len(run_ids) == 1
    assert all(k["workflow_task"]["task_index"] is None for k in kids)
    # The children are not top-level executions; the workflow is.
    status, top = await get(api, "/api/v1/executions?top_level_only=true&per_page=100")
    assert status == 200, top
    top_ids = {r["id"] for r in top["items"]}
    assert record["id"] in top_ids
    assert not top_ids & {k["id"] for k in kids}
    status, bad = await get(api, "/api/v1/executions?top_level_only=maybe")
    assert status == 400, bad
    assert "top_level_only" in bad["error"], bad


async def test_branch_on_failure(api: aiohttp.ClientSession, mark: str, tmp_path: Path) -> None:
    out = tmp_path / "branch.txt"
    handled = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("risky", mark, out, input={"fail": True}, on_success="ok", on_failure="undo"),
            _mark("ok", mark, out),
            _mark("undo", mark, out),
        ],
    )
    record = await run_workflow(api, handled)
    assert lines(out) == ["risky", "undo"]
    statuses = {
        k["workflow_task"]["task_name"]: k["status"] for k in await children(api, record["id"])
    }
    assert statuses == {"risky": "failed", "undo": "completed"}

    unhandled = await save_workflow(
        api,
        _pack(mark),
        [_mark("risky", mark, out, input={"fail": True}, on_success="ok"), _mark("ok", mark, out)],
    )
    record = await run_workflow(api, unhandled, end="failed")
    assert "task 'risky' ended failed" in record["result"]["error"], record
    assert record["result"]["succeeded"] is False


async def test_with_items_concurrency(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "items.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            {
                "name": "each",
                "action": mark,
                "with_items": "{{ parameters.hosts }}",
                "concurrency": 2,
                "input": {"file": str(out), "line": "{{ item }}", "sleep": 0.3, "trace": True},
            }
        ],
        parameters={"hosts": {"type": "array", "required": True}},
        output_map={"done": "{{ task.each.result | map(attribute='data.line') | list }}"},
    )
    hosts = ["h1", "h2", "h3", "h4", "h5"]
    record = await run_workflow(api, ref, {"hosts": hosts})
    running, most = 0, 0
    for line in lines(out):
        running += 1 if line.startswith("start ") else -1
        most = max(most, running)
    assert 1 <= most <= 2, lines(out)
    assert sorted(x for x in lines(out) if not x.startswith("start ")) == hosts
    assert sorted(record["result"]["data"]["done"]) == hosts
    kids = await children(api, record["id"])
    assert sorted(k["workflow_task"]["task_index"] for k in kids) == [0, 1, 2, 3, 4]
    assert {k["workflow_task"]["task_name"] for k in kids} == {"each"}


async def test_parallel_and_join(api: aiohttp.ClientSession, mark: str, tmp_path: Path) -> None:
    out = tmp_path / "par.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("fork", mark, out, on_success=["left", "right"]),
            _mark("left", mark, out, input={"sleep": 0.5, "trace": True}, on_success="merge"),
            _mark("right", mark, out, input={"sleep": 0.5, "trace": True}, on_success="merge"),
            _mark("merge", mark, out, join="all"),
        ],
    )
    await run_workflow(api, ref)
    got = lines(out)
    assert (got[0], got[-1], len(got)) == ("fork", "merge", 6), got
    # Both branches started before either ended: they ran side by side.
    assert set(got[1:3]) == {"start left", "start right"}, got


async def test_nested_and_publish(api: aiohttp.ClientSession, mark: str, tmp_path: Path) -> None:
    out = tmp_path / "nested.txt"
    inner = await save_workflow(
        api,
        _pack(mark),
        [_mark("inside", mark, out, line="{{ parameters.word }}")],
        parameters={"word": {"type": "string", "required": True}},
        output_map={"echoed": "{{ task.inside.result.data.line }}"},
    )
    outer = await save_workflow(
        api,
        _pack(mark),
        [
            {
                "name": "first",
                "action": mark,
                "input": {"file": str(out), "line": "first"},
                "next": [
                    {
                        "when": "{{ succeeded() }}",
                        "publish": [{"word": "from-{{ result().data.line }}"}],
                        "do": ["sub"],
                    }
                ],
            },
            {
                "name": "sub",
                "action": inner,
                "input": {"word": "{{ vars.word }}"},
                "on_success": "last",
            },
            _mark("last", mark, out, line="{{ task.sub.result.data.echoed }}-{{ vars.count }}"),
        ],
        vars={"word": "", "count": 7},
        output_map={"word": "{{ vars.word }}"},
    )
    record = await run_workflow(api, outer)
    assert lines(out) == ["first", "from-first", "from-first-7"]
    assert record["result"]["data"] == {"word": "from-first"}
    kids = await children(api, record["id"])
    sub = next(k for k in kids if k["workflow_task"]["task_name"] == "sub")
    assert (sub["action_ref"], sub["status"]) == (inner, "completed")
    assert sub["result"]["data"] == {"echoed": "from-first"}
    grandchildren = await children(api, sub["id"])
    assert [g["workflow_task"]["task_name"] for g in grandchildren] == ["inside"]


async def test_task_timeout_fails_the_workflow(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "timeout.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("slow", mark, out, input={"sleep": 30}, timeout=1, on_success="never"),
            _mark("never", mark, out),
        ],
    )
    started = time.monotonic()
    record = await run_workflow(api, ref, end="failed", timeout_s=20)
    assert time.monotonic() - started < 15
    assert "task 'slow' ended timeout" in record["result"]["error"], record
    kids = await children(api, record["id"])
    assert [(k["workflow_task"]["task_name"], k["status"]) for k in kids] == [("slow", "timeout")]
    assert kids[0]["workflow_task"]["timeout_seconds"] == 1
    assert lines(out) == []


@pytest.mark.parametrize("policy", ["allow_finish", "cancel_running"])
async def test_cancel_mid_run(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path, policy: str
) -> None:
    out = tmp_path / f"cancel-{policy}.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("long", mark, out, input={"sleep": 2, "trace": True}, on_complete="after"),
            _mark("after", mark, out),
        ],
        cancellation_policy=policy,
    )
    record = await execute(api, ref, {})
    await wait_for_child(api, record["id"], "long", "running")
    await eventually(lambda: "start long" in lines(out), "the task to start", 10)
    status, body = await post(api, f"/api/v1/executions/{record['id']}/cancel")
    assert status == 200, body
    ended = await wait_for_status(api, record["id"], "cancelled", 15)
    kids = {k["workflow_task"]["task_name"]: k["status"] for k in await children(api, record["id"])}
    if policy == "allow_finish":
        assert kids == {"long": "completed"}  # it finished; nothing started after it
        assert lines(out) == ["start long", "long"]
    else:
        assert kids == {"long": "cancelled"}
        assert "long" not in lines(out)
    assert ended["result"]["succeeded"] is False


async def test_approval_step_waits_for_the_answer(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "ask.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            {
                "name": "ask",
                "action": "core.ask",
                "input": {
                    "prompt": "Restart {{ parameters.service }}?",
                    "response_schema": {"approved": {"type": "boolean", "required": True}},
                },
                "next": [
                    {"when": "{{ succeeded() and result().data.response.approved }}", "do": ["go"]}
                ],
            },
            _mark("go", mark, out, line="approved by {{ task.ask.result.data.responded_by }}"),
        ],
        parameters={"service": {"type": "string", "required": True}},
    )
    record = await execute(api, ref, {"service": "web"})
    asked = await wait_for_child(api, record["id"], "ask", "running")

    async def inquiry() -> dict[str, Any] | None:
        status, body = await get(api, f"/api/v1/inquiries?execution={asked['id']}")
        assert status == 200, body
        return body["items"][0] if body["items"] else None

    question = await eventually(inquiry, "the inquiry", 10)
    assert question["prompt"] == "Restart web?"
    # The workflow waits: nothing after the question has run.
    status, wf = await get(api, f"/api/v1/executions/{record['id']}")
    assert wf["data"]["status"] == "running"
    assert lines(out) == []
    status, body = await post(
        api, f"/api/v1/inquiries/{question['id']}/respond", {"response": {"approved": True}}
    )
    assert status == 200, body
    await wait_for_status(api, record["id"], "completed", 15)
    assert lines(out) == ["approved by admin"]


async def test_retry_after_a_delay(api: aiohttp.ClientSession, tmp_path: Path) -> None:
    """A task that fails until it has run twice, retried after a delay: it runs twice, as
    two child executions, and the workflow completes."""
    out = tmp_path / "flaky.txt"
    flaky = await create_inline_action(
        api,
        "flaky",
        '#!/bin/bash\necho run >> "$file"\n[ "$(wc -l < "$file")" -ge 2 ] || exit 1\n',
        parameters={"file": {"type": "string", "required": True}},
    )
    ref = await save_workflow(
        api,
        _pack(flaky),
        [
            {
                "name": "flaky",
                "action": flaky,
                "input": {"file": str(out)},
                "retry": {"count": 3, "delay": 0.5},
            }
        ],
    )
    started = time.monotonic()
    record = await run_workflow(api, ref)
    assert time.monotonic() - started >= 0.5  # the delay was kept
    assert lines(out) == ["run", "run"]
    kids = await children(api, record["id"])
    assert [k["status"] for k in kids] == ["failed", "completed"]
    assert {k["workflow_task"]["task_name"] for k in kids} == {"flaky"}
    tries = [(k["workflow_task"]["retry_count"], k["workflow_task"]["max_retries"]) for k in kids]
    assert tries == [(0, 3), (1, 3)]


@pytest.fixture
async def health_url() -> AsyncIterator[str]:
    """A local service whose ``/ok`` is healthy and ``/bad`` is not."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def bad(_request: web.Request) -> web.Response:
        return web.json_response({"ok": False}, status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/bad", bad)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_example_restart_with_rollback(api: aiohttp.ClientSession, health_url: str) -> None:
    ref = "examples.restart_with_rollback"
    healthy = await run_workflow(api, ref, {"service": "web", "health_url": f"{health_url}/ok"})
    assert healthy["result"]["data"] == {"service": "web", "healthy": True, "reason": ""}
    names = [k["workflow_task"]["task_name"] for k in await children(api, healthy["id"])]
    assert names == ["restart", "health_check"]

    sick = await run_workflow(api, ref, {"service": "web", "health_url": f"{health_url}/bad"})
    assert sick["result"]["data"]["healthy"] is False
    assert "ended failed" in sick["result"]["data"]["reason"]
    kids = await children(api, sick["id"])
    # The health check was tried three times (two retries), then the rollback ran.
    assert [k["workflow_task"]["task_name"] for k in kids] == [
        "restart",
        "health_check",
        "health_check",
        "health_check",
        "rollback",
    ]
    assert "rolling web back to previous" in kids[-1]["result"]["stdout"]


@pytest.mark.parametrize("approved", [True, False])
async def test_example_ask_before_restart(
    api: aiohttp.ClientSession, health_url: str, approved: bool
) -> None:
    record = await execute(
        api,
        "examples.ask_before_restart",
        {"service": "web", "health_url": f"{health_url}/ok", "approver": "admin"},
    )
    asked = await wait_for_child(api, record["id"], "ask", "running")

    async def inquiry() -> dict[str, Any] | None:
        status, body = await get(api, f"/api/v1/inquiries?execution={asked['id']}")
        return body["items"][0] if status == 200 and body["items"] else None

    question = await eventually(inquiry, "the inquiry", 10)
    assert "Restart web? Its health check answered 200." in question["prompt"]
    status, body = await post(
        api, f"/api/v1/inquiries/{question['id']}/respond", {"response": {"approved": approved}}
    )
    assert status == 200, body
    ended = await wait_for_status(api, record["id"], "completed", 15)
    names = [k["workflow_task"]["task_name"] for k in await children(api, record["id"])]
    if approved:
        assert ended["result"]["data"] == {"outcome": "restarted, approved by admin"}
        assert names == ["check", "ask", "restart", "done"]
    else:
        assert ended["result"]["data"] == {"outcome": "declined"}
        assert names == ["check", "ask"]


async def test_kv_in_templates(api: aiohttp.ClientSession, mark: str, tmp_path: Path) -> None:
    """``kv.get`` reads a key (its ref may itself come from a key); ``kv.get_secret`` is refused,
    failing the task and the workflow with the reason."""
    out = tmp_path / "kv.txt"
    suffix = uuid.uuid4().hex[:8]
    for ref, value in ((f"wf_target_{suffix}", f"wf_host_{suffix}"), (f"wf_host_{suffix}", "web7")):
        status, body = await post(
            api,
            "/api/v1/keys",
            {"ref": ref, "name": ref, "owner_type": "system", "value": value},
        )
        assert status == 201, body
    ref = await save_workflow(
        api,
        _pack(mark),
        [_mark("a", mark, out, line=f"{{{{ kv.get(kv.get('wf_target_{suffix}')) }}}}")],
    )
    await run_workflow(api, ref)
    assert lines(out) == ["web7"]

    secret = await save_workflow(
        api, _pack(mark), [_mark("a", mark, out, line="{{ kv.get_secret('anything') }}")]
    )
    record = await run_workflow(api, secret, end="failed")
    assert "kv.get_secret is not available in a workflow" in record["result"]["error"]
    assert lines(out) == ["web7"]


async def test_secret_parameters_stay_secret(
    api: aiohttp.ClientSession, server: Server, tmp_path: Path
) -> None:
    """A workflow's secret parameter reaches its task's action, but is redacted in every
    record and (on SQLite, where the test can read the file) stored nowhere in the clear."""
    out = tmp_path / "secret.txt"
    write = await create_inline_action(
        api,
        "write",
        '#!/bin/bash\necho "$text" >> "$file"\n',
        parameters={"file": {"type": "string", "required": True}, "text": {"type": "string"}},
    )
    ref = await save_workflow(
        api,
        _pack(write),
        [
            {
                "name": "use",
                "action": write,
                "input": {"file": str(out), "text": "token={{ parameters.token }}"},
                "on_success": "again",
            },
            {"name": "again", "action": write, "input": {"file": str(out), "text": "done"}},
        ],
        parameters={"token": {"type": "string", "secret": True, "required": True}},
    )
    token = f"s3cr3t-{uuid.uuid4().hex}"
    record = await run_workflow(api, ref, {"token": token})
    assert lines(out) == [f"token={token}", "done"]
    assert record["config"]["token"] != token
    kids = await children(api, record["id"])
    assert kids[0]["config"]["text"] != f"token={token}"
    assert token not in json.dumps(kids)
    if server.backend == "sqlite":
        stored = b"".join(p.read_bytes() for p in server.tmp.glob("attune.db*") if p.is_file())
        assert token.encode() not in stored


async def test_cancelling_a_task_fails_it_as_the_plan_says(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "child-cancel.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("long", mark, out, input={"sleep": 30}, on_success="never", on_failure="cleanup"),
            _mark("never", mark, out),
            _mark("cleanup", mark, out, line="cleanup after {{ task.long.status }}"),
        ],
    )
    record = await execute(api, ref, {})
    child = await wait_for_child(api, record["id"], "long", "running")
    status, body = await post(api, f"/api/v1/executions/{child['id']}/cancel")
    assert status == 200, body
    await wait_for_status(api, record["id"], "completed", 20)
    assert lines(out) == ["cleanup after cancelled"]


async def test_a_task_input_its_action_refuses_fails_the_workflow_naming_it(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "bad-input.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [_mark("bad", mark, out, input={"sleep": "{{ parameters.how_long }}"})],
        parameters={"how_long": {"type": "string", "default": "soon"}},
    )
    record = await run_workflow(api, ref, end="failed")
    error = record["result"]["error"]
    assert "task 'bad' ended failed" in error
    assert "sleep" in error, error
    assert await children(api, record["id"]) == []  # it never started
    assert lines(out) == []


async def test_a_dead_end_fails_with_the_reason(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    out = tmp_path / "dead-end.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [
            _mark("a", mark, out, on_success="b", on_failure="c"),
            _mark("b", mark, out, on_success="d"),
            _mark("c", mark, out, on_success="d"),
            _mark("d", mark, out, join="all"),
        ],
    )
    record = await run_workflow(api, ref, end="failed", timeout_s=15)
    assert "dead end: task 'd' waits (join)" in record["result"]["error"]
    assert lines(out) == ["a", "b"]


async def test_the_callback_fires_once_when_the_workflow_ends(
    api: aiohttp.ClientSession, mark: str, tmp_path: Path
) -> None:
    got: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        out = tmp_path / "cb.txt"
        ref = await save_workflow(
            api, _pack(mark), [_mark("a", mark, out, on_success="b"), _mark("b", mark, out)]
        )
        status, body = await post(
            api,
            "/api/v1/executions/execute",
            {"action_ref": ref, "parameters": {}, "callback_url": f"http://127.0.0.1:{port}/cb"},
        )
        assert status == 201, body
        record = await wait_for_status(api, body["data"]["id"], "completed", 20)
        await eventually(lambda: got, "the callback", 10)
        assert [(c["id"], c["status"]) for c in got] == [(record["id"], "completed")]
        status, mine = await get(api, f"/api/v1/executions/{record['id']}/deliveries")
        assert [d["target"] for d in mine["items"]] == ["callback"], mine
        for child in await children(api, record["id"]):  # the children have no callback
            status, deliveries = await get(api, f"/api/v1/executions/{child['id']}/deliveries")
            assert status == 200, deliveries
            assert not [d for d in deliveries["items"] if d["target"] == "callback"], deliveries
    finally:
        await runner.cleanup()


async def test_a_task_is_retried_by_the_workflow_not_by_its_action(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An action with ``max_retries`` run as a workflow's task that times out is not put in a
    retry chain of its own (a second run no one waits for): the workflow's ``retry`` decides."""
    slow = await create_inline_action(
        api,
        "slow",
        '#!/bin/bash\necho run >> "$file"\nsleep 30\n',
        parameters={"file": {"type": "string", "required": True}},
        max_retries=2,
    )
    out = tmp_path / "retries.txt"
    ref = await save_workflow(
        api,
        _pack(slow),
        [{"name": "slow", "action": slow, "input": {"file": str(out)}, "timeout": 1}],
    )
    record = await run_workflow(api, ref, end="failed", timeout_s=20)
    (child,) = await children(api, record["id"])
    assert child["status"] == "timeout"
    assert child["retry_due_at"] is None  # no retry of its own is pending
    assert lines(out) == ["run"]


async def test_a_rule_starts_a_workflow_like_any_action(
    api: aiohttp.ClientSession, mark: str, server: Server, tmp_path: Path
) -> None:
    """A webhook event matching a rule whose action is a workflow runs the workflow, with
    the event's values as its parameters."""
    out = tmp_path / "ruled.txt"
    ref = await save_workflow(
        api,
        _pack(mark),
        [_mark("a", mark, out, line="{{ parameters.who }}")],
        parameters={"who": {"type": "string", "required": True}},
    )
    tag = uuid.uuid4().hex[:8]
    trigger = f"wfrule_{tag}.hook"
    status, body = await post(api, "/api/v1/triggers", {"ref": trigger})
    assert status == 201, body
    status, body = await post(api, f"/api/v1/triggers/{trigger}/webhooks/enable", {})
    assert status == 200, body
    key = body["data"]["webhook_key"]
    status, body = await post(
        api,
        "/api/v1/rules",
        {
            "ref": f"wfrule_{tag}.start",
            "trigger_ref": trigger,
            "action_ref": ref,
            "action_params": {"who": "{{ event.payload.who }}"},
        },
    )
    assert status == 201, body
    async with aiohttp.ClientSession() as anon:
        hook = f"{server.base_url}/api/v1/webhooks/{key}"
        async with anon.post(hook, json={"payload": {"who": "pager"}}) as resp:
            assert resp.status in (200, 201, 202), await resp.text()

    async def started() -> dict[str, Any] | None:
        status, listed = await get(api, f"/api/v1/executions?action_ref={ref}")
        assert status == 200, listed
        return listed["items"][0] if listed["items"] else None

    run = await eventually(started, "the workflow started by the rule", 30.0)
    record = await wait_for_status(api, run["id"], "completed", 30.0)
    assert record["enforcement"] is not None
    assert lines(out) == ["pager"]
