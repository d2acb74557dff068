"""The Store: the only place that builds SQLAlchemy engines and connections.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``. Its statements run
on the event loop's own thread through the synchronous pysqlite driver: a statement on an
indexed row takes tens of microseconds, while a round trip through aiosqlite's worker thread
took about 0.15 ms and, under load, far longer (profiled: the loop idled waiting on it while
the one writer held the write lock). All of this process's writes go through one connection
and one lock; a transaction starts with ``BEGIN IMMEDIATE``, and when another process holds
the database's write lock the start is retried asynchronously (the loop never blocks on
``SQLITE_BUSY``). Reads that may scan many rows (lists, counts) pass ``offload=True`` and run
in a thread; migrations run in a thread too, on a connection of their own. PostgreSQL runs
on asyncpg with a connection pool (SQLAlchemy's asyncio extension is imported for it alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, TypeVarTuple, cast, overload

import orjson
from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DisconnectionError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.selectable import TypedReturnsRows

from engine import backoff
from engine.errors import Conflict, EngineError, Unavailable
from engine.private_files import touch_private_file

if TYPE_CHECKING:
    from alembic.config import Config

    # PostgreSQL only: imported when a PostgreSQL store is built (sqlalchemy.ext.asyncio
    # brings the ORM along: 6 MB and 0.1 s that SQLite does not need).
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(f"attune.{__name__}")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: How long a write waits for another process's lock on a SQLite database before failing.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: The newest migration (tests/engine/test_migrations.py checks it is Alembic's head): a database
#: already there starts without Alembic being imported.
HEAD_REVISION = "0022"
#: Key of the PostgreSQL advisory lock that serialises start-up work (migrations, pack sync).
_MIGRATION_LOCK_KEY = 7_406_113


_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")


class _SyncConn:
    """The ``await conn.execute(...)`` interface of :class:`AsyncConnection` over SQLite's
    synchronous driver; subclasses say where a statement runs."""

    __slots__ = ()

    @overload
    async def execute(  # type: ignore[overload-overlap]  # as AsyncConnection.execute
        self, statement: TypedReturnsRows[*_Ts], parameters: Any = None
    ) -> CursorResult[*_Ts]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return await self._execute(statement, parameters)

    async def _execute(self, statement: Executable, parameters: Any) -> CursorResult[Any]:
        raise NotImplementedError


class LoopConn(_SyncConn):
    """Statements run at once on the event loop's thread. :attr:`driver` is the sqlite3
    connection under it, for the statements storage writes for the driver itself."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def driver(self) -> sqlite3.Connection:
        """The sqlite3 connection, in this connection's transaction (its errors are
        translated by :meth:`Store.read` and :meth:`Store.write` as SQLAlchemy's are)."""
        return _driver(self._conn)

    async def _execute(self, statement: Executable, parameters: Any) -> CursorResult[Any]:
        return self._conn.execute(statement, parameters)


