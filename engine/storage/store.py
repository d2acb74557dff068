"""The Store: the only place that builds SQLAlchemy engines and connections.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout,
and this process sends all its writes through one lock, so writers queue in memory instead of
backing off on ``SQLITE_BUSY``. PostgreSQL runs on asyncpg with a connection pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from engine.errors import Conflict, EngineError, Unavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: SQLite waits this long for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Key of the PostgreSQL advisory lock that serialises start-up work (migrations, pack sync).
_MIGRATION_LOCK_KEY = 7_406_113


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """Async access to the database: ``read()`` and ``write()`` connections, and migrations."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            raise Unavailable(f"database error: {type(exc).__name__}") from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block ends without error."""
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn
        except EngineError:
            raise
        except IntegrityError as exc:
            raise Conflict("that already exists (a unique value is taken)") from exc
        except (SQLAlchemyError, OSError) as exc:
            log.warning("database write failed: %s", exc)
            raise Unavailable(f"database error: {type(exc).__name__}") from exc

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except (SQLAlchemyError, OSError):
            return False

    @asynccontextmanager
    async def exclusive(self, key: int = _MIGRATION_LOCK_KEY) -> AsyncIterator[None]:
        """Hold a cluster-wide lock (a PostgreSQL advisory lock; nothing on SQLite, whose
        writers are serialised by the database itself)."""
        if self.dialect != "postgresql":
            yield
            return
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (safe to run from several processes at once)."""
        async with self.exclusive(), self.engine.connect() as conn:
            await conn.run_sync(_run_upgrade)
            await conn.commit()

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _run_upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def build_store(database_url: str, *, pool_size: int = 10) -> Store:
    """Build a :class:`Store` for ``database_url`` (creating a SQLite file's folder)."""
    url = make_url(database_url)
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return Store(engine)
