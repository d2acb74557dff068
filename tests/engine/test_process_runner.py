"""ProcessRunner: real child processes, observed the way a user sees a run; plus formats.py."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.errors import InvalidParameters
from engine.packs import ActionSpec
from engine.runners import RunRequest, RunResult
from engine.runners.formats import format_parameters, parse_output
from engine.runners.process import ProcessRunner
from tests.waiting import eventually

CAP_BYTES = 64 * 1024
GRACE_S = 0.5


def make_action(
    tmp_path: Path,
    runner_type: str,
    body: str | None = None,
    *,
    name: str = "act",
    script: str | None = None,
    **fields: Any,
) -> ActionSpec:
    """An action of pack ``test`` whose script ``body`` lives in ``tmp_path/actions``."""
    entry_point = None
    if body is not None:
        actions = tmp_path / "actions"
        actions.mkdir(exist_ok=True)
        entry_point = f"{name}.{'py' if runner_type == 'python' else 'sh'}"
        (actions / entry_point).write_text(textwrap.dedent(body), encoding="utf-8")
    return ActionSpec(
        ref=f"test.{name}",
        pack_ref="test",
        name=name,
        runner_type=runner_type,
        entry_point=entry_point,
        script=script,
        base_dir=str(tmp_path),
        **fields,
    )


@pytest.fixture
def runner(tmp_path: Path) -> ProcessRunner:
    return ProcessRunner(
        output_cap_bytes=CAP_BYTES,
        kill_grace_s=GRACE_S,
        work_dir=tmp_path / "work",
        pipe_grace_s=0.3,
    )


async def run(
    runner: ProcessRunner,
    action: ActionSpec,
    params: dict[str, Any] | None = None,
    timeout_s: float = 10.0,
    cancel: asyncio.Event | None = None,
) -> RunResult:
    request = RunRequest(
        execution_id=7,
        action=action,
        parameters=params or {},
        timeout_s=timeout_s,
        cancel=cancel or asyncio.Event(),
    )
    return await runner.run(request)


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def assert_gone(pid: int, within_s: float = 5.0) -> None:
    await eventually(lambda: _gone(pid), f"process {pid} to be gone", within_s, interval_s=0.05)


async def wait_for_file(path: Path, within_s: float = 5.0) -> str:
    def text() -> str:
        return path.read_text().strip() if path.exists() else ""

    return await eventually(text, f"{path} to be written", within_s, interval_s=0.02)


ECHO_PY = """
    import json, sys
    params = json.load(sys.stdin)
    print(params["name"])
