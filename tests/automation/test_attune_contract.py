"""Triggers, rules, events and enforcements as Attune's clients see them, over real HTTP.

Written from Attune's published types (``CreateTriggerRequest``, ``UpdateTriggerRequest``,
``CreateRuleRequest``, ``UpdateRuleRequest``, ``WebhookReceiverRequest``; ``TriggerResponse``,
``RuleResponse``, ``EventResponse``, ``EnforcementResponse`` and their summaries): the requests
Attune's clients send are accepted, and every field their generated client requires is in the
answer, with Attune's values. One ``attune serve`` (SQLite, in-process broker) for the module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from tests.automation.wire import (
    DATABASES,
    call,
    finished,
    inline_action,
    items,
    ok,
    post_webhook,
    processed,
    serving,
    uniq,
    wait_items,
    webhook_key,
)
from tests.e2e.conftest import Server, client
from tests.scenario.harness import login
from tests.scenario.slack_standin import SlackStandIn

pytestmark = pytest.mark.e2e

#: Fields Attune's generated client requires (``d.pop("x")``) in each response.
TRIGGER = {
    "id",
    "ref",
    "label",
    "enabled",
    "is_adhoc",
    "param_schema",
    "out_schema",
    "webhook_enabled",
    "created",
    "updated",
}
TRIGGER_OPTIONAL = {"pack", "pack_ref", "description", "webhook_key"}
RULE = {
    "id",
    "ref",
    "pack",
    "pack_ref",
    "label",
    "action_ref",
    "trigger_ref",
    "conditions",
    "action_params",
    "trigger_params",
    "enabled",
    "is_adhoc",
    "created",
    "updated",
}
RULE_OPTIONAL = {"action", "trigger", "description", "owner_identity"}
EVENT = {"id", "trigger_ref", "config", "payload", "created"}
EVENT_SUMMARY = {"id", "trigger_ref", "has_payload", "created"}
EVENT_OPTIONAL = {"trigger", "rule", "rule_ref", "source", "source_ref"}
ENFORCEMENT = {
    "id",
    "rule_ref",
    "trigger_ref",
    "config",
    "status",
    "payload",
    "condition",
    "conditions",
    "created",
}
ENFORCEMENT_OPTIONAL = {"rule", "event", "resolved_at"}


@pytest.fixture(scope="module", params=DATABASES)
async def server(
    request: pytest.FixtureRequest,
    standin: SlackStandIn,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("contract")
    async with serving(request.param, standin, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def api(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, await login(server.base_url)) as session:
        yield session


@pytest.fixture(scope="module")
async def anon(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url) as session:
        yield session


def has_fields(
    record: dict[str, Any], required: set[str], optional: frozenset[str] = frozenset()
) -> None:
    missing = (required | optional) - set(record)
    assert not missing, (missing, record)
    assert isinstance(record["created"], str)
    datetime.fromisoformat(record["created"])


async def new_pack(api: aiohttp.ClientSession) -> tuple[str, str]:
    """A pack of this test only (made by creating an action in it); (pack ref, action ref)."""
    pack = f"pk_{uniq()}"
    return pack, await inline_action(api, pack)


async def attune_trigger(api: aiohttp.ClientSession, pack: str, **extra: Any) -> dict[str, Any]:
    """The trigger Attune's ``create_webhook_trigger`` fixture sends."""
    body = {
        "ref": f"{pack}.webhook_{uniq()}",
        "label": "Webhook",
        "pack_ref": pack,
        "description": "made by a test",
        "param_schema": {"type": "object", "properties": {"url_path": {"type": "string"}}},
        "out_schema": {"type": "object", "properties": {"body": {"type": "object"}}},
        "trigger_type": "webhook",  # sent by Attune's helper, defined by nobody: ignored
        "parameters": {},
        **extra,
    }
    status, got = await call(api, "POST", "/api/v1/triggers", body)
    assert status == 201, got
    return dict(got["data"])


# -- triggers -------------------------------------------------------------------------------


