"""Packs, actions and executions as Attune's clients use them, written from Attune's published
request and response types (``PackResponse``, ``ActionResponse``, ``CreateActionRequest``,
``RegisterPackRequest``, the pack upload): every field they read is there with Attune's name,
requests they send are accepted, and bad input gets Attune's status codes."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import MAX_UPLOAD_BYTES, TEST_PACK, WaitForStatus, client
from tests.e2e.test_api import assert_error, get, post

pytestmark = pytest.mark.e2e

#: Fields of Attune's ``PackResponse`` (its generated client requires every one).
PACK_FIELDS = {
    "id", "ref", "label", "description", "version", "conf_schema", "config", "meta", "tags",
    "runtime_deps", "dependencies", "is_standard", "created", "updated",
}  # fmt: skip
#: Fields of Attune's ``ActionResponse`` that its generated client requires.
ACTION_FIELDS = {
    "id", "ref", "pack", "pack_ref", "label", "entrypoint", "param_schema", "out_schema",
    "is_adhoc", "accesses_mcp", "created", "updated",
}  # fmt: skip
PAGINATION = {"page", "page_size", "total_items", "total_pages", "has_previous", "has_next"}


def _pack_dir(root: Path, ref: str) -> Path:
    """A pack with a shell action, a python action and one for a runner this server lacks."""
    pack = root / ref
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(
        f"ref: {ref}\nlabel: Uploaded\nversion: 2.1.0\nsystem: false\n"
        "conf_schema: {type: object, properties: {mode: {type: string}}}\n"
        "config: {mode: test}\nmeta: {category: testing}\ntags: [a, b]\n"
        "runtime_deps: [python3]\n"
    )
    (pack / "actions" / "hello.yaml").write_text(
        "name: hello\nrunner_type: shell\nentry_point: hello.sh\nparameter_format: json\n"
        "parameters: {who: {type: string, default: world}}\n"
    )
    (pack / "actions" / "hello.sh").write_text('#!/bin/sh\necho "hello $(cat)"\n')
    (pack / "actions" / "js.yaml").write_text("name: js\nrunner_type: node\nentry_point: x.js\n")
    return pack


def _tarball(folder: Path, *, extra: tarfile.TarInfo | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size) if extra.isfile() else None)
    return buf.getvalue()


async def _upload(api: aiohttp.ClientSession, archive: bytes, **fields: str) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("pack", archive, filename="pack.tar.gz", content_type="application/gzip")
    for name, value in fields.items():
        form.add_field(name, value)
    async with api.post("/api/v1/packs/upload", data=form) as resp:
        return resp.status, await resp.json()


async def test_register_answers_attunes_pack_and_accepts_its_fields(
    api: aiohttp.ClientSession,
) -> None:
    body = {"path": str(TEST_PACK), "force": True, "skip_tests": True, "ref_spec": "ignored"}
    status, resp = await post(api, "/api/v1/packs/register", body)
    assert status == 201, resp
    pack = resp["data"]
    assert set(pack) >= PACK_FIELDS, PACK_FIELDS - set(pack)
    assert (pack["ref"], pack["version"], pack["is_standard"]) == ("test_pack", "1.0.0", False)
    status, listed = await get(api, "/api/v1/packs?per_page=1&page=2")
    assert status == 200, listed
    assert set(listed["pagination"]) == PAGINATION
    assert listed["pagination"]["page_size"] == 1
    assert listed["pagination"]["has_previous"] is True
    assert len(listed["items"]) == 1


async def test_an_uploaded_pack_is_installed_with_its_fields_and_its_runnable_actions(
    api: aiohttp.ClientSession, tmp_path: Path, wait_for_status: WaitForStatus
) -> None:
    ref = f"up_{uuid.uuid4().hex[:8]}"
    archive = _tarball(_pack_dir(tmp_path, ref))
    status, resp = await _upload(api, archive, force="true", skip_tests="true")
    assert status == 201, resp
    pack = resp["data"]["pack"]
    assert set(pack) >= PACK_FIELDS
    assert pack["ref"] == ref
    assert pack["conf_schema"]["properties"]["mode"] == {"type": "string"}
    assert (pack["config"], pack["meta"], pack["tags"]) == (
        {"mode": "test"},
        {"category": "testing"},
        ["a", "b"],
    )
    assert pack["runtime_deps"] == ["python3"]

    status, actions = await get(api, f"/api/v1/actions?pack_ref={ref}")
    by_name = {a["ref"].split(".", 1)[1]: a for a in actions["items"]}
    assert set(by_name["hello"]) >= ACTION_FIELDS, ACTION_FIELDS - set(by_name["hello"])
    assert by_name["hello"]["pack"] == pack["id"]
    assert by_name["hello"]["runtime_ref"] == "shell"
    assert by_name["hello"]["is_adhoc"] is False
    # Parameters read back in Attune's flat form; ours (JSON Schema) beside it.
    assert by_name["hello"]["param_schema"] == {"who": {"type": "string", "default": "world"}}
    assert by_name["hello"]["param_json_schema"]["properties"]["who"]["default"] == "world"
    # A runner this server does not have: loaded, disabled, with the reason.
    assert by_name["js"]["enabled"] is False
    assert "runtime 'node' is not available" in by_name["js"]["disabled_reason"]
    status, refused = await post(
        api, "/api/v1/executions/execute", {"action_ref": f"{ref}.js", "parameters": {}}
    )
    assert "runtime 'node' is not available" in assert_error(status, refused, 400)

    status, ran = await post(
        api, "/api/v1/executions/execute", {"action_ref": f"{ref}.hello", "parameters": {}}
    )
    assert status == 201, ran
    done = await wait_for_status(api, ran["data"]["id"], "completed")
    assert json.loads(done["result"]["stdout"].removeprefix("hello ")) == {"who": "world"}

    # The same ref again: 409 without force, replaced with it.
    status, again = await _upload(api, archive)
    assert_error(status, again, 409)
    status, again = await _upload(api, archive, force="true")
    assert status == 201, again


def _member(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    else:
        info.size = 1
    return info


@pytest.mark.parametrize(
    ("member", "named"),
    [
        (_member("../escape.txt", tarfile.REGTYPE), "outside the destination"),
        (_member("actions/passwd", tarfile.SYMTYPE), "not a plain file"),
    ],
    ids=["dot-dot", "symlink"],
)
async def test_an_archive_that_reaches_outside_its_folder_is_refused(
    api: aiohttp.ClientSession, tmp_path: Path, member: tarfile.TarInfo, named: str
) -> None:
    archive = _tarball(_pack_dir(tmp_path, f"bad_{uuid.uuid4().hex[:6]}"), extra=member)
    status, resp = await _upload(api, archive, force="true")
    assert named in assert_error(status, resp, 400)


async def test_upload_without_the_archive_or_pack_yaml_is_a_400(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    form = aiohttp.FormData()
    form.add_field("force", "true")
    async with api.post("/api/v1/packs/upload", data=form) as resp:
        assert "'pack'" in assert_error(resp.status, await resp.json(), 400)
    (tmp_path / "empty").mkdir()
    status, resp = await _upload(api, _tarball(tmp_path / "empty"))
    assert "pack.yaml" in assert_error(status, resp, 400)


async def test_an_archive_over_the_limit_is_a_413_naming_it(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pack = _pack_dir(tmp_path, f"big_{uuid.uuid4().hex[:6]}")
    (pack / "actions" / "noise.bin").write_bytes(os.urandom(MAX_UPLOAD_BYTES))
    status, resp = await _upload(api, _tarball(pack), force="true")
    assert str(MAX_UPLOAD_BYTES) in assert_error(status, resp, 413, "PAYLOAD_TOO_LARGE")


async def test_a_broken_yaml_file_is_refused_naming_its_file_and_line(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pack = _pack_dir(tmp_path, f"broken_{uuid.uuid4().hex[:6]}")
    (pack / "actions" / "bad.yaml").write_text("name: bad\nentry_point: [oops\n")
    status, resp = await post(api, "/api/v1/packs/register", {"path": str(pack)})
    message = assert_error(status, resp, 400)
    assert f"{pack / 'actions' / 'bad.yaml'}:3:1: invalid YAML" in message


async def test_create_and_delete_a_pack(api: aiohttp.ClientSession) -> None:
    ref = f"made_{uuid.uuid4().hex[:8]}"
    body = {"ref": ref, "label": "Made", "version": "0.3.0", "tags": ["x"], "is_standard": False}
    status, resp = await post(api, "/api/v1/packs", body)
    assert status == 201, resp
    assert set(resp["data"]) >= PACK_FIELDS
    assert (resp["data"]["tags"], resp["data"]["conf_schema"]) == (["x"], {})
    status, resp = await post(api, "/api/v1/packs", body)
    assert_error(status, resp, 409)

    action = {"ref": f"{ref}.job", "pack_ref": ref, "label": "Job"}
    status, resp = await post(
        api, "/api/v1/actions", {**action, "entrypoint": "echo hi", "runtime_ref": "core.shell"}
    )
    assert status == 201, resp
    async with api.delete(f"/api/v1/packs/{ref}") as deleted:
        assert deleted.status == 200
        assert (await deleted.json())["success"] is True
    for path in (f"/api/v1/packs/{ref}", f"/api/v1/actions/{ref}.job"):
        status, resp = await get(api, path)
        assert_error(status, resp, 404)
    async with api.delete(f"/api/v1/packs/{ref}") as again:
        assert again.status == 404


async def test_an_action_as_attunes_clients_create_it_runs_from_its_pack_file(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    """``entrypoint`` names a file of the pack; no ``runtime_ref``: the runner follows the
    extension (``.py``: python), as Attune's does; an empty schema accepts any parameters."""
    status, _ = await post(api, "/api/v1/packs/register", {"path": str(TEST_PACK), "force": True})
    assert status == 201
    ref = f"test_pack.attune_{uuid.uuid4().hex[:8]}"
    body = {
        "ref": ref,
        "pack_ref": "test_pack",
        "label": "Echo",
        "description": None,
        "entrypoint": "actions/echo.py",
        "param_schema": {},
        "out_schema": {"type": "object"},
        "required_worker_runtimes": {},
    }
    status, resp = await post(api, "/api/v1/actions", body)
    assert status == 201, resp
    action = resp["data"]
    assert set(action) >= ACTION_FIELDS
    assert (action["entrypoint"], action["runtime_ref"]) == ("actions/echo.py", "core.python")
    assert (action["out_schema"], action["is_adhoc"]) == ({"type": "object"}, True)

    params = {"message": "from attune", "count": 2, "extra": True}
    status, ran = await post(
        api, "/api/v1/executions/execute", {"action_ref": ref, "parameters": params}
    )
    assert status == 201, ran
    assert ran["data"]["config"] == params
    done = await wait_for_status(api, ran["data"]["id"], "completed")
    assert json.loads(done["result"]["stdout"])["repeated"] == ["from attune", "from attune"]

    # Attune's update sends only what changes.
    async with api.put(f"/api/v1/actions/{ref}", json={"label": "Renamed"}) as resp_put:
        changed = (await resp_put.json())["data"]
        assert resp_put.status == 200, changed
    assert (changed["label"], changed["entrypoint"]) == ("Renamed", "actions/echo.py")
    assert changed["out_schema"] == {"type": "object"}