"""


# --- parameter delivery ------------------------------------------------------------------


async def test_stdin_json_reaches_python_script(runner: ProcessRunner, tmp_path: Path) -> None:
    result = await run(runner, make_action(tmp_path, "python", ECHO_PY), {"name": "hello"})
    assert (result.outcome, result.exit_code, result.stdout) == ("completed", 0, "hello\n")
    assert result.error is None
    assert result.duration_ms >= 0
    assert list((tmp_path / "work").iterdir()) == []


async def test_file_delivery_is_private_and_removed(runner: ProcessRunner, tmp_path: Path) -> None:
    body = """
        import json, os, stat, sys
        path = os.environ["ATTUNE_PARAMETERS_FILE"]
        print(json.dumps({"mode": stat.S_IMODE(os.stat(path).st_mode),
                          "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode),
                          "params": json.load(open(path)), "path": path,
                          "stdin": sys.stdin.read(), "cwd": os.getcwd(),
                          "delivery": os.environ["ATTUNE_PARAMETER_DELIVERY"]}))
    """
    action = make_action(tmp_path, "python", body, parameter_delivery="file", output_format="json")
    result = await run(runner, action, {"name": "x", "n": 3})
    assert result.outcome == "completed", result.error
    assert result.data["mode"] == 0o400
    assert result.data["dir_mode"] == 0o700
    assert result.data["params"] == {"name": "x", "n": 3}
    assert result.data["stdin"] == ""
    assert result.data["delivery"] == "file"
    assert result.data["cwd"] == str(tmp_path)
    assert not Path(result.data["path"]).exists()


TRICKY = {
    "dollar": "$(touch {marker})",
    "tick": "`touch {marker}`",
    "semi": "; rm -rf x; touch {marker}",
    "quote": 'it\'s "quoted" \\ back',
    "newline": "line1\nline2\n",
}


@pytest.mark.parametrize("delivery", ["file", "stdin"])
async def test_dotenv_values_reach_shell_verbatim(
    runner: ProcessRunner, tmp_path: Path, delivery: str
) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    params: dict[str, Any] = {k: v.format(marker=marker) for k, v in TRICKY.items()}
    params |= {"count": 3, "flag": True}
    source = '"$ATTUNE_PARAMETERS_FILE"' if delivery == "file" else "/dev/stdin"
    body = f"""
        set -a; . {source}; set +a
        printf '%s\\0' "$dollar" "$tick" "$semi" "$quote" "$newline" "$count" "$flag"
    """
    action = make_action(
        tmp_path, "shell", body, parameter_format="dotenv", parameter_delivery=delivery
    )
    result = await run(runner, action, params)
    assert result.outcome == "completed", result.stderr
    assert result.stdout.split("\0")[:-1] == [*(params[k] for k in TRICKY), "3", "true"]
    assert not marker.exists()


async def test_json_injection_attempts_stay_data(runner: ProcessRunner, tmp_path: Path) -> None:
    marker = tmp_path / f"pwned_{uuid.uuid4().hex}"
    params = {k: v.format(marker=marker) for k, v in TRICKY.items()}
    body = "import json, sys; sys.stdout.write(json.dumps(json.load(sys.stdin)))"
    action = make_action(tmp_path, "python", body, output_format="json")
    result = await run(runner, action, params)
    assert result.data == params
    assert not marker.exists()


async def test_yaml_parameters(runner: ProcessRunner, tmp_path: Path) -> None:
    body = "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"
    action = make_action(tmp_path, "python", body, parameter_format="yaml", output_format="json")
    params = {"name": "é: not a key", "items": [1, "two"], "nested": {"on": "yes"}}
    assert (await run(runner, action, params)).data == params


async def test_secrets_reach_script_but_not_command_line(
    runner: ProcessRunner, tmp_path: Path
) -> None:
    body = """
        import json, sys
        params = json.load(sys.stdin)
        cmdline = open("/proc/self/cmdline").read()
        environ = open("/proc/self/environ").read()
        print(json.dumps([params["token"], params["token"] in cmdline + environ]))
    """
    schema = {"type": "object", "properties": {"token": {"type": "string", "secret": True}}}
    action = make_action(tmp_path, "python", body, param_schema=schema, output_format="json")
    assert action.secrets == {"token"}
    result = await run(runner, action, {"token": "s3cr3t-value"})
    assert result.data == ["s3cr3t-value", False]


async def test_large_stdin_document_while_child_writes_first(tmp_path: Path) -> None:
    runner = ProcessRunner(output_cap_bytes=CAP_BYTES, kill_grace_s=GRACE_S, work_dir=tmp_path)
    body = """
        import json, sys
        sys.stdout.write("y" * (2 * 1024 * 1024)); sys.stdout.flush()
        sys.stderr.write(str(len(json.load(sys.stdin)["blob"])))
    """
    result = await run(runner, make_action(tmp_path, "python", body), {"blob": "b" * 3_000_000})
    assert result.outcome == "completed"
    assert result.stderr == "3000000"
    assert result.stdout_truncated
    assert len(result.stdout) == CAP_BYTES


async def test_child_that_ignores_stdin_still_completes(
    runner: ProcessRunner, tmp_path: Path
) -> None:
    action = make_action(tmp_path, "shell", "echo ok")
    result = await run(runner, action, {"blob": "b" * 3_000_000})
    assert (result.outcome, result.stdout) == ("completed", "ok\n")


# --- outcome and output --------------------------------------------------------------------


async def test_nonzero_exit_fails_with_stderr(runner: ProcessRunner, tmp_path: Path) -> None:
    body = "echo partial; echo 'first' >&2; echo 'disk full' >&2; exit 3"
    result = await run(runner, make_action(tmp_path, "shell", body))
    assert (result.outcome, result.exit_code) == ("failed", 3)
    assert result.stdout == "partial\n"
    assert result.stderr == "first\ndisk full\n"
    assert result.error == "exit code 3: disk full"
    assert result.as_record()["succeeded"] is False


async def test_killed_by_signal(runner: ProcessRunner, tmp_path: Path) -> None:
    result = await run(runner, make_action(tmp_path, "shell", "kill -KILL $$"))
    assert (result.outcome, result.exit_code, result.error) == (
        "failed",
        None,
        "killed by signal SIGKILL",
    )


@pytest.mark.parametrize(
    ("fmt", "stdout", "data"),
    [
        ("json", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("jsonl", '{"n": 1}\n\n{"n": 2}\n', [{"n": 1}, {"n": 2}]),
        ("yaml", "a: 1\nb: [x]\n", {"a": 1, "b": ["x"]}),
        ("text", "anything", None),
    ],
)
async def test_output_formats(
    runner: ProcessRunner, tmp_path: Path, fmt: str, stdout: str, data: Any
) -> None:
    body = f"import sys; sys.stdout.write({stdout!r})"
    result = await run(runner, make_action(tmp_path, "python", body, output_format=fmt))
    assert (result.outcome, result.data, result.stdout) == ("completed", data, stdout)


async def test_broken_json_output_fails(runner: ProcessRunner, tmp_path: Path) -> None:
    action = make_action(tmp_path, "shell", "echo '{not json'", output_format="json")
    result = await run(runner, action)
    assert (result.outcome, result.exit_code, result.data) == ("failed", 0, None)
    assert result.error is not None
    assert result.error.startswith("could not parse stdout as json: ")
    assert result.stdout == "{not json\n"


async def test_output_cap_truncates_without_deadlock(runner: ProcessRunner, tmp_path: Path) -> None:
    body = """
        import sys
        sys.stdout.write("o" * (3 * 1024 * 1024))
        sys.stderr.write("e" * (3 * 1024 * 1024))
    """
    result = await run(runner, make_action(tmp_path, "python", body), timeout_s=20)
    assert result.outcome == "completed"
    assert len(result.stdout) == CAP_BYTES
    assert result.stdout_truncated
    assert len(result.stderr) == CAP_BYTES
    assert result.stderr_truncated


# --- time limit, cancel, cleanup -----------------------------------------------------------

SPAWNS_CHILD = """
    sleep 300 &
    echo $! > "{pidfile}"
    sleep 30
