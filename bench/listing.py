"""Scenario ``list``: pages of ``GET /api/v1/executions`` over a large table.

A separate server with a fresh database: the schema is made by ``attune db upgrade`` of the
code under test, the executions table is filled directly in the database (one statement that
generates the rows on the database side: a recursive CTE on SQLite, ``generate_series`` on
PostgreSQL, followed there by ``VACUUM (ANALYZE)``, as autovacuum soon would), then the server
starts and serves pages one request at a time.

Only ended statuses are written (90% completed, 7% failed, 1% each timeout, cancelled,
abandoned), so the server's sweep has nothing to pick up; 20 action refs in equal shares;
created times spread over the last 30 days.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.deploy import Deployment
from bench.harness import Backend, BenchError, pct, spawn_cli

ACTION_REFS = 20
#: The action whose executions the filtered page asks for.
PROBE_REF = "bench.list_07"
FILLED = (
    "action_ref", "status", "config", "executor", "result", "timeout_s",
    "created", "updated", "started_at", "finished_at",
)  # fmt: skip
SPAN_S = 30 * 86400
_STATUS = """CASE WHEN i % 100 < 90 THEN 'completed' WHEN i % 100 < 97 THEN 'failed'
    WHEN i % 100 = 97 THEN 'timeout' WHEN i % 100 = 98 THEN 'cancelled' ELSE 'abandoned' END"""

# Both statements are built from this module's constants only.
SQLITE_FILL = f"""
INSERT INTO executions ({", ".join(FILLED)})
WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < :n),
t(i, at) AS (SELECT i, :start + i * :step FROM s)
SELECT
  'bench.list_' || printf('%02d', (i * 7) % {ACTION_REFS}),
  {_STATUS},
  '{{"host": "web-' || (i % 50) || '", "count": ' || (i % 7) || '}}',
  '{{"identity": "U0BENCH' || (i % 40) || '", "source": "slack", "channel": "C0BENCH"}}',
  '{{"exit_code": ' || CASE WHEN i % 100 < 90 THEN 0 ELSE 1 END
    || ', "duration_ms": ' || (i % 900) || ', "succeeded": '
    || CASE WHEN i % 100 < 90 THEN 'true' ELSE 'false' END
    || ', "stdout": "line ' || i || '\\n", "stderr": "", "data": null, "error": null, '
    || '"stdout_truncated": false, "stderr_truncated": false}}',
  600.0,
  strftime('%Y-%m-%d %H:%M:%f', at, 'unixepoch') || '000',
  strftime('%Y-%m-%d %H:%M:%f', at + 1, 'unixepoch') || '000',
  strftime('%Y-%m-%d %H:%M:%f', at + 0.1, 'unixepoch') || '000',
  strftime('%Y-%m-%d %H:%M:%f', at + 1, 'unixepoch') || '000'
FROM t
"""  # noqa: S608

PG_FILL = f"""
INSERT INTO executions ({", ".join(FILLED)})
SELECT
  'bench.list_' || lpad(((i * 7) % {ACTION_REFS})::text, 2, '0'),
  {_STATUS},
  jsonb_build_object('host', 'web-' || (i % 50), 'count', i % 7),
  jsonb_build_object('identity', 'U0BENCH' || (i % 40), 'source', 'slack', 'channel', 'C0BENCH'),
  jsonb_build_object('exit_code', CASE WHEN i % 100 < 90 THEN 0 ELSE 1 END,
    'duration_ms', i % 900, 'succeeded', i % 100 < 90, 'stdout', 'line ' || i || E'\\n',
    'stderr', '', 'data', null, 'error', null,
    'stdout_truncated', false, 'stderr_truncated', false),
  600.0,
  at, at + interval '1 second', at + interval '100 milliseconds', at + interval '1 second'
FROM (
  SELECT i,
    now() - interval '{SPAN_S} seconds' + i * (interval '{SPAN_S} seconds' / $1::bigint) AS at
  FROM generate_series(0, $1::bigint - 1) AS i
) AS t
"""  # noqa: S608


def _check_columns(columns: list[tuple[str, bool, bool]]) -> None:
    """``(name, not_null, has_default)`` per column: every required column must be filled."""
    unfilled = [n for n, not_null, default in columns if not_null and not default]
    unfilled = [n for n in unfilled if n not in FILLED and n != "id"]
    if unfilled:
        raise BenchError(f"the executions table needs columns the fill does not know: {unfilled}")


def _fill_sqlite(path: Path, rows: int) -> None:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        info = conn.execute("PRAGMA table_info(executions)").fetchall()
        _check_columns([(r[1], bool(r[3]), r[4] is not None) for r in info])
        start = time.time() - SPAN_S
        with conn:  # one transaction
            conn.execute(SQLITE_FILL, {"n": rows, "start": start, "step": SPAN_S / rows})


async def _fill_pg(dsn: str, rows: int) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn)
    try:
        info = await conn.fetch(
            "SELECT column_name, is_nullable, column_default, is_identity "
            "FROM information_schema.columns WHERE table_name = 'executions'"
        )
        _check_columns(
            [
                (
                    r["column_name"],
                    r["is_nullable"] == "NO",
                    r["column_default"] is not None or r["is_identity"] == "YES",
                )
                for r in info
            ]
        )
        await conn.execute(PG_FILL, rows)
        await conn.execute("VACUUM (ANALYZE) executions")
    finally:
        await conn.close()


async def fill(backend: Backend, rows: int) -> float:
    """Insert ``rows`` ended executions; the seconds it took."""
    started = time.perf_counter()
    if backend.mode == "embedded":
        await asyncio.to_thread(_fill_sqlite, backend.sqlite_path, rows)
    else:
        await _fill_pg(backend.pg_dsn, rows)
    return time.perf_counter() - started


async def migrate(code: Path, backend: Backend, env: dict[str, str]) -> None:
    proc = spawn_cli("list-db-upgrade", code, ["db", "upgrade"], env, backend.tmp)
    try:
        code_ = await asyncio.wait_for(asyncio.to_thread(proc.popen.wait), 120)
    except TimeoutError:
        await proc.stop()
        raise BenchError("attune db upgrade did not finish") from None
    if code_ != 0:
        raise BenchError(f"attune db upgrade failed: {proc.describe()}")


QUERIES = {
    "unfiltered": "",
    "status": "?status=completed",
    "action": f"?action_ref={PROBE_REF}",
}


async def page_latencies(
    dep: Deployment, http: aiohttp.ClientSession, requests: int
) -> dict[str, Any]:
    """p50/p99 (ms) of ``requests`` sequential requests for each page kind, after one cold
    request of each (reported apart: the first page of a filter counts its total in full)."""
    out: dict[str, Any] = {}
    for kind, query in QUERIES.items():
        url = f"{dep.url}/api/v1/executions{query}"
        times: list[float] = []
        for _ in range(requests + 1):
            started = time.perf_counter()
            async with http.get(url, headers=dep.auth) as resp:
                body = await resp.json()
                if resp.status != 200 or len(body.get("items", [])) == 0:
                    raise BenchError(f"GET {url} answered {resp.status}: {str(body)[:300]}")
            times.append((time.perf_counter() - started) * 1000)
        out[f"{kind}_cold_ms"] = times.pop(0)
        out[f"{kind}_p50_ms"] = pct(times, 0.5)
        out[f"{kind}_p99_ms"] = pct(times, 0.99)
    return out
