"""Runners: how an action is actually run. The worker picks one by ``ActionSpec.runner_type``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.packs import ActionSpec

Outcome = Literal["completed", "failed", "timeout", "cancelled"]


@dataclass(frozen=True)
class RunRequest:
    execution_id: int
    action: ActionSpec
    #: Validated parameters, secrets included (they reach the action, never the record).
    parameters: dict[str, Any]
    timeout_s: float
    #: Set by the worker when the execution is cancelled while running.
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    #: Called with the process group id once a process runner has started the action.
    on_spawn: Callable[[int], None] | None = None
    #: Who asked for the run and the enforcement (when a rule did), as the claim read them.
    requester: Mapping[str, Any] | None = None
    enforcement: int | None = None
    #: Given the output as it is captured: the stream ('stdout' or 'stderr') and the bytes
    #: kept (never past the cap), in order. Called on the event loop; it must not block.
    on_output: Callable[[str, bytes], None] | None = None


@dataclass
class RunResult:
    """What a run produced; ``as_record()`` is the execution's ``result`` field."""

    outcome: Outcome
    exit_code: int | None = None
    duration_ms: int = 0
    stdout: str = ""
    stderr: str = ""
    data: Any = None
    error: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def succeeded(self) -> bool:
        return self.outcome == "completed"

    def as_record(self) -> dict[str, Any]:
        """The result as stored: NUL characters (which PostgreSQL cannot store in JSON text)
        are replaced by U+FFFD."""
        record: dict[str, Any] = storable(
            {
                "exit_code": self.exit_code,
                "duration_ms": self.duration_ms,
                "succeeded": self.succeeded,
                "stdout": self.stdout,
                "stderr": self.stderr,
                "data": self.data,
                "error": self.error,
                "stdout_truncated": self.stdout_truncated,
                "stderr_truncated": self.stderr_truncated,
            }
        )
        return record


def storable(value: Any) -> Any:
    """Copy of a JSON-like value with every NUL character replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


class Runner(Protocol):
    async def run(self, request: RunRequest) -> RunResult:
        """Run to the end, the time limit or ``request.cancel``; never raise for the action's
        own failures (they are a ``failed`` result with ``error`` set)."""