"""


async def test_timeout_kills_the_whole_group(runner: ProcessRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    action = make_action(tmp_path, "shell", SPAWNS_CHILD.format(pidfile=pidfile))
    started = time.monotonic()
    result = await run(runner, action, timeout_s=0.5)
    assert time.monotonic() - started < 4
    assert (result.outcome, result.error) == ("timeout", "timed out after 0.5 s")
    await assert_gone(int(pidfile.read_text()))


async def test_sigterm_ignored_is_killed_after_grace(runner: ProcessRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "main.pid"
    body = f"trap '' TERM\necho $$ > '{pidfile}'\nsleep 30\necho survived"
    started = time.monotonic()
    result = await run(runner, make_action(tmp_path, "shell", body), timeout_s=0.3)
    elapsed_s = time.monotonic() - started
    assert result.outcome == "timeout"
    assert "survived" not in result.stdout
    assert 0.3 + GRACE_S - 0.1 <= elapsed_s < 5
    await assert_gone(int(pidfile.read_text()))


@pytest.mark.parametrize("redirect", ["", ">/dev/null 2>&1"])
async def test_leftover_children_killed_after_normal_exit(
    runner: ProcessRunner, tmp_path: Path, redirect: str
) -> None:
    pidfile = tmp_path / "child.pid"
    body = f"sleep 300 {redirect} &\necho $! > '{pidfile}'\necho done"
    started = time.monotonic()
    result = await run(runner, make_action(tmp_path, "shell", body))
    assert time.monotonic() - started < 4
    assert (result.outcome, result.stdout) == ("completed", "done\n")
    await assert_gone(int(pidfile.read_text()))


async def test_cancel_while_running(runner: ProcessRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    action = make_action(tmp_path, "shell", SPAWNS_CHILD.format(pidfile=pidfile))
    cancel = asyncio.Event()
    task = asyncio.create_task(run(runner, action, cancel=cancel))
    pid = int(await wait_for_file(pidfile))
    started = time.monotonic()
    cancel.set()
    result = await asyncio.wait_for(task, 5)
    assert (result.outcome, result.error) == ("cancelled", "cancelled")
    assert time.monotonic() - started < 3
    await assert_gone(pid)


async def test_cancel_before_start_runs_nothing(runner: ProcessRunner, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cancel = asyncio.Event()
    cancel.set()
    result = await run(runner, make_action(tmp_path, "shell", f"touch '{marker}'"), cancel=cancel)
    assert result.outcome == "cancelled"
    assert not marker.exists()


async def test_cancelling_the_run_task_kills_and_reraises(
    runner: ProcessRunner, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    action = make_action(tmp_path, "shell", SPAWNS_CHILD.format(pidfile=pidfile))
    task = asyncio.create_task(run(runner, action))
    pid = int(await wait_for_file(pidfile))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_gone(pid)
    assert list((tmp_path / "work").iterdir()) == []


# --- scripts ---------------------------------------------------------------------------------


async def test_inline_shell_script(runner: ProcessRunner, tmp_path: Path) -> None:
    script = 'echo "inline $((1 + 2)) $ATTUNE_ACTION_REF $ATTUNE_EXECUTION_ID"\necho "$0"'
    result = await run(runner, make_action(tmp_path, "shell", script=script))
    assert result.outcome == "completed", result.error
    first, script_path = result.stdout.splitlines()
    assert first == "inline 3 test.act 7"
    assert not Path(script_path).exists()
    assert list((tmp_path / "work").iterdir()) == []


async def test_inline_bash_gets_its_parameters_as_variables_never_as_code(
    runner: ProcessRunner, tmp_path: Path
) -> None:
    """Attune's inline scripts read ``$name`` and ``$PARAM_NAME``; values are data."""
    hostile = "$(touch pwned); `touch pwned2`; ' \" \n\nline"
    script = (
        'printf "%s|" "$host" "$PARAM_HOST" "$port" "$on" "$tags" "$hostile" "$PATH"\n'
        "printenv host || echo unexported\n"
        "cat >/dev/null"
    )
    params = {
        "host": "web 1",
        "port": 8080,
        "on": True,
        "tags": ["a", "b"],
        "hostile": hostile,
        "PATH": "/nowhere",
        "bad-name": "x",
    }
    result = await run(runner, make_action(tmp_path, "shell", script=script), params)
    assert result.outcome == "completed", result.error
    fields = result.stdout.split("|")
    assert fields[:6] == ["web 1", "web 1", "8080", "true", '["a","b"]', hostile]
    assert fields[6] != "/nowhere"  # a parameter never changes how the script runs
    assert fields[7] == "unexported\n"
    assert not list(tmp_path.rglob("pwned*"))


