"""Execution tokens (what an action calls the API with): the role they carry is the
requester's at most, whoever the requester is; they are refused once forged, expired, or when
their run has ended."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, update

from engine.auth import AuthService
from engine.clock import now_utc
from engine.errors import Unauthorized
from engine.execution_tokens import ExecutionTokens, api_url
from engine.runners import RunRequest
from engine.storage import Store
from engine.storage.tables import enforcements, executions

SLACK_ROLES = {"U_ADMIN": "admin"}


@pytest.fixture
async def tokens(store: Store) -> ExecutionTokens:
    auth = AuthService(store, token_ttl_s=60)
    await auth.ensure_admin("root", "password-123")
    await auth.create_user("olga", "password-123", "operator")
    await auth.issue_token("root", name="ci", role="operator")
    await auth.issue_token("root", name="login")
    return ExecutionTokens(
        store, "k" * 40, api_url="http://h:1", slack_roles=SLACK_ROLES, slack_default_role="viewer"
    )


async def _execution(store: Store, executor: dict[str, Any], status: str = "running") -> int:
    now = now_utc()
    async with store.write() as conn:
        row = (
            await conn.execute(
                insert(executions)
                .values(
                    action_ref="core.echo",
                    status=status,
                    config={},
                    executor=executor,
                    timeout_s=60,
                    created=now,
                    updated=now,
                )
                .returning(executions.c.id)
            )
        ).one()
    return int(row.id)


async def _role_of(tokens: ExecutionTokens, store: Store, executor: dict[str, Any]) -> str:
    execution_id = await _execution(store, executor)
    env = await tokens.environment(_request(execution_id))
    principal = await tokens.authenticate(env["ATTUNE_API_TOKEN"])
    assert principal.token_name == f"execution:{execution_id}"
    return principal.role


def _request(execution_id: int) -> RunRequest:
    from engine.packs import ActionSpec

    action = ActionSpec(ref="core.echo", pack_ref="core", name="echo", runner_type="builtin")
    return RunRequest(execution_id=execution_id, action=action, parameters={}, timeout_s=60)


@pytest.mark.parametrize(
    ("executor", "role"),
    [
        ({"identity": "root", "source": "api", "token": "login"}, "admin"),
        # asked with an operator token of an admin: operator
        ({"identity": "root", "source": "api", "token": "ci"}, "operator"),
        ({"identity": "olga", "source": "api", "token": "login"}, "operator"),
        ({"identity": "ghost", "source": "api", "token": "login"}, "viewer"),
        ({"identity": "U_ADMIN", "source": "slack", "user_id": "U_ADMIN"}, "admin"),
        ({"identity": "U_OTHER", "source": "slack", "user_id": "U_OTHER"}, "viewer"),
        ({"identity": "rule:ops.r", "source": "rule", "rule": "ops.r"}, "operator"),
        ({"identity": "me", "source": "cli"}, "admin"),
        ({"identity": "olga", "source": "api", "role": "viewer"}, "viewer"),
    ],
)
async def test_the_token_carries_the_requesters_role(
    tokens: ExecutionTokens, store: Store, executor: dict[str, Any], role: str
) -> None:
    assert await _role_of(tokens, store, executor) == role


async def test_a_run_started_by_a_run_inherits_its_role_at_most(
    tokens: ExecutionTokens, store: Store
) -> None:
    parent = await _execution(store, {"identity": "root", "source": "api", "token": "ci"})
    child = {"identity": "root", "source": "api", "token": f"execution:{parent}"}
    assert await _role_of(tokens, store, child) == "operator"  # not root's admin
    rule_run = await _execution(store, {"identity": "rule:x", "source": "rule"})
    nested = {"identity": "rule:x", "source": "api", "token": f"execution:{rule_run}"}
    assert await _role_of(tokens, store, nested) == "operator"


async def test_a_rules_run_names_its_rule_and_trigger(
    tokens: ExecutionTokens, store: Store
) -> None:
    execution_id = await _execution(store, {"identity": "rule:ops.r", "source": "rule"})
    async with store.write() as conn:
        enforcement = (
            await conn.execute(
                insert(enforcements)
                .values(
                    rule_ref="ops.r",
                    trigger_ref="ops.alert",
                    event_id=1,
                    status="scheduled",
                    created=now_utc(),
                )
                .returning(enforcements.c.id)
            )
        ).scalar_one()
        await conn.execute(
            update(executions)
            .where(executions.c.id == execution_id)
            .values(enforcement=enforcement)
        )
    env = await tokens.environment(_request(execution_id))
    assert env["ATTUNE_RULE"] == "ops.r"
    assert env["ATTUNE_TRIGGER"] == "ops.alert"
    assert env["ATTUNE_API_URL"] == "http://h:1"


async def test_forged_expired_and_ended_tokens_are_refused(
    tokens: ExecutionTokens, store: Store
) -> None:
    running = await _execution(store, {"identity": "root", "source": "api"})
    good = tokens.mint(running, "root", "admin", 60)
    assert (await tokens.authenticate(good)).login == "root"
    body, _, signature = good.partition(".")
    for bad in (
        body + "." + signature[::-1],
        tokens.mint(running, "root", "admin", -1),
        ExecutionTokens(store, "another key" * 4, api_url="").mint(running, "root", "admin", 60),
        "atx_garbage",
    ):
        with pytest.raises(Unauthorized):
            await tokens.authenticate(bad)
    ended = await _execution(store, {"identity": "root", "source": "api"}, status="completed")
    with pytest.raises(Unauthorized, match="ended"):
        await tokens.authenticate(tokens.mint(ended, "root", "admin", 60))


def test_api_url_reaches_any_address_hosts_on_the_loopback() -> None:
    assert api_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"  # noqa: S104
    assert api_url("::1", 9) == "http://[::1]:9"
    assert api_url("api.internal", 80) == "http://api.internal:80"
