"""Attune's timers over real HTTP: rules on the core pack's ``core.intervaltimer``,
``core.crontimer`` and ``core.datetimetimer`` with ``trigger_params``, one timer per rule.

Each tick is an event of the core trigger that names its rule (``rule``, ``rule_ref``) and runs
only that rule; disabling or deleting the rule stops its timer; bad ``trigger_params`` are a 400
naming the field, with nothing stored. Short intervals and bounded polls keep it fast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from tests.automation.wire import (
    DATABASES,
    call,
    finished,
    inline_action,
    items,
    ok,
    processed,
    serving,
    uniq,
    wait_items,
)
from tests.e2e.conftest import Server, client
from tests.scenario.harness import login
from tests.scenario.slack_standin import SlackStandIn

pytestmark = pytest.mark.e2e

CORE_TIMERS = ("core.intervaltimer", "core.crontimer", "core.datetimetimer")


@pytest.fixture(scope="module", params=DATABASES)
async def server(
    request: pytest.FixtureRequest,
    standin: SlackStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("core_timers")
    async with serving(request.param, standin, tmp, ATTUNE_TIMER_POLL_S="0.05") as srv:
        yield srv


@pytest.fixture(scope="module")
async def api(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, await login(server.base_url)) as session:
        yield session


async def timer_rule(
    api: aiohttp.ClientSession, trigger_ref: str, trigger_params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """A rule as Attune's ``create_*_timer`` fixtures make it (``pack_ref``, ``label``,
    ``trigger_params``), running an action of its own."""
    action = await inline_action(api, f"pk_{uniq()}")
    pack = action.split(".")[0]
    body = {
        "ref": f"{pack}.timer_{uniq()}_rule",
        "pack_ref": pack,
        "label": "Timer Rule",
        "trigger_ref": trigger_ref,
        "action_ref": action,
        "enabled": True,
        "description": "Rule: Timer Rule",
        "action_params": {"tick": "{{ event.payload.execution_count }}"},
        "trigger_params": trigger_params,
        **extra,
    }
    status, got = await call(api, "POST", "/api/v1/rules", body)
    assert status == 201, got
    return dict(got["data"])


async def ticks(
    api: aiohttp.ClientSession, rule: dict[str, Any], n: int, timeout_s: float = 8.0
) -> list[dict[str, Any]]:
    """Wait for ``n`` events of the rule's timer; oldest first."""
    rows = await wait_items(
        api,
        "/api/v1/events",
        lambda r: len(r) >= n,
        f"{n} ticks of {rule['ref']}",
        timeout_s,
        trigger_ref=rule["trigger_ref"],
        rule=rule["id"],
    )
    return sorted(rows, key=lambda e: e["id"])


async def test_the_core_pack_has_attune_timer_triggers(api: aiohttp.ClientSession) -> None:
    core = await ok(api, "GET", "/api/v1/packs/core")
    for ref in CORE_TIMERS:
        trigger = await ok(api, "GET", f"/api/v1/triggers/{ref}")
        assert trigger["pack"] == core["id"], trigger
        assert trigger["is_adhoc"] is False
        assert trigger["enabled"] is True
        assert trigger["param_schema"]["type"] == "object", trigger
        assert trigger["out_schema"]["type"] == "object", trigger
    listed = {t["ref"] for t in await items(api, "/api/v1/packs/core/triggers")}
    assert set(CORE_TIMERS) <= listed


async def test_interval_rule_ticks_and_runs_only_itself(api: aiohttp.ClientSession) -> None:
    one = await timer_rule(api, "core.intervaltimer", {"unit": "seconds", "interval": 1})
    other = await timer_rule(api, "core.intervaltimer", {"unit": "minutes", "delta": 60})
    trigger = await ok(api, "GET", "/api/v1/triggers/core.intervaltimer")
    assert one["trigger"] == trigger["id"]
    assert one["trigger_params"] == {"unit": "seconds", "interval": 1}
    assert datetime.fromisoformat(one["next_fire_at"]) > datetime.now(UTC)

    events = await ticks(api, one, 2)
    for i, event in enumerate(events[:2], start=1):
        assert (event["trigger"], event["rule"], event["rule_ref"]) == (
            trigger["id"],
            one["id"],
            one["ref"],
        )
        assert event["source"] == "timer"
        assert event["config"] == {"unit": "seconds", "interval": 1}
        payload = event["payload"]
        assert (payload["type"], payload["interval_seconds"]) == ("interval", 1)
        assert payload["execution_count"] == i
    gap = datetime.fromisoformat(events[1]["created"]) - datetime.fromisoformat(
        events[0]["created"]
    )
    assert timedelta(seconds=0.8) < gap < timedelta(seconds=1.5), gap

    await processed(api, events[0]["id"])
    enforcements = await items(api, "/api/v1/enforcements", event=events[0]["id"])
    assert [e["rule"] for e in enforcements] == [one["id"]]  # not the other rule
    done = await finished(api, enforcements[0]["execution_id"])
    assert done["status"] == "completed", done
    assert done["config"] == {"tick": 1}
    assert await items(api, "/api/v1/events", rule=other["id"]) == []


