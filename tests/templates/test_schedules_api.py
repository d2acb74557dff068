"""Schedules over HTTP and through signed Slack requests, on SQLite and PostgreSQL: one
``attune serve`` per database (it fires schedules as it fires timers)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.automation.wire import DATABASES, call, finished, serving, uniq
from tests.e2e.conftest import Server, client
from tests.scenario.harness import login, new_user, slash
from tests.scenario.slack_standin import Canned, SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=DATABASES)
async def server(
    request: pytest.FixtureRequest, standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp(f"schedules-{request.param}")
    async with serving(request.param, standin, tmp) as srv:
        yield srv


@pytest.fixture
async def api(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, await login(server.base_url)) as session:
        yield session


def error(got: Any) -> str:
    assert isinstance(got, dict), got
    assert "error" in got, got
    return str(got["error"])


async def runs_of(
    api: aiohttp.ClientSession, schedule_id: int, message: str
) -> list[dict[str, Any]]:
    """The runs of a schedule (by its message too: tests share the server's schedules)."""
    status, got = await call(
        api, "GET", "/api/v1/executions", params={"action_ref": "core.echo", "per_page": "100"}
    )
    assert status == 200, got
    return [
        e
        for e in got["items"]
        if e["requester"].get("schedule") == schedule_id and e["config"]["message"] == message
    ]


async def schedule(api: aiohttp.ClientSession, **body: Any) -> dict[str, Any]:
    status, got = await call(api, "POST", "/api/v1/schedules", body)
    assert status == 201, got
    return dict(got["data"])


BASE = {"action_ref": "core.echo", "parameters": {"message": "hi"}}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**BASE, "at": "25:00"}, 400, ["'25:00' is not a time of day", "17:00"]),
        ({**BASE, "at": "tomorrow-ish"}, 400, ["is not a time", "2026-12-01T17:00"]),
        ({**BASE, "at": "2020-01-01T00:00:00Z"}, 400, ["in the past"]),
        ({**BASE, "every": "0s"}, 400, ["at least 1 second", "10m"]),
        ({**BASE, "every": 0}, 400, ["at least 1 second"]),
        ({**BASE, "every": "soon"}, 400, ["every: 'soon'"]),
        ({**BASE, "cron": "61 * * * *"}, 400, ["not a cron expression", "0 9 * * 1-5"]),
        ({**BASE, "cron": "* * * *"}, 400, ["5 fields"]),
        ({**BASE, "every": "1h", "timezone": "Mars/Olympus"}, 400, ["unknown time zone"]),
        ({**BASE}, 400, ["exactly one of 'at'"]),
        ({**BASE, "every": "1h", "cron": "* * * * *"}, 400, ["got every, cron"]),
        ({"parameters": {}, "every": "1h"}, 400, ["'action_ref'", "'template_ref'"]),
        ({**BASE, "every": "1h", "missed": "sometimes"}, 400, ["'once'", "'skip'"]),
        ({"action_ref": "core.nothing_here", "every": "1h"}, 404, ["core.nothing_here"]),
        (
            {"action_ref": "core.echo", "parameters": {"colour": "red"}, "every": "1h"},
            400,
            ["colour"],
        ),
        ({"template_ref": "no_such_template", "every": "1h"}, 404, ["no_such_template"]),
    ],
)
async def test_bad_input_is_a_400_with_the_rule(
    api: aiohttp.ClientSession, body: dict[str, Any], status: int, words: list[str]
) -> None:
    got_status, got = await call(api, "POST", "/api/v1/schedules", body)
    assert got_status == status, got
    for word in words:
        assert word in error(got), (word, got)