@pytest.mark.parametrize(
    ("body", "status_code", "named"),
    [
        ({"entrypoint": "no_such_file.sh"}, 400, "no_such_file.sh"),
        ({}, 400, "entrypoint"),
        ({"entrypoint": "actions/echo.py", "pack_ref": "other"}, 400, "pack_ref"),
        ({"entrypoint": "echo " + "x" * 300}, 400, "is not a file"),  # too long for a name
    ],
)
async def test_actions_that_cannot_run_are_refused_with_the_reason(
    api: aiohttp.ClientSession, body: dict[str, Any], status_code: int, named: str
) -> None:
    ref = f"test_pack.bad_{uuid.uuid4().hex[:6]}"
    status, resp = await post(api, "/api/v1/actions", {"ref": ref, "label": "x", **body})
    assert named in assert_error(status, resp, status_code)


async def test_executions_filter_by_pack_and_enforcement(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    status, ran = await post(
        api, "/api/v1/executions/execute", {"action_ref": "core.noop", "parameters": {}}
    )
    assert status == 201, ran
    status, mine = await get(api, "/api/v1/executions?pack_name=core&per_page=100")
    assert ran["data"]["id"] in {e["id"] for e in mine["items"]}
    assert all(e["action_ref"].startswith("core.") for e in mine["items"])
    status, none = await get(api, "/api/v1/executions?enforcement=999999999")
    assert (status, none["items"], none["pagination"]["total_items"]) == (200, [], 0)


async def test_core_echo_without_a_message_prints_an_empty_line_as_attunes_does(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    """Attune's core.echo takes ``message`` as optional; its timer fixtures run it bare."""
    status, ran = await post(api, "/api/v1/executions/execute", {"action_ref": "core.echo"})
    assert status == 201, ran
    done = await wait_for_status(api, ran["data"]["id"], "completed")
    assert done["result"]["stdout"] == "\n"


async def test_an_inline_script_longer_than_a_file_name_is_an_inline_script(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    ref = f"test_pack.long_{uuid.uuid4().hex[:6]}"
    script = 'echo "port=$port"; : ' + "x" * 400
    body = {"ref": ref, "label": "x", "entrypoint": script, "runtime_ref": "core.shell"}
    status, resp = await post(api, "/api/v1/actions", body)
    assert status == 201, resp
    status, ran = await post(
        api, "/api/v1/executions/execute", {"action_ref": ref, "parameters": {"port": 80}}
    )
    assert status == 201, ran
    done = await wait_for_status(api, ran["data"]["id"], "completed")
    assert done["result"]["stdout"] == "port=80\n"


async def test_a_new_version_of_a_pack_drops_the_rules_and_triggers_it_no_longer_has(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ref = f"ver_{uuid.uuid4().hex[:8]}"
    pack = _pack_dir(tmp_path, ref)
    (pack / "triggers").mkdir()
    (pack / "rules").mkdir()
    (pack / "triggers" / "evt.yaml").write_text("name: evt\ntype: webhook\n")
    (pack / "rules" / "old.yaml").write_text(
        f"name: old\ntrigger_ref: {ref}.evt\naction_ref: {ref}.hello\n"
    )
    status, resp = await _upload(api, _tarball(pack), force="true")
    assert status == 201, resp
    mine = {"ref": f"{ref}.mine", "pack_ref": ref, "label": "Mine"}
    mine |= {"trigger_ref": "core.intervaltimer", "action_ref": "core.noop"}
    status, resp = await post(
        api, "/api/v1/rules", {**mine, "trigger_params": {"unit": "hours", "interval": 1}}
    )
    assert status == 201, resp

    (pack / "rules" / "old.yaml").unlink()
    (pack / "triggers" / "evt.yaml").unlink()
    status, resp = await _upload(api, _tarball(pack), force="true")
    assert status == 201, resp
    for gone in (f"/api/v1/rules/{ref}.old", f"/api/v1/triggers/{ref}.evt"):
        status, body = await get(api, gone)
        assert_error(status, body, 404)
    status, body = await get(api, f"/api/v1/rules/{ref}.mine")  # made over the API: kept
    assert status == 200, body


async def test_an_executions_executor_is_an_identity_to_look_up(
    api: aiohttp.ClientSession, viewer_token: str, base_url: str
) -> None:
    """Attune's UI links an execution's ``executor`` to ``/identities/{id}``."""
    status, ran = await post(api, "/api/v1/executions/execute", {"action_ref": "core.noop"})
    assert status == 201, ran
    status, who = await get(api, f"/api/v1/identities/{ran['data']['executor']}")
    assert status == 200, who
    identity = who["data"]
    assert (identity["login"], identity["frozen"], identity["role"]) == ("admin", False, "admin")
    assert identity["roles"][0]["role"] == "admin"
    status, listed = await get(api, "/api/v1/identities")
    assert "admin" in {i["login"] for i in listed["items"]}
    async with client(base_url, viewer_token) as viewer:
        status, body = await get(viewer, "/api/v1/identities")
        assert_error(status, body, 403)  # the list is an admin's
        status, body = await get(viewer, f"/api/v1/identities/{identity['id']}")
        assert status == 200, body
    status, body = await get(api, "/api/v1/identities/999999")
    assert_error(status, body, 404)
