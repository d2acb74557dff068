"""Timer schedules (pure): when a timer fires next, and what its tick's event carries.
The firing of due ticks is :mod:`engine.automation.timers`.

Two kinds of timer exist side by side:

- **Trigger timers** (ours): a trigger of type ``interval`` (``parameters {seconds}``), ``cron``
  (``{expression}``) or ``date`` (``{at}``) fires itself, and every rule on it runs.
- **Rule timers** (Attune's): a rule on a trigger of type ``intervaltimer``, ``crontimer`` or
  ``datetimetimer`` (the core pack's ``core.intervaltimer``, ``core.crontimer`` and
  ``core.datetimetimer``) has its own schedule in its ``trigger_params``; each tick is an event
  of that trigger that names the rule and enforces only it.

``trigger_params`` as Attune's core pack names them, with StackStorm's names accepted too:

- interval: ``{unit: seconds|minutes|hours|days|weeks (default seconds), interval: N}``
  (``delta`` for ``interval``); the first tick comes one interval after the rule is saved.
- cron: ``{expression, timezone (default UTC)}``; six fields with seconds first, as Attune's
  (``*/5 * * * * *``), or the classic five (``*/5 * * * *``, on the minute); days of week
  0-6 (or 7) from Sunday, or SUN-SAT.
- date: ``{fire_at (or date), timezone (default UTC)}``: an ISO 8601 time, read in ``timezone``
  when it names no offset. It fires once; a time already past never fires, as with Attune.

Time zones are IANA names from the ``zoneinfo`` database (the ``tzdata`` package where the
system has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from engine.errors import InvalidRequest

#: Shortest interval of any timer.
MIN_INTERVAL_S = 0.5
#: Trigger types whose trigger fires itself, and those whose rules each carry a timer.
TRIGGER_TIMERS = ("interval", "cron", "date")
RULE_TIMERS: dict[str, Literal["interval", "cron", "date"]] = {
    "intervaltimer": "interval",
    "crontimer": "cron",
    "datetimetimer": "date",
}
#: Seconds per ``unit`` of an interval timer.
UNITS_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86_400, "weeks": 604_800}
#: The ``type`` each rule timer's payload carries (Attune's core trigger output).
_PAYLOAD_TYPE = {"interval": "interval", "cron": "cron", "date": "one_shot"}


def _bad(field: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"trigger_params.{field}: {problem}")


def cron_next(expression: str, after: datetime, tz: ZoneInfo | None = None) -> datetime:
    """The first time after ``after`` that a 5- or 6-field cron expression names, in UTC."""
    six = len(expression.split()) == 6
    start = after.astimezone(tz) if tz is not None else after
    nxt: datetime = croniter(expression, start, second_at_beginning=six).get_next(datetime)
    return nxt.astimezone(UTC) if nxt.tzinfo is not None else nxt.replace(tzinfo=UTC)


def cron_problem(expression: Any) -> str | None:
    """Why ``expression`` is not a cron expression we run (None: it is one)."""
    if not isinstance(expression, str) or len(expression.split()) not in (5, 6):
        return "needs 5 fields, or 6 with seconds first (e.g. '*/5 * * * * *')"
    six = len(expression.split()) == 6
    if not croniter.is_valid(expression, second_at_beginning=six):
        return f"'{expression}' is not a valid cron expression"
    return None


def _zone(params: Mapping[str, Any]) -> ZoneInfo:
    name = params.get("timezone") or "UTC"
    if not isinstance(name, str) or len(name) > 64:
        raise _bad("timezone", "must be an IANA time zone name, e.g. 'Europe/Paris'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad("timezone", f"unknown time zone '{name}' (an IANA name, e.g. 'UTC')") from None


@dataclass(frozen=True)
class Schedule:
    """A rule timer's schedule, checked: ``next_after`` never raises."""

    kind: Literal["interval", "cron", "date"]
    tz: ZoneInfo
    interval_s: float = 0.0
    expression: str = ""
    fire_at: datetime | None = None

    def next_after(self, after: datetime) -> datetime | None:
        if self.kind == "interval":
            return after + timedelta(seconds=self.interval_s)
        if self.kind == "cron":
            return cron_next(self.expression, after, self.tz)
        assert self.fire_at is not None
        return self.fire_at if self.fire_at > after else None

    def payload(
        self, scheduled: datetime, fired: datetime, count: int, nxt: datetime | None
    ) -> dict[str, Any]:
        """What an event of this timer carries (the fields of Attune's core trigger output,
        and ``scheduled_at`` on every kind)."""
        out: dict[str, Any] = {
            "type": _PAYLOAD_TYPE[self.kind],
            "fired_at": fired.isoformat(),
            "scheduled_at": scheduled.isoformat(),
            "timezone": self.tz.key,
            "execution_count": count,
        }
        if self.kind == "interval":
            whole = float(self.interval_s).is_integer()
            out["interval_seconds"] = int(self.interval_s) if whole else self.interval_s
        elif self.kind == "cron":
            out["expression"] = self.expression
            out["next_fire_at"] = nxt.isoformat() if nxt is not None else None
        else:
            out["fire_at"] = scheduled.isoformat()
            out["delay_ms"] = max(0, round((fired - scheduled).total_seconds() * 1000))
        return out