async def test_missing_entry_point(runner: ProcessRunner, tmp_path: Path) -> None:
    action = ActionSpec(
        ref="test.gone",
        pack_ref="test",
        name="gone",
        runner_type="shell",
        entry_point="gone.sh",
        base_dir=str(tmp_path),
    )
    result = await run(runner, action)
    assert result.outcome == "failed"
    assert result.error == f"entry point not found: {tmp_path / 'actions' / 'gone.sh'}"


async def test_bad_dotenv_name_fails_the_run(runner: ProcessRunner, tmp_path: Path) -> None:
    action = make_action(tmp_path, "shell", "echo hi", parameter_format="dotenv")
    result = await run(runner, action, {"bad-name": "x"})
    assert result.outcome == "failed"
    assert result.error
    assert "'bad-name'" in result.error


# --- formats.py (pure) ---------------------------------------------------------------------


def test_format_json_is_compact_utf8() -> None:
    expected = '{"a":"é","b":[1,null]}'.encode()
    assert format_parameters({"a": "é", "b": [1, None]}, "json") == expected


def test_format_dotenv_quotes_for_shell() -> None:
    params = {"S": "it's $HOME", "N": 3, "B": False, "L": ["x"], "Z": None}
    assert format_parameters(params, "dotenv").decode() == (
        "S='it'\\''s $HOME'\nN='3'\nB='false'\nL='[\"x\"]'\nZ='null'\n"
    )