async def test_trigger_as_attune_creates_and_shows_it(api: aiohttp.ClientSession) -> None:
    pack, _ = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    has_fields(trigger, TRIGGER, TRIGGER_OPTIONAL)
    pack_id = (await ok(api, "GET", f"/api/v1/packs/{pack}"))["id"]
    assert trigger["pack"] == pack_id
    assert trigger["pack_ref"] == pack
    assert trigger["is_adhoc"] is True
    assert trigger["webhook_enabled"] is False
    assert trigger["param_schema"]["properties"] == {"url_path": {"type": "string"}}
    assert trigger["out_schema"]["properties"] == {"body": {"type": "object"}}
    assert trigger["type"] == "webhook"  # ours, beside Attune's

    summaries = await items(api, "/api/v1/triggers", pack_ref=pack)
    assert [t["ref"] for t in summaries] == [trigger["ref"]]
    has_fields(summaries[0], {"id", "ref", "label", "enabled", "webhook_enabled", "updated"})
    assert [t["ref"] for t in await items(api, f"/api/v1/packs/{pack}/triggers")] == [
        trigger["ref"]
    ]
    assert trigger["ref"] in {t["ref"] for t in await items(api, "/api/v1/triggers/enabled")}


async def test_trigger_refs_with_dots_and_bare_names(api: aiohttp.ClientSession) -> None:
    pack, _ = await new_pack(api)
    dotted = await attune_trigger(api, pack, ref=f"test.{pack}.webhook_{uniq()}")
    assert dotted["pack_ref"] == pack  # the pack the request names, not the ref's first part
    bare = await attune_trigger(api, pack, ref=f"bare_{uniq()}")
    assert bare["pack_ref"] == pack
    assert (await ok(api, "GET", f"/api/v1/triggers/{bare['ref']}"))["id"] == bare["id"]

    status, got = await call(api, "POST", "/api/v1/triggers", {"ref": f"bare_{uniq()}"})
    assert status == 400, got
    assert "pack_ref" in got["error"], got


async def test_trigger_of_an_unknown_pack_is_404_and_not_stored(
    api: aiohttp.ClientSession,
) -> None:
    ref = f"nopack_{uniq()}.hook"
    status, got = await call(
        api, "POST", "/api/v1/triggers", {"ref": ref, "label": "x", "pack_ref": ref[:14]}
    )
    assert status == 404, got
    assert got["code"] == "NOT_FOUND"
    assert ref[:14] in got["error"]
    status, _ = await call(api, "GET", f"/api/v1/triggers/{ref}")
    assert status == 404


async def test_trigger_update_sends_only_what_changes(api: aiohttp.ClientSession) -> None:
    pack, _ = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    ref = trigger["ref"]
    got = await ok(
        api,
        "PUT",
        f"/api/v1/triggers/{ref}",
        {"label": "Renamed", "description": {"op": "set", "value": "new words"}},
    )
    assert (got["label"], got["description"]) == ("Renamed", "new words")
    assert got["param_schema"] == trigger["param_schema"]  # untouched
    got = await ok(
        api, "PUT", f"/api/v1/triggers/{ref}", {"out_schema": {"op": "clear"}, "enabled": False}
    )
    assert got["out_schema"] is None
    assert got["enabled"] is False
    assert got["label"] == "Renamed"
    status, body = await call(api, "PUT", f"/api/v1/triggers/{ref}", {"ref": f"{pack}.other"})
    assert status == 400, body


# -- rules ----------------------------------------------------------------------------------


async def test_rule_as_attune_creates_and_shows_it(api: aiohttp.ClientSession) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    conditions = {"and": [{"var": "event.payload.body.message", "!=": None}]}  # Attune's own
    body = {
        "ref": f"{pack}.rule_{uniq()}",
        "pack_ref": pack,
        "label": "Rule",
        "description": "made by a test",
        "action_ref": action,
        "trigger_ref": trigger["ref"],
        "conditions": conditions,
        "action_params": {"message": "{{ event.payload.body.message }}"},
        "enabled": True,
        "permission_set_refs": None,
        "owner": "nobody",  # defined by nobody: ignored
    }
    status, got = await call(api, "POST", "/api/v1/rules", body)
    assert status == 201, got
    rule = got["data"]
    has_fields(rule, RULE, RULE_OPTIONAL)
    action_id = (await ok(api, "GET", f"/api/v1/actions/{action}"))["id"]
    assert (rule["trigger"], rule["action"]) == (trigger["id"], action_id)
    assert rule["pack"] == trigger["pack"]
    assert rule["is_adhoc"] is True
    assert rule["conditions"] == conditions  # as sent
    assert rule["trigger_params"] == {}
    assert (await ok(api, "GET", f"/api/v1/rules/{rule['ref']}"))["id"] == rule["id"]

    for path, query in [
        ("/api/v1/rules", {"action_ref": action}),
        ("/api/v1/rules", {"pack_ref": pack}),
        ("/api/v1/rules", {"trigger_ref": trigger["ref"], "enabled": "true"}),
        (f"/api/v1/packs/{pack}/rules", {}),
        (f"/api/v1/actions/{action}/rules", {}),
        (f"/api/v1/triggers/{trigger['ref']}/rules", {}),
    ]:
        rows = await items(api, path, **query)
        assert [r["ref"] for r in rows] == [rule["ref"]], (path, query, rows)
        has_fields(rows[0], {"id", "ref", "pack_ref", "label", "action_ref", "trigger_params"})
    assert await items(api, "/api/v1/rules", action_ref=action, enabled="false") == []
    assert rule["ref"] in {r["ref"] for r in await items(api, "/api/v1/rules/enabled")}
    status, got = await call(api, "GET", f"/api/v1/packs/nopack_{uniq()}/rules")
    assert status == 404, got