def rule_schedule(trigger_type: str, params: Mapping[str, Any] | None) -> Schedule | None:
    """The schedule a rule's ``trigger_params`` set on a trigger of ``trigger_type`` (None: that
    trigger has no rule timers). Raises :class:`InvalidRequest` naming the field at fault."""
    kind = RULE_TIMERS.get(trigger_type)
    if kind is None:
        return None
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InvalidRequest("trigger_params must be a JSON object")
    tz = _zone(params)
    if kind == "interval":
        return Schedule("interval", tz, interval_s=_interval_s(params))
    if kind == "cron":
        expression = params.get("expression")
        problem = cron_problem(expression)
        if problem is not None:
            raise _bad("expression", problem)
        assert isinstance(expression, str)
        return Schedule("cron", tz, expression=expression)
    return Schedule("date", tz, fire_at=_fire_at(params, tz))


def _interval_s(params: Mapping[str, Any]) -> float:
    unit = params.get("unit") or "seconds"
    if unit not in UNITS_S:
        raise _bad("unit", f"'{unit}' is not one of {', '.join(UNITS_S)}")
    name = "interval" if "interval" in params else "delta"
    count = params.get(name)
    if count is None:
        raise _bad("interval", "required: how many units between ticks (e.g. 10)")
    if isinstance(count, bool) or not isinstance(count, int | float) or not math.isfinite(count):
        raise _bad(name, f"must be a number, got {count!r}")
    seconds = float(count) * UNITS_S[str(unit)]
    if seconds < MIN_INTERVAL_S or seconds > 366 * 86_400:
        raise _bad(name, f"must make an interval of {MIN_INTERVAL_S} s to a year")
    return seconds


def _fire_at(params: Mapping[str, Any], tz: ZoneInfo) -> datetime:
    name = "fire_at" if "fire_at" in params else "date"
    raw = params.get(name)
    if raw is None:
        raise _bad("fire_at", "required: an ISO 8601 time, e.g. '2030-12-31T23:59:59Z'")
    try:
        at = datetime.fromisoformat(str(raw))
    except ValueError:
        raise _bad(name, f"'{raw}' is not an ISO 8601 time") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=tz)
    return at.astimezone(UTC)


def trigger_timer_problem(kind: str, parameters: Mapping[str, Any]) -> str | None:
    """Why a trigger timer's ``parameters`` cannot run (None: they can, or no timer)."""
    if kind == "interval":
        seconds = parameters.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return f"an interval timer needs parameters.seconds >= {MIN_INTERVAL_S}"
        if not MIN_INTERVAL_S <= seconds <= 366 * 86_400:
            return f"an interval timer needs parameters.seconds >= {MIN_INTERVAL_S}"
    elif kind == "cron":
        problem = cron_problem(parameters.get("expression"))
        if problem is not None:
            return f"a cron timer needs a valid parameters.expression: {problem}"
    elif kind == "date":
        try:
            datetime.fromisoformat(str(parameters.get("at")))
        except ValueError:
            return "a date timer needs parameters.at, an ISO 8601 time"
    return None


def next_fire(kind: str, parameters: Mapping[str, Any], after: datetime) -> datetime | None:
    """When a trigger timer fires next after ``after`` (None: a date timer that has fired,
    or no timer)."""
    if kind == "interval":
        return after + timedelta(seconds=float(parameters["seconds"]))
    if kind == "cron":
        return cron_next(str(parameters["expression"]), after)
    if kind == "date":
        at = datetime.fromisoformat(str(parameters["at"]))
        if at.tzinfo is None:
            at = at.replace(tzinfo=after.tzinfo)
        return at if at > after else None
    return None