@pytest.mark.parametrize("key", ["bad-name", "1st", "with space", ""])
def test_format_dotenv_rejects_non_identifiers(key: str) -> None:
    with pytest.raises(InvalidParameters, match=f"parameter '{key}'"):
        format_parameters({key: "v"}, "dotenv")


def test_format_dotenv_rejects_nul() -> None:
    with pytest.raises(InvalidParameters, match="NUL"):
        format_parameters({"k": "a\x00b"}, "dotenv")


def test_format_yaml_round_trips() -> None:
    params = {"a": "yes", "b": {"c": [1, 2.5]}, "d": "multi\nline"}
    assert yaml.safe_load(format_parameters(params, "yaml")) == params


def test_unknown_formats_raise() -> None:
    with pytest.raises(ValueError, match="unknown parameter format"):
        format_parameters({}, "xml")
    with pytest.raises(ValueError, match="unknown output format"):
        parse_output("", "xml")


@pytest.mark.parametrize(
    ("stdout", "fmt", "expected"),
    [
        ("hello", "text", (None, None)),
        ("", "json", (None, None)),
        (" \n", "yaml", (None, None)),
        ("", "jsonl", ([], None)),
        ('[1, "a"]\n', "json", ([1, "a"], None)),
        ("- 1\n- a\n", "yaml", ([1, "a"], None)),
        ('1\n\n"x"\n{"k": null}\n', "jsonl", ([1, "x", {"k": None}], None)),
    ],
)
def test_parse_output(stdout: str, fmt: str, expected: tuple[Any, str | None]) -> None:
    assert parse_output(stdout, fmt) == expected


@pytest.mark.parametrize(
    ("stdout", "fmt", "prefix"),
    [
        ("{oops", "json", "could not parse stdout as json: "),
        ("a: [1,\n", "yaml", "could not parse stdout as yaml: "),
        ('{"ok": 1}\nnope\n', "jsonl", "could not parse stdout as jsonl: line 2: "),
    ],
)
def test_parse_output_failure_is_returned(stdout: str, fmt: str, prefix: str) -> None:
    data, error = parse_output(stdout, fmt)
    assert data is None
    assert error is not None
    assert error.startswith(prefix)
    assert "\n" not in error


def test_format_dotenv_json_encodes_then_quotes_objects() -> None:
    text = format_parameters({"obj": {"k": "v'"}}, "dotenv").decode()
    assert text == "obj='{\"k\": \"v'\\''\"}'\n"
