"""Medians over rounds, the tables, and the JSON file of a run."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench.suite import ORDER, SCENARIOS


def summarize(once: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric metric's median over the rounds (others from the first round), plus the
    metrics measured once (setup and teardown)."""
    summary: dict[str, Any] = {}
    for key in dict.fromkeys(k for r in rounds for k in r):
        values = [r[key] for r in rounds if key in r]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        summary[key] = statistics.median(values) if numeric else values[0]
    return summary | once


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def tables(results: dict[str, dict[str, Any]], repeat: int) -> str:
    """One table per scenario: a row per metric, a column per mode."""
    modes = list(results)
    lines: list[str] = []
    for name in ORDER:
        per_mode = {m: results[m].get(name) for m in modes}
        if all(v is None for v in per_mode.values()):
            continue
        cls = SCENARIOS[name]
        note = f" (median of {repeat} rounds)" if repeat > 1 and name != "resources" else ""
        lines.append(f"\n== {name}: {cls.title}{note}")
        width = max(len(label) for _, label in cls.rows) + 2
        lines.append(" " * width + "".join(f"{m:>14}" for m in modes))
        for key, label in cls.rows:
            cells = []
            for m in modes:
                entry = per_mode[m]
                if entry is None:
                    cells.append("-")
                elif "error" in entry:
                    cells.append("FAILED")
                else:
                    cells.append(_cell(entry["summary"].get(key)))
            if all(c == "-" for c in cells):
                continue
            wide = any(len(c) > 13 for c in cells)
            if wide:  # e.g. the client's name: on a line of its own per mode
                for m, c in zip(modes, cells, strict=True):
                    lines.append(f"{label:<{width}}{m}: {c}")
            else:
                lines.append(f"{label:<{width}}" + "".join(f"{c:>14}" for c in cells))
        for m in modes:
            entry = per_mode[m]
            if entry is not None and "error" in entry:
                lines.append(f"  {m}: FAILED: {entry['error']}")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str, allow_nan=True) + "\n")
