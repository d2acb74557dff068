"""``ExecutionFilter.person`` (chat's ``history @user``) on both dialects: a person is found by
the identity they asked with, or by the Slack user name recorded beside their user id."""

from __future__ import annotations

from dataclasses import replace

from engine.records import ExecutionFilter
from engine.storage import Store
from engine.storage.executions import execution_repository
from tests.engine.test_batch_storage import any_store, new

__all__ = ["any_store"]  # the fixture, for pytest


async def test_a_person_is_found_by_identity_or_slack_user_name(any_store: Store) -> None:
    repo = execution_repository(any_store)
    slack = {"identity": "U1", "source": "slack", "user_id": "U1", "user_name": "olivia"}
    for message, executor in [
        ("by olivia in slack", slack),
        ("by olivia in the terminal", {"identity": "olivia", "source": "chat"}),
        ("by someone else", {"identity": "U2", "source": "slack", "user_name": "bob"}),
    ]:
        await repo.submit(replace(new(message), executor=executor), None, None)

    async def messages(person: str) -> list[str]:
        rows = await repo.list(ExecutionFilter(person=person), limit=10, offset=0)
        assert await repo.count(ExecutionFilter(person=person)) == len(rows)
        return [r.config["message"] for r in rows]

    assert await messages("olivia") == ["by olivia in the terminal", "by olivia in slack"]
    assert await messages("U1") == ["by olivia in slack"]
    assert await messages("nobody") == []
