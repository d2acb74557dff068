"""Identities as stored: users, their bearer tokens and refresh tokens, and the repository that
keeps them.

Pure Python: the SQL is in :mod:`engine.storage.identity`. A repository method takes the open
connection of the caller's transaction (``store.read()`` / ``store.write()``), held opaquely.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from engine.storage import Conn

Role = Literal["admin", "operator", "viewer", "none"]
#: Most powerful first. ``none`` may do nothing: it signs in (or types in Slack) and is refused.
ROLES: tuple[Role, ...] = ("admin", "operator", "viewer", "none")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    login: str
    display_name: str | None
    role: Role
    disabled: bool
    has_password: bool
    created: datetime

    def info(self) -> dict[str, Any]:
        """Attune's ``UserInfo``."""
        return {"id": self.id, "login": self.login, "display_name": self.display_name}


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user with the hash of their password (never leaves the engine)."""

    user: User
    password_hash: str | None

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def login(self) -> str:
        return self.user.login

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def disabled(self) -> bool:
        return self.user.disabled


@dataclass(frozen=True, slots=True)
class TokenHolder:
    """What a bearer token's SHA-256 finds: the token and its user."""

    token_role: str
    token_name: str
    expires_at: datetime | None
    login: str
    user_id: int
    user_role: str
    disabled: bool


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """A refresh token taken (deleted) by its use."""

    expires_at: datetime
    #: False when a concurrent use took it first.
    taken: bool
    user: User


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """What an execution tells of who started it (for its execution token)."""

    #: Its ``executor`` column (None when that is not an object).
    executor: dict[str, Any] | None
    enforcement: int | None


class IdentityRepository(Protocol):
    # -- users ------------------------------------------------------------------------------
    async def find_user(self, conn: Conn, login: str, key: str) -> StoredUser | None:
        """The user whose login is ``login`` exactly, else whose login key is ``key``."""
        ...

    async def user_by_id(self, conn: Conn, user_id: int) -> User | None: ...

    async def users(self, conn: Conn) -> list[User]:
        """Every user, by login."""
        ...

    async def has_users(self, conn: Conn) -> bool: ...

    async def add_user(
        self,
        conn: Conn,
        *,
        login: str,
        key: str,
        password_hash: str,
        role: Role,
        display_name: str | None,
        created: datetime,
    ) -> None: ...

    async def other_enabled_admins(self, conn: Conn, user_id: int) -> int: ...

    async def set_role(self, conn: Conn, user_id: int, role: Role) -> None: ...

    async def set_disabled(self, conn: Conn, user_id: int, disabled: bool) -> None: ...

    async def set_password_hash(self, conn: Conn, user_id: int, password_hash: str) -> None: ...

    async def set_display_name(self, conn: Conn, user_id: int, name: str | None) -> None: ...

    async def user_role(self, conn: Conn, login: str) -> tuple[int, str] | None:
        """Id and role of the user whose login is exactly ``login``."""
        ...

    # -- tokens -----------------------------------------------------------------------------
    async def add_token(
        self,
        conn: Conn,
        *,
        token_hash: str,
        user_id: int,
        name: str,
        role: str,
        expires_at: datetime | None,
        created: datetime,
    ) -> None: ...

    async def add_refresh_token(
        self,
        conn: Conn,
        *,
        token_hash: str,
        user_id: int,
        expires_at: datetime,
        created: datetime,
    ) -> None: ...

    async def token_holder(self, conn: Conn, token_hash: str) -> TokenHolder | None: ...

    async def token_roles(self, conn: Conn, user_id: int, name: str) -> list[str]:
        """Roles of the user's tokens named ``name``."""
        ...

    async def take_refresh_token(self, conn: Conn, token_hash: str) -> RefreshGrant | None:
        """Find and delete a refresh token (None when unknown)."""
        ...

    async def delete_expired_sessions(
        self, conn: Conn, user_id: int, session_name: str, now: datetime
    ) -> None:
        """Delete the user's expired session tokens (named ``session_name``) and refresh tokens."""
        ...

    async def end_sessions(self, conn: Conn, user_id: int, session_name: str) -> None:
        """Delete every session token (named ``session_name``) and refresh token of a user."""
        ...

    async def delete_token(self, conn: Conn, token_hash: str) -> None:
        """Delete one token (a logout)."""
        ...

    # -- what execution tokens read of executions -------------------------------------------
    async def execution_status(self, conn: Conn, execution_id: int) -> str | None: ...

    async def run_origin(self, conn: Conn, execution_id: int) -> RunOrigin | None: ...

    async def rule_and_trigger(self, conn: Conn, enforcement_id: int) -> tuple[str, str] | None:
        """The rule and trigger refs of an enforcement."""
        ...
