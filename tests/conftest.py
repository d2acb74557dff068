"""Shared fixtures: real-service detection (required under CI=true), backends, settings."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

POSTGRES_URL = os.environ.get(
    "ATTUNE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
AMQP_URL = os.environ.get("ATTUNE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: In-process settings (``load_settings()``) let callbacks and ``core.http_request`` reach the
#: tests' own servers on loopback; tests of the default policy pass ``outbound_allow=[]``.
os.environ.setdefault("ATTUNE_OUTBOUND_ALLOW", '["127.0.0.0/8", "::1/128"]')


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is absent on a developer machine; fail loudly under CI."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def amqp_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture
def amqp_exchange() -> str:
    """A private exchange (and queue prefix) per test, so tests never see each other's messages."""
    return f"attune.test.{uuid.uuid4().hex[:10]}"


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[Any]:
    """A local stand-in of Slack's Web API (tests/scenario/slack_standin.py), one per module."""
    from tests.scenario.slack_standin import SlackStandIn

    stand_in = await SlackStandIn().start()
    try:
        yield stand_in
    finally:
        await stand_in.close()


@pytest.fixture
async def api(server: Any) -> AsyncIterator[Any]:
    """An HTTP session logged in as the admin of the module's ``server``."""
    from tests.scenario.harness import admin_api

    async with admin_api(server.base_url) as session:
        yield session
