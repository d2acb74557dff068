"""Time buckets in SQL: the hour a timestamp falls in, as each backend spells it, so counts per
hour are grouped by the database (the analytics of the dashboard) instead of in Python."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from engine.storage.tables import UTCDateTime


class hour_bucket(FunctionElement[Any]):
    """The start of the UTC hour of a timestamp column (a UTC datetime when read)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "hour_bucket"


@compiles(hour_bucket, "sqlite")
def _sqlite(element: hour_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC); read back by UTCDateTime.
    return f"strftime('%Y-%m-%d %H:00:00', {compiler.process(element.clauses, **kw)})"


@compiles(hour_bucket, "postgresql")
def _postgresql(element: hour_bucket, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date_trunc('hour', ({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC')"
