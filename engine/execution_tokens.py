"""What an action process gets to call back into the API, as Attune's worker gives it.

Attune's environment for an action: ``ATTUNE_API_URL`` (this server), ``ATTUNE_API_TOKEN`` (a
bearer token scoped to the execution), ``ATTUNE_EXEC_ID``, ``ATTUNE_ACTION``, and for a run a
rule started ``ATTUNE_RULE`` and ``ATTUNE_TRIGGER``. With them a script reads and writes keys::

    curl -H "Authorization: Bearer $ATTUNE_API_TOKEN" "$ATTUNE_API_URL/api/v1/keys/name"

The token acts for the execution's requester with that requester's role at most, and only while
the execution runs: it carries its expiry (the run's time limit plus :data:`TOKEN_GRACE_S`, as
Attune's) and is refused as soon as the execution has ended, checked on every request. It is
signed (HMAC-SHA256 with a key derived from the secret key), not stored: any API process that
shares the secret key accepts it. It travels only in the action's environment (readable by the
same user alone), never on a command line.

The requester's role, from the execution's ``executor``: its ``role`` when recorded; a user's
(API, terminal chat) from the users table, lowered to the role of the token they asked with; a
Slack user's from ``slack_roles`` (else ``slack_default_role``); ``cli`` and terminal chat run
as admin, as those front ends do; a rule's runs are ``operator``, the least role that may write
a rule. Anything else gets ``viewer``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any, cast

import orjson

from engine.auth import ROLES, Principal, Role, lower_role
from engine.errors import Unauthorized
from engine.runners import RunRequest
from engine.storage import Conn, Store
from engine.storage.identity import identity_repository

#: Prefix of an execution token (login tokens start ``att_``).
EXECUTION_TOKEN_PREFIX = "atx_"  # noqa: S105 (a prefix, not a secret)
#: How long a token outlives its run's time limit (cleanup and callbacks; Attune gives 60 s).
TOKEN_GRACE_S = 60
#: Statuses in which an execution's token is accepted.
_RUNNING = frozenset({"running", "canceling"})
#: Role of a rule's runs (rules are written by operators and admins).
RULE_ROLE: Role = "operator"
#: Token name of a request made with an execution token (``Principal.token_name``).
_EXECUTION_TOKEN_NAME = "execution:"  # noqa: S105 (a name prefix, not a secret)
#: Runs started from runs started from runs...: deeper chains get ``viewer``.
MAX_CHAIN = 8


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def api_url(host: str, port: int) -> str:
    """The URL actions call for a server listening on ``host:port`` (any-address hosts are
    reached on the loopback)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (compared, not bound)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ExecutionTokens:
    def __init__(
        self,
        store: Store,
        secret_key: str,
        *,
        api_url: str,
        slack_roles: Mapping[str, str] | None = None,
        slack_default_role: str = "viewer",
    ) -> None:
        self.store = store
        self.repo = identity_repository()
        self._key = hashlib.sha256(b"attune-execution-token:" + secret_key.encode()).digest()
        #: Where actions reach the API; ``attune serve`` sets the address it listens on.
        self.api_url = api_url
        self.slack_roles = dict(slack_roles or {})
        self.slack_default_role = slack_default_role

    # -- tokens -----------------------------------------------------------------------------

    def mint(self, execution_id: int, login: str, role: Role, ttl_s: float) -> str:
        claims = {"e": execution_id, "l": login, "r": role, "x": int(time.time() + ttl_s)}
        body = _b64(orjson.dumps(claims))
        return f"{EXECUTION_TOKEN_PREFIX}{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    async def authenticate(self, token: str) -> Principal:
        """The principal an execution token stands for; Unauthorized when it is forged,
        expired, or its execution is no longer running."""
        body, _, signature = token.removeprefix(EXECUTION_TOKEN_PREFIX).partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise Unauthorized("invalid token")
        try:
            claims = orjson.loads(_unb64(body))
            execution_id, login, role = int(claims["e"]), str(claims["l"]), claims["r"]
            expires = float(claims["x"])
        except (ValueError, KeyError, TypeError):
            raise Unauthorized("invalid token") from None
        if role not in ROLES:
            raise Unauthorized("invalid token")
        if expires <= time.time():
            raise Unauthorized("execution token expired")
        async with self.store.read() as conn:
            status = await self.repo.execution_status(conn, execution_id)
        if status not in _RUNNING:
            raise Unauthorized(f"execution token expired: execution {execution_id} has ended")
        return Principal(login=login, role=role, token_name=f"execution:{execution_id}")

    # -- an action's environment ------------------------------------------------------------

    async def environment(self, request: RunRequest) -> dict[str, str]:
        """Attune's variables for one run (the process runner adds them to the action's).
        The requester comes with the claim, and records the role it asked with: most runs
        need no query here (a rule's run reads its enforcement's refs)."""
        if request.requester is not None:
            executor: dict[str, Any] = dict(request.requester)
            enforcement = request.enforcement
        else:
            async with self.store.read() as conn:
                origin = await self.repo.run_origin(conn, request.execution_id)
            if origin is None:
                return {}
            executor, enforcement = dict(origin.executor or {}), origin.enforcement
        trigger = None
        if executor.get("role") in ROLES and enforcement is None:
            role = cast(Role, executor["role"])
        else:
            async with self.store.read() as conn:
                role = await self._role(conn, executor)
                if enforcement is not None:
                    trigger = await self.repo.rule_and_trigger(conn, enforcement)
        login = str(executor.get("identity") or "unknown")
        ttl_s = request.timeout_s + TOKEN_GRACE_S
        env = {
            "ATTUNE_API_URL": self.api_url,
            "ATTUNE_API_TOKEN": self.mint(request.execution_id, login, role, ttl_s),
        }
        if trigger is not None:
            env["ATTUNE_RULE"], env["ATTUNE_TRIGGER"] = trigger
        elif executor.get("rule"):
            env["ATTUNE_RULE"] = str(executor["rule"])
        return env

    async def _role(self, conn: Conn, executor: Mapping[str, Any], depth: int = 0) -> Role:
        recorded = executor.get("role")
        if recorded in ROLES:
            return cast(Role, recorded)
        source, identity = executor.get("source"), str(executor.get("identity") or "")
        if source in ("cli", "chat") and not executor.get("user_id"):
            return "admin"
        if source == "rule":
            return RULE_ROLE
        token_name = str(executor.get("token") or "")
        user = await self.repo.user_role(conn, identity)
        if token_name.startswith(_EXECUTION_TOKEN_NAME):
            # Started by a run with its execution token: at most that run's role (and the
            # user's, if the requester is one).
            parent = await self._executor_of(conn, token_name.removeprefix(_EXECUTION_TOKEN_NAME))
            if parent is None or depth >= MAX_CHAIN:
                return "viewer"
            inherited = await self._role(conn, parent, depth + 1)
            if user is not None and user[1] in ROLES:
                return lower_role(inherited, user[1])
            return inherited
        if source == "slack":
            slack_user = str(executor.get("user_id") or identity)
            role = self.slack_roles.get(slack_user, self.slack_default_role)
            return role if role in ROLES else "viewer"
        if user is None or user[1] not in ROLES:
            return "viewer"
        user_id, role = user[0], user[1]
        if token_name:
            # The least role among the user's tokens of that name: at most what they asked with.
            for token_role in await self.repo.token_roles(conn, user_id, token_name):
                if token_role in ROLES:
                    role = lower_role(role, token_role)
        return role

    async def _executor_of(self, conn: Conn, execution_id: str) -> dict[str, Any] | None:
        if not execution_id.isdigit():
            return None
        origin = await self.repo.run_origin(conn, int(execution_id))
        return None if origin is None else origin.executor
