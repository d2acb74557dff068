"""Rule templates and conditions evaluated off the event loop, with a time limit.

The sandbox bounds what one operation may build (:mod:`engine.template_limits`), but not how
many operations a template runs: ``{% for a in range(100000) %}{% for b in range(100000) %}``
held the event loop (and ``/health``) for as long as it ran, and a Python thread cannot be
stopped. So a rule whose conditions or ``action_params`` hold a template is evaluated in a
small pool of worker processes (``python -m engine.template_pool``, started when first
needed): one evaluation at a time per process, JSON over its stdin and stdout, an address-space
limit, and a deadline after which the process is killed (and replaced on next use). The
enforcement then fails with the reason, and the server goes on. Rules without templates (list
conditions on RE2, JSON-Logic with its work budget, literal parameters) are evaluated in
process: they are bounded already, and a process hop would only cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import Unavailable
from engine.templates import TemplateProblem, evaluate, has_templates

#: Address space of a worker process: a template that grows past it gets a MemoryError.
WORKER_MEMORY_BYTES = 1 << 30
#: A worker ends itself (SIGALRM) this long after the deadline of a job, should its server
#: have died without killing it.
ORPHAN_GRACE_S = 2.0
#: Largest answer a worker may send (a rendering is capped far below this).
MAX_FRAME_BYTES = 256 << 20
_HEADER = struct.Struct(">I")


class TemplatePool:
    """Up to ``workers`` processes, each evaluating one rule at a time within ``timeout_s``."""

    def __init__(self, workers: int = 2, timeout_s: float = 2.0) -> None:
        self.timeout_s = timeout_s
        self._size = max(1, workers)
        self._idle: asyncio.Queue[_Worker] | None = None
        self._workers: list[_Worker] = []
        self._closed = False

    async def evaluate(
        self,
        conditions: Any,
        action_params: Any,
        context: Mapping[str, Any],
        loaded: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """:func:`engine.templates.evaluate`, in a worker when there is a template to run."""
        if not (has_templates(conditions) or has_templates(action_params)):
            return evaluate(conditions, action_params, context, loaded)
        job = json.dumps(
            {
                "conditions": conditions,
                "params": action_params,
                "context": context,
                "kv": loaded,
                "alarm_s": self.timeout_s + ORPHAN_GRACE_S,
            }
        ).encode()
        worker = await self._take()
        try:
            return await worker.run(job, self.timeout_s)
        finally:
            self._give_back(worker)

    async def _take(self) -> _Worker:
        if self._closed:
            raise Unavailable("the template workers are stopped")
        if self._idle is None:
            self._idle = asyncio.Queue()
            self._workers = [_Worker() for _ in range(self._size)]
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return await self._idle.get()

    def _give_back(self, worker: _Worker) -> None:
        assert self._idle is not None
        self._idle.put_nowait(worker)

    async def close(self) -> None:
        """Stop every worker (one still evaluating is killed after a short grace)."""
        self._closed = True
        await asyncio.gather(*(worker.stop() for worker in self._workers))


class _Worker:
    """One worker process, started on first use and again after it was killed."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None

    async def _start(self) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)  # where `engine` is imported from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "engine.template_pool",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
                cwd=root,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start a template worker: {exc}") from exc

    async def run(self, job: bytes, timeout_s: float) -> dict[str, Any]:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await self._start()
        proc = self._proc
        try:
            answer = await asyncio.wait_for(_exchange(proc, job), timeout_s)
        except TimeoutError:
            await self._kill()
            raise TemplateProblem(
                f"the rule's conditions and templates took longer than {timeout_s:g} s "
                "(ATTUNE_TEMPLATE_TIMEOUT_S); stopped"
            ) from None
        except _FrameTooLarge as exc:
            await self._kill()
            raise TemplateProblem(f"the rule's templates gave {exc}") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self._kill(grace_s=1.0)  # its output ended: it is exiting
            if code is not None and code < 0:  # killed: by the kernel for its memory, say
                raise TemplateProblem(
                    f"the rule's conditions and templates ended their worker process "
                    f"(signal {-code})"
                ) from None
            raise Unavailable(f"a template worker exited (code {code})") from None
        except BaseException:  # cancelled mid-exchange: the pipe is out of step
            await self._kill()
            raise
        result: dict[str, Any] = json.loads(answer)
        return result

    async def _kill(self, grace_s: float = 0.0) -> int | None:
        """Stop the process (if it still runs, after ``grace_s`` to end on its own); its exit
        code, negative for a signal."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.returncode is None and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace_s)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return await proc.wait()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class _FrameTooLarge(Exception):
    def __str__(self) -> str:
        return f"an answer over {MAX_FRAME_BYTES} bytes"


async def _exchange(proc: asyncio.subprocess.Process, job: bytes) -> bytes:
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(_HEADER.pack(len(job)) + job)
    await proc.stdin.drain()
    (size,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise _FrameTooLarge
    return await proc.stdout.readexactly(size)


# -- the worker process -------------------------------------------------------------------------


def _serve() -> None:
    """Read jobs from stdin, answer on stdout, until stdin ends."""
    frames_in = sys.stdin.buffer
    frames_out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the answers
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform: the deadline still holds
    while True:
        header = frames_in.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        job = json.loads(frames_in.read(size))
        signal.setitimer(signal.ITIMER_REAL, float(job["alarm_s"]))  # SIGALRM ends the process
        outcome = evaluate(job["conditions"], job["params"], job["context"], job["kv"])
        signal.setitimer(signal.ITIMER_REAL, 0)
        try:
            answer = json.dumps(outcome).encode()
        except (TypeError, ValueError, MemoryError) as exc:
            answer = json.dumps({**outcome, "result": None, "problem": f"{exc}"}).encode()
        frames_out.write(_HEADER.pack(len(answer)) + answer)
        frames_out.flush()


if __name__ == "__main__":
    _serve()
