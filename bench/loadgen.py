"""Closed-loop HTTP load for a fixed time: ``wrk`` with a Lua script (POST body and headers,
the ids it got back collected per thread), or, when ``wrk`` is absent, an aiohttp client (then
the client, not the server, is likely the bottleneck, and the table says so)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.harness import BenchError, pct

#: wrk's own bound on one request; slower ones would be dropped from its latency figures.
WRK_TIMEOUT_S = 30

LUA = """
wrk.method = "POST"
wrk.body = BODY
for k, v in pairs(HEADERS) do wrk.headers[k] = v end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  ids = {}
  n_ids = 0
  statuses = {}
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    local id = string.match(body, '"id"%s*:%s*(%d+)')
    if id then n_ids = n_ids + 1; ids[n_ids] = id end
  end
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
end

function done(summary, latency, requests)
  local f = io.open(OUT, "w")
  for _, t in ipairs(threads) do
    local tids = t:get("ids")
    for i = 1, t:get("n_ids") do f:write("id ", tids[i], "\\n") end
    for k, v in pairs(t:get("statuses")) do f:write("status ", k, " ", v, "\\n") end
  end
  f:write("duration_us ", summary.duration, "\\n")
  f:write("p50_us ", latency:percentile(50), "\\n")
  f:write("p99_us ", latency:percentile(99), "\\n")
  f:close()
end
"""


@dataclass
class LoadResult:
    client: str
    duration_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    ids: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    socket_errors: int = 0

    @property
    def non_2xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


def _lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal here (ASCII)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match.group(2)]
    return float(match.group(1)) * scale


def parse_wrk(stdout: str) -> dict[str, float]:
    """Requests/sec, p50, p99 (ms) and socket errors from ``wrk --latency`` output."""
    found: dict[str, float] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", stdout):
        found["requests_per_s"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", stdout):
        found["requests"] = float(m.group(1))
    for q in ("50", "99"):
        if m := re.search(rf"^\s+{q}(?:\.000)?%\s+(\S+)", stdout, re.M):
            found[f"p{q}_ms"] = _ms(m.group(1))
    errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if m := re.search(errors, stdout):
        found["socket_errors"] = float(sum(int(g) for g in m.groups()))
    return found


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


async def run_wrk(
    url: str, body: str, headers: dict[str, str], connections: int, duration_s: float
) -> LoadResult:
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-wrk-"))
    out = tmp / "out.txt"
    lua_headers = "{" + ", ".join(f"[{_lua_str(k)}] = {_lua_str(v)}" for k, v in headers.items())
    script = (
        f"BODY = {_lua_str(body)}\nHEADERS = {lua_headers}}}\nOUT = {_lua_str(str(out))}\n" + LUA
    )
    (tmp / "post.lua").write_text(script)
    threads = max(1, min(2, connections))
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
        f"--timeout={WRK_TIMEOUT_S}s", "--latency", "-s", str(tmp / "post.lua"), url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout_b, stderr_b = await asyncio.wait_for(proc.communicate(), duration_s + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError("wrk did not finish") from None
    stdout = stdout_b.decode(errors="replace")
    if proc.returncode != 0 or not out.exists():
        raise BenchError(f"wrk failed ({proc.returncode}): {stderr_b.decode()[-500:]} {stdout}")
    parsed = parse_wrk(stdout)
    ids: list[int] = []
    statuses: dict[int, int] = {}
    extra: dict[str, float] = {}
    for line in out.read_text().splitlines():
        kind, *rest = line.split()
        if kind == "id":
            ids.append(int(rest[0]))
        elif kind == "status":
            statuses[int(rest[0])] = statuses.get(int(rest[0]), 0) + int(rest[1])
        else:
            extra[kind] = float(rest[0])
    shutil.rmtree(tmp, ignore_errors=True)
    duration = extra.get("duration_us", duration_s * 1e6) / 1e6
    return LoadResult(
        client="wrk",
        duration_s=duration,
        requests=int(parsed.get("requests", sum(statuses.values()))),
        requests_per_s=parsed.get("requests_per_s", sum(statuses.values()) / duration),
        p50_ms=parsed.get("p50_ms", extra.get("p50_us", float("nan")) / 1000),
        p99_ms=parsed.get("p99_ms", extra.get("p99_us", float("nan")) / 1000),
        ids=ids,
        statuses=statuses,
        socket_errors=int(parsed.get("socket_errors", 0)),
    )


async def run_aiohttp(
    url: str, body: str, headers: dict[str, str], connections: int, duration_s: float
) -> LoadResult:
    """The fallback: ``connections`` coroutines posting back to back for ``duration_s``."""
    latencies: list[float] = []
    ids: list[int] = []
    statuses: dict[int, int] = {}
    errors = 0
    data = body.encode()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        end = started + duration_s

        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    async with http.post(url, data=data, headers=headers) as resp:
                        text = await resp.text()
                except aiohttp.ClientError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if 200 <= resp.status < 300 and (m := re.search(r'"id"\s*:\s*(\d+)', text)):
                    ids.append(int(m.group(1)))

        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        client="aiohttp (the client is the bottleneck)",
        duration_s=elapsed,
        requests=len(latencies),
        requests_per_s=len(latencies) / elapsed,
        p50_ms=pct(latencies, 0.5),
        p99_ms=pct(latencies, 0.99),
        ids=ids,
        statuses=statuses,
        socket_errors=errors,
    )


async def post_load(
    url: str,
    body: str,
    headers: dict[str, str],
    connections: int,
    duration_s: float,
    client: str = "auto",
) -> LoadResult:
    """``client``: ``wrk``, ``aiohttp``, or ``auto`` (wrk when installed)."""
    use_wrk = client == "wrk" or (client == "auto" and have_wrk())
    run = run_wrk if use_wrk else run_aiohttp
    return await run(url, body, headers, connections, duration_s)
