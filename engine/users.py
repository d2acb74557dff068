"""User administration: who may log in, with what role and password.

The ``attune user`` commands (an administrator at the server's database: how a lost admin
password is reset), self-service registration, ``/auth/me`` and change-password all go
through :class:`Users`. A new password follows Attune's rule (8 to 128 characters, else 422);
changing it or disabling the user ends the user's sessions (:meth:`AuthService.end_sessions`).
The last enabled administrator can be neither demoted nor disabled, so the server always has
one.
"""

from __future__ import annotations

import asyncio
import secrets

from engine.auth import (
    ROLES,
    AuthService,
    Role,
    User,
    check_login,
    check_new_password,
    hash_password,
    throttle_keys,
    verify_password,
)
from engine.clock import now_utc
from engine.errors import Conflict, InvalidRequest, NotFound, Unauthorized
from engine.identity import StoredUser
from engine.logins import login_key
from engine.storage import Conn

#: Characters of a password that ``attune user create`` generates (URL-safe, ~120 bits).
GENERATED_PASSWORD_BYTES = 15


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


class Users:
    def __init__(self, auth: AuthService) -> None:
        self.auth = auth
        self.store = auth.store
        self.repo = auth.repo

    async def _find(self, conn: Conn, login: str) -> StoredUser | None:
        return await self.repo.find_user(conn, login, login_key(login))

    async def _require(self, conn: Conn, login: str) -> StoredUser:
        row = await self._find(conn, login)
        if row is None:
            raise NotFound(f"user '{login}' not found")
        return row

    async def get(self, login: str) -> User:
        async with self.store.read() as conn:
            return (await self._require(conn, login)).user

    async def get_by_id(self, user_id: int) -> User:
        async with self.store.read() as conn:
            user = await self.repo.user_by_id(conn, user_id)
        if user is None:
            raise NotFound(f"identity {user_id} not found")
        return user

    async def all(self) -> list[User]:
        async with self.store.read() as conn:
            return await self.repo.users(conn)

    async def create(
        self,
        login: str,
        password: str,
        role: Role = "viewer",
        display_name: str | None = None,
    ) -> User:
        """A new user; Conflict when the login is taken, ValidationFailed for a weak
        password."""
        login = check_login(login)
        check_new_password(password)
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self.store.write() as conn:
            taken = await self._find(conn, login)
            if taken is not None and taken.login == login:
                raise Conflict(f"user '{login}' already exists")
            if taken is not None:
                raise Conflict(
                    f"login '{login}' is taken: it is the same as the existing login "
                    f"'{taken.login}' (logins are compared without case, surrounding spaces "
                    "and Unicode compatibility forms)"
                )
            await self.repo.add_user(
                conn,
                login=login,
                key=login_key(login),
                password_hash=password_hash,
                role=role,
                display_name=display_name or None,
                created=now_utc(),
            )
            return (await self._require(conn, login)).user

    async def _keep_an_admin(self, conn: Conn, row: StoredUser) -> None:
        """InvalidRequest if ``row`` is the last enabled admin (about to lose that)."""
        if row.role != "admin" or row.disabled:
            return
        if not await self.repo.other_enabled_admins(conn, row.id):
            raise InvalidRequest(f"'{row.login}' is the last enabled admin; keep one")

    async def set_role(self, login: str, role: Role) -> User:
        """Change a user's role. Their tokens never act above it from then on (a token's role
        is lowered to the user's); a promotion applies to sessions started after it."""
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        async with self.store.write() as conn:
            row = await self._require(conn, login)
            if role != "admin":
                await self._keep_an_admin(conn, row)
            await self.repo.set_role(conn, row.id, role)
            self.auth.forget(login)
            return (await self._require(conn, login)).user

    async def set_disabled(self, login: str, disabled: bool) -> User:
        """Disable (no login, no token accepted, sessions ended) or enable a user."""
        async with self.store.write() as conn:
            row = await self._require(conn, login)
            if disabled:
                await self._keep_an_admin(conn, row)
            await self.repo.set_disabled(conn, row.id, disabled)
            if disabled:
                await self.auth.end_sessions(conn, row.id, login)  # forgets the cached tokens
            else:
                self.auth.forget(login)
            return (await self._require(conn, login)).user

    async def set_password(self, login: str, password: str) -> User:
        """Set a password without knowing the old one (the administrator's reset); the
        user's sessions end."""
        check_new_password(password)
        password_hash = await asyncio.to_thread(hash_password, password)
        async with self.store.write() as conn:
            row = await self._require(conn, login)
            await self._store_password(conn, row, password_hash)
            return row.user

    async def change_password(self, login: str, current: str, new: str) -> None:
        """The user's own change: the current password must be right (Unauthorized, and
        counted as a failed login, otherwise); every session of the user ends, the one that
        asked included."""
        check_new_password(new)
        keys = throttle_keys(login, "password-change")[:2]  # the pair backs off; the login
        self.auth.throttle.check(keys)
        async with self.store.read() as conn:
            row = await self._require(conn, login)
        if not await asyncio.to_thread(verify_password, current, row.password_hash):
            self.auth.throttle.failed(keys)
            raise Unauthorized("invalid current password")
        password_hash = await asyncio.to_thread(hash_password, new)
        async with self.store.write() as conn:
            await self._store_password(conn, row, password_hash)

    async def _store_password(self, conn: Conn, row: StoredUser, password_hash: str) -> None:
        await self.repo.set_password_hash(conn, row.id, password_hash)
        await self.auth.end_sessions(conn, row.id, row.login)

    async def set_display_name(self, login: str, display_name: str | None) -> User:
        """Attune's ``PUT /auth/me``: blank clears it."""
        name = (display_name or "").strip() or None
        async with self.store.write() as conn:
            row = await self._require(conn, login)
            await self.repo.set_display_name(conn, row.id, name)
            return (await self._require(conn, login)).user
