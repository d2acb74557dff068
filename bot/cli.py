"""The ``attune`` command line: wires processes together from settings.

attune --version                 this installation's version
attune serve [--host H --port P] API, bot, worker and sweep in one process
attune worker                    a worker alone (PostgreSQL + RabbitMQ)
attune health [--http|--worker]  container health check: exit 0 when alive
attune run pack.action k=v       run one action and print its result (--url: on a server)
attune chat [--plain]            the chat in a terminal (no Slack needed)
attune callback-secret           the key that signs callback deliveries
attune audit [--actor A]         the audit log
attune purge --older-than DAYS   keep the tables bounded
attune db upgrade                apply database migrations
attune token create --name N     a long-lived API token
attune user create|list|set-role|set-password|disable|enable   users and roles

Every command's ``--help`` explains its arguments and shows examples.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import math
import os
import shlex
import sys
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from bot.arguments import add_command, port_number, positive_number
from bot.health_cli import add_health_parser, run_health
from bot.pack_cli import add_pack_parser, run_pack_command
from bot.user_cli import ROLES, add_user_parser, run_user_command
from config import Settings, load_settings
from engine.errors import EngineError
from engine.logs import configure_logging
from engine.status import TERMINAL, ExecutionStatus


class BadArguments(Exception):
    """Arguments argparse accepted but the command cannot use: exit 2 with ``message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` arguments as parameters (values stay text: the action's schema coerces
    them); :class:`BadArguments` naming the first that is not one."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadArguments(
                f"attune run: expected key=value, got {shlex.quote(pair)} "
                "(a value with spaces is one argument: key='two words')"
            )
        params[key] = value
    return params


async def _run(
    settings: Settings,
    ref: str,
    params: dict[str, Any],
    wait: bool,
    as_json: bool,
    timeout_s: float | None = None,
) -> int:
    from engine.changes import ChangeFeed
    from engine.gate import Requester, Submitted
    from engine.runtime import build_runtime

    embedded = not settings.amqp_url
    runtime = await build_runtime(settings, ensure_admin=False)
    feed = ChangeFeed(runtime.store, runtime.service.notifier)
    try:
        if embedded:  # nobody else shares our in-process broker: run it here
            await runtime.start_worker(housekeeping=False)
        import getpass

        # Whoever can run this command can read the database and the secret key: admin. It
        # goes through the gate all the same, so the run is in the audit log.
        who = Requester(identity=getpass.getuser(), role="admin", source="cli")
        outcome = await runtime.gate.run(who, ref, params)
        assert isinstance(outcome, Submitted)  # confirmations are asked in chat only
        record = outcome.record
        if not (wait or embedded):
            _print(record.as_dict(), as_json, queued=True)
            return 0
        # Follow the change feed (woken by this process's changes, reading the others' from
        # the database every 0.25 s); the state is read once after subscribing.
        execution_id = record.id
        sub = feed.subscribe(lambda e: e.id == execution_id)
        record = await runtime.service.get(execution_id)
        try:
            async with asyncio.timeout(timeout_s):
                while ExecutionStatus(record.status) not in TERMINAL:
                    change = await sub.next()
                    if change is None:  # dropped (cannot happen for one execution): re-read
                        sub = feed.subscribe(lambda e: e.id == execution_id)
                        record = await runtime.service.get(execution_id)
                    else:
                        record = change.execution
        except TimeoutError:
            print(
                f"attune run: execution {execution_id} is still {record.status} after "
                f"{timeout_s:g} s",
                file=sys.stderr,
            )
            return 3
        _print(record.as_dict(), as_json)
        return 0 if record.status == "completed" else 1
    finally:
        await feed.close()
        await runtime.close()


def _run_remote(args: argparse.Namespace, url: str, params: dict[str, Any]) -> int:
    from bot.remote_run import RemoteError, RemoteRun

    token = args.token or os.environ.get("ATTUNE_TOKEN")
    if not token:
        print("attune run: --url needs --token (or ATTUNE_TOKEN)", file=sys.stderr)
        return 2
    try:
        remote = RemoteRun(url, token)
        record = asyncio.run(
            remote.run(
                args.action_ref,
                params,
                wait=args.wait,
                timeout_s=args.timeout,
                show=lambda r, queued: _print(r, args.json, queued),
            )
        )
    except RemoteError as exc:
        print(f"attune run: {exc.message}", file=sys.stderr)
        return exc.code
    return 0 if not args.wait or record["status"] == "completed" else 1


def _iso(value: Any) -> str:
    """JSON for what json cannot encode: datetimes in ISO 8601, as the API writes them."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _print(record: Mapping[str, Any], as_json: bool, queued: bool = False) -> None:
    """An execution record (its fields by name) as the user reads it."""
    if as_json:
        print(json.dumps(record, default=_iso, indent=2))
        return
    if queued:
        print(f"execution {record['id']} {record['action_ref']} queued")
        return
    result = record["result"] or {}
    print(
        f"execution {record['id']} {record['action_ref']}: {record['status']}"
        f" in {result.get('duration_ms', 0)} ms"
    )
    if result.get("stdout"):
        sys.stdout.write(
            result["stdout"] if result["stdout"].endswith("\n") else result["stdout"] + "\n"
        )
    if result.get("stderr"):
        sys.stderr.write(result["stderr"])
    if result.get("error"):
        print(f"error: {result['error']}", file=sys.stderr)


async def _audit(
    settings: Settings,
    actor: str | None,
    verb: str | None,
    outcome: str | None,
    limit: int,
    as_json: bool,
) -> int:
    from engine.runtime import build_runtime

    runtime = await build_runtime(settings, sync_packs=False, ensure_admin=False)
    try:
        entries, total = await runtime.audit.list(
            actor=actor, verb=verb, outcome=outcome, per_page=limit
        )
    finally:
        await runtime.close()
    if as_json:
        print(json.dumps(list(reversed(entries)), default=_iso, indent=2))  # oldest first
        return 0
    for e in reversed(entries):
        where = e["source"] + (f"/{e['channel']}" if e["channel"] else "")
        line = (
            f"{e['at']:%Y-%m-%d %H:%M:%S} {e['actor']} ({e['role'] or '-'}, {where}) "
            f"{e['verb']} {e['target'] or ''} -> {e['outcome']}"
        )
        if e["execution_id"]:
            line += f" #{e['execution_id']}"
        if e["parameters"]:
            line += " " + json.dumps(e["parameters"], default=str)
        if e["detail"]:
            line += f" ({e['detail']})"
        print(line)
    print(f"{len(entries)} of {total} entries")
    return 0


async def _purge(settings: Settings, days: float, include_audit: bool) -> int:
    from engine.purge import purge
    from engine.storage import build_store

    store = build_store(settings.database_url)
    try:
        await store.upgrade()
        counts = await purge(store, days, include_audit=include_audit)
    finally:
        await store.close()
    print(
        ", ".join(f"{n} {table}" for table, n in counts.items()) + f" older than {days:g} days "
        "deleted"
    )
    return 0


async def _callback_secret(settings: Settings) -> int:
    from engine.runtime import build_runtime

    runtime = await build_runtime(settings, sync_packs=False, ensure_admin=False)
    try:
        print(runtime.callback_secret().decode())
    finally:
        await runtime.close()
    return 0


async def _db_upgrade(settings: Settings) -> int:
    from engine.storage import build_store

    store = build_store(settings.database_url)
    try:
        await store.upgrade()
    finally:
        await store.close()
    print(f"database at {settings.database_url} is up to date")
    return 0


async def _token_create(
    settings: Settings, login: str, name: str, role: str | None, ttl_days: float | None
) -> int:
    from engine.runtime import build_runtime

    runtime = await build_runtime(settings, sync_packs=False)
    try:
        ttl_s = math.ceil(ttl_days * 86400) if ttl_days else None
        token = await runtime.auth.issue_token(
            login,
            name=name,
            role=role,  # type: ignore[arg-type]
            ttl_s=ttl_s,
        )
    finally:
        await runtime.close()
    print(token)
    return 0


#: Shortest token lifetime ``--ttl-days`` accepts: anything shorter rounded to 0 s, which
#: meant "never expires".
MIN_TOKEN_TTL_S = 60
#: Longest: 100 years (past that the expiry date overflows).
MAX_TOKEN_TTL_DAYS = 36500


def _ttl_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TOKEN_TTL_DAYS:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TOKEN_TTL_DAYS}")
    if value * 86400 < MIN_TOKEN_TTL_S:
        raise argparse.ArgumentTypeError(
            f"{text} days is under {MIN_TOKEN_TTL_S} s; give at least "
            f"{math.ceil(MIN_TOKEN_TTL_S / 86400 * 1e4) / 1e4} days, "
            "or leave it out for a token that never expires"
        )
    return value


def _version() -> str:
    """This installation's version, from its package metadata."""
    try:
        return metadata.version("attune-chatops")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attune",
        description="Attune chat-ops: run automation from Slack, a terminal chat or a REST API.",
        epilog='Settings come from ATTUNE_* environment variables (README, "Configuration").\n'
        "`attune COMMAND --help` explains a command's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"attune {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = add_command(
        sub,
        "serve",
        "API, Slack app, worker and sweep in one process, until SIGINT or SIGTERM",
        details="--host and --port override ATTUNE_HTTP_HOST and ATTUNE_HTTP_PORT.",
        examples=[
            "attune serve",
            "attune serve --host 0.0.0.0 --port 9000",
            "attune serve --no-worker      # API only; workers run as `attune worker`",
        ],
    )
    serve.add_argument(
        "--host",
        default=None,
        help="the address to listen on (default: ATTUNE_HTTP_HOST, else 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="the port to listen on; 0 picks a free one (default: ATTUNE_HTTP_PORT, else 8080)",
    )
    serve.add_argument(
        "--no-worker", action="store_true", help="API only (workers run as `attune worker`)"
    )
    add_command(
        sub,
        "worker",
        "run workers only (shared PostgreSQL and RabbitMQ)",
        details="Needs ATTUNE_DATABASE_URL and ATTUNE_AMQP_URL shared with `attune serve`.",
        examples=["ATTUNE_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ attune worker"],
    )
    add_health_parser(sub)
    run = add_command(
        sub,
        "run",
        "run an action and print its result",
        details="Exit status: 0 completed, 1 ended otherwise, 2 bad request (a bad key=value,\n"
        "an unknown action, a refused token, a server that does not answer), 3 --timeout.",
        examples=[
            "attune run examples.greet name=ops",
            'attune run core.echo message="two words" --json',
            "attune run examples.wait seconds=30 --url http://attune:8080 --token $T --wait",
        ],
    )
    run.add_argument("action_ref", metavar="pack.action", help="the action to run")
    run.add_argument(
        "params",
        nargs="*",
        metavar="key=value",
        help="its parameters, each as one argument; values are coerced by the action's schema",
    )
    run.add_argument(
        "--wait",
        action="store_true",
        help="follow the run's changes until it ends and print its result (always so on the "
        "embedded default without --url)",
    )
    run.add_argument(
        "--url",
        default=None,
        help="a server to run it on, over its REST API (default: $ATTUNE_URL; without: this "
        "machine's database)",
    )
    run.add_argument("--token", default=None, help="the API token for --url ($ATTUNE_TOKEN)")
    run.add_argument(
        "--timeout",
        type=positive_number,
        default=None,
        metavar="SECONDS",
        help="with --wait, give up after this long (exit 3; default: wait until it ends)",
    )
    run.add_argument("--json", action="store_true", help="print the execution record as JSON")
    chat = add_command(
        sub,
        "chat",
        "the chat in this terminal, no Slack needed: the same commands and results",
        details="On a terminal: line editing, Tab completion, history across sessions\n"
        "(ATTUNE_CHAT_HISTORY, default $XDG_STATE_HOME/attune/chat_history). From a pipe\n"
        "or with --plain: one command per line, as typed.",
        examples=[
            "attune chat",
            "printf 'run core.echo message=hi\\n' | attune chat",
            "attune chat --no-history",
        ],
    )
    chat.add_argument(
        "--plain",
        action="store_true",
        help="plain lines even on a terminal: no line editing, completion or history file",
    )
    kept = chat.add_mutually_exclusive_group()
    kept.add_argument(
        "--history",
        metavar="FILE",
        default=None,
        help="keep the history in FILE (default: ATTUNE_CHAT_HISTORY, else "
        "$XDG_STATE_HOME/attune/chat_history)",
    )
    kept.add_argument(
        "--no-history",
        dest="history",
        action="store_const",
        const="off",
        help="keep no history file (arrows recall this session's lines only)",
    )
    add_command(
        sub,
        "callback-secret",
        "print the key that signs callback deliveries",
        details="A receiver of results posted to a callback_url checks their signature with it.",
        examples=["attune callback-secret > callback.key"],
    )
    audit = add_command(
        sub,
        "audit",
        "who asked for what, from where, and what came of it (the audit log, oldest first)",
        examples=["attune audit --actor alice --verb run --limit 20", "attune audit --json"],
    )
    audit.add_argument("--actor", help="only this login or Slack user")
    audit.add_argument("--verb", help="only this verb: run, rerun, cancel, confirm, abort, login")
    audit.add_argument("--outcome", help="only this outcome: accepted, denied, refused, ...")
    audit.add_argument(
        "--limit",
        type=int,
        default=50,
        choices=range(1, 201),
        metavar="1-200",
        help="the newest this many entries (default: 50)",
    )
    audit.add_argument("--json", action="store_true", help="print the entries as JSON")
    purge = add_command(
        sub,
        "purge",
        "delete ended executions and processed events",
        details="In batches; ended executions go with their deliveries, events with their\n"
        "enforcements.",
        examples=["attune purge --older-than 30", "attune purge --older-than 90 --audit"],
    )
    purge.add_argument(
        "--older-than",
        type=positive_number,
        required=True,
        metavar="DAYS",
        help="what ended more than this many days ago",
    )
    purge.add_argument("--audit", action="store_true", help="the audit log too")
    db = add_command(sub, "db", "database tasks", examples=["attune db upgrade"])
    add_command(
        db.add_subparsers(dest="db_command", required=True, metavar="TASK"),
        "upgrade",
        "apply the database migrations (also done at every start)",
        examples=["ATTUNE_DATABASE_URL=postgresql+asyncpg://u@db/attune attune db upgrade"],
    )
    add_pack_parser(sub)
    token = add_command(
        sub, "token", "API tokens", examples=["attune token create --name ci --role operator"]
    )
    create = add_command(
        token.add_subparsers(dest="token_command", required=True, metavar="TASK"),
        "create",
        "create a long-lived API token and print it",
        details="It acts as --login with at most that user's role.",
        examples=[
            "attune token create --name ci",
            "attune token create --name grafana --role viewer --ttl-days 90",
        ],
    )
    create.add_argument("--login", default=None, help="the user it acts as (default: the admin)")
    create.add_argument("--name", required=True, help="what the token is for, e.g. ci")
    create.add_argument(
        "--role", choices=ROLES, default=None, help="at most this role (default: the user's)"
    )
    create.add_argument(
        "--ttl-days", type=_ttl_days, default=None, help="expiry in days (default: never)"
    )
    add_user_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    level = settings.log_level
    interactive = (
        "chat",
        "run",
        "callback-secret",
        "token",
        "db",
        "audit",
        "purge",
        "pack",
        "user",
        "health",
    )
    if args.command in interactive and ("ATTUNE_LOG_LEVEL" not in os.environ):
        level = "WARNING"  # interactive commands: the state-change lines would bury the answer
    configure_logging(settings.log_format, level)
    try:
        if args.command == "serve":
            from bot.server import serve

            flags = {"http_host": args.host, "http_port": args.port}
            settings = settings.model_copy(update={k: v for k, v in flags.items() if v is not None})
            try:
                asyncio.run(serve(settings, with_worker=not args.no_worker))
            finally:  # the watchdog armed when stopping began (it covers asyncio.run's end)
                faulthandler.cancel_dump_traceback_later()
            return 0
        if args.command == "worker":
            from bot.server import worker

            try:
                asyncio.run(worker(settings))
            finally:
                faulthandler.cancel_dump_traceback_later()
            return 0
        if args.command == "health":
            return run_health(settings, args)
        if args.command == "chat":
            from bot.terminal import ChatOptions, chat
            from bot.terminal_prompt import history_path

            options = ChatOptions(plain=args.plain, history=history_path(args.history))
            return asyncio.run(chat(settings, options=options))
        if args.command == "purge":
            return asyncio.run(_purge(settings, args.older_than, args.audit))
        if args.command == "audit":
            return asyncio.run(
                _audit(settings, args.actor, args.verb, args.outcome, args.limit, args.json)
            )
        if args.command == "callback-secret":
            return asyncio.run(_callback_secret(settings))
        if args.command == "run":
            params = _parse_params(args.params)
            url = args.url or os.environ.get("ATTUNE_URL")
            if url:
                return _run_remote(args, url, params)
            return asyncio.run(
                _run(settings, args.action_ref, params, args.wait, args.json, args.timeout)
            )
        if args.command == "pack":
            return asyncio.run(run_pack_command(settings, args))
        if args.command == "db":
            return asyncio.run(_db_upgrade(settings))
        if args.command == "user":
            return asyncio.run(run_user_command(settings, args))
        if args.command == "token":
            return asyncio.run(
                _token_create(
                    settings,
                    args.login or settings.admin_login,
                    args.name,
                    args.role,
                    args.ttl_days,
                )
            )
    except EngineError as exc:
        print(f"attune: {exc.message}", file=sys.stderr)
        return 2
    except BadArguments as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
