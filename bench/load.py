"""Load held: executions over the API and slash commands at once, then count what was lost,
what ran twice and what was posted other than once.

    python -m bench.load                          # embedded default (SQLite, in-process)
    python -m bench.load --mode cluster           # PostgreSQL + RabbitMQ, serve + 2 workers
    python -m bench.load --api 2000 --slash 500   # the defaults
    python -m bench.load --quick                  # 100 + 25 (smoke test)

Every execution runs an inline shell action that appends its own execution id to a file, so a
run twice shows as a duplicate line. API executions carry a ``callback_url`` to a local receiver
that counts deliveries per execution; slash commands' results are counted at a local stand-in of
Slack's Web API (one thread reply per execution). Exits non-zero if anything was lost or doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    LISTENING,
    PASSWORD,
    RESULTS,
    ROOT,
    SECRET,
    WORKER_READY,
    Backend,
    Proc,
    Receiver,
    spawn_cli,
)
from tests.scenario.slack_signing import signed_request, slash_fields
from tests.scenario.slack_standin import SlackStandIn

#: Requests in flight at once from this client.
IN_FLIGHT = 100


async def run(mode: str, api_count: int, slash_count: int, timeout_s: float) -> dict[str, Any]:
    backend = await Backend.create(mode, "load")
    ledger = backend.tmp / "ran.txt"
    standin = await SlackStandIn().start()
    receiver = await Receiver().start()
    env = backend.env(
        ATTUNE_PACKS_PATH=str(ROOT / "packs"),
        ATTUNE_SLACK_BOT_TOKEN="xoxb-load",
        ATTUNE_SLACK_SIGNING_SECRET=SECRET,
        ATTUNE_SLACK_API_URL=standin.api_url,
        ATTUNE_SLACK_DEFAULT_ROLE="operator",  # its users are random: none is listed
    )
    cluster = mode == "cluster"
    serve_args = ["serve", "--no-worker"] if cluster else ["serve"]
    procs: list[Proc] = [spawn_cli("serve", ROOT, serve_args, env, backend.tmp)]
    try:
        url = (await procs[0].wait_line(LISTENING)).group(1).rstrip("/")
        if cluster:
            for i in range(2):
                procs.append(spawn_cli(f"worker{i}", ROOT, ["worker"], env, backend.tmp))
                await procs[-1].wait_line(WORKER_READY)
        return await _drive(url, standin, receiver, ledger, api_count, slash_count, timeout_s, mode)
    finally:
        await asyncio.gather(*(p.stop() for p in procs))
        await standin.close()
        await receiver.close()
        await backend.destroy()


async def _drive(
    url: str,
    standin: SlackStandIn,
    receiver: Receiver,
    ledger: Path,
    api_count: int,
    slash_count: int,
    timeout_s: float,
    mode: str,
) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(
            f"{url}/auth/login", json={"login": "admin", "password": PASSWORD}
        ) as resp:
            token = (await resp.json())["data"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        ref = f"load_{uuid.uuid4().hex[:6]}.append"
        script = (
            f'#!/bin/sh\nprintf "%s\\n" "$ATTUNE_EXECUTION_ID" >> {ledger}\n'
            'echo "ran $ATTUNE_EXECUTION_ID"\n'
        )
        async with http.post(
            f"{url}/api/v1/actions",
            headers=auth,
            json={"ref": ref, "runtime_ref": "core.shell", "entrypoint": script},
        ) as resp:
            assert resp.status == 201, await resp.text()

        async def api_one() -> int | None:
            async with http.post(
                f"{url}/api/v1/executions/execute",
                headers=auth,
                json={"action_ref": ref, "callback_url": receiver.url},
            ) as resp:
                return int((await resp.json())["data"]["id"]) if resp.status == 201 else None

        async def slash_one(i: int) -> int | None:
            body, headers = signed_request(
                SECRET,
                slash_fields(
                    f"run {ref}",
                    channel_id=f"CLOAD{i % 20}",
                    user_id=f"ULOAD{i % 50}",
                    response_url=standin.response_url(f"load{i}"),
                ),
            )
            async with http.post(f"{url}/slack/events", data=body, headers=headers) as resp:
                text = (await resp.json()).get("text", "") if resp.status == 200 else ""
            match = re.search(r"#(\d+)", text)
            return int(match.group(1)) if match else None

        started = time.monotonic()
        results = await asyncio.gather(
            *(api_one() for _ in range(api_count)), *(slash_one(i) for i in range(slash_count))
        )
        submit_s = time.monotonic() - started
        api_ids = {i for i in results[:api_count] if i is not None}
        slash_ids = {i for i in results[api_count:] if i is not None}
        accepted = api_ids | slash_ids

        def replies() -> collections.Counter[int]:
            counts: collections.Counter[int] = collections.Counter()
            for call in standin.find(
                "chat.postMessage", where=lambda c: bool(c.params.get("thread_ts"))
            ):
                if match := re.search(r"Output of #(\d+)", call.all_text()):
                    counts[int(match.group(1))] += 1
            return counts

        def ran() -> collections.Counter[int]:
            if not ledger.exists():
                return collections.Counter()
            return collections.Counter(int(x) for x in ledger.read_text().split())

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (
                set(ran()) >= accepted
                and set(receiver.counts) >= api_ids
                and set(replies()) >= slash_ids
            ):
                break
            await asyncio.sleep(0.5)
        done_s = time.monotonic() - started
        await asyncio.sleep(2)  # let anything that would arrive twice arrive
        runs, posted = ran(), replies()
    return {
        "mode": mode,
        "api_submitted": api_count,
        "slash_submitted": slash_count,
        "accepted": len(accepted),
        "refused": api_count + slash_count - len(accepted),
        "lost": len(accepted - set(runs)),
        "ran_twice": sum(1 for n in runs.values() if n > 1),
        "callbacks_missing": len(api_ids - set(receiver.counts)),
        "callbacks_twice": sum(1 for i in api_ids if receiver.counts[i] > 1),
        "slack_results_missing": len(slash_ids - set(posted)),
        "slack_results_twice": sum(1 for i in slash_ids if posted[i] > 1),
        "submit_s": round(submit_s, 2),
        "all_done_s": round(done_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["embedded", "cluster", "both"], default="embedded")
    parser.add_argument("--api", type=int, default=2000)
    parser.add_argument("--slash", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.api, args.slash = 100, 25
    modes = ["embedded", "cluster"] if args.mode == "both" else [args.mode]
    results = [asyncio.run(run(m, args.api, args.slash, args.timeout)) for m in modes]
    keys = [k for k in results[0] if k != "mode"]
    print(f"{'':<22}" + "".join(f"{r['mode']:>12}" for r in results))
    for key in keys:
        print(f"{key:<22}" + "".join(f"{r[key]:>12}" for r in results))
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results))
    bad = any(
        r[k]
        for r in results
        for k in (
            "refused",
            "lost",
            "ran_twice",
            "callbacks_missing",
            "callbacks_twice",
            "slack_results_missing",
            "slack_results_twice",
        )
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