async def test_every_fires_lists_pauses_resumes_and_deletes(api: aiohttp.ClientSession) -> None:
    message = f"every {uniq()}"
    made = await schedule(api, action_ref="core.echo", parameters={"message": message}, every="1s")
    assert made["kind"] == "every"
    assert made["every_s"] == 1
    assert made["timezone"] == "UTC"
    assert made["missed"] == "once"
    sid = made["id"]
    runs = await eventually(
        lambda: runs_of(api, sid, message),
        f"two runs of schedule {sid}",
        15,
        done=lambda r: len(r) >= 2,
    )
    assert all(r["requester"]["identity"] == "admin" for r in runs), runs
    status, got = await call(api, "GET", "/api/v1/schedules", params={"per_page": "100"})
    assert status == 200, got
    listed = {s["id"]: s for s in got["items"]}
    assert listed[sid]["next_fire_at"] is not None
    assert listed[sid]["fire_count"] >= 2

    status, got = await call(api, "POST", f"/api/v1/schedules/{sid}/pause")
    assert status == 200, got
    assert got["data"]["paused"] is True
    status, got = await call(api, "POST", f"/api/v1/schedules/{sid}/resume")
    assert status == 200, got
    assert got["data"]["paused"] is False
    assert datetime.fromisoformat(got["data"]["next_fire_at"]) > datetime.now(UTC) - timedelta(
        seconds=1
    )
    status, got = await call(api, "DELETE", f"/api/v1/schedules/{sid}")
    assert status == 200, got
    for method, path in (("GET", ""), ("POST", "/pause"), ("DELETE", "")):
        status, got = await call(api, method, f"/api/v1/schedules/{sid}{path}")
        assert status == 404, got
        assert f"schedule #{sid} not found" in error(got)


async def test_a_template_once_then_it_ends(api: aiohttp.ClientSession) -> None:
    ref = f"sched_{uniq()}"
    body = {"ref": ref, "action_ref": "core.echo", "parameters": {"message": "saved"}}
    status, got = await call(api, "POST", "/api/v1/templates", body)
    assert status == 201, got
    at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    message = f"override {uniq()}"
    made = await schedule(api, template_ref=ref, parameters={"message": message}, at=at)
    sid = made["id"]
    runs = await eventually(lambda: runs_of(api, sid, message), f"the run of schedule {sid}", 15)
    assert len(runs) == 1
    done = await finished(api, runs[0]["id"])
    assert done["result"]["stdout"].strip() == message
    ended = await eventually(
        lambda: call(api, "GET", f"/api/v1/schedules/{sid}"),
        "the schedule to record its run",
        10,
        done=lambda r: r[1]["data"]["last_execution"] == runs[0]["id"],
    )
    data = ended[1]["data"]
    assert data["next_fire_at"] is None
    assert data["fire_count"] == 1
    status, got = await call(api, "POST", f"/api/v1/schedules/{sid}/pause")
    assert status == 409, got
    assert "ended" in error(got)


async def test_times_are_read_in_the_schedules_zone(api: aiohttp.ClientSession) -> None:
    made = await schedule(api, **BASE, cron="0 9 * * 1-5", timezone="Europe/Paris")
    local = datetime.fromisoformat(made["next_fire_local"])
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True), made
    assert local.utcoffset() in (timedelta(hours=1), timedelta(hours=2)), made
    utc = datetime.fromisoformat(made["next_fire_at"])
    assert utc == local, made  # the same instant
    made = await schedule(api, **BASE, at="06:30", timezone="Asia/Tokyo")
    local = datetime.fromisoformat(made["next_fire_local"])
    assert (local.hour, local.minute) == (6, 30), made
    assert local.utcoffset() == timedelta(hours=9), made
    naive = await schedule(api, **BASE, at="2099-01-02T03:04", timezone="America/New_York")
    assert naive["next_fire_at"].startswith("2099-01-02T08:04"), naive
    for s in (made, naive):
        await call(api, "DELETE", f"/api/v1/schedules/{s['id']}")


async def test_openapi_documents_the_schedule_endpoints(api: aiohttp.ClientSession) -> None:
    status, doc = await call(api, "GET", "/api/v1/openapi.json")
    assert status == 200
    paths = doc["paths"]
    assert set(paths["/api/v1/schedules"]) == {"get", "post"}
    assert set(paths["/api/v1/schedules/{id}"]) == {"get", "delete"}
    assert set(paths["/api/v1/schedules/{id}/pause"]) == {"post"}
    assert set(paths["/api/v1/schedules/{id}/resume"]) == {"post"}


