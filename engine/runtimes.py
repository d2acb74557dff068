"""The runtimes this server has, as Attune's ``/api/v1/runtimes`` shows runtimes: one per
runner (shell scripts, Python scripts, and the built-in actions that run inside the engine).

They are part of the engine, not of any pack on disk, so they are read-only; they are shown as
the ``core`` pack's, where Attune keeps its standard runtimes (``runtime_ref: core.python``).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.catalog_records import Pack
from engine.errors import NotFound
from engine.packs import RUNTIME_REFS

CORE_PACK = "core"


@dataclass(frozen=True)
class RuntimeInfo:
    id: int
    ref: str
    name: str
    #: The runner (``runner_type``) that runs this runtime's actions.
    runner: str
    description: str

    def versions(self) -> list[str]:
        """Versions this server runs (empty: whatever the host has)."""
        return [platform.python_version()] if self.runner == "python" else []

    def execution_config(self) -> dict[str, Any]:
        if self.runner == "shell":
            shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
            return {"runner": "shell", "interpreter": shell, "file_extension": ".sh"}
        if self.runner == "python":
            return {
                "runner": "python",
                "interpreter": sys.executable,
                "version": platform.python_version(),
                "file_extension": ".py",
            }
        return {"runner": self.runner, "in_process": True}


RUNTIMES: tuple[RuntimeInfo, ...] = (
    RuntimeInfo(
        1,
        RUNTIME_REFS["shell"],
        "Shell",
        "shell",
        "Shell scripts, run by bash (sh where bash is missing); parameters on stdin or in a file",
    ),
    RuntimeInfo(
        2,
        RUNTIME_REFS["python"],
        "Python",
        "python",
        "Python scripts, run by the server's own Python interpreter",
    ),
    RuntimeInfo(
        3,
        f"{CORE_PACK}.builtin",
        "Builtin",
        "builtin",
        "Actions built into the engine (core.echo, core.noop, ...), run without a process",
    ),
)


def runtime_record(info: RuntimeInfo, core: Pack | None, now: datetime) -> dict[str, Any]:
    """Attune's ``RuntimeResponse`` of a runtime; ``core`` is the core pack's record, whose
    times it carries (it came with the engine, as the core pack did)."""
    return {
        "id": info.id,
        "ref": info.ref,
        "pack": core.id if core else None,
        "pack_ref": CORE_PACK,
        "description": info.description,
        "name": info.name,
        "distributions": {"available": True, "versions": info.versions()},
        "installation": None,
        "execution_config": info.execution_config(),
        "created": core.created if core else now,
        "updated": core.updated if core else now,
        "runner_type": info.runner,
    }


def find_runtime(ref: str) -> RuntimeInfo:
    for info in RUNTIMES:
        if info.ref == ref:
            return info
    raise NotFound(f"runtime '{ref}' not found")