async def test_disabling_or_deleting_a_rule_stops_its_timer(api: aiohttp.ClientSession) -> None:
    rule = await timer_rule(api, "core.intervaltimer", {"unit": "seconds", "interval": 0.5})
    await ticks(api, rule, 1)
    off = await ok(api, "POST", f"/api/v1/rules/{rule['ref']}/disable")
    assert off["next_fire_at"] is None
    before = len(await items(api, "/api/v1/events", rule=rule["id"]))
    on = await ok(api, "POST", f"/api/v1/rules/{rule['ref']}/enable")
    assert on["next_fire_at"] is not None  # counted from now again
    await ticks(api, rule, before + 1)

    status, got = await call(api, "DELETE", f"/api/v1/rules/{rule['ref']}")
    assert (status, got["success"]) == (200, True), got
    after = len(await items(api, "/api/v1/events", rule=rule["id"]))
    # A deleted rule has no timer: a tick due now would be a second event within the window.
    with pytest.raises(pytest.fail.Exception):
        await ticks(api, rule, after + 1, timeout_s=1.5)


async def test_update_reschedules_a_rule_timer(api: aiohttp.ClientSession) -> None:
    rule = await timer_rule(api, "core.intervaltimer", {"unit": "hours", "interval": 1})
    later = datetime.fromisoformat(rule["next_fire_at"])
    got = await ok(api, "PUT", f"/api/v1/rules/{rule['ref']}", {"label": "Renamed"})
    assert got["next_fire_at"] == rule["next_fire_at"]  # same schedule, same phase
    got = await ok(
        api, "PUT", f"/api/v1/rules/{rule['ref']}", {"trigger_params": {"interval": 0.5}}
    )
    assert datetime.fromisoformat(got["next_fire_at"]) < later
    await ticks(api, rule, 1)


async def test_cron_rule_with_seconds_and_time_zone(api: aiohttp.ClientSession) -> None:
    params = {"expression": "* * * * * *", "timezone": "Europe/Paris"}
    rule = await timer_rule(api, "core.crontimer", params)
    events = await ticks(api, rule, 2)
    payload = events[0]["payload"]
    assert (payload["type"], payload["expression"], payload["timezone"]) == (
        "cron",
        "* * * * * *",
        "Europe/Paris",
    )
    scheduled = datetime.fromisoformat(payload["scheduled_at"])
    assert scheduled.microsecond == 0  # on the second
    assert datetime.fromisoformat(payload["next_fire_at"]) > scheduled
    assert (await ok(api, "DELETE", f"/api/v1/rules/{rule['ref']}"))["success"] is True


async def test_date_rule_fires_once_and_a_past_date_never(api: aiohttp.ClientSession) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    rule = await timer_rule(api, "core.datetimetimer", {"fire_at": soon, "timezone": "UTC"})
    events = await ticks(api, rule, 1)
    payload = events[0]["payload"]
    assert payload["type"] == "one_shot"
    assert datetime.fromisoformat(payload["fire_at"]) == datetime.fromisoformat(soon)
    assert payload["delay_ms"] >= 0
    assert (await ok(api, "GET", f"/api/v1/rules/{rule['ref']}"))["next_fire_at"] is None

    past = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = await timer_rule(api, "core.datetimetimer", {"date": past})
    assert old["next_fire_at"] is None  # accepted, as Attune does, and never fires

    local = (datetime.now(UTC) + timedelta(days=1)).astimezone().replace(tzinfo=None)
    later = await timer_rule(
        api, "core.datetimetimer", {"fire_at": local.isoformat(), "timezone": "Asia/Tokyo"}
    )
    tokyo = local.replace(tzinfo=ZoneInfo("Asia/Tokyo"))
    assert datetime.fromisoformat(later["next_fire_at"]) == tokyo


@pytest.mark.parametrize(
    ("trigger_ref", "params", "needle"),
    [
        ("core.intervaltimer", {"unit": "seconds"}, "trigger_params.interval"),
        ("core.intervaltimer", {"unit": "fortnights", "interval": 1}, "trigger_params.unit"),
        ("core.intervaltimer", {"interval": "10"}, "trigger_params.interval"),
        ("core.intervaltimer", {"interval": 0}, "trigger_params.interval"),
        ("core.crontimer", {"expression": "*/5 * *"}, "trigger_params.expression"),
        ("core.crontimer", {"expression": "61 * * * * *"}, "trigger_params.expression"),
        ("core.crontimer", {"expression": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ("core.datetimetimer", {}, "trigger_params.fire_at"),
        ("core.datetimetimer", {"fire_at": "next tuesday"}, "trigger_params.fire_at"),
    ],
)
async def test_bad_trigger_params_are_a_400_naming_the_field(
    api: aiohttp.ClientSession, trigger_ref: str, params: dict[str, Any], needle: str
) -> None:
    action = await inline_action(api, f"pk_{uniq()}")
    pack = action.split(".")[0]
    ref = f"{pack}.bad_{uniq()}"
    body = {
        "ref": ref,
        "pack_ref": pack,
        "label": "Bad",
        "trigger_ref": trigger_ref,
        "action_ref": action,
        "trigger_params": params,
    }
    status, got = await call(api, "POST", "/api/v1/rules", body)
    assert status == 400, got
    assert got["code"] == "BAD_REQUEST", got
    assert needle in got["error"], got
    assert (await call(api, "GET", f"/api/v1/rules/{ref}"))[0] == 404
