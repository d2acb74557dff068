"""``attune run`` as a subprocess: embedded (its own fresh SQLite, in-process broker and worker)
and, on PostgreSQL + RabbitMQ, against the running cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import TEST_PACK, Server, engine_env, run_cli

pytestmark = pytest.mark.e2e


async def test_cli_run_embedded(tmp_path: Path) -> None:
    env = engine_env(tmp_path)  # a fresh, unused SQLite database; no AMQP URL
    code, out, err = await run_cli(["run", "core.echo", "message=hello"], env, tmp_path)
    assert code == 0, err
    assert "core.echo: completed" in out
    assert "hello\n" in out

    code, out, err = await run_cli(["run", "examples.fail"], env, tmp_path)
    assert code != 0, out
    assert "examples.fail: failed" in out
    assert "something went wrong" in err

    code, out, err = await run_cli(["run", "examples.greet"], env, tmp_path)
    assert code != 0, out
    assert "'name'" in err  # names the missing parameter, no traceback
    assert "Traceback" not in err


@pytest.mark.cluster_only
async def test_cli_run_against_cluster(server: Server) -> None:
    code, out, err = await run_cli(
        ["run", "--wait", "core.echo", "message=hello cluster"], server.env, server.tmp
    )
    assert code == 0, err
    assert "core.echo: completed" in out
    assert "hello cluster\n" in out

    code, out, err = await run_cli(["run", "--wait", "examples.fail"], server.env, server.tmp)
    assert code != 0, out
    assert "examples.fail: failed" in out


async def test_cli_pack_register_list_remove(tmp_path: Path) -> None:
    env = engine_env(tmp_path)
    code, out, err = await run_cli(["pack", "register", str(TEST_PACK)], env, tmp_path)
    assert code == 0, err
    assert "registered test_pack 1.0.0 (1 actions)" in out
    code, out, err = await run_cli(["pack", "register", str(TEST_PACK)], env, tmp_path)
    assert code == 2, out
    assert "already registered; pass force=true" in err
    code, out, err = await run_cli(["pack", "list"], env, tmp_path)
    assert code == 0, err
    listed = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert listed["test_pack"][1:3] == ["1.0.0", "1"]
    code, out, err = await run_cli(["pack", "remove", "test_pack"], env, tmp_path)
    assert (code, out.strip()) == (0, "removed test_pack"), err
    code, out, err = await run_cli(["pack", "remove", "test_pack"], env, tmp_path)
    assert code == 2, out
    assert "pack 'test_pack' not found" in err
    assert "Traceback" not in err


async def test_token_create_refuses_a_ttl_under_a_minute(tmp_path: Path) -> None:
    """Issue 12: ``--ttl-days 0.000001`` rounded to 0 s, which made a token that never expires."""
    env = engine_env(tmp_path)
    args = ["token", "create", "--name", "short"]
    code, out, err = await run_cli([*args, "--ttl-days", "0.000001"], env, tmp_path)
    assert code != 0, out
    assert out.strip() == "", out  # no token printed
    assert "under 60 s" in err, err
    assert "Traceback" not in err

    code, out, err = await run_cli([*args, "--ttl-days", "0.001"], env, tmp_path)
    assert code == 0, err
    assert out.strip(), err