class ThreadConn(_SyncConn):
    """Each statement runs in a worker thread, on a connection that thread checks out and
    returns itself (so a cancelled caller never hands back a connection still in use, and a
    wait for a free connection never blocks the loop); rows are buffered there."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _execute(self, statement: Executable, parameters: Any) -> CursorResult[Any]:
        def run() -> Any:
            with self._engine.connect() as conn:
                return conn.execute(statement, parameters).freeze()

        frozen = await asyncio.to_thread(run)
        # A buffered Result, not a cursor: offloaded reads are SELECTs (no rowcount needed).
        return cast(CursorResult[Any], frozen())


#: What ``Store.read()`` and ``Store.write()`` yield.
Conn: TypeAlias = "AsyncConnection | LoopConn | ThreadConn"


def json_dumps(value: Any) -> str:
    """JSON columns' encoder: orjson (a fifth of the cost of the standard library's, which
    was 5% of an API submission's CPU), the standard library's for what orjson refuses
    (integers beyond 64 bits). NaN and infinities are written as null, as orjson writes
    them: JSON has no such values (PostgreSQL refused the standard library's ``NaN``)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


#: An integer too long for 64 bits (orjson would read it as a float).
_LONG_INTEGER = re.compile(r"(?<![.\deE+-])-?\d{19,}(?![.\deE])")


def json_loads(text_: str | bytes) -> Any:
    """JSON columns' decoder: orjson, or the standard library's for what orjson reads
    differently (integers beyond 64 bits, which it turns into floats) or refuses (the
    ``NaN`` an earlier encoder wrote)."""
    text = text_ if isinstance(text_, str) else text_.decode()
    if _LONG_INTEGER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


#: Engine arguments every engine of the Store shares.
_JSON_CODEC = {"json_serializer": json_dumps, "json_deserializer": json_loads}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_loop_pragmas(dbapi_conn: Any, record: Any) -> None:
    dbapi_conn.isolation_level = None  # the Store issues BEGIN / COMMIT itself
    _sqlite_pragmas(dbapi_conn, record)


def _is_busy(exc: OperationalError) -> bool:
    text_ = str(exc.orig).lower()
    return "locked" in text_ or "busy" in text_


class Store:
    """Async access to the database: ``read()`` and ``write()`` connections, and migrations."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        sync_engine: Engine | None = None,
        offload_engine: Engine | None = None,
        migrations_engine: Callable[[], Engine] | None = None,
    ) -> None:
        #: PostgreSQL: the asyncpg engine (None on SQLite).
        self._async = engine
        #: SQLite: connections used on the loop's thread, and those used by worker threads.
        self._sync = sync_engine
        self._offload = offload_engine
        #: SQLite: builds the engine that migrations and ``run_sync`` use (closed after).
        self._migrations_engine = migrations_engine
        either = engine or sync_engine
        assert either is not None
        self.dialect = either.dialect.name
        self._write_lock = asyncio.Lock() if sync_engine is not None else None
        self._writer: Connection | None = None
        #: The open group of write blocks (resolved when its COMMIT is done), and the task
        #: that will commit it.
        self._group: asyncio.Future[None] | None = None
        self._committer: asyncio.Task[None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self, *, offload: bool = False) -> AsyncIterator[Conn]:
        """A connection for reading; ``offload`` for queries that may scan many rows."""
        try:
            if self._async is not None:
                async with self._async.connect() as conn:
                    yield conn
            elif offload:
                assert self._offload is not None
                yield ThreadConn(self._offload)
            else:
                assert self._sync is not None
                with self._sync.connect() as sconn:
                    yield LoopConn(sconn)
        except EngineError:
            raise
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise Unavailable(f"database error: {type(exc).__name__}") from exc

    @asynccontextmanager
    async def write(self, *, single: bool = False) -> AsyncIterator[Conn]:
        """One transaction, committed when the block ends without error; the block returns
        only once its changes are committed.

        On SQLite, blocks are grouped: each runs in a savepoint of the open transaction, and
        one ``COMMIT`` covers every block that finished in the same turn of the event loop
        (a block that fails is rolled back to its savepoint alone). ``single`` promises that
        the block runs one statement: on PostgreSQL it then runs in autocommit, without the
        round trips of ``BEGIN`` and ``COMMIT``.

        As with any database, a caller cancelled while its commit is under way cannot know
        the outcome: on SQLite a block that has finished commits with its group even if its
        caller is cancelled while waiting for that."""
        try:
            if self._async is not None:
                if single:
                    async with self._async.connect() as conn:
                        await conn.execution_options(isolation_level="AUTOCOMMIT")
                        yield conn
                    return
                async with self._async.begin() as conn:
                    yield conn
                return
            assert self._write_lock is not None
            failure: BaseException | None = None
            async with self._write_lock:
                writer, batch = await self._batch()
                try:
                    # On the driver directly: SQLAlchemy's execute costs several times SQLite's.
                    _driver(writer).execute("SAVEPOINT unit")
                except BaseException:
                    self._schedule_commit()  # the group must not stay open
                    raise
                try:
                    yield LoopConn(writer)
                except BaseException as exc:
                    self._undo_unit(writer, batch)
                    failure = exc
                else:
                    _driver(writer).execute("RELEASE unit")
                    self._schedule_commit()
            if failure is not None:
                # Raised once the group is committed: a block that failed on a unique key
                # then finds the row it collided with.
                if not isinstance(failure, asyncio.CancelledError):
                    with contextlib.suppress(Exception):
                        await asyncio.shield(batch)
                raise failure
            await asyncio.shield(batch)
        except EngineError:
            raise
        except (IntegrityError, sqlite3.IntegrityError) as exc:
            raise Conflict("that already exists (a unique value is taken)") from exc
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            log.warning("database write failed: %s", exc)
            raise Unavailable(f"database error: {type(exc).__name__}") from exc

    async def _batch(self) -> tuple[Connection, asyncio.Future[None]]:
        """The writer connection and the open group's future, opening a group (``BEGIN
        IMMEDIATE``, waiting without blocking the loop while another process holds the
        database's write lock) when there is none. Called with the write lock held."""
        assert self._sync is not None
        if self._writer is None or self._writer.closed:
            writer = self._sync.connect().execution_options(isolation_level="AUTOCOMMIT")
            writer.exec_driver_sql("PRAGMA busy_timeout=0")
            self._writer = writer
        if self._group is not None:
            return self._writer, self._group
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        tries = 0
        while True:
            try:
                self._writer.exec_driver_sql("BEGIN IMMEDIATE")
                break
            except OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(backoff.delay_s(tries, base_s=0.001, cap_s=0.05))
            tries += 1
        self._group = asyncio.get_running_loop().create_future()
        # Its failure reaches every waiting block; retrieved here for a group nobody awaits.
        self._group.add_done_callback(_retrieve)
        return self._writer, self._group

    def _undo_unit(self, writer: Connection, batch: asyncio.Future[None]) -> None:
        """Roll a failed block back to its savepoint; if SQLite ended the whole transaction
        (it does on some I/O errors), the group's other blocks fail too."""
        dbapi = writer.connection.dbapi_connection
        if dbapi is not None and dbapi.in_transaction:
            writer.exec_driver_sql("ROLLBACK TO unit")
            writer.exec_driver_sql("RELEASE unit")
            self._schedule_commit()
            return
        self._group = None
        if not batch.done():
            batch.set_exception(Unavailable("database error: the transaction was rolled back"))
            batch.exception()  # retrieved here: a group of only the failed block has no waiter

    def _schedule_commit(self) -> None:
        if self._committer is None:
            self._committer = asyncio.get_running_loop().create_task(self._commit())

    async def _commit(self) -> None:
        """Commit the open group once the blocks ready to run in this turn have joined it."""
        assert self._write_lock is not None
        try:
            async with self._write_lock:
                group, self._group = self._group, None
                if group is None:
                    return
                assert self._writer is not None
                try:
                    self._writer.exec_driver_sql("COMMIT")
                except SQLAlchemyError as exc:
                    log.warning("database commit failed: %s", exc)
                    self._rollback_quietly()
                    group.set_exception(exc)
                    return
                group.set_result(None)
        finally:
            self._committer = None

    def _rollback_quietly(self) -> None:
        assert self._writer is not None
        dbapi = self._writer.connection.dbapi_connection
        if dbapi is not None and dbapi.in_transaction:
            try:
                self._writer.exec_driver_sql("ROLLBACK")
            except SQLAlchemyError as exc:
                log.warning("rollback failed: %s", exc)

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except (EngineError, SQLAlchemyError, OSError):
            return False

    @asynccontextmanager
    async def exclusive(self, key: int = _MIGRATION_LOCK_KEY) -> AsyncIterator[None]:
        """Hold a cluster-wide lock (a PostgreSQL advisory lock; nothing on SQLite, whose
        writers are serialised by the database itself)."""
        if self._async is None:
            yield
            return
        async with self._async.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            await conn.commit()
            try:
                yield
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                await conn.commit()

    async def run_sync(self, fn: Callable[[Connection], _T], *, commit: bool = False) -> _T:
        """``fn`` on a synchronous connection (migrations, schema inspection); on SQLite in a
        worker thread, on a connection of its own that is closed after."""
        if self._async is not None:
            async with self._async.connect() as conn:
                result = await conn.run_sync(fn)
                if commit:
                    await conn.commit()
                return result
        assert self._migrations_engine is not None
        build = self._migrations_engine

        def run() -> _T:
            engine = build()
            try:
                with engine.connect() as conn:
                    result = fn(conn)
                    if commit:
                        conn.commit()
                    return result
            finally:
                engine.dispose()

        return await asyncio.to_thread(run)

    async def upgrade(self) -> None:
        """Apply Alembic migrations up to head (safe to run from several processes at once).

        Raises :class:`Unavailable` in one line naming the database (without its password)
        and the cause when no connection can be made (a failing migration keeps its error)."""
        try:
            at_head = await self.run_sync(_at_head)  # the version query's own errors: False
        except (SQLAlchemyError, OSError) as exc:
            cause = _cause(exc)
            raise Unavailable(f"cannot connect to the database {self.where}: {cause}") from exc
        if at_head:
            return
        async with self.exclusive():
            await self.run_sync(_run_upgrade, commit=True)

    @property
    def where(self) -> str:
        """The database's URL without its password."""
        either = self._async if self._async is not None else self._sync
        assert either is not None
        return either.url.render_as_string(hide_password=True)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for sync in (self._sync, self._offload):
            if sync is not None:
                sync.dispose()
        if self._async is not None:
            await self._async.dispose()


def _cause(exc: BaseException) -> str:
    """The first line of what the driver said (SQLAlchemy adds the statement and a link)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def _at_head(connection: Connection) -> bool:
    try:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return False  # a new database
    return version == HEAD_REVISION


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _run_upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


def build_store(database_url: str, *, pool_size: int = 10) -> Store:
    """Build a :class:`Store` for ``database_url`` (creating a SQLite file's folder)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        # No ping per checkout (a round trip on every transaction: 23% of the CPU of an API
        # submission, measured). A connection the server has closed (restart, terminated
        # backend) is known to asyncpg without one, and is swapped for a fresh one at
        # checkout; a connection that dies silently fails one transaction (503), and the pool
        # is then renewed.
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(
            url, pool_size=pool_size, max_overflow=max(1, pool_size // 2), **_JSON_CODEC
        )
        event.listen(engine.sync_engine, "checkout", _closed_by_server)
        return Store(engine)
    if url.database and url.database != ":memory:":
        folder = Path(url.database).expanduser().resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"cannot create the database's folder {folder}: {exc.strerror or exc}"
            ) from exc
        try:
            touch_private_file(Path(url.database).expanduser())  # WAL and SHM files follow its mode
        except OSError as exc:
            raise Unavailable(
                f"cannot create the database {url.database}: {exc.strerror or exc}"
            ) from exc

    def migrations_engine() -> Engine:
        # The driver's default transaction handling, as Alembic expects; one connection.
        engine = create_engine(
            _sync_url(url),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            poolclass=NullPool,
            **_JSON_CODEC,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    # The loop's connections: a checkout must never wait (that would block the loop), so the
    # pool grows as needed (a SQLite connection is cheap) and keeps ``pool_size`` open.
    sync_engine = create_engine(
        _sync_url(url),
        connect_args=connect_args,
        pool_size=pool_size,
        max_overflow=-1,
        **_JSON_CODEC,
    )
    # Worker threads' connections (scans): a thread may wait for one; the loop never does.
    offload_engine = create_engine(
        _sync_url(url),
        connect_args=connect_args,
        pool_size=4,
        max_overflow=pool_size,
        **_JSON_CODEC,
    )
    for each in (sync_engine, offload_engine):
        event.listen(each, "connect", _sqlite_loop_pragmas)
    return Store(None, sync_engine, offload_engine, migrations_engine)


def _driver(conn: Connection) -> sqlite3.Connection:
    """A SQLAlchemy connection's sqlite3 connection (SQLAlchemy's execute costs several
    times SQLite's on a statement as small as SAVEPOINT)."""
    return cast(sqlite3.Connection, conn.connection.driver_connection)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _closed_by_server(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    driver = getattr(dbapi_conn, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this connection")  # the pool retries


def _sync_url(url: URL) -> URL:
    return url.set(drivername="sqlite+pysqlite")