async def test_rule_update_sends_only_what_changes(api: aiohttp.ClientSession) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    ref = f"{pack}.rule_{uniq()}"
    await ok(
        api,
        "POST",
        "/api/v1/rules",
        {
            "ref": ref,
            "pack_ref": pack,
            "label": "R",
            "action_ref": action,
            "trigger_ref": trigger["ref"],
            "action_params": {"a": 1},
        },
    )
    got = await ok(api, "PUT", f"/api/v1/rules/{ref}", {"label": "R2", "enabled": False})
    assert (got["label"], got["enabled"], got["action_params"]) == ("R2", False, {"a": 1})
    got = await ok(api, "PUT", f"/api/v1/rules/{ref}", {"conditions": {"==": [1, 1]}})
    assert got["conditions"] == {"==": [1, 1]}
    assert got["label"] == "R2"


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"trigger_ref": "nowhere.trigger"}, 404, "nowhere.trigger"),
        ({"action_ref": "nowhere.action"}, 404, "nowhere.action"),
        ({"pack_ref": "nowhere_pack"}, 404, "nowhere_pack"),
        ({"conditions": {"no_such_op": [1]}}, 422, "no_such_op"),
        ({"conditions": {"==": [1]}}, 422, "=="),
        ({"trigger_params": {"url_path": 5}}, 400, "url_path"),
    ],
)
async def test_bad_rule_is_refused_and_not_stored(
    api: aiohttp.ClientSession, change: dict[str, Any], status: int, needle: str
) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    ref = f"{pack}.rule_{uniq()}"
    body = {
        "ref": ref,
        "pack_ref": pack,
        "label": "R",
        "action_ref": action,
        "trigger_ref": trigger["ref"],
        **change,
    }
    got_status, got = await call(api, "POST", "/api/v1/rules", body)
    assert got_status == status, got
    assert needle in got["error"], got
    assert set(got) == {"error", "code"}, got
    assert (await call(api, "GET", f"/api/v1/rules/{ref}"))[0] == 404


# -- events and enforcements ------------------------------------------------------------------


