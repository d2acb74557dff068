"""Packs and actions over the API, as Attune's clients call them: ``/api/v1/packs`` (create,
register a folder, upload a tarball, delete) and ``/api/v1/actions`` (create, replace, delete)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.api import schemas as s
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, page_of
from engine.api.routes import requester
from engine.api.uploads import receive_pack_archive
from engine.catalog import action_record, pack_record
from engine.concurrency import undeclared
from engine.errors import Forbidden, InvalidRequest, NotFound, PackError
from engine.packs import ActionSpec, PackSpec, resolve_entry, runner_for
from engine.params import normalize_schema

# -- packs ------------------------------------------------------------------------------------


async def list_packs(call: Call) -> Any:
    packs = [pack_record(p) for p in await call.runtime.catalog.packs()]
    return page_of(packs, *call.paging())


async def get_pack(call: Call) -> Any:
    return {"data": pack_record(await call.runtime.catalog.pack(call.path_param("ref")))}


async def create_pack(call: Call) -> Any:
    body: s.CreatePackRequest = call.body
    spec = PackSpec(
        ref=body.ref,
        label=body.label,
        description=body.description or "",
        version=body.version,
        conf_schema=body.conf_schema or {},
        config=body.config or {},
        meta=body.meta or {},
        tags=tuple(body.tags),
        runtime_deps=tuple(body.runtime_deps),
        dependencies=tuple(body.dependencies),
        is_standard=body.is_standard,
    )
    return {"data": pack_record(await call.runtime.catalog.create_pack(spec))}


async def register_pack(call: Call) -> Any:
    body: s.RegisterPackRequest = call.body
    path = Path(body.path)
    if not path.is_absolute():
        raise InvalidRequest("path must be an absolute path on the server")
    try:
        found = (path / "pack.yaml").is_file()
    except (OSError, ValueError):  # a name the file system cannot hold (NUL, bad encoding)
        found = False
    if not found:
        raise InvalidRequest(f"no pack.yaml in '{body.path[:300]}'")
    pack = await call.runtime.register_pack(path, force=body.force)
    return {"data": pack_record(pack), "message": "Pack registered successfully"}


async def upload_pack(call: Call) -> Any:
    """A ``.tar.gz`` in the multipart field ``pack`` (Attune's upload): unpacked safely into
    the data folder's ``packs/<ref>`` and registered."""
    rt = call.runtime
    upload = await receive_pack_archive(call.request, rt.settings)
    pack = await rt.install_pack_archive(upload.archive, force=upload.force)
    return {
        "data": {"pack": pack_record(pack), "test_result": None, "tests_skipped": True},
        "message": "Pack uploaded and registered successfully",
    }


async def delete_pack(call: Call) -> Any:
    ref = call.path_param("ref")
    await call.runtime.remove_pack(ref)
    return {"success": True, "message": f"Pack '{ref}' deleted"}


async def list_pack_actions(call: Call) -> Any:
    ref = call.path_param("ref")
    await call.runtime.catalog.pack(ref)
    actions = [action_record(a) for a in await call.runtime.catalog.actions(ref)]
    return page_of(actions, *call.paging())


# -- actions ----------------------------------------------------------------------------------


async def list_actions(call: Call) -> Any:
    found = await call.runtime.catalog.actions(call.request.query.get("pack_ref"))
    items = [action_record(a) for a in found]
    return page_of(items, *call.paging())


async def get_action(call: Call) -> Any:
    return {"data": action_record(await call.runtime.catalog.action(call.path_param("ref")))}


def _split_ref(ref: str, pack_ref: str | None) -> tuple[str, str]:
    """``(pack_ref, name)`` of an action ref; with ``pack_ref`` given the ref must start with
    it (Attune's clients send both)."""
    if pack_ref:
        if not ref.startswith(f"{pack_ref}.") or len(ref) == len(pack_ref) + 1:
            raise InvalidRequest(f"ref '{ref}' does not belong to pack_ref '{pack_ref}'")
        return pack_ref, ref[len(pack_ref) + 1 :]
    pack, _, name = ref.partition(".")
    return pack, name


async def _pack_folder(call: Call, pack_ref: str) -> Path | None:
    try:
        pack = await call.runtime.catalog.pack(pack_ref)
    except NotFound:
        return None
    return Path(pack.path).resolve() if pack.path else None


def _file_in(base: Path | None, entry: str) -> str | None:
    """``entry`` as a path relative to the pack folder when it names a file inside it (tried
    as given and under ``actions/``, as Attune's worker resolves it); None when it names
    nothing in the pack (an inline script). A file in the pack that is not, after symbolic
    links, under its ``actions/`` folder is refused (400, naming it)."""
    if base is None or not entry or "\n" in entry or len(entry) > 4096:
        return None
    for candidate in (base / entry, base / "actions" / entry):
        try:  # an inline script is no file name: too long, NUL, bad encoding
            inside = Path(os.path.normpath(candidate)).is_relative_to(base)
            if not inside or not (candidate.exists() or candidate.is_symlink()):
                continue
        except (OSError, ValueError):
            return None
        try:
            target = resolve_entry(base, entry)
        except PackError as exc:
            raise InvalidRequest(exc.message) from None
        return str(target.relative_to(base)) if target.is_file() else None
    return None


async def _action_spec(call: Call, body: s.ActionWrite) -> ActionSpec:
    pack_ref, name = _split_ref(body.ref, body.pack_ref)
    if body.param_schema is not None and body.parameters is not None:
        raise InvalidRequest("give either param_schema or parameters, not both")
    try:
        schema = normalize_schema(
            body.param_schema if body.param_schema is not None else body.parameters
        )
    except PackError as exc:
        raise InvalidRequest(exc.message) from None
    runtime = body.runtime_ref or body.runner_type
    entry = body.entrypoint if body.entrypoint is not None else body.entry_point
    if not entry:
        raise InvalidRequest(
            "an action needs an 'entrypoint': a script file in its pack's folder, or an inline "
            "script with 'runtime_ref' (core.shell or core.python)"
        )
    common: dict[str, Any] = dict(
        ref=body.ref,
        pack_ref=pack_ref,
        name=name,
        label=body.label or name,
        description=body.description or "",
        param_schema=schema,
        out_schema=body.out_schema,
        parameter_delivery=body.parameter_delivery,
        parameter_format=body.parameter_format,
        output_format=body.output_format,
        timeout_s=body.timeout_seconds,
        confirm=body.confirm,
        max_retries=body.max_retries,
        runtime_ref=runtime,
        concurrency=body.concurrency,
    )
    if body.concurrency is not None and (missing := undeclared(body.concurrency, schema)):
        raise InvalidRequest(f"concurrency.parameters: '{missing}' is not a parameter")
    base = await _pack_folder(call, pack_ref)
    relative = _file_in(base, entry)
    if relative is not None:
        runner, unavailable = runner_for(runtime, relative)
        return ActionSpec(
            runner_type=runner,
            entry_point=relative,
            base_dir=str(base),
            enabled=body.enabled and unavailable is None,
            disabled_reason=unavailable,
            **common,
        )
    if body.entrypoint is None or runtime is None:
        where = f"pack '{pack_ref}'" + ("" if base else " (which has no folder on the server)")
        raise InvalidRequest(
            f"entrypoint '{entry[:200]}' is not a file in {where}; for an inline script give "
            "'runtime_ref' (core.shell or core.python)"
        )
    if not call.caller.is_admin:
        raise Forbidden("creating an action with an inline script needs the admin role")
    runner, unavailable = runner_for(runtime, None)
    return ActionSpec(
        runner_type=runner,
        script=entry,
        enabled=body.enabled and unavailable is None,
        disabled_reason=unavailable,
        **common,
    )


def _not_a_workflow(spec: ActionSpec) -> None:
    """A workflow's action changes with its workflow (``/api/v1/workflows/{ref}``)."""
    if spec.runtime_ref == "workflow":
        raise InvalidRequest(
            f"'{spec.ref}' is a workflow: change or delete it at /api/v1/workflows/{spec.ref}"
        )


async def create_action(call: Call) -> Any:
    await call.runtime.gate.manage(requester(call), call.body.ref, "create_action")
    spec = await _action_spec(call, call.body)
    return {"data": await call.runtime.catalog.create_action(spec)}


async def update_action(call: Call) -> Any:
    """Attune's update sends only what changes: the stored action fills in the rest."""
    ref = call.path_param("ref")
    existing = await call.runtime.catalog.action(ref)
    await call.runtime.gate.manage(requester(call), ref, "update_action")
    _not_a_workflow(existing.spec)
    if existing.spec.script is not None and not call.caller.is_admin:
        raise Forbidden("changing an action with an inline script needs the admin role")
    given = call.body.model_dump(exclude_unset=True)
    if given.get("ref", ref) != ref:
        raise InvalidRequest(f"body ref '{given['ref']}' differs from the URL's '{ref}'")
    current = action_record(existing)
    merged: dict[str, Any] = {
        "ref": ref,
        "pack_ref": current["pack_ref"],
        "label": current["label"],
        "description": current["description"],
        "param_schema": current["param_json_schema"],
        "out_schema": current["out_schema"],
        "parameter_delivery": current["parameter_delivery"],
        "parameter_format": current["parameter_format"],
        "output_format": current["output_format"],
        "timeout_seconds": current["timeout_seconds"],
        "enabled": current["enabled"] or current["disabled_reason"] is not None,
        "confirm": current["confirm"],
        "concurrency": current["concurrency"],
        "max_retries": current["max_retries"],
        "runtime_ref": current["runtime_ref"],
        "entrypoint": current["entrypoint"] or None,
    }
    if "parameters" in given:
        merged.pop("param_schema")
    merged.update(given)
    spec = await _action_spec(call, s.ActionWrite.model_validate(merged))
    record = await call.runtime.catalog.update_action(ref, spec)
    await call.runtime.automation.seal_rule_secrets(ref)  # a parameter may have become secret
    return {"data": record}


async def delete_action(call: Call) -> Any:
    ref = call.path_param("ref")
    existing = await call.runtime.catalog.action(ref)  # 404 before 403, as update does
    await call.runtime.gate.manage(requester(call), ref, "delete_action")
    _not_a_workflow(existing.spec)
    await call.runtime.catalog.delete_action(ref)
    return web.Response(status=204)


P, A = ("packs",), ("actions",)

CATALOG_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/packs",
        list_packs,
        "List packs",
        response=s.Page[s.Pack],
        query=PAGING,
        errors=(401,),
        tags=P,
    ),
    RouteSpec(
        "POST",
        "/api/v1/packs",
        create_pack,
        "Create an empty pack (actions are then added over the API)",
        "admin",
        body=s.CreatePackRequest,
        response=s.Single[s.Pack],
        status=201,
        errors=(400, 401, 403, 409),
        tags=P,
    ),
    RouteSpec(
        "POST",
        "/api/v1/packs/register",
        register_pack,
        "Register a pack folder on the server (its actions, triggers and rules)",
        "admin",
        body=s.RegisterPackRequest,
        response=s.Single[s.Pack],
        status=201,
        errors=(400, 401, 403, 409),
        tags=P,
    ),
    RouteSpec(
        "POST",
        "/api/v1/packs/upload",
        upload_pack,
        "Upload a pack as a .tar.gz (multipart field 'pack'; fields 'force', 'skip_tests')",
        "admin",
        response=s.Single[s.PackInstalled],
        status=201,
        errors=(400, 401, 403, 409, 413),
        tags=P,
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}",
        get_pack,
        "Get a pack",
        response=s.Single[s.Pack],
        errors=(401, 404),
        tags=P,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/packs/{ref}",
        delete_pack,
        "Remove a pack with its actions, triggers and rules (executions are kept)",
        "admin",
        response=s.Success,
        errors=(401, 403, 404),
        tags=P,
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}/actions",
        list_pack_actions,
        "A pack's actions",
        response=s.Page[s.Action],
        query=PAGING,
        errors=(401, 404),
        tags=P,
    ),
    RouteSpec(
        "GET",
        "/api/v1/actions",
        list_actions,
        "List actions",
        response=s.Page[s.Action],
        query=(QueryParam("pack_ref", "string", "Only this pack's actions"), *PAGING),
        errors=(401,),
        tags=A,
    ),
    RouteSpec(
        "POST",
        "/api/v1/actions",
        create_action,
        "Create an action",
        "operator",
        body=s.ActionWrite,
        response=s.Single[s.Action],
        status=201,
        errors=(400, 401, 403, 409),
        tags=A,
    ),
    RouteSpec(
        "GET",
        "/api/v1/actions/{ref}",
        get_action,
        "Get an action",
        response=s.Single[s.Action],
        errors=(401, 404),
        tags=A,
    ),
    RouteSpec(
        "PUT",
        "/api/v1/actions/{ref}",
        update_action,
        "Change an action (fields not given keep their value)",
        "operator",
        body=s.ActionUpdate,
        response=s.Single[s.Action],
        errors=(400, 401, 403, 404),
        tags=A,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/actions/{ref}",
        delete_action,
        "Delete an action",
        "operator",
        status=204,
        raw=True,
        errors=(401, 403, 404),
        tags=A,
    ),
]