async def test_slack_schedules_lists_and_unschedules(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    message = f"later-{uniq()}"
    res = await slash(server.base_url, standin, f"schedule in 2s run core.echo message={message}")
    assert res.status == 200, res.body
    assert res.text.startswith("Schedule #"), res.text
    assert "(UTC)" in res.text, res.text
    sid = int(res.text.split("#")[1].split(":")[0])
    runs = await eventually(lambda: runs_of(api, sid, message), f"the run of schedule {sid}", 15)
    assert runs[0]["requester"]["user_id"] == res.user
    card = await eventually(
        lambda: [
            c
            for c in standin.find("chat.postMessage", target=res.channel)
            if f"#{runs[0]['id']}" in c.all_text()
        ],
        "the card of the scheduled run",
        15,
    )
    assert f"scheduled by schedule #{sid}" in card[0].all_text()

    cron = await slash(
        server.base_url,
        standin,
        'schedule cron "0 9 * * 1-5" run core.echo message=daily',
        user=res.user,
    )
    assert cron.text.startswith("Schedule #"), cron.text
    cron_id = int(cron.text.split("#")[1].split(":")[0])
    listed = await slash(server.base_url, standin, "schedules", user=res.user)
    assert f"#{cron_id}" in listed.text, listed.text
    gone = await slash(server.base_url, standin, f"unschedule {cron_id}", user=res.user)
    assert f"Schedule #{cron_id} deleted" in gone.text, gone.text
    status, got = await call(api, "GET", f"/api/v1/schedules/{cron_id}")
    assert status == 404, got

    for text, word in (
        ("schedule at 25:00 run core.echo message=x", "not a time of day"),
        ("schedule every 0s run core.echo message=x", "at least 1 second"),
        ("schedule in soon run core.echo message=x", "'soon' is not an interval"),
        ('schedule cron "99 * * * *" run core.echo', "not a cron expression"),
        ("schedule tomorrow run core.echo", "usage: `schedule in 10m"),
    ):
        bad = await slash(server.base_url, standin, text)
        assert word in bad.text, (text, bad.text)


async def test_slack_reads_times_in_the_users_own_zone(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    user = new_user()
    standin.queue(
        "users.info",
        Canned(200, {"ok": True, "user": {"id": user, "tz": "Asia/Tokyo"}}),
        where=lambda c: c.params.get("user") == user,
    )
    res = await slash(
        server.base_url, standin, "schedule at 06:30 run core.echo message=tokyo", user=user
    )
    assert res.text.startswith("Schedule #"), res.text
    assert "06:30:00+09:00 (Asia/Tokyo)" in res.text, res.text
    sid = int(res.text.split("#")[1].split(":")[0])
    status, got = await call(api, "GET", f"/api/v1/schedules/{sid}")
    assert status == 200, got
    assert got["data"]["timezone"] == "Asia/Tokyo"
    await call(api, "DELETE", f"/api/v1/schedules/{sid}")


async def test_a_deleted_schedules_id_is_never_given_to_another(
    api: aiohttp.ClientSession,
) -> None:
    first = await schedule(api, **BASE, every="1h", description="first " + uniq())
    status, got = await call(api, "DELETE", f"/api/v1/schedules/{first['id']}")
    assert status in (200, 204), got
    second = await schedule(api, **BASE, every="1h", description="second " + uniq())
    assert second["id"] > first["id"]
    status, got = await call(api, "DELETE", f"/api/v1/schedules/{second['id']}")
    assert status in (200, 204), got


async def test_the_same_request_makes_one_schedule(api: aiohttp.ClientSession) -> None:
    """An Idempotency-Key sent again finds the first schedule (as a Slack retry that reaches
    another process does with its key); another key makes another."""
    key = {"Idempotency-Key": "sched-" + uniq()}
    body = {**BASE, "every": "1h", "description": "once " + uniq()}
    status, first = await call(api, "POST", "/api/v1/schedules", body, headers=key)
    assert status == 201, first
    status, again = await call(api, "POST", "/api/v1/schedules", body, headers=key)
    assert status == 201, again
    assert again["data"]["id"] == first["data"]["id"]
    status, other = await call(
        api, "POST", "/api/v1/schedules", body, headers={"Idempotency-Key": "sched-" + uniq()}
    )
    assert status == 201, other
    assert other["data"]["id"] != first["data"]["id"]
    status, listed = await call(api, "GET", "/api/v1/schedules", params={"per_page": "100"})
    assert status == 200, listed
    mine = [s for s in listed["items"] if s["description"] == body["description"]]
    assert len(mine) == 2
    for made in (first, other):
        await call(api, "DELETE", f"/api/v1/schedules/{made['data']['id']}")
