"""Two ``attune serve`` processes on one PostgreSQL database fire a schedule ``every 1s``:
each tick runs once (the executions match the schedule's count, one per tick, none missed).
The fire-time error of the runs (execution ``created`` minus its tick) is printed (``-s``)."""

from __future__ import annotations

import itertools
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.automation.wire import call, uniq
from tests.e2e.conftest import _fresh_postgres_database, client
from tests.scenario.harness import login, running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TICKS = 20


async def runs_of(api: aiohttp.ClientSession, schedule_id: int, message: str) -> list[Any]:
    found: list[Any] = []
    for page in (1, 2):
        status, got = await call(
            api,
            "GET",
            "/api/v1/executions",
            params={"action_ref": "core.echo", "per_page": "100", "page": str(page)},
        )
        assert status == 200, got
        found += [
            e
            for e in got["items"]
            if e["requester"].get("schedule") == schedule_id and e["config"]["message"] == message
        ]
    return found


async def test_two_serves_run_each_tick_once(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    async with _fresh_postgres_database() as url:
        shared = {"ATTUNE_DATABASE_URL": url, "ATTUNE_SECRET_KEY": "s" * 40}
        tmp_a, tmp_b = tmp_path_factory.mktemp("serve-a"), tmp_path_factory.mktemp("serve-b")
        async with running_server("serve", scenario_env(tmp_a, standin, **shared), tmp_a) as a:
            env_b = scenario_env(Path(tmp_b), standin, **shared)
            async with (
                running_server("serve", env_b, tmp_b) as b,
                client(a.base_url, await login(a.base_url)) as api,
                client(b.base_url, await login(b.base_url)) as api_b,
            ):
                message = f"tick {uniq()}"
                body = {
                    "action_ref": "core.echo",
                    "parameters": {"message": message},
                    "every": "1s",
                }
                status, got = await call(api, "POST", "/api/v1/schedules", body)
                assert status == 201, got
                sid = got["data"]["id"]
                await eventually(
                    lambda: call(api_b, "GET", f"/api/v1/schedules/{sid}"),
                    f"{TICKS} ticks of schedule {sid}",
                    TICKS + 15,
                    interval_s=0.5,
                    done=lambda r: r[1]["data"]["fire_count"] >= TICKS,
                )
                status, got = await call(api, "POST", f"/api/v1/schedules/{sid}/pause")
                assert status == 200, got
                fired = got["data"]["fire_count"]
                runs = await eventually(
                    lambda: runs_of(api, sid, message),
                    f"the {fired} runs of schedule {sid}",
                    10,
                    done=lambda r: len(r) >= fired,
                )
        assert len(runs) == fired, (len(runs), fired)
        ticks = sorted(datetime.fromisoformat(r["requester"]["tick"]) for r in runs)
        assert len(set(ticks)) == len(ticks), "a tick ran twice"
        assert all(y - x == timedelta(seconds=1) for x, y in itertools.pairwise(ticks)), ticks
        late = sorted(
            (
                datetime.fromisoformat(r["created"])
                - datetime.fromisoformat(r["requester"]["tick"])
            ).total_seconds()
            for r in runs
        )
        print(
            f"\ntwo serves on PostgreSQL, {len(late)} ticks of every 1s: fire-time error "
            f"median {statistics.median(late):.3f} s, worst {late[-1]:.3f} s, best {late[0]:.3f} s"
        )
        assert late[0] >= 0, late
        assert late[-1] < 1.0, late
