"""The identity repository on SQLAlchemy Core: users, tokens and refresh tokens (the same
statements on every dialect)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, or_, select, update

from engine.identity import (
    IdentityRepository,
    RefreshGrant,
    Role,
    RunOrigin,
    StoredUser,
    TokenHolder,
    User,
)
from engine.storage.store import Conn
from engine.storage.tables import enforcements, executions, refresh_tokens, tokens, users

_TOKEN_LOOKUP = (
    select(
        tokens.c.role,
        tokens.c.name,
        tokens.c.expires_at,
        users.c.login,
        users.c.id.label("user_id"),
        users.c.role.label("user_role"),
        users.c.disabled,
    )
    .join(users, users.c.id == tokens.c.user_id)
    .where(tokens.c.token_hash == bindparam("token_hash"))
)


def _user(row: Row[Any]) -> User:
    return User(
        id=int(row.id),
        login=row.login,
        display_name=row.display_name,
        role=row.role,
        disabled=bool(row.disabled),
        has_password=bool(row.password_hash),
        created=row.created,
    )


def _stored(row: Row[Any]) -> StoredUser:
    return StoredUser(_user(row), row.password_hash)


class SqlIdentity:
    """Every method runs in the transaction of the connection it is given."""

    # -- users ------------------------------------------------------------------------------

    async def find_user(self, conn: Conn, login: str, key: str) -> StoredUser | None:
        rows = (
            await conn.execute(
                select(users).where(or_(users.c.login_key == key, users.c.login == login))
            )
        ).all()
        exact = [row for row in rows if row.login == login]
        found = exact or rows
        return _stored(found[0]) if found else None

    async def user_by_id(self, conn: Conn, user_id: int) -> User | None:
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return None if row is None else _user(row)

    async def users(self, conn: Conn) -> list[User]:
        rows = (await conn.execute(select(users).order_by(users.c.login))).all()
        return [_user(row) for row in rows]

    async def has_users(self, conn: Conn) -> bool:
        return (await conn.execute(select(users.c.id).limit(1))).first() is not None

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
    ) -> None:
        await conn.execute(
            insert(users).values(
                login=login,
                login_key=key,
                password_hash=password_hash,
                role=role,
                display_name=display_name,
                created=created,
                disabled=False,
            )
        )

    async def other_enabled_admins(self, conn: Conn, user_id: int) -> int:
        query = select(func.count()).where(
            users.c.role == "admin", users.c.disabled.is_(False), users.c.id != user_id
        )
        return int((await conn.execute(query)).scalar_one())

    async def _set(self, conn: Conn, user_id: int, **values: Any) -> None:
        await conn.execute(update(users).where(users.c.id == user_id).values(**values))

    async def set_role(self, conn: Conn, user_id: int, role: Role) -> None:
        await self._set(conn, user_id, role=role)

    async def set_disabled(self, conn: Conn, user_id: int, disabled: bool) -> None:
        await self._set(conn, user_id, disabled=disabled)

    async def set_password_hash(self, conn: Conn, user_id: int, password_hash: str) -> None:
        await self._set(conn, user_id, password_hash=password_hash)

    async def set_display_name(self, conn: Conn, user_id: int, name: str | None) -> None:
        await self._set(conn, user_id, display_name=name)

    async def user_role(self, conn: Conn, login: str) -> tuple[int, str] | None:
        row = (
            await conn.execute(select(users.c.id, users.c.role).where(users.c.login == login))
        ).first()
        return None if row is None else (int(row.id), str(row.role))

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
    ) -> None:
        await conn.execute(
            insert(tokens).values(
                token_hash=token_hash,
                user_id=user_id,
                name=name,
                role=role,
                expires_at=expires_at,
                created=created,
            )
        )

    async def add_refresh_token(
        self,
        conn: Conn,
        *,
        token_hash: str,
        user_id: int,
        expires_at: datetime,
        created: datetime,
    ) -> None:
        await conn.execute(
            insert(refresh_tokens).values(
                token_hash=token_hash, user_id=user_id, expires_at=expires_at, created=created
            )
        )

    async def token_holder(self, conn: Conn, token_hash: str) -> TokenHolder | None:
        row = (await conn.execute(_TOKEN_LOOKUP, {"token_hash": token_hash})).first()
        if row is None:
            return None
        return TokenHolder(
            token_role=row.role,
            token_name=row.name,
            expires_at=row.expires_at,
            login=row.login,
            user_id=int(row.user_id),
            user_role=row.user_role,
            disabled=bool(row.disabled),
        )

    async def token_roles(self, conn: Conn, user_id: int, name: str) -> list[str]:
        held = (
            await conn.execute(
                select(tokens.c.role).where(tokens.c.user_id == user_id, tokens.c.name == name)
            )
        ).scalars()
        return [str(role) for role in held]

    async def take_refresh_token(self, conn: Conn, token_hash: str) -> RefreshGrant | None:
        row = (
            await conn.execute(
                select(
                    refresh_tokens.c.id.label("refresh_id"),
                    refresh_tokens.c.expires_at.label("refresh_expires_at"),
                    users,
                )
                .join(users, users.c.id == refresh_tokens.c.user_id)
                .where(refresh_tokens.c.token_hash == token_hash)
            )
        ).first()
        if row is None:
            return None
        # Used once: of two concurrent uses, one deletes the row and the other finds none.
        used = await conn.execute(
            delete(refresh_tokens).where(refresh_tokens.c.id == row.refresh_id)
        )
        return RefreshGrant(
            expires_at=row.refresh_expires_at, taken=used.rowcount == 1, user=_user(row)
        )

    async def delete_expired_sessions(
        self, conn: Conn, user_id: int, session_name: str, now: datetime
    ) -> None:
        await conn.execute(
            delete(tokens).where(
                tokens.c.user_id == user_id,
                tokens.c.name == session_name,
                tokens.c.expires_at < now,
            )
        )
        await conn.execute(
            delete(refresh_tokens).where(
                refresh_tokens.c.user_id == user_id, refresh_tokens.c.expires_at < now
            )
        )

    async def end_sessions(self, conn: Conn, user_id: int, session_name: str) -> None:
        await conn.execute(
            delete(tokens).where(tokens.c.user_id == user_id, tokens.c.name == session_name)
        )
        await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.user_id == user_id))

    async def delete_token(self, conn: Conn, token_hash: str) -> None:
        await conn.execute(delete(tokens).where(tokens.c.token_hash == token_hash))

    # -- what execution tokens read of executions -------------------------------------------

    async def execution_status(self, conn: Conn, execution_id: int) -> str | None:
        status = (
            await conn.execute(select(executions.c.status).where(executions.c.id == execution_id))
        ).scalar()
        return None if status is None else str(status)

    async def run_origin(self, conn: Conn, execution_id: int) -> RunOrigin | None:
        row = (
            await conn.execute(
                select(executions.c.executor, executions.c.enforcement).where(
                    executions.c.id == execution_id
                )
            )
        ).first()
        if row is None:
            return None
        executor = dict(row.executor) if isinstance(row.executor, dict) else None
        return RunOrigin(executor=executor, enforcement=row.enforcement)

    async def rule_and_trigger(self, conn: Conn, enforcement_id: int) -> tuple[str, str] | None:
        row = (
            await conn.execute(
                select(enforcements.c.rule_ref, enforcements.c.trigger_ref).where(
                    enforcements.c.id == enforcement_id
                )
            )
        ).first()
        return None if row is None else (str(row.rule_ref), str(row.trigger_ref))


def identity_repository() -> IdentityRepository:
    """The same statements serve every dialect (the caller's connection says which)."""
    return SqlIdentity()
