"""Run ``shell`` and ``python`` actions as child processes.

One run, step by step:

1. A private temp dir (mode 0700) is made under ``work_dir``; an inline ``script`` is written
   there (0500), and with ``parameter_delivery: file`` the parameters document too (0400, named
   by ``ATTUNE_PARAMETERS_FILE``). An inline bash script also gets its parameters as
   variables, as Attune's do (``engine/runners/shell_vars.py``: read as data from a 0400 file,
   never spliced into the script). The dir is removed after the run.
2. The interpreter (``/bin/bash`` or ``/bin/sh``; ``sys.executable``) runs the script in a new
   session, so the action and everything it starts form one process group that can be signalled
   as a whole. Parameters never appear on a command line or in a shell string; with
   ``parameter_delivery: stdin`` the document is written to stdin while the output is read.
3. stdout and stderr are captured up to ``output_cap_bytes`` each; the rest is read and dropped
   (``*_truncated`` is set) so a chatty action never blocks on a full pipe. What is kept is
   also handed to ``request.on_output`` as it arrives (live output, engine/live_output.py).
4. The run ends when the main process exits, the time limit passes (``timeout``) or
   ``request.cancel`` is set (``cancelled``). On timeout and cancel the group gets SIGTERM, then
   SIGKILL after ``kill_grace_s``. Whatever the group left behind is killed when the run ends:
   processes still holding stdout/stderr get ``pipe_grace_s`` to let go first.

Outcome: exit 0 is ``completed`` unless stdout breaks the declared ``output_format`` (then
``failed``, ``error`` naming the parse problem); a non-zero exit is ``failed`` with
``"exit code N: <last stderr line>"``; death by a signal is ``failed`` with
``"killed by signal SIGX"`` and ``exit_code`` None. The runner never raises for the action's own
failure; only cancellation of the ``run()`` task itself propagates (after killing the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from engine.errors import EngineError, PackError
from engine.packs import ActionSpec
from engine.private_files import make_private_dir
from engine.runners import Outcome, RunRequest, RunResult, shell_vars
from engine.runners.formats import format_parameters, parse_output

#: Default time the processes an action left behind get, after its main process exited, to close
#: stdout/stderr before the group is killed and reading stops.
PIPE_GRACE_S = 1.0
#: Environment variables passed through from the engine's own environment to every action.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
#: PATH for an action when the engine itself has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Longest excerpt of stderr quoted in the error of a failed run.
MAX_STDERR_LINE_CHARS = 200
#: File-name suffix of the parameters file, by parameter format.
PARAMETER_FILE_SUFFIX = {"json": ".json", "dotenv": ".env", "yaml": ".yaml"}
#: Gives a run more environment variables (Attune's API URL and execution token).
Environment = Callable[[RunRequest], Awaitable[dict[str, str]]]

log = logging.getLogger(f"attune.{__name__}")


class _Launch(NamedTuple):
    """How to start one prepared run."""

    command: list[str]
    env: dict[str, str]
    cwd: Path
    document: bytes


#: Stream names of the captured file descriptors.
_STREAM_NAMES = {1: "stdout", 2: "stderr"}


class _Capture(asyncio.SubprocessProtocol):
    """Collects up to ``cap_bytes`` of stdout (fd 1) and stderr (fd 2); drops the rest. What
    is kept is also given to ``on_output`` as it arrives (a failing sink is logged once and
    not called again: the run goes on)."""

    def __init__(
        self,
        cap_bytes: int,
        loop: asyncio.AbstractEventLoop,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self.cap_bytes = cap_bytes
        self.on_output = on_output
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.truncated = {1: False, 2: False}
        self.closed = {1: loop.create_future(), 2: loop.create_future()}
        self.exited: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self.buffers.get(fd)
        if buf is None:
            return
        room = self.cap_bytes - len(buf)
        if room > 0:
            kept = data[:room]
            buf.extend(kept)
            if self.on_output is not None:
                self._tell(fd, kept)
        if len(data) > room:
            self.truncated[fd] = True

    def _tell(self, fd: int, kept: bytes) -> None:
        assert self.on_output is not None
        try:
            self.on_output(_STREAM_NAMES[fd], kept)
        except Exception:
            log.exception("live output sink failed; no more live output for this run")
            self.on_output = None

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        fut = self.closed.get(fd)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def text(self, fd: int) -> str:
        return self.buffers[fd].decode("utf-8", errors="replace")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _wait_quietly(aws: list[asyncio.Future[None]], timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for all of ``aws``; True if they all finished."""
    pending = [a for a in aws if not a.done()]
    if not pending:
        return True
    _, still = await asyncio.wait(pending, timeout=max(timeout_s, 0.0))
    return not still


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= MAX_STDERR_LINE_CHARS else line[: MAX_STDERR_LINE_CHARS - 3] + "..."


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _use_pidfd_watcher() -> None:
    """On Python 3.11, have asyncio learn of child exits through pidfds (as 3.12 does by
    itself) instead of its default of one thread per child: starting that thread blocks the
    event loop until the thread gets the GIL, which under load cost more than the spawn."""
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    loop = asyncio.get_running_loop()
    policy = asyncio.get_event_loop_policy()
    watcher = getattr(policy, "_watcher", None)
    if isinstance(watcher, asyncio.PidfdChildWatcher) and watcher.is_active():
        return
    fresh = asyncio.PidfdChildWatcher()
    fresh.attach_loop(loop)
    policy.set_child_watcher(fresh)


