"""The ``execution_output`` rows (:mod:`engine.output`): running actions' output chunks."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, delete, func, insert, select

from engine.clock import now_utc
from engine.output import OutputChunk, OutputRepository, Stream, utf8_len
from engine.storage.store import Store
from engine.storage.tables import execution_output

#: Most rows one tail read looks at.
TAIL_MAX_ROWS = 256

_t = execution_output
_INSERT = insert(_t)
_OF_STREAM = (_t.c.execution_id == bindparam("execution_id"), _t.c.stream == bindparam("stream"))
#: Where the chunk holding byte ``offset`` starts (the last one starting at or before it).
_HOLDER = (
    select(func.coalesce(func.max(_t.c.offset), 0))
    .where(*_OF_STREAM, _t.c.offset <= bindparam("offset"))
    .scalar_subquery()
)
_READ = (
    select(_t.c.offset, _t.c.data)
    .where(*_OF_STREAM, _t.c.offset >= _HOLDER)
    .order_by(_t.c.offset, _t.c.id)
    .limit(bindparam("rows"))
)
_TAIL = (
    select(_t.c.offset, _t.c.data)
    .where(*_OF_STREAM)
    .order_by(_t.c.offset.desc(), _t.c.id.desc())
    .limit(bindparam("rows"))
)
_DROP = delete(_t).where(_t.c.execution_id == bindparam("execution_id"))


class SqlOutput:
    """:class:`engine.output.OutputRepository` on either dialect (indexed by execution,
    stream and offset)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def append(self, chunks: Sequence[OutputChunk]) -> None:
        if not chunks:
            return
        created = now_utc()
        rows = [
            {
                "execution_id": c.execution_id,
                "stream": c.stream,
                "offset": c.offset,
                "data": c.data,
                "created": created,
            }
            for c in chunks
        ]
        async with self.store.write(single=len(rows) == 1) as conn:
            await conn.execute(_INSERT, rows)

    async def read(
        self, execution_id: int, stream: Stream, offset: int, max_rows: int
    ) -> list[OutputChunk]:
        params = {
            "execution_id": execution_id,
            "stream": stream,
            "offset": offset,
            "rows": max(1, max_rows),
        }
        async with self.store.read() as conn:
            rows = (await conn.execute(_READ, params)).all()
        return [OutputChunk(execution_id, stream, row.offset, row.data) for row in rows]

    async def tail(self, execution_id: int, stream: Stream, max_bytes: int) -> list[OutputChunk]:
        params = {"execution_id": execution_id, "stream": stream, "rows": TAIL_MAX_ROWS}
        async with self.store.read() as conn:
            rows = (await conn.execute(_TAIL, params)).all()
        kept: list[OutputChunk] = []
        total = 0
        for row in rows:
            kept.append(OutputChunk(execution_id, stream, row.offset, row.data))
            total += utf8_len(row.data)
            if total >= max_bytes:
                break
        kept.reverse()
        return kept

    async def drop(self, execution_id: int) -> int:
        async with self.store.write(single=True) as conn:
            result = await conn.execute(_DROP, {"execution_id": execution_id})
        return int(result.rowcount or 0)


def output_repository(store: Store) -> OutputRepository:
    return SqlOutput(store)
