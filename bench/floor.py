"""The machine's floor for the ``api`` scenario: the least a Python server on this stack does
to accept an execution, measured beside Attune in the same round with the same wrk load.

``python -m bench.floor DB`` serves ``POST /api/v1/executions/execute`` on aiohttp, one event
loop, like ``attune serve``: it checks the bearer header, parses the JSON body, inserts one row
into SQLite (WAL, ``synchronous=NORMAL``, the rows of requests that arrive together committed
together, as Attune's Store does) and answers 201 with the id once the row is committed. No
auth lookup, validation, audit, queue or worker: what it reaches bounds what Attune can. Prints
its URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from typing import Any

import orjson
from aiohttp import web

from bench.bare import serve_until_sigterm


class GroupCommit:
    """Rows inserted in the same turn of the loop share one COMMIT."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS executions (id INTEGER PRIMARY KEY, action_ref TEXT "
            "NOT NULL, status TEXT NOT NULL, config TEXT, created TEXT NOT NULL)"
        )
        self._group: asyncio.Future[None] | None = None

    async def insert(self, action_ref: str, config: Any) -> int:
        if self._group is None:
            self.db.execute("BEGIN IMMEDIATE")
            self._group = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit)
        group = self._group
        cursor = self.db.execute(
            "INSERT INTO executions (action_ref, status, config, created) "
            "VALUES (?, 'requested', ?, datetime('now')) RETURNING id",
            (action_ref, orjson.dumps(config).decode()),
        )
        row_id = int(cursor.fetchone()[0])
        await group
        return row_id

    def _commit(self) -> None:
        group, self._group = self._group, None
        assert group is not None
        self.db.execute("COMMIT")
        group.set_result(None)


async def main(path: str) -> None:
    store = GroupCommit(path)

    async def execute(request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body = orjson.loads(await request.read())
            action_ref = str(body["action_ref"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": "bad request"}, status=400)
        row_id = await store.insert(action_ref, body.get("parameters") or {})
        return web.Response(
            body=orjson.dumps({"data": {"id": row_id, "status": "requested"}}),
            status=201,
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/api/v1/executions/execute", execute)
    await serve_until_sigterm(app)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
