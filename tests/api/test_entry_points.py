"""An action's entry point must be a script under its pack's ``actions/`` folder once symbolic
links are followed (issue 12, hole 10): a pack whose action points elsewhere (``..``, an
absolute path, another folder of the pack, a link out of ``actions/``) is refused when it is
registered, naming the entry point, and so is an action created over the API with such a file;
Attune's forms (``hello.sh``, ``actions/hello.sh``) and inline scripts keep working.

One runtime (SQLite) serves the module in-process over real HTTP; each test writes its own
pack folders.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime

ADMIN, PASSWORD = "admin", "admin-password-1"


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tmp: Path

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("entry-points")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp / 's.db'}",
            data_dir=tmp / "data",
            packs_path=str(tmp / "none"),
            admin_login=ADMIN,
            admin_password=PASSWORD,
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        token = await rt.auth.issue_token(ADMIN, name="entry-points")
        session.headers["Authorization"] = f"Bearer {token}"
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, tmp)
    finally:
        await session.close()
        await server.close()
        await rt.close()


def write_pack(root: Path, entry: str) -> tuple[Path, str]:
    """A pack with a script in ``actions/``, one in ``rules/`` and one beside the pack, and one
    action whose entry point is ``entry``; returns (its folder, its ref)."""
    ref = f"ep_{uuid.uuid4().hex[:8]}"
    pack = root / ref
    (pack / "actions").mkdir(parents=True)
    (pack / "rules").mkdir()
    (pack / "pack.yaml").write_text(f"ref: {ref}\nversion: 1.0.0\n")
    (pack / "actions" / "hello.sh").write_text("echo hello\n")
    (pack / "rules" / "not_an_action.sh").write_text("echo from rules\n")
    (root / f"{ref}-outside.sh").write_text("echo outside\n")
    (pack / "actions" / "escape.sh").symlink_to(pack / "rules" / "not_an_action.sh")
    (pack / "actions" / "far.sh").symlink_to(root / f"{ref}-outside.sh")
    (pack / "actions" / "run.yaml").write_text(
        f"name: run\nrunner_type: shell\nentry_point: {json.dumps(entry)}\n"
    )
    return pack, ref


@pytest.mark.parametrize(
    ("entry", "leads_to"),
    [
        ("../rules/not_an_action.sh", "rules/not_an_action.sh"),
        ("rules/not_an_action.sh", "rules/not_an_action.sh"),
        ("escape.sh", "rules/not_an_action.sh"),
        ("far.sh", "-outside.sh"),
        ("../../x-outside.sh", "x-outside.sh"),
        ("/bin/sh", None),
        ("pack.yaml", "pack.yaml"),
    ],
)
async def test_a_pack_whose_entry_point_leaves_actions_is_refused(
    env: Env, entry: str, leads_to: str | None
) -> None:
    folder, ref = write_pack(env.tmp / "packs", entry)
    status, body = await env.call("POST", "/api/v1/packs/register", {"path": str(folder)})
    assert status == 400, body
    assert f"entry_point '{entry}' must name a script under the pack's actions/" in body["error"]
    if leads_to is not None:
        assert leads_to in body["error"], body
    status, body = await env.call("GET", f"/api/v1/actions/{ref}.run")
    assert status == 404, body


@pytest.mark.parametrize("entry", ["hello.sh", "actions/hello.sh"])
async def test_entry_points_under_actions_still_run(env: Env, entry: str) -> None:
    folder, ref = write_pack(env.tmp / "packs", entry)
    status, body = await env.call("POST", "/api/v1/packs/register", {"path": str(folder)})
    assert status == 201, body
    action = await env.rt.catalog.get_action(f"{ref}.run")
    assert action.entry_path() == (folder / "actions" / "hello.sh").resolve()


async def test_the_api_refuses_an_action_on_a_file_outside_actions(env: Env) -> None:
    folder, ref = write_pack(env.tmp / "packs", "hello.sh")
    status, body = await env.call("POST", "/api/v1/packs/register", {"path": str(folder)})
    assert status == 201, body
    for entry in ("rules/not_an_action.sh", "actions/escape.sh", "escape.sh", "pack.yaml"):
        status, body = await env.call(
            "POST",
            "/api/v1/actions",
            {"ref": f"{ref}.bad", "entrypoint": entry, "runtime_ref": "core.shell"},
        )
        assert status == 400, (entry, body)
        assert "must name a script under the pack's actions/" in body["error"], body
    # A script under actions/ and an inline script are still actions.
    for name, entry in (("good", "hello.sh"), ("inline", "echo inline")):
        status, body = await env.call(
            "POST",
            "/api/v1/actions",
            {"ref": f"{ref}.{name}", "entrypoint": entry, "runtime_ref": "core.shell"},
        )
        assert status == 201, (entry, body)
    assert (await env.rt.catalog.get_action(f"{ref}.good")).entry_point == "actions/hello.sh"
