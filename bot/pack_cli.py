"""``attune pack register|list|remove``: the pack catalogue from the command line, on the same
database the server uses (what the API's ``/api/v1/packs`` endpoints do, without a token)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.arguments import add_command
from config import Settings


def add_pack_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pack = add_command(
        sub,
        "pack",
        "packs: register a folder, list, remove",
        details="On the database the server uses (what /api/v1/packs does, without a token).",
        examples=["attune pack register ./packs/ops", "attune pack list"],
    )
    verbs = pack.add_subparsers(dest="pack_command", required=True, metavar="TASK")
    register = add_command(
        verbs,
        "register",
        "register (or with --force, update) a pack folder",
        examples=["attune pack register ./packs/ops", "attune pack register ./packs/ops --force"],
    )
    register.add_argument("path", type=Path, help="the folder holding pack.yaml")
    register.add_argument("--force", action="store_true", help="replace a registered pack")
    add_command(verbs, "list", "the registered packs", examples=["attune pack list"])
    remove = add_command(
        verbs,
        "remove",
        "unregister a pack, its actions, triggers and rules",
        examples=["attune pack remove ops"],
    )
    remove.add_argument("ref", help="the pack's ref (its pack.yaml `ref`)")


async def run_pack_command(settings: Settings, args: argparse.Namespace) -> int:
    from engine.runtime import build_runtime

    runtime = await build_runtime(settings, sync_packs=False, ensure_admin=False)
    try:
        if args.pack_command == "register":
            path = args.path.expanduser().resolve()
            pack = await runtime.register_pack(path, force=args.force)
            print(f"registered {pack.ref} {pack.version} ({pack.action_count} actions)")
        elif args.pack_command == "list":
            packs = await runtime.catalog.packs()
            width = max([len(p.ref) for p in packs] + [4])
            print(f"{'REF':<{width}}  {'VERSION':<10}  ACTIONS  PATH")
            for p in packs:
                print(f"{p.ref:<{width}}  {p.version:<10}  {p.action_count:>7}  {p.path or '-'}")
        else:
            await runtime.remove_pack(args.ref)
            print(f"removed {args.ref}")
    finally:
        await runtime.close()
    return 0