class ProcessRunner:
    """Runs ``shell`` and ``python`` actions; see the module docstring for the contract."""

    def __init__(
        self,
        *,
        output_cap_bytes: int,
        kill_grace_s: float,
        work_dir: Path,
        pipe_grace_s: float = PIPE_GRACE_S,
        environment: Environment | None = None,
    ) -> None:
        self.output_cap_bytes = output_cap_bytes
        self.environment = environment
        self.kill_grace_s = kill_grace_s
        self.work_dir = Path(work_dir).resolve()
        self.pipe_grace_s = pipe_grace_s

    async def run(self, request: RunRequest) -> RunResult:
        _use_pidfd_watcher()
        started = time.monotonic()
        result = await self._run(request)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def _command(self, action: ActionSpec, tmp: Path) -> list[str] | str:
        """The argv to run, or an error message."""
        if action.runner_type == "shell":
            interpreter = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        elif action.runner_type == "python":
            interpreter = sys.executable
        else:
            return f"runner_type '{action.runner_type}' is not run as a process"
        if action.script is not None:
            script = tmp / ("script.py" if action.runner_type == "python" else "script.sh")
            fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o500)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                if interpreter == "/bin/bash":
                    fh.write(shell_vars.PREAMBLE)
                fh.write(action.script)
            return [interpreter, str(script)]
        try:
            path = action.entry_path()
        except PackError as exc:
            return exc.message
        if path is None:
            return "action has neither an entry_point nor an inline script"
        if not path.is_file():
            return f"entry point not found: {path}"
        return [interpreter, str(path)]

    @staticmethod
    def _write_parameters(action: ActionSpec, tmp: Path, document: bytes) -> Path:
        """Write the parameters document to a fresh read-only (0400) file in ``tmp``."""
        path = tmp / f"parameters{PARAMETER_FILE_SUFFIX[action.parameter_format]}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(document)
        return path

    async def _more_env(self, request: RunRequest) -> dict[str, str]:
        """The ``environment`` hook's variables; a failing hook costs the run only those."""
        if self.environment is None:
            return {}
        try:
            return await self.environment(request)
        except Exception as exc:
            log.warning("execution %s: no API token for the action: %s", request.execution_id, exc)
            return {}

    def _env(self, request: RunRequest) -> dict[str, str]:
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "ATTUNE_EXECUTION_ID": str(request.execution_id),
                "ATTUNE_ACTION_REF": request.action.ref,
                "ATTUNE_PARAMETER_DELIVERY": request.action.parameter_delivery,
                "ATTUNE_PARAMETER_FORMAT": request.action.parameter_format,
                # Attune's names of the same
                "ATTUNE_EXEC_ID": str(request.execution_id),
                "ATTUNE_ACTION": request.action.ref,
            }
        )
        return env

    def _prepare(
        self, request: RunRequest, tmp: Path, more_env: dict[str, str] | None = None
    ) -> _Launch | str:
        """Write what the run needs into ``tmp``; return how to launch it, or an error."""
        action = request.action
        env = self._env(request)
        env.update(more_env or {})
        try:
            document = format_parameters(request.parameters, action.parameter_format)
            command = self._command(action, tmp)
            if isinstance(command, str):
                return command
            if action.parameter_delivery == "file":
                env["ATTUNE_PARAMETERS_FILE"] = str(self._write_parameters(action, tmp, document))
            if action.script is not None and command[0] == "/bin/bash":
                vars_file = shell_vars.write_vars_file(request.parameters, tmp)
                env[shell_vars.VARS_FILE_ENV] = str(vars_file)
        except EngineError as exc:
            return exc.message
        except (OSError, TypeError, ValueError) as exc:
            return f"cannot prepare the run: {exc}"
        base = Path(action.base_dir) if action.base_dir else None
        cwd = base if base is not None and base.is_dir() else tmp
        return _Launch(command, env, cwd, document)

    async def _run(self, request: RunRequest) -> RunResult:
        if request.cancel.is_set():
            return RunResult(outcome="cancelled", error="cancelled")
        try:
            make_private_dir(self.work_dir)
            tmp = Path(tempfile.mkdtemp(prefix=f"run-{request.execution_id}-", dir=self.work_dir))
        except OSError as exc:
            return RunResult(outcome="failed", error=f"cannot create a work dir: {exc}")
        try:
            launch = self._prepare(request, tmp, await self._more_env(request))
            if isinstance(launch, str):
                return RunResult(outcome="failed", error=launch)
            return await self._spawn_and_wait(request, launch)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    async def _spawn_and_wait(self, request: RunRequest, launch: _Launch) -> RunResult:
        loop = asyncio.get_running_loop()
        command = launch.command
        via_stdin = request.action.parameter_delivery == "stdin"
        try:
            transport, capture = await loop.subprocess_exec(
                lambda: _Capture(self.output_cap_bytes, loop, request.on_output),
                *command,
                stdin=subprocess.PIPE if via_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=launch.cwd,
                env=launch.env,
                start_new_session=True,
            )
        except OSError as exc:
            return RunResult(outcome="failed", error=f"cannot start {command[0]}: {exc}")
        pgid = transport.get_pid()
        if request.on_spawn is not None:
            request.on_spawn(pgid)
        try:
            if via_stdin:
                stdin = transport.get_pipe_transport(0)
                if isinstance(stdin, asyncio.WriteTransport):
                    # Buffered by the loop and written as the child reads: no deadlock.
                    stdin.write(launch.document)
                    stdin.close()
            reason = await self._wait_for_end(request, capture)
            pipes = [capture.closed[1], capture.closed[2]]
            if reason is not None:
                _signal_group(pgid, signal.SIGTERM)
                if not await _wait_quietly([capture.exited, *pipes], self.kill_grace_s):
                    _signal_group(pgid, signal.SIGKILL)
            else:
                await _wait_quietly(pipes, self.pipe_grace_s)
            _signal_group(pgid, signal.SIGKILL)  # whatever the action left behind
            await asyncio.shield(capture.exited)
            await _wait_quietly(pipes, self.pipe_grace_s)
        except asyncio.CancelledError:
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(capture.exited)
            raise
        finally:
            transport.close()
        return self._result(request, reason, transport.get_returncode(), capture)

    async def _wait_for_end(self, request: RunRequest, capture: _Capture) -> Outcome | None:
        """Wait for the main process to exit (None), the time limit or a cancel request."""
        cancelled = asyncio.ensure_future(request.cancel.wait())
        waiting: set[asyncio.Future[Any]] = {capture.exited, cancelled}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=max(request.timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
        if capture.exited in done:
            return None
        return "cancelled" if cancelled in done else "timeout"

    def _result(
        self, request: RunRequest, reason: Outcome | None, returncode: int | None, capture: _Capture
    ) -> RunResult:
        stdout, stderr = capture.text(1), capture.text(2)
        exit_code = returncode if returncode is not None and returncode >= 0 else None
        data, parse_error = parse_output(stdout, request.action.output_format)
        result = RunResult(
            outcome="failed",
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            data=data,
            stdout_truncated=capture.truncated[1],
            stderr_truncated=capture.truncated[2],
        )
        if reason == "timeout":
            result.outcome = "timeout"
            result.error = f"timed out after {float(request.timeout_s)} s"
        elif reason == "cancelled":
            result.outcome, result.error = "cancelled", "cancelled"
        elif returncode is not None and returncode < 0:
            result.error = f"killed by signal {_signal_name(-returncode)}"
        elif returncode:
            last = _last_line(stderr)
            result.error = f"exit code {returncode}" + (f": {last}" if last else "")
        elif parse_error is not None:
            if result.stdout_truncated:
                parse_error += f" (stdout was cut at {self.output_cap_bytes} bytes)"
            result.error = parse_error
        else:
            result.outcome = "completed"
        return result
