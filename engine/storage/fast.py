"""Hot statements on SQLite: compiled by SQLAlchemy once, run on the sqlite3 driver directly.

Profiled on an API submission, SQLAlchemy's per-execute work (cache lookup, execution context,
parameter construction, result metadata) cost about twice the time SQLite itself spent on the
statement. A statement marked with :func:`hot` is compiled once per set of parameter names
by SQLAlchemy's own compiler, with its own bind and result processors (so values are stored
and read exactly as SQLAlchemy stores and reads them); each run then only binds, executes and
builds SQLAlchemy ``Row`` objects. A statement SQLAlchemy would need more for (Python-side
defaults to compute, literal-rendered parameters) is run by SQLAlchemy as usual.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.engine.row import Row
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

_E = TypeVar("_E", bound=Executable)

#: Statements marked hot, by identity (module-level constants: kept alive here).
_HOT: dict[int, Executable] = {}
#: (statement id, parameter names) -> its plan, or None when SQLAlchemy must run it.
_PLANS: dict[tuple[int, tuple[str, ...]], _Plan | None] = {}
_MISSING = object()


def hot(statement: _E) -> _E:
    """Mark a module-level Core statement to run on SQLite's driver directly."""
    _HOT[id(statement)] = statement
    return statement


def plan_for(statement: Executable, parameters: Any, dialect: Dialect) -> _Plan | None:
    """The plan for a hot statement with these parameters, or None (SQLAlchemy runs it)."""
    if id(statement) not in _HOT or not (parameters is None or isinstance(parameters, dict)):
        return None
    key = (id(statement), tuple(sorted(parameters or ())))
    try:
        return _PLANS[key]
    except KeyError:
        plan = _PLANS[key] = _Plan.build(statement, key[1], dialect)
        return plan


class _Bind:
    __slots__ = ("default", "expanding", "key", "process")

    def __init__(
        self, key: str, default: Any, process: Callable[[Any], Any] | None, expanding: bool
    ) -> None:
        self.key = key
        self.default = default
        self.process = process
        self.expanding = expanding


class _Plan:
    __slots__ = ("_binds", "_dialect", "_meta", "_procs", "_sql")

    def __init__(
        self,
        sql: str,
        binds: list[_Bind],
        meta: SimpleResultMetaData | None,
        procs: Sequence[Callable[[Any], Any] | None],
        dialect: Dialect,
    ) -> None:
        self._sql = sql
        self._binds = binds
        self._meta = meta
        self._procs = list(procs) if any(procs) else None
        self._dialect = dialect

    @classmethod
    def build(cls, statement: Executable, keys: tuple[str, ...], dialect: Dialect) -> _Plan | None:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        assert isinstance(compiled, SQLCompiler)
        if (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.literal_execute_params
            or compiled.positiontup is None
        ):
            return None
        binds = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if bind.callable is not None:
                return None
            default = _MISSING if bind.required else bind.value
            process = bind.type._cached_bind_processor(dialect)
            if bind.expanding:
                # One placeholder now, widened per call to the number of values.
                compiled.string = compiled.string.replace(f"__[POSTCOMPILE_{name}]", "\0", 1)
            binds.append(_Bind(bind.key, default, process, bind.expanding))
        if "__[POSTCOMPILE_" in compiled.string:
            return None
        columns = compiled._result_columns
        meta = SimpleResultMetaData([c[0] for c in columns]) if columns else None
        procs = [c[3]._cached_result_processor(dialect, None) for c in columns]
        return cls(compiled.string, binds, meta, procs, dialect)

    def run(self, conn: Connection, parameters: dict[str, Any] | None) -> FastResult | None:
        """Run on ``conn``'s driver connection; None when a parameter is missing or an IN
        list is empty (SQLAlchemy then runs it, and raises or renders as it does)."""
        params = parameters or {}
        values: list[Any] = []
        sql = self._sql
        for bind in self._binds:
            value = params.get(bind.key, bind.default)
            if value is _MISSING:
                return None
            process = bind.process
            if bind.expanding:
                items = list(value)
                if not items:
                    return None
                sql = sql.replace("\0", ", ".join("?" * len(items)), 1)
                values.extend(items if process is None else map(process, items))
            else:
                values.append(value if process is None else process(value))
        cursor = on_driver(conn, sql, values, self._dialect)
        try:
            raw = cursor.fetchall() if self._meta is not None else []
        except sqlite3.Error as exc:
            raise _wrapped(sql, values, exc, self._dialect) from exc
        rows: list[Row[Any]] = []
        if self._meta is not None:
            meta, procs = self._meta, self._procs
            index = meta._key_to_index
            for data in raw:
                if procs is not None:
                    data = tuple(v if p is None else p(v) for p, v in zip(procs, data, strict=True))
                rows.append(Row(meta, None, index, data))
        return FastResult(rows, cursor.rowcount)


def on_driver(
    conn: Connection, sql: str, values: Sequence[Any] = (), dialect: Dialect | None = None
) -> sqlite3.Cursor:
    """Execute ``sql`` on ``conn``'s sqlite3 connection, in its transaction; a driver error
    is raised as SQLAlchemy raises it (``IntegrityError``, ``OperationalError``...)."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    try:
        return cast(sqlite3.Cursor, dbapi.execute(sql, values))
    except sqlite3.Error as exc:
        raise _wrapped(sql, values, exc, dialect) from exc


def _wrapped(
    sql: str, values: Sequence[Any], exc: sqlite3.Error, dialect: Dialect | None
) -> BaseException:
    return DBAPIError.instance(sql, list(values), exc, sqlite3.Error, dialect=dialect)


class FastResult:
    """The part of :class:`CursorResult` the hot statements' callers use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row[Any]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def all(self) -> Sequence[Row[Any]]:
        return self._rows

    def first(self) -> Row[Any] | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Row[Any]:
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def scalars(self) -> _Scalars:
        return _Scalars(row[0] for row in self._rows)


class _Scalars(list[Any]):
    """The first column of each row, as ``ScalarResult`` offers it."""

    def all(self) -> list[Any]:
        return list(self)

    def first(self) -> Any:
        return self[0] if self else None
