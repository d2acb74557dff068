"""A rule's secret action parameters are sealed at rest and shown to nobody, while its runs
get the real values (issue 12, hole 10).

One ``attune serve`` (SQLite, in-process broker) for the module; every test makes its own
action, trigger and rule, and reads the SQLite file itself to see what is at rest.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import POLL_S, call, inline_action
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

MARKER = "********"
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-rule-secrets")
    async with running_server("serve", engine_env(tmp), tmp) as srv:
        yield srv


@pytest.fixture
async def admin(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, await login(server.base_url)) as session:
        yield session


def at_rest(server: Server, rule_ref: str) -> str:
    """Everything the database holds about a rule, as text."""
    with sqlite3.connect(server.tmp / "attune.db") as db:
        rows = db.execute("SELECT * FROM rules WHERE ref = ?", (rule_ref,)).fetchall()
    assert rows, rule_ref
    return repr(rows)


async def setup_rule(
    admin: aiohttp.ClientSession, secret: str, visible: str
) -> tuple[str, str, str, str]:
    """An action with a secret ``token`` and a plain ``name`` (its script prints whether it
    got the real token and the name), a webhook trigger and a rule giving both (the token
    templated). Returns (action, trigger, rule, webhook key)."""
    script = (
        "params=$(cat); "
        f'case "$params" in *"Bearer {secret} 7"*) echo got-token;; *) echo no-token;; esac; '
        f'case "$params" in *"{visible}"*) echo got-name;; esac'
    )
    action = await inline_action(
        admin,
        "rsec",
        "use",
        script,
        parameters={
            "token": {"type": "string", "secret": True},
            "name": {"type": "string"},
        },
    )
    pack = action.split(".")[0]
    trigger = f"{pack}.hook"
    answer = await call(admin, "POST", "/api/v1/triggers", json={"ref": trigger})
    assert answer.status == 201, answer.body
    answer = await call(admin, "POST", f"/api/v1/triggers/{trigger}/webhooks/enable")
    assert answer.status == 200, answer.body
    key = answer.data["webhook_key"]
    rule = f"{pack}.rule"
    answer = await call(
        admin,
        "POST",
        "/api/v1/rules",
        json={
            "ref": rule,
            "trigger_ref": trigger,
            "action_ref": action,
            "action_params": {"token": f"Bearer {secret} {{{{ payload.n }}}}", "name": visible},
        },
    )
    assert answer.status == 201, answer.body
    assert answer.data["action_params"] == {"token": MARKER, "name": visible}, answer.body
    assert secret not in json.dumps(answer.body)
    return action, trigger, rule, key


async def fire_and_finish(
    admin: aiohttp.ClientSession, anon: aiohttp.ClientSession, key: str, rule: str
) -> dict[str, Any]:
    """POST the webhook (payload ``n = 7``); return the rule's execution once it ended."""
    async with anon.post(f"/api/v1/webhooks/{key}", json={"payload": {"n": 7}}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    event_id = body["data"]["event_id"]

    async def enforcement() -> Any:
        answer = await call(admin, "GET", f"/api/v1/enforcements?event={event_id}")
        return answer.items

    found = await eventually(
        enforcement,
        f"enforcement of event {event_id}",
        interval_s=POLL_S,
        done=lambda items: bool(items) and items[0]["outcome"] != "creating",
    )
    assert found[0]["rule_ref"] == rule, found
    assert found[0]["error"] is None, found
    execution_id = found[0]["execution_id"]

    async def execution() -> Any:
        return (await call(admin, "GET", f"/api/v1/executions/{execution_id}")).data

    ended = await eventually(
        execution, f"#{execution_id}", interval_s=POLL_S, done=lambda e: e["status"] in TERMINAL
    )
    return dict(ended)


async def test_secret_rule_parameters_are_sealed_redacted_and_still_given_to_the_run(
    server: Server, admin: aiohttp.ClientSession
) -> None:
    secret, visible = f"hunter2-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex[:8]}"
    action, trigger, rule, key = await setup_rule(admin, secret, visible)

    # Not at rest: the database holds neither the value nor the template around it.
    stored = at_rest(server, rule)
    assert secret not in stored
    assert visible in stored

    # Shown redacted everywhere a rule is listed.
    for path in (
        f"/api/v1/rules/{rule}",
        "/api/v1/rules",
        "/api/v1/rules/enabled",
        f"/api/v1/actions/{action}/rules",
        f"/api/v1/triggers/{trigger}/rules",
        f"/api/v1/packs/{action.split('.')[0]}/rules",
        "/api/v1/audit?per_page=100",
    ):
        answer = await call(admin, "GET", path)
        assert answer.status == 200, (path, answer.body)
        assert secret not in json.dumps(answer.body), path
    assert (await call(admin, "GET", f"/api/v1/rules/{rule}")).data["action_params"] == {
        "token": MARKER,
        "name": visible,
    }

    async with client(server.base_url) as anon:
        # The run gets the real, rendered value; its record shows it redacted.
        done = await fire_and_finish(admin, anon, key, rule)
        assert done["status"] == "completed", done
        assert done["result"]["stdout"] == "got-token\ngot-name\n", done
        assert done["config"]["token"] == MARKER, done
        assert secret not in json.dumps(done)

        # Writing back what a GET showed (the marker) keeps the sealed value.
        shown = (await call(admin, "GET", f"/api/v1/rules/{rule}")).data
        answer = await call(
            admin,
            "PUT",
            f"/api/v1/rules/{rule}",
            json={"action_params": shown["action_params"], "description": "edited"},
        )
        assert answer.status == 200, answer.body
        answer = await call(
            admin, "PUT", f"/api/v1/rules/{rule}", json={"label": "only the label changes"}
        )
        assert answer.status == 200, answer.body
        assert secret not in at_rest(server, rule)
        done = await fire_and_finish(admin, anon, key, rule)
        assert done["result"]["stdout"] == "got-token\ngot-name\n", done


async def test_a_parameter_made_secret_later_is_redacted_and_sealed(
    server: Server, admin: aiohttp.ClientSession
) -> None:
    secret, visible = f"hunter2-{uuid.uuid4().hex[:8]}", f"plain-{uuid.uuid4().hex[:8]}"
    action, _trigger, rule, key = await setup_rule(admin, secret, visible)
    assert visible in at_rest(server, rule)

    answer = await call(
        admin,
        "PUT",
        f"/api/v1/actions/{action}",
        json={
            "parameters": {
                "token": {"type": "string", "secret": True},
                "name": {"type": "string", "secret": True},
            }
        },
    )
    assert answer.status == 200, answer.body

    assert (await call(admin, "GET", f"/api/v1/rules/{rule}")).data["action_params"] == {
        "token": MARKER,
        "name": MARKER,
    }
    assert visible not in at_rest(server, rule)

    # Dropping ``secret`` afterwards does not put sealed values back in clear.
    answer = await call(
        admin,
        "PUT",
        f"/api/v1/actions/{action}",
        json={"parameters": {"token": {"type": "string"}, "name": {"type": "string"}}},
    )
    assert answer.status == 200, answer.body
    assert secret not in at_rest(server, rule)
    assert visible not in at_rest(server, rule)
    assert (await call(admin, "GET", f"/api/v1/rules/{rule}")).data["action_params"] == {
        "token": MARKER,
        "name": MARKER,
    }
    async with client(server.base_url) as anon:
        done = await fire_and_finish(admin, anon, key, rule)
    assert done["result"]["stdout"] == "got-token\ngot-name\n", done
    assert done["config"] == {"token": MARKER, "name": MARKER}, done
