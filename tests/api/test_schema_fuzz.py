"""The API under schemathesis, against its own OpenAPI document: no 5xx, and every response
(status, content type, body) as the document says. One real server, every operation."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "fuzz-admin-password"
#: Examples per operation: enough to find crashes, small enough for a fast suite.
EXAMPLES = int(os.environ.get("ATTUNE_FUZZ_EXAMPLES", "30"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        **os.environ,
        "ATTUNE_HTTP_PORT": "0",
        "ATTUNE_DATA_DIR": str(tmp),
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/fuzz.db",
        "ATTUNE_PACKS_PATH": str(ROOT / "packs"),
        "ATTUNE_ADMIN_PASSWORD": PASSWORD,
        "ATTUNE_LOG_LEVEL": "WARNING",
        "ATTUNE_LOGIN_MAX_FAILURES": "1000000",
    }
    env.pop("ATTUNE_AMQP_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve"],
        env=env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    url = None
    deadline = time.monotonic() + 30
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := re.search(r"listening on (http://\S+)", line):
            url = match.group(1)
        elif not line and proc.poll() is not None:
            break
    assert url, "attune serve did not start"
    yield url
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def token(server: str) -> str:
    request = urllib.request.Request(  # noqa: S310 (our own local server)
        f"{server}/auth/login",
        data=json.dumps({"login": "admin", "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 (local server)
        return str(json.load(resp)["data"]["access_token"])


@pytest.mark.timeout(600)  # every operation of ~150, 30 examples each: 1-2 minutes alone
def test_api_keeps_its_contract(server: str, token: str) -> None:
    """Every operation, ``EXAMPLES`` generated requests each (schemathesis's pytest plugin does
    not run on this pytest, so its strategies drive plain hypothesis tests)."""
    schema = schemathesis.openapi.from_url(f"{server}/api/v1/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if operation.path.endswith("/stream"):
            continue  # server-sent events never end (tests/e2e/test_change_stream.py)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            # Not every rule fits a schema ("path must exist on the server"), so a 400 for
            # schema-valid data is allowed; every other check stays on.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures
            failures.append(f"{operation.label}: {exc}"[:3000])
    assert operations >= 15, f"only {operations} operations found"
    assert not failures, "\n\n".join(failures)
