"""``attune user create|list|set-role|set-password|disable|enable``: users and roles on the
database itself, no server needed (also how a lost admin password is reset)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bot.arguments import add_command
from config import Settings

#: engine.auth.ROLES (not imported: it loads the database layer); ``none`` may do nothing.
ROLES = ["admin", "operator", "viewer", "none"]


def add_user_parser(sub: Any) -> None:
    roles = ROLES
    login = "the user's login"
    user = add_command(
        sub,
        "user",
        "users and roles (also: reset a lost admin password)",
        details="On the database itself: no server needed.",
        examples=[
            "attune user create alice --role operator",
            "attune user set-password admin",
        ],
    )
    cmds = user.add_subparsers(dest="user_command", required=True, metavar="TASK")
    create = add_command(
        cmds,
        "create",
        "create a user; prints a generated password",
        examples=[
            "attune user create alice --role operator --display-name 'Alice B.'",
            "printf '%s\\n' \"$PW\" | attune user create bob --password-stdin",
        ],
    )
    create.add_argument("login", help="the new user's login")
    create.add_argument("--role", choices=roles, default="viewer", help="default: viewer")
    create.add_argument("--display-name", default=None, help="the name shown for the user")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    listing = add_command(
        cmds,
        "list",
        "every user: login, role, enabled or disabled",
        examples=["attune user list", "attune user list --json"],
    )
    listing.add_argument("--json", action="store_true", help="print the users as JSON")
    set_role = add_command(
        cmds,
        "set-role",
        "give a user another role",
        examples=["attune user set-role alice admin"],
    )
    set_role.add_argument("login", help=login)
    set_role.add_argument("role", choices=roles, help="the new role: " + ", ".join(roles))
    set_password = add_command(
        cmds,
        "set-password",
        "set a password (prints a generated one) and end the user's sessions",
        examples=["attune user set-password admin"],
    )
    set_password.add_argument("login", help=login)
    set_password.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin's first line"
    )
    for name, what in (
        ("disable", "no login, sessions ended, every token refused"),
        ("enable", "allow a disabled user again"),
    ):
        add_command(cmds, name, what, examples=[f"attune user {name} alice"]).add_argument(
            "login", help=login
        )


def _read_password(from_stdin: bool) -> tuple[str, bool]:
    """The password given on stdin's first line, or a generated one; and whether generated."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise SystemExit("attune user: --password-stdin read no password")
        return password, False
    from engine.users import generate_password

    return generate_password(), True


async def run_user_command(settings: Settings, args: argparse.Namespace) -> int:
    """``attune user ...`` on the database itself (no server needed): how users are made,
    given roles, and how a lost admin password is reset."""
    import getpass

    from engine.audit import AuditEntry, AuditLog
    from engine.auth import AuthService
    from engine.storage import build_store
    from engine.users import Users

    store = build_store(settings.database_url)
    try:
        await store.upgrade()
        auth = AuthService(store, token_ttl_s=settings.token_ttl_s)
        admin_password = (
            settings.admin_password.get_secret_value() if settings.admin_password else None
        )
        generated_admin = await auth.ensure_admin(settings.admin_login, admin_password)
        if generated_admin:  # a fresh database: the first administrator, as `attune serve` makes
            print(
                f"first administrator '{settings.admin_login}' created with password "
                f"{generated_admin}",
                file=sys.stderr,
            )
        users = Users(auth)
        command: str = args.user_command
        if command == "list":
            everyone = await users.all()
            if args.json:
                rows = [
                    {
                        "id": u.id,
                        "login": u.login,
                        "display_name": u.display_name,
                        "role": u.role,
                        "disabled": u.disabled,
                        "created": u.created.isoformat(),
                    }
                    for u in everyone
                ]
                print(json.dumps(rows, indent=2))
                return 0
            for u in everyone:
                state = "disabled" if u.disabled else "enabled"
                print(f"{u.login}\t{u.role}\t{state}\t{u.display_name or ''}")
            return 0
        password, generated = "", False
        if command in ("create", "set-password"):
            password, generated = _read_password(args.password_stdin)
        if command == "create":
            user = await users.create(args.login, password, args.role, args.display_name)
            done = f"user '{user.login}' created ({user.role})"
        elif command == "set-role":
            user = await users.set_role(args.login, args.role)
            done = f"user '{user.login}' is now {user.role}"
        elif command == "set-password":
            user = await users.set_password(args.login, password)
            done = f"password of '{user.login}' set; their sessions were ended"
        else:
            user = await users.set_disabled(args.login, command == "disable")
            done = f"user '{user.login}' {command}d" + (
                "; their sessions were ended and their tokens are refused" if user.disabled else ""
            )
        await AuditLog(store).record(
            AuditEntry(
                actor=getpass.getuser(),
                role="admin",
                source="cli",
                verb=f"user-{command}",
                outcome="accepted",
                target=user.login,
                detail=f"role {user.role}" if command in ("create", "set-role") else None,
            )
        )
    finally:
        await store.close()
    print(done, file=sys.stderr)
    if generated:
        print(password)  # alone on stdout, the last line, for scripts
    return 0
