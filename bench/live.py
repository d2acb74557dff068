"""Live output latency: from a line printed by a running action to that line visible (a) in
Slack (a ``chat.postMessage`` or ``chat.update`` reaching the stand-in with it: the card's live
message, or the final output for the last lines) and (b) in the server-sent events of
``GET /api/v1/executions/{id}/logs/stdout/stream``.

The action (inline Python, made by this bench) prints ``tick <i> at <unix time>`` every
``every_s`` (200 ms), flushed; the line carries the wall-clock time it was printed, and each
reader notes the wall-clock time a line first reached it, on the same machine. The run is
started with a signed slash command (it has a Slack card, so a live message), and the stream
is opened at once; lines printed before the stream was open are not counted for it.
Wired into ``python -m bench`` as the ``live`` scenario (bench/suite.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.harness import SECRET, BenchError, WatchedStandIn, median, pct
from tests.scenario.slack_signing import signed_request, slash_fields
from tests.scenario.slack_standin import Call

#: Time between two printed lines.
EVERY_S = 0.2
#: Bound on the whole run beyond its printing time.
SLACK_GRACE_S = 30.0
TICK = re.compile(r"tick (\d+) at (\d+\.\d+)")


def ticking_script(lines: int, every_s: float = EVERY_S) -> str:
    return (
        "import time\n"
        f"for i in range({lines}):\n"
        "    print(f'tick {i} at {time.time():.6f}', flush=True)\n"
        f"    time.sleep({every_s})\n"
    )


@dataclass
class Seen:
    """When each line (by number) first reached a reader, and when it was printed."""

    printed: dict[int, float] = field(default_factory=dict)
    first: dict[int, float] = field(default_factory=dict)

    def note(self, text: str, at: float) -> None:
        for match in TICK.finditer(text):
            i = int(match.group(1))
            self.printed.setdefault(i, float(match.group(2)))
            self.first.setdefault(i, at)

    def latencies_ms(self, since: float = 0.0) -> list[float]:
        """Per line seen, printed at or after ``since``: ms from printed to seen."""
        return [
            (self.first[i] - self.printed[i]) * 1000
            for i in sorted(self.first)
            if self.printed[i] >= since
        ]


async def start_run(
    session: aiohttp.ClientSession, url: str, standin: WatchedStandIn, ref: str, channel: str
) -> int:
    """``/attune run <ref>`` signed as Slack signs it; the execution's number from the ack."""
    body, headers = signed_request(
        SECRET,
        slash_fields(
            f"run {ref}",
            channel_id=channel,
            user_id="UBENCHLIVE",
            response_url=standin.response_url("live"),
        ),
    )
    async with session.post(f"{url}/slack/events", data=body, headers=headers) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise BenchError(f"slash command answered {resp.status}: {text[:200]}")
    match = re.search(r"#(\d+)", text)
    if match is None:
        raise BenchError(f"no execution number in the ack: {text[:200]}")
    return int(match.group(1))


async def follow_stream(
    session: aiohttp.ClientSession,
    url: str,
    auth: dict[str, str],
    execution_id: int,
    seen: Seen,
    opened: asyncio.Future[float],
) -> None:
    """Read the stdout stream to its ``done`` event, noting each line's first arrival."""
    path = f"{url}/api/v1/executions/{execution_id}/logs/stdout/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with session.get(path, headers=auth, timeout=timeout) as resp:
        if resp.status != 200:
            raise BenchError(f"the log stream answered {resp.status}: {await resp.text()}")
        opened.set_result(time.time())
        event, data = "message", []
        while True:
            raw = await resp.content.readline()
            if not raw:
                return
            at = time.time()
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2].removeprefix(" "))
                if event in {"content", "append"}:
                    seen.note(data[-1], at)
            elif not line:
                if event == "done":
                    return
                event, data = "message", []


async def measure(
    session: aiohttp.ClientSession,
    url: str,
    auth: dict[str, str],
    standin: WatchedStandIn,
    lines: int,
) -> dict[str, Any]:
    """One run of ``lines`` lines: medians and p90 of the line-to-visible time, Slack and SSE."""
    ref = f"bench_live_{uuid.uuid4().hex[:8]}.tick"
    body = {"ref": ref, "entrypoint": ticking_script(lines), "runtime_ref": "core.python"}
    async with session.post(f"{url}/api/v1/actions", json=body, headers=auth) as resp:
        if resp.status != 201:
            raise BenchError(f"creating {ref} answered {resp.status}: {await resp.text()}")
    channel = f"CLIVE{uuid.uuid4().hex[:8].upper()}"
    slack, sse = Seen(), Seen()
    last = lines - 1

    def on_call(call: Call) -> bool:  # called as each call arrives; True ends the wait
        if call.target != channel or call.method not in {"chat.postMessage", "chat.update"}:
            return False
        slack.note(call.all_text(), time.time())
        return last in slack.first

    waiting = asyncio.ensure_future(standin.wait_for(on_call, lines * EVERY_S + SLACK_GRACE_S))
    try:
        execution_id = await start_run(session, url, standin, ref, channel)
        opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        async with asyncio.timeout(lines * EVERY_S + SLACK_GRACE_S):
            await follow_stream(session, url, auth, execution_id, sse, opened)
        await waiting
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, BenchError):
            await waiting
    missing = [i for i in range(lines) if i not in slack.first]
    if missing:
        raise BenchError(f"{len(missing)} lines never reached Slack, e.g. line {missing[0]}")
    gone = [i for i in range(lines) if i not in sse.first]
    if gone:
        raise BenchError(f"{len(gone)} lines never came over the stream, e.g. line {gone[0]}")
    to_slack = slack.latencies_ms()
    to_sse = sse.latencies_ms(since=opened.result())
    return {
        "lines": lines,
        "every_ms": EVERY_S * 1000,
        "slack_p50_ms": median(to_slack),
        "slack_p90_ms": pct(to_slack, 0.9),
        "sse_p50_ms": median(to_sse),
        "sse_p90_ms": pct(to_sse, 0.9),
        "sse_lines": len(to_sse),
        "slack_calls": len(standin.find("chat.*", target=channel)),
    }