async def test_webhook_event_and_enforcement_as_attune(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    key = await webhook_key(api, trigger["ref"])
    rule = await ok(
        api,
        "POST",
        "/api/v1/rules",
        {
            "ref": f"{pack}.rule_{uniq()}",
            "pack_ref": pack,
            "label": "R",
            "action_ref": action,
            "trigger_ref": trigger["ref"],
            "action_params": {"m": "{{ event.payload.message }}"},
        },
    )
    accepted = await post_webhook(
        anon,
        key,
        {"payload": {"message": "hi"}, "headers": {"X-From": "test"}, "source_ip": "ignored"},
        headers={"User-Agent": "contract-test"},
    )
    assert {"event_id", "trigger_ref", "received_at", "message"} <= set(accepted)
    assert accepted["message"] == "Webhook received successfully"  # Attune's words
    event = await processed(api, accepted["event_id"])
    has_fields(event, EVENT, EVENT_OPTIONAL)
    assert event["trigger"] == trigger["id"]
    assert event["payload"] == {"message": "hi"}
    assert event["rule"] is None
    assert event["config"]["source"] == "webhook"
    assert event["config"]["headers"] == {"X-From": "test"}
    assert event["config"]["user_agent"] == "contract-test"
    assert key not in str(event["config"])  # the key is the webhook's credential

    listed = await items(api, "/api/v1/events", trigger=trigger["id"])
    assert [e["id"] for e in listed] == [event["id"]]
    has_fields(listed[0], EVENT_SUMMARY, EVENT_OPTIONAL)
    assert listed[0]["has_payload"] is True
    assert [
        e["id"]
        for e in await items(api, "/api/v1/events", source="webhook", trigger_ref=trigger["ref"])
    ] == [event["id"]]

    enforcements = await items(api, "/api/v1/enforcements", rule=rule["id"])
    assert len(enforcements) == 1, enforcements
    enf = enforcements[0]
    has_fields(enf, ENFORCEMENT, ENFORCEMENT_OPTIONAL)
    assert (enf["rule"], enf["event"], enf["status"]) == (rule["id"], event["id"], "processed")
    assert (enf["condition"], enf["conditions"]) == ("all", {})
    assert enf["payload"] == {"message": "hi"}
    assert enf["resolved_at"] is not None
    assert enf["outcome"] == "scheduled"  # ours, beside Attune's
    done = await finished(api, enf["execution_id"])
    assert done["status"] == "completed", done
    assert done["enforcement"] == enf["id"]
    got = await ok(api, "GET", f"/api/v1/enforcements/{enf['id']}")
    assert got["payload"] == {"message": "hi"}
    for query in ({"event": event["id"]}, {"status": "processed", "rule_ref": rule["ref"]}):
        assert [e["id"] for e in await items(api, "/api/v1/enforcements", **query)] == [enf["id"]]
    assert await items(api, "/api/v1/enforcements", status="created", rule=rule["id"]) == []
    status, got = await call(api, "GET", "/api/v1/enforcements?status=bogus")
    assert status == 400, got
    assert "status" in got["error"]


async def test_json_logic_conditions_are_evaluated(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    key = await webhook_key(api, trigger["ref"])
    conditions = {
        "and": [
            {"==": [{"var": "event.payload.level"}, "error"]},
            {">": [{"var": "payload.count"}, 3]},
            {"in": [{"var": "rule.ref"}, [f"{pack}.logic"]]},
        ]
    }
    rule = await ok(
        api,
        "POST",
        "/api/v1/rules",
        {
            "ref": f"{pack}.logic",
            "pack_ref": pack,
            "label": "L",
            "action_ref": action,
            "trigger_ref": trigger["ref"],
            "conditions": conditions,
        },
    )
    misses = [{"level": "error", "count": 1}, {"level": "info", "count": 9}, {}]
    for payload in misses:
        event = await post_webhook(anon, key, {"payload": payload})
        await processed(api, event["event_id"])
    hit = await post_webhook(anon, key, {"payload": {"level": "error", "count": 5}})
    await processed(api, hit["event_id"])
    rows = await wait_items(
        api,
        "/api/v1/enforcements",
        lambda r: len(r) >= 1,
        "the hit's enforcement",
        rule=rule["id"],
    )
    assert [r["event"] for r in rows] == [hit["event_id"]]
    assert rows[0]["conditions"] == conditions


async def test_github_signature_header_is_read(
    api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    import hashlib
    import hmac
    import json

    pack, _ = await new_pack(api)
    secret = "s3cret-value"
    trigger = await attune_trigger(api, pack, webhook_secret=secret)
    key = await webhook_key(api, trigger["ref"])
    raw = json.dumps({"payload": {"a": 1}}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sig}
    async with anon.post(f"/api/v1/webhooks/{key}", data=raw, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    event = await processed(api, body["data"]["event_id"])
    assert event["config"]["hmac_verified"] is True
    async with anon.post(f"/api/v1/webhooks/{key}", json={"payload": {"a": 1}}) as resp:
        assert resp.status == 401


async def test_delete_answers_as_attune(api: aiohttp.ClientSession) -> None:
    pack, action = await new_pack(api)
    trigger = await attune_trigger(api, pack)
    ref = f"{pack}.rule_{uniq()}"
    body = {
        "ref": ref,
        "pack_ref": pack,
        "label": "R",
        "action_ref": action,
        "trigger_ref": trigger["ref"],
    }
    await ok(api, "POST", "/api/v1/rules", body)
    status, got = await call(api, "DELETE", f"/api/v1/triggers/{trigger['ref']}")
    assert status == 409, got
    assert ref in got["error"], got
    for path in (f"/api/v1/rules/{ref}", f"/api/v1/triggers/{trigger['ref']}"):
        status, got = await call(api, "DELETE", path)
        assert status == 200, got
        assert got["success"] is True
        assert "deleted" in got["message"]
        assert (await call(api, "GET", path))[0] == 404
        status, got = await call(api, "DELETE", path)
        assert (status, got["code"]) == (404, "NOT_FOUND"), got
