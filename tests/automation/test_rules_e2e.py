"""Rules end to end: Trigger -> Event -> Rule -> Enforcement -> Execution, over real HTTP.

One ``attune serve`` subprocess (SQLite, in-process broker) serves the module, with its Slack
Web API pointed at a local stand-in (which also serves as the callback receiver), a webhook
rate limit of 2/s per key (bursts of 4) and a 4 KiB webhook body limit. Every test makes its own
triggers, rules and (where it counts executions) its own inline action, so tests never see each
other's events. Every wait polls the API with a hard deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server, client
from tests.scenario.harness import (
    get_json,
    login,
    new_channel,
    poll_api,
    running_server,
    scenario_env,
    settle,
)
from tests.scenario.slack_standin import Call, SlackStandIn

pytestmark = pytest.mark.e2e

RATE_PER_S = 2  # burst 4 per key
MAX_WEBHOOK_BYTES = 4096
TEMPLATE_TIMEOUT_S = 1.5
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("automation")
    env = scenario_env(
        tmp,
        standin,
        ATTUNE_WEBHOOK_RATE_PER_S=str(RATE_PER_S),
        ATTUNE_WEBHOOK_MAX_BYTES=str(MAX_WEBHOOK_BYTES),
        ATTUNE_TEMPLATE_TIMEOUT_S=str(TEMPLATE_TIMEOUT_S),
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def api(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, await login(server.base_url)) as session:
        yield session


@pytest.fixture(scope="module")
async def anon(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    """No bearer token: how webhook callers call."""
    async with client(server.base_url) as session:
        yield session


# -- helpers ----------------------------------------------------------------------------------


def uniq() -> str:
    return uuid.uuid4().hex[:8]


async def call(
    session: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, path, json=body, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def make_trigger(api: aiohttp.ClientSession, **spec: Any) -> tuple[str, str | None]:
    """Create a trigger (a webhook one unless ``type`` says otherwise); return (ref, key)."""
    ref = spec.pop("ref", f"auto_{uniq()}.hook")
    status, body = await call(api, "POST", "/api/v1/triggers", {"ref": ref, **spec})
    assert status == 201, body
    if spec.get("type", "webhook") != "webhook":
        return ref, None
    status, body = await call(api, "POST", f"/api/v1/triggers/{ref}/webhooks/enable")
    assert status == 200, body
    key = body["data"]["webhook_key"]
    assert isinstance(key, str), body
    assert key.startswith("wh_"), body
    assert body["data"]["webhook_enabled"] is True, body
    return ref, key


async def make_rule(
    api: aiohttp.ClientSession, trigger_ref: str, action_ref: str, **spec: Any
) -> str:
    ref = spec.pop("ref", f"auto_{uniq()}.rule")
    status, body = await call(
        api,
        "POST",
        "/api/v1/rules",
        {"ref": ref, "trigger_ref": trigger_ref, "action_ref": action_ref, **spec},
    )
    assert status == 201, body
    return ref


async def inline_action(
    api: aiohttp.ClientSession,
    script: str = "#!/bin/sh\ncat\n",
    *,
    runtime_ref: str = "core.shell",
    parameters: dict[str, Any] | None = None,
) -> str:
    """A fresh action of this test only, so its executions can be counted exactly."""
    ref = f"auto_{uniq()}.act"
    body: dict[str, Any] = {"ref": ref, "entrypoint": script, "runtime_ref": runtime_ref}
    if parameters is not None:
        body["parameters"] = parameters
    status, resp = await call(api, "POST", "/api/v1/actions", body)
    assert status == 201, resp
    return ref


async def fire(
    anon: aiohttp.ClientSession,
    key: str,
    payload: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    """POST the webhook; return (status, body, response headers)."""
    data = raw if raw is not None else json.dumps({"payload": payload or {}}).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    async with anon.post(f"/api/v1/webhooks/{key}", data=data, headers=hdrs) as resp:
        text = await resp.text()
        parsed = json.loads(text) if text and resp.content_type == "application/json" else text
        return resp.status, parsed, resp.headers


async def fire_ok(anon: aiohttp.ClientSession, key: str, payload: Any) -> int:
    status, body, _ = await fire(anon, key, payload)
    assert status == 200, body
    assert isinstance(body["data"]["event_id"], int), body
    return int(body["data"]["event_id"])


async def processed(api: aiohttp.ClientSession, event_id: int) -> dict[str, Any]:
    """Wait until the event's rules have all been considered (``processed_at`` set)."""
    body = await poll_api(
        lambda: get_json(api, f"/api/v1/events/{event_id}"),
        lambda b: b["data"]["processed_at"] is not None,
        f"event {event_id} to be processed",
        10.0,
    )
    return dict(body["data"])


