"""``attune serve`` at start-up (issue 12): a pack whose parameter has several types loads and
runs; a busy port or an unreachable database is one line on stderr naming the cause and the
setting to change, a non-zero exit and no traceback, within a bound."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import (
    _LISTENING,
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    PACKS_PATH,
    POLL_S,
    START_TIMEOUT_S,
    Proc,
    client,
    engine_env,
    spawn,
    stop,
    wait_for_line,
    wait_for_status,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

#: Bound on a start-up that must fail: the exit must come within this time.
FAIL_TIMEOUT_S = 20.0


def _several_types_pack(root: Path) -> Path:
    pack = root / "several"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: several\nlabel: Several\nversion: 1.0.0\n")
    (pack / "actions" / "show.yaml").write_text(
        "name: show\nrunner_type: shell\nentry_point: show.sh\nparameter_format: json\n"
        "parameters:\n"
        '  note: {type: [string, "null"]}\n'
        '  count: {type: [integer, "null"], default: null}\n'
    )
    (pack / "actions" / "show.sh").write_text("#!/bin/sh\ncat\n")
    return root


async def test_a_parameter_of_several_types_loads_at_start_and_runs(tmp_path: Path) -> None:
    packs = _several_types_pack(tmp_path / "packs")
    env = engine_env(tmp_path, ATTUNE_PACKS_PATH=f"{PACKS_PATH}:{packs}")
    proc = spawn("serve", ["serve"], env, tmp_path)
    try:
        base = (await wait_for_line(proc, _LISTENING, START_TIMEOUT_S)).group(1).rstrip("/")
        assert "Pack not loaded" not in proc.stdout(), proc.stdout()
        async with (
            aiohttp.ClientSession(base_url=base) as anon,
            anon.post(
                "/auth/login", json={"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
            ) as resp,
        ):
            token = (await resp.json())["data"]["access_token"]
        async with client(base, token) as api:
            async with api.get("/api/v1/actions/several.show") as resp:
                body = await resp.json()
                assert resp.status == 200, body
            assert body["data"]["param_schema"]["note"]["type"] == ["string", "null"]
            request = {"action_ref": "several.show", "parameters": {"note": None, "count": "3"}}
            async with api.post("/api/v1/executions/execute", json=request) as resp:
                ran = await resp.json()
                assert resp.status == 201, ran
            done = await wait_for_status(api, ran["data"]["id"], "completed")
            assert json.loads(done["result"]["stdout"]) == {"note": None, "count": 3}

            ref = f"several.api_{uuid.uuid4().hex[:6]}"
            action = {
                "ref": ref,
                "label": "x",
                "entrypoint": "echo hi",
                "runtime_ref": "core.shell",
                "param_schema": {"when": {"type": ["string", "null"], "required": True}},
            }
            async with api.post("/api/v1/actions", json=action) as resp:
                created = await resp.json()
                assert resp.status == 201, created
            bad = {**action, "ref": ref + "x", "param_schema": {"when": {"type": ["strin"]}}}
            async with api.post("/api/v1/actions", json=bad) as resp:
                refused = await resp.json()
                assert resp.status == 400, refused
            assert "unknown type 'strin'" in refused["error"]
        assert "Traceback" not in proc.stderr()
    finally:
        problem = await stop(proc)
    assert problem is None, problem + "\n" + proc.stderr()[-4000:]


async def _fails_at_start(proc: Proc) -> tuple[int, str]:
    """Wait (bounded) for a start-up that must fail; return its exit code and stderr."""
    try:
        code = await eventually(
            proc.popen.poll,
            "serve to exit",
            FAIL_TIMEOUT_S,
            interval_s=POLL_S,
            done=lambda code: code is not None,
            explain=proc.stderr,
        )
        return code, proc.stderr()
    finally:
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=5)
        proc.close_files()


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


async def test_a_busy_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = engine_env(tmp_path, ATTUNE_HTTP_PORT=str(port))
        code, stderr = await _fails_at_start(spawn("serve", ["serve"], env, tmp_path))
    line = _one_line(stderr)
    assert code != 0
    assert "ATTUNE_HTTP_PORT" in line, line
    assert f"127.0.0.1:{port} (Address already in use)" in line, line


@pytest.mark.parametrize("command", ["serve", "worker"])
async def test_an_unreachable_database_is_one_line_naming_the_setting(
    tmp_path: Path, command: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+asyncpg://attune:secret-pw@127.0.0.1:{port}/attune"
    env = engine_env(tmp_path, ATTUNE_DATABASE_URL=url)
    code, stderr = await _fails_at_start(spawn(command, [command], env, tmp_path))
    line = _one_line(stderr)
    assert code != 0
    assert "ATTUNE_DATABASE_URL" in line, line
    assert (
        f"cannot connect to the database postgresql+asyncpg://attune:***@127.0.0.1:{port}" in line
    )
    assert "secret-pw" not in line


async def test_a_sqlite_database_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    url = f"sqlite+aiosqlite:///{tmp_path / 'plain-file' / 'attune.db'}"
    env = engine_env(tmp_path, ATTUNE_DATABASE_URL=url)
    code, stderr = await _fails_at_start(spawn("serve", ["serve"], env, tmp_path))
    line = _one_line(stderr)
    assert code != 0
    assert "ATTUNE_DATABASE_URL" in line, line
    assert f"cannot create the database's folder {tmp_path / 'plain-file'}" in line, line