async def enforcements(api: aiohttp.ClientSession, **query: Any) -> list[dict[str, Any]]:
    async with api.get("/api/v1/enforcements", params={"per_page": 100, **query}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return list(body["items"])


async def events(api: aiohttp.ClientSession, **query: Any) -> list[dict[str, Any]]:
    async with api.get("/api/v1/events", params={"per_page": 100, **query}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return list(body["items"])


async def executions_of(api: aiohttp.ClientSession, action_ref: str) -> int:
    body = await get_json(api, f"/api/v1/executions?action_ref={action_ref}&per_page=1")
    return int(body["pagination"]["total_items"])


async def finished(
    api: aiohttp.ClientSession, execution_id: int, timeout_s: float = 15.0
) -> dict[str, Any]:
    body = await poll_api(
        lambda: get_json(api, f"/api/v1/executions/{execution_id}"),
        lambda b: b["data"]["status"] in TERMINAL,
        f"execution {execution_id} to finish",
        timeout_s,
    )
    return dict(body["data"])


async def one_enforcement(api: aiohttp.ClientSession, event_id: int) -> dict[str, Any]:
    await processed(api, event_id)
    rows = await enforcements(api, event_id=event_id)
    assert len(rows) == 1, rows
    return rows[0]


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


# -- the main path ----------------------------------------------------------------------------


async def test_webhook_rule_runs_echo(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    rule = await make_rule(
        api, trigger, "core.echo", action_params={"message": "{{ event.payload.message }}"}
    )

    status, body, _ = await fire(anon, key, {"message": "disk full"})
    assert status == 200, body
    accepted = body["data"]
    assert accepted["trigger_ref"] == trigger
    assert accepted["received_at"]
    event_id = accepted["event_id"]

    event = await processed(api, event_id)
    assert event["payload"] == {"message": "disk full"}
    assert event["trigger_ref"] == trigger
    assert event["source"] == "webhook"

    enf = await one_enforcement(api, event_id)
    assert (enf["status"], enf["outcome"]) == ("processed", "scheduled"), enf
    assert enf["rule_ref"] == rule
    assert enf["trigger_ref"] == trigger
    assert enf["error"] is None
    assert enf["config"] == {"message": "disk full"}
    assert isinstance(enf["execution_id"], int), enf

    status, got = await call(api, "GET", f"/api/v1/enforcements/{enf['id']}")
    assert status == 200, got
    assert got["data"] == enf, got

    done = await finished(api, enf["execution_id"])
    assert done["status"] == "completed", done
    assert done["result"]["stdout"] == "disk full\n", done
    assert done["enforcement"] == enf["id"], done
    assert done["requester"]["source"] == "rule", done
    assert done["executor"] is None  # no identity asked: Attune's executor is null
    assert done["action_ref"] == "core.echo"


async def test_lone_template_keeps_json_type(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    action = await inline_action(
        api,
        "import json, sys\nprint(json.dumps(json.load(sys.stdin)))\n",
        runtime_ref="core.python",
        parameters={"count": {"type": "integer", "required": True}},
    )
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(api, trigger, action, action_params={"count": "{{ event.payload.count }}"})

    enf = await one_enforcement(api, await fire_ok(anon, key, {"count": 3}))
    assert (enf["status"], enf["outcome"]) == ("processed", "scheduled"), enf
    assert enf["config"] == {"count": 3}, enf
    done = await finished(api, enf["execution_id"])
    assert done["status"] == "completed", done
    assert done["config"] == {"count": 3}, done
    assert json.loads(done["result"]["stdout"]) == {"count": 3}, done


# -- conditions -------------------------------------------------------------------------------


CONDITION_CASES = {
    "equals": (
        [{"field": "payload.severity", "operator": "equals", "value": "high"}],
        {"severity": "low"},
        {"severity": "high"},
    ),
    "not_equals": (
        [{"field": "payload.env", "operator": "not_equals", "value": "prod"}],
        {"env": "prod"},
        {"env": "staging"},
    ),
    "contains": (
        [{"field": "payload.message", "operator": "contains", "value": "disk"}],
        {"message": "cpu hot"},
        {"message": "disk full"},
    ),
    "greater_than": (
        [{"field": "payload.n", "operator": "greater_than", "value": 5}],
        {"n": 3},
        {"n": 9},
    ),
    "less_than": (
        [{"field": "payload.n", "operator": "less_than", "value": 5}],
        {"n": 9},
        {"n": 3},
    ),
    "matches": (
        [{"field": "payload.host", "operator": "matches", "value": r"^web-\d+$"}],
        {"host": "db-1"},
        {"host": "web-12"},
    ),
    "exists": (
        [{"field": "payload.ticket", "operator": "exists", "value": True}],
        {"other": 1},
        {"ticket": "INC-1"},
    ),
    "expression": ({"expression": "{{ event.payload.n > 2 }}"}, {"n": 1}, {"n": 3}),
}


@pytest.mark.parametrize("case", list(CONDITION_CASES))
async def test_conditions(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession, case: str
) -> None:
    conditions, miss, hit = CONDITION_CASES[case]
    action = await inline_action(api)
    trigger, key = await make_trigger(api)
    assert key is not None
    rule = await make_rule(api, trigger, action, conditions=conditions)

    missed = await fire_ok(anon, key, miss)
    await processed(api, missed)
    assert await enforcements(api, event_id=missed) == []

    enf = await one_enforcement(api, await fire_ok(anon, key, hit))
    assert enf["rule_ref"] == rule, enf
    assert (enf["status"], enf["outcome"]) == ("processed", "scheduled"), enf
    done = await finished(api, enf["execution_id"])
    assert done["status"] == "completed", done
    assert json.loads(done["result"]["stdout"]) == {}, done
    assert await executions_of(api, action) == 1
    assert len(await enforcements(api, rule_ref=rule)) == 1


async def test_bad_condition_is_refused(api: aiohttp.ClientSession) -> None:
    trigger, _ = await make_trigger(api)
    for conditions, needle in [
        ([{"field": "payload.x", "operator": "bigger", "value": 1}], "operator"),
        ([{"field": "payload.x", "operator": "matches", "value": "("}], "regular expression"),
        # Issue 12, hole 3: RE2 (linear time) runs `matches`; what it cannot run is refused.
        ([{"field": "payload.x", "operator": "matches", "value": "(a)\\1"}], "conditions[0]"),
        ([{"field": "payload.x", "operator": "matches", "value": "a(?=b)"}], "RE2"),
        ({"expression": "{{ event.payload.n > }}"}, "conditions.expression"),
    ]:
        status, body = await call(
            api,
            "POST",
            "/api/v1/rules",
            {
                "ref": f"auto_{uniq()}.rule",
                "trigger_ref": trigger,
                "action_ref": "core.noop",
                "conditions": conditions,
            },
        )
        assert status == 422, (conditions, body)
        assert needle in body["error"], body


# -- several rules, disabled things ---------------------------------------------------------


async def test_two_rules_fire_once_each_disabled_rule_does_nothing(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    first = await make_rule(
        api, trigger, "core.echo", action_params={"message": "one {{ event.payload.x }}"}
    )
    second = await make_rule(
        api, trigger, "core.echo", action_params={"message": "two {{ event.payload.x }}"}
    )
    idle_action = await inline_action(api)
    idle = await make_rule(api, trigger, idle_action)
    status, body = await call(api, "POST", f"/api/v1/rules/{idle}/disable")
    assert status == 200, body
    assert body["data"]["enabled"] is False, body

    for x in ("a", "b"):
        event_id = await fire_ok(anon, key, {"x": x})
        await processed(api, event_id)
        rows = await enforcements(api, event_id=event_id)
        assert sorted(r["rule_ref"] for r in rows) == sorted([first, second]), rows
        outputs = set()
        for row in rows:
            assert (row["status"], row["outcome"]) == ("processed", "scheduled"), row
            done = await finished(api, row["execution_id"])
            assert done["status"] == "completed", done
            assert done["enforcement"] == row["id"]
            outputs.add(done["result"]["stdout"])
        assert outputs == {f"one {x}\n", f"two {x}\n"}
    assert len(await enforcements(api, trigger_ref=trigger)) == 4
    assert await enforcements(api, rule_ref=idle) == []
    assert await executions_of(api, idle_action) == 0


async def test_disabled_trigger_and_webhook_record_nothing(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    action = await inline_action(api)
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(api, trigger, action)

    status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/disable")
    assert status == 200, body
    assert body["data"]["enabled"] is False, body
    status, body, _ = await fire(anon, key, {"x": 1})
    assert status in (400, 404), body

    status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/enable")
    assert status == 200, body
    status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/webhooks/disable")
    assert status == 200, body
    assert body["data"]["webhook_enabled"] is False, body
    status, body, _ = await fire(anon, key, {"x": 2})
    assert status in (400, 404), body

    assert await events(api, trigger_ref=trigger) == []
    assert await enforcements(api, trigger_ref=trigger) == []
    assert await executions_of(api, action) == 0

    # Enabled again with the same key: it works.
    status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/webhooks/enable")
    assert status == 200, body
    assert body["data"]["webhook_key"] == key, body
    enf = await one_enforcement(api, await fire_ok(anon, key, {"x": 3}))
    assert (enf["status"], enf["outcome"]) == ("processed", "scheduled"), enf


# -- HMAC and keys ----------------------------------------------------------------------------


async def test_hmac_signature_and_key_regeneration(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    secret = "hmac-secret-" + uniq()
    trigger, key = await make_trigger(api, webhook_secret=secret)
    assert key is not None
    status, body = await call(api, "GET", f"/api/v1/triggers/{trigger}")
    assert status == 200, body
    assert body["data"]["has_webhook_secret"] is True, body
    assert secret not in json.dumps(body)

    raw = json.dumps({"payload": {"signed": True}}).encode()
    status, body, _ = await fire(
        anon, key, raw=raw, headers={"X-Webhook-Signature": sign(secret, raw)}
    )
    assert status == 200, body
    good_event = body["data"]["event_id"]

    status, body, _ = await fire(anon, key, raw=raw)
    assert status == 401, body
    status, body, _ = await fire(
        anon, key, raw=raw, headers={"X-Webhook-Signature": sign("wrong-secret", raw)}
    )
    assert status == 401, body
    listed = await events(api, trigger_ref=trigger)
    assert [e["id"] for e in listed] == [good_event], listed

    status, body, _ = await fire(anon, "wh_" + uuid.uuid4().hex, {"x": 1})
    assert status == 404, body

    status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/webhooks/regenerate")
    assert status == 200, body
    new_key = body["data"]["webhook_key"]
    assert new_key.startswith("wh_"), body
    assert new_key != key, body
    status, body, _ = await fire(
        anon, key, raw=raw, headers={"X-Webhook-Signature": sign(secret, raw)}
    )
    assert status == 404, body
    status, body, _ = await fire(
        anon, new_key, raw=raw, headers={"X-Webhook-Signature": sign(secret, raw)}
    )
    assert status == 200, body
    assert len(await events(api, trigger_ref=trigger)) == 2


# -- templates --------------------------------------------------------------------------------


async def test_template_syntax_error_is_refused_at_save(api: aiohttp.ClientSession) -> None:
    trigger, _ = await make_trigger(api)
    ref = f"auto_{uniq()}.rule"
    status, body = await call(
        api,
        "POST",
        "/api/v1/rules",
        {
            "ref": ref,
            "trigger_ref": trigger,
            "action_ref": "core.echo",
            "action_params": {"message": "{{ event.payload.message "},
        },
    )
    assert status == 422, body
    assert "action_params" in body["error"], body
    status, body = await call(api, "GET", f"/api/v1/rules/{ref}")
    assert status == 404, body


async def test_missing_payload_key_fails_the_enforcement(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, parameters={"message": {"type": "string"}})
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(api, trigger, action, action_params={"message": "{{ event.payload.nope }}"})

    enf = await one_enforcement(api, await fire_ok(anon, key, {"message": "here"}))
    assert (enf["status"], enf["outcome"]) == ("processed", "failed"), enf
    assert enf["execution_id"] is None, enf
    assert enf["error"], enf
    assert "nope" in enf["error"], enf
    assert await executions_of(api, action) == 0


@pytest.mark.parametrize(
    ("template", "n"),
    [("{{ event.payload.n ** event.payload.n }}", 10**5), ("{{ 'a' * event.payload.n }}", 10**7)],
)
async def test_a_small_payload_that_would_grow_a_template_fails_the_enforcement(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession, template: str, n: int
) -> None:
    """Issue 12, hole 3: a 20-byte payload must not stall the server or grow it by gigabytes."""
    action = await inline_action(api, parameters={"message": {"type": "string"}})
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(api, trigger, action, action_params={"message": template})

    enf = await one_enforcement(api, await fire_ok(anon, key, {"n": n}))
    assert (enf["status"], enf["outcome"]) == ("processed", "failed"), enf
    assert "would make a" in enf["error"], enf
    assert await executions_of(api, action) == 0
    async with anon.get("/health") as resp:
        assert resp.status == 200


async def test_health_answers_while_a_slow_template_runs_and_the_rule_fails_with_the_reason(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    """Issue 12, hole 3: a template that runs for hours (here, from a one-field payload) is
    evaluated off the event loop and stopped at ATTUNE_TEMPLATE_TIMEOUT_S; /health answers
    meanwhile; the enforcement fails with the reason."""
    loops = "{% for a in range(event.payload.n) %}{% for b in range(event.payload.n) %}"
    action = await inline_action(api, parameters={"message": {"type": "string"}})
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(
        api, trigger, action, action_params={"message": loops + "{% endfor %}{% endfor %}x"}
    )

    event_id = await fire_ok(anon, key, {"n": 100_000})
    probe_until = time.monotonic() + TEMPLATE_TIMEOUT_S
    slowest = 0.0
    while time.monotonic() < probe_until:  # the whole time the template may run
        started = time.monotonic()
        async with anon.get("/health", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            assert resp.status == 200
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.5, f"/health took {slowest:.2f} s while the template ran"

    enf = await one_enforcement(api, event_id)
    assert (enf["status"], enf["outcome"], enf["execution_id"]) == ("processed", "failed", None)
    assert f"took longer than {TEMPLATE_TIMEOUT_S:g} s" in enf["error"], enf
    assert await executions_of(api, action) == 0


# -- limits -----------------------------------------------------------------------------------


async def test_body_over_the_limit_is_413(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    status, body, _ = await fire(anon, key, {"blob": "x" * (MAX_WEBHOOK_BYTES + 10)})
    assert status == 413, body
    assert await events(api, trigger_ref=trigger) == []


async def test_rate_limit_is_429_with_retry_after(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    statuses: list[int] = []
    limited_headers = None
    for i in range(12):
        status, body, headers = await fire(anon, key, {"i": i})
        statuses.append(status)
        if status == 429:
            assert body["code"] == "TOO_MANY_REQUESTS", body
            limited_headers = headers
            break
        assert status == 200, body
    assert limited_headers is not None, f"never limited: {statuses}"
    assert statuses[: 2 * RATE_PER_S] == [200] * (2 * RATE_PER_S), statuses
    assert int(limited_headers["Retry-After"]) >= 1
    accepted = statuses.count(200)
    assert len(await events(api, trigger_ref=trigger)) == accepted

    # Another key has its own bucket.
    _, other = await make_trigger(api)
    assert other is not None
    await fire_ok(anon, other, {"i": 0})


# -- timers -----------------------------------------------------------------------------------


async def test_interval_timer_fires_rule(api: aiohttp.ClientSession) -> None:
    trigger, _ = await make_trigger(
        api, ref=f"auto_{uniq()}.tick", type="interval", parameters={"seconds": 0.5}
    )
    rule = await make_rule(api, trigger, "core.noop")
    try:
        ticks = await poll_api(
            lambda: events(api, trigger_ref=trigger),
            lambda rows: len(rows) >= 3,
            "three timer ticks",
            8.0,
        )
    finally:
        status, body = await call(api, "POST", f"/api/v1/triggers/{trigger}/disable")
        assert status == 200, body
    assert all(e["source"] == "timer" for e in ticks), ticks
    scheduled = [e["payload"]["scheduled_at"] for e in ticks]
    assert len(set(scheduled)) == len(scheduled), scheduled
    times = sorted(datetime.fromisoformat(s) for s in scheduled)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(g >= 0.45 for g in gaps), gaps

    completed = 0
    for event in ticks:
        await processed(api, event["id"])
        rows = await enforcements(api, event_id=event["id"])
        assert len(rows) == 1, rows
        assert rows[0]["rule_ref"] == rule, rows
        done = await finished(api, rows[0]["execution_id"])
        assert done["status"] == "completed", done
        completed += 1
    assert completed >= 2


# -- Slack card and callbacks ---------------------------------------------------------------


def _cards(standin: SlackStandIn, channel: str) -> list[Call]:
    return standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: not c.params.get("thread_ts")
    )


async def test_rule_chat_channel_gets_the_card(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession, standin: SlackStandIn
) -> None:
    channel = new_channel()
    trigger, key = await make_trigger(api)
    assert key is not None
    rule = await make_rule(
        api,
        trigger,
        "core.echo",
        action_params={"message": "{{ event.payload.message }}"},
        chat_channel=channel,
    )
    event_id = await fire_ok(anon, key, {"message": "disk full"})
    enf = await one_enforcement(api, event_id)
    execution_id = enf["execution_id"]
    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed", record
    assert all(r["state"] == "delivered" for r in rows), rows

    mine = [c for c in _cards(standin, channel) if re.search(rf"#{execution_id}\b", c.all_text())]
    assert len(mine) == 1, [c.params for c in _cards(standin, channel)]
    card = mine[0]
    assert card.params["channel"] == channel
    assert rule in card.all_text(), card.all_text()
    assert f"#{event_id}" in card.all_text(), card.all_text()
    ts = card.response["ts"]  # type: ignore[index]

    ups = [u for u in standin.find("chat.update", target=channel, ok=True) if u.params["ts"] == ts]
    last = ups[-1] if ups else card  # a card posted in its final state is not edited
    assert "completed" in last.all_text(), last.all_text()
    assert rule in last.all_text()
    assert f"#{event_id}" in last.all_text()

    replies = standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: c.params.get("thread_ts") == ts
    )
    assert len(replies) == 1, [r.params for r in replies]
    assert "disk full" in replies[0].all_text(), replies[0].all_text()


async def test_rule_callback_url_gets_the_record_once(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession, standin: SlackStandIn
) -> None:
    hook = f"rule-{uniq()}"
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(
        api,
        trigger,
        "core.echo",
        action_params={"message": "cb {{ event.id }}"},
        callback_url=standin.hook_url(hook),
    )
    event_id = await fire_ok(anon, key, {})
    enf = await one_enforcement(api, event_id)
    record, rows = await settle(api, enf["execution_id"])
    assert record["status"] == "completed", record
    assert [r["state"] for r in rows] == ["delivered"], rows
    assert rows[0]["attempts"] == 1, rows
    assert rows[0]["last_error"] is None, rows
    assert rows[0]["delivered_at"] >= rows[0]["created"], rows

    calls = standin.find("hook", target=hook)
    assert len(calls) == 1, [c.body for c in calls]
    sent = calls[0].json()
    assert sent["id"] == enf["execution_id"], sent
    assert sent["enforcement"] == enf["id"], sent
    assert sent["status"] == "completed", sent
    assert sent["result"]["stdout"] == f"cb {event_id}\n", sent
    assert calls[0].headers.get("X-Attune-Signature", "").startswith("sha256="), calls[0].headers


# -- listings ---------------------------------------------------------------------------------


async def test_listing_filters(api: aiohttp.ClientSession, anon: aiohttp.ClientSession) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    rule_a = await make_rule(api, trigger, "core.noop")
    rule_b = await make_rule(api, trigger, "core.noop")
    _, other_key = await make_trigger(api)
    assert other_key is not None

    first = await fire_ok(anon, key, {"n": 1})
    await processed(api, first)
    await processed(api, await fire_ok(anon, other_key, {"n": 0}))
    status, body, _ = await fire(anon, key, {"n": 2})
    assert status == 200, body
    second, second_at = body["data"]["event_id"], body["data"]["received_at"]
    await processed(api, second)

    listed = await events(api, trigger_ref=trigger)
    assert [e["id"] for e in listed] == [second, first], listed  # newest first
    assert all(e["trigger_ref"] == trigger for e in listed)
    assert [e["id"] for e in await events(api, trigger_ref=trigger, since=second_at)] == [second]
    assert await events(api, trigger_ref=trigger, since="2999-01-01T00:00:00+00:00") == []
    assert [e["id"] for e in await events(api, trigger_ref=trigger, until=second_at)] == [first]

    a_rows = await enforcements(api, rule_ref=rule_a)
    assert sorted(r["event_id"] for r in a_rows) == [first, second], a_rows
    assert all(r["rule_ref"] == rule_a for r in a_rows)
    assert len(await enforcements(api, rule_ref=rule_b)) == 2
    assert len(await enforcements(api, trigger_ref=trigger)) == 4
    recent = await enforcements(api, rule_ref=rule_a, since=second_at)
    assert [r["event_id"] for r in recent] == [second], recent

    status, body = await call(api, "GET", "/api/v1/events?since=not-a-time")
    assert status == 400, body
    status, body = await call(api, "GET", "/api/v1/events/999999999")
    assert status == 404, body


async def test_lone_template_keeps_a_string_a_string(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    trigger, key = await make_trigger(api)
    assert key is not None
    await make_rule(
        api, trigger, "core.echo", action_params={"message": "{{ event.payload.message }}"}
    )
    enf = await one_enforcement(api, await fire_ok(anon, key, {"message": "1.10"}))
    assert enf["config"] == {"message": "1.10"}, json.dumps(enf)
    done = await finished(api, enf["execution_id"])
    assert done["result"]["stdout"] == "1.10\n", done
