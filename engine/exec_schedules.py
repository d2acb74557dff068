"""Schedules of runs (``/api/v1/schedules``, chat ``schedule ...``): an action or a template,
run later as the person who made the schedule, through the gate as any run.

- ``at``: once. An ISO 8601 time with an offset, a local date and time (``2026-12-01T17:00``)
  read in the schedule's zone, or ``HH:MM`` (the next such time in that zone). A time already
  past is refused. The schedule ends after its run (``next_fire_at`` null).
- ``every``: an interval of at least a second: seconds (``90``) or ``30s``, ``10m``, ``1h``,
  ``1d`` (and sums such as ``1h30m``). The first run is one interval after it is made.
- ``cron``: five fields (minute hour day-of-month month day-of-week), in the zone.
- ``timezone``: an IANA name; ``ATTUNE_DEFAULT_TIMEZONE`` (UTC) when none is given.
- Each tick runs once however many processes fire schedules: the process whose conditional
  UPDATE moves ``next_fire_at`` on runs it (and the run's idempotency key is the schedule and
  the tick, so no tick makes two executions). A tick taken by a process that dies before the
  run is submitted is lost (at most once).
- Missed ticks (the server was down or busy more than :data:`MISSED_AFTER_S`): ``missed:
  once`` (default) runs once for all of them, then goes on on schedule; ``skip`` runs none of
  them and goes on with the next tick after now (a missed ``at`` schedule ends unrun).
- Paused schedules do not fire; resumed, they go on with the next tick after now (an ``at``
  schedule whose time has passed cannot be resumed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time as monotime
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from engine.automation.rule_secrets import opened, shown, split_secrets
from engine.automation.schedules import cron_next
from engine.background import cancel_and_wait
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.errors import Conflict, EngineError, Forbidden, InvalidRequest, NotFound
from engine.exec_templates import ExecTemplates
from engine.gate import Gate, NeedsConfirmation, Requester, Submitted
from engine.params import validate_parameters
from engine.policy import Verb
from engine.schedule_records import Kind, Missed, Schedule, ScheduleFields, ScheduleRepository

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: A tick later than this when it is fired counts as missed (see ``missed``).
MISSED_AFTER_S = 60.0
#: Schedules fired per pass at most (the rest on the next pass).
MAX_DUE_PER_PASS = 200
MIN_EVERY_S = 1.0

AT_RULE = (
    "give an ISO 8601 time with an offset (2026-12-01T17:00:00+01:00), a local date and time "
    "read in the schedule's time zone (2026-12-01T17:00), or HH:MM for the next such time "
    "(17:00)"
)
EVERY_RULE = "an interval of at least 1 second: seconds (90) or 30s, 10m, 1h, 1d, 1h30m"
CRON_RULE = (
    "5 fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5' (9:00 on weekdays)"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_EVERY = re.compile(r"^(?:\d+[smhd])+$")
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise InvalidRequest("timezone: give an IANA time zone name, e.g. 'Europe/Paris' or 'UTC'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"timezone: unknown time zone '{name[:64]}': give an IANA name, e.g. "
            "'Europe/Paris' or 'UTC'"
        ) from None


def parse_every(value: Any, name: str = "every") -> float:
    """Seconds of an ``every`` interval (a number, or ``30s``/``10m``/``1h``/``1d`` forms)."""
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        elif _EVERY.match(text):
            seconds = float(sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", text)))
    if seconds is None or not seconds == seconds or seconds < MIN_EVERY_S or seconds > 10**9:
        raise InvalidRequest(f"{name}: {str(value)[:40]!r} is not {EVERY_RULE}")
    return seconds


def check_cron(expression: Any) -> str:
    if (
        not isinstance(expression, str)
        or len(expression.split()) != 5
        or not croniter.is_valid(expression)
    ):
        raise InvalidRequest(
            f"cron: {str(expression)[:80]!r} is not a cron expression: {CRON_RULE}"
        )
    return " ".join(expression.split())


def parse_at(value: Any, tz: ZoneInfo, now: datetime) -> datetime:
    """The UTC time of an ``at``; refuses a time that is not after ``now``."""
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidRequest(f"at: {AT_RULE}")
    text = value.strip()
    hhmm = _HHMM.match(text)
    when: datetime | None = None
    if hhmm:
        hour, minute, second = (int(g or 0) for g in hhmm.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise InvalidRequest(f"at: '{text}' is not a time of day: {AT_RULE}")
        local_now = now.astimezone(tz)
        when = datetime.combine(local_now.date(), time(hour, minute, second), tzinfo=tz)
        if when <= local_now:
            when = datetime.combine(
                local_now.date() + timedelta(days=1), time(hour, minute, second), tzinfo=tz
            )
    else:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest(f"at: '{text[:64]}' is not a time: {AT_RULE}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=tz)
    when = when.astimezone(UTC)
    if when <= now:
        raise InvalidRequest(
            f"at: {when.isoformat()} is in the past (now {now.isoformat(timespec='seconds')}): "
            "a schedule must be for a time to come"
        )
    return when


def parse_missed(value: Any) -> Missed:
    if value in (None, "once"):
        return "once"
    if value == "skip":
        return "skip"
    raise InvalidRequest(
        f"missed: {str(value)[:20]!r} is not a policy: 'once' (run once for all ticks missed "
        "while down, the default) or 'skip' (run none of them)"
    )


@dataclass(frozen=True)
class Timing:
    kind: Kind
    tz: ZoneInfo
    at: datetime | None = None
    every_s: float | None = None
    cron: str | None = None

    def next_after(self, after: datetime) -> datetime | None:
        if self.kind == "every":
            assert self.every_s is not None
            return after + timedelta(seconds=self.every_s)
        if self.kind == "cron":
            assert self.cron is not None
            return cron_next(self.cron, after, self.tz)
        assert self.at is not None
        return self.at if self.at > after else None


def timing_of(fields: ScheduleFields) -> Timing:
    return Timing(fields.kind, ZoneInfo(fields.timezone), fields.at, fields.every_s, fields.cron)


def parse_timing(*, at: Any, every: Any, cron: Any, timezone: str, now: datetime) -> Timing:
    given = [name for name, v in (("at", at), ("every", every), ("cron", cron)) if v is not None]
    if len(given) != 1:
        raise InvalidRequest(
            "give exactly one of 'at' (once, e.g. \"2026-12-01T17:00\"), 'every' (e.g. \"10m\") "
            "or 'cron' (e.g. \"0 9 * * 1-5\")" + (f"; got {', '.join(given)}" if given else "")
        )
    tz = zone(timezone)
    if at is not None:
        return Timing("at", tz, at=parse_at(at, tz, now))
    if every is not None:
        return Timing("every", tz, every_s=parse_every(every))
    return Timing("cron", tz, cron=check_cron(cron))


@dataclass(frozen=True)
class ScheduleRequest:
    action_ref: str | None
    template_ref: str | None
    parameters: Mapping[str, Any]
    at: Any = None
    every: Any = None
    cron: Any = None
    timezone: str | None = None
    missed: Any = None
    description: str = ""


def requester_of(fields: ScheduleFields, schedule_id: int, tick: datetime) -> Requester:
    """Who made the schedule, as the requester of a tick's run (which records the schedule
    and the tick it was for)."""
    r = fields.requester
    return Requester(
        identity=str(r.get("identity", "")),
        role=str(r.get("role", "viewer")),
        source=r.get("source", "api"),
        channel=r.get("channel"),
        extra={**dict(r.get("extra") or {}), "schedule": schedule_id, "tick": tick.isoformat()},
    )


class ExecSchedules:
    def __init__(
        self,
        repo: ScheduleRepository,
        catalog: Catalog,
        gate: Gate,
        templates: ExecTemplates,
        default_timezone: str,
    ) -> None:
        self.repo = repo
        self.catalog = catalog
        self.gate = gate
        self.templates = templates
        self.default_timezone = default_timezone

    async def _allowed(self, who: Requester, verb: Verb, action_ref: str, what: str) -> None:
        await self.gate.deny(who, verb, action_ref, audit_verb=what)

    async def _action_of(self, s: Schedule) -> str | None:
        """The action a schedule runs (its template's, for a template; None: gone)."""
        if s.fields.action_ref is not None:
            return s.fields.action_ref
        try:
            return (await self.templates.find(s.fields.template_ref or "")).action_ref
        except EngineError:
            return None

    async def view(self, s: Schedule) -> dict[str, Any]:
        f = s.fields
        action_ref = await self._action_of(s)
        try:
            secrets = (await self.catalog.get_action(action_ref or "")).secrets
        except EngineError:
            secrets = frozenset()
        tz = ZoneInfo(f.timezone)
        nxt = f.next_fire_at
        return {
            "id": s.id,
            "action_ref": f.action_ref,
            "template_ref": f.template_ref,
            "parameters": shown(f.parameters, secrets),
            "kind": f.kind,
            "at": f.at,
            "every_s": f.every_s,
            "cron": f.cron,
            "timezone": f.timezone,
            "next_fire_at": nxt,
            "next_fire_local": None if nxt is None else nxt.astimezone(tz).isoformat(),
            "missed": f.missed,
            "paused": s.paused,
            "requester": {k: v for k, v in f.requester.items() if k != "extra"},
            "description": f.description,
            "fire_count": s.fire_count,
            "last_fired_at": s.last_fired_at,
            "last_execution": s.last_execution,
            "created": s.created,
            "updated": s.updated,
        }

    async def create(
        self,
        who: Requester,
        req: ScheduleRequest,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Schedule:
        """Make a schedule. The same request again (``idempotency_key``: a Slack retry that
        reached another process, an API client's Idempotency-Key) finds the first one, made by
        the same person, and makes nothing."""
        if idempotency_key is not None:
            earlier = await self._made_by(who, idempotency_key)
            if earlier is not None:
                return earlier
        now = now_utc()
        if (req.action_ref is None) == (req.template_ref is None):
            raise InvalidRequest(
                "give either 'action_ref' (with 'parameters') or 'template_ref' (with "
                "'parameters' as its overrides)"
            )
        timing = parse_timing(
            at=req.at,
            every=req.every,
            cron=req.cron,
            timezone=req.timezone or self.default_timezone,
            now=now,
        )
        missed = parse_missed(req.missed)
        if req.template_ref is not None:
            template, merged = await self.templates.parameters_of(req.template_ref, req.parameters)
            action_ref = template.action_ref
        else:
            action_ref, merged = str(req.action_ref), dict(req.parameters)
        await self._allowed(who, "run", action_ref, "schedule create")
        action = await self.catalog.get_action(action_ref)
        validate_parameters(action.param_schema, merged)  # each run must be able to start
        if action.confirm and who.source in ("slack", "chat"):
            raise InvalidRequest(
                f"{action_ref} asks for confirmation before each run: it cannot be scheduled "
                "from chat (a schedule made over the API runs it unasked)"
            )
        stored, sealed = split_secrets(dict(req.parameters), action.secrets, self.gate.secrets)
        first = timing.at if timing.kind == "at" else timing.next_after(now)
        fields = ScheduleFields(
            action_ref=req.action_ref,
            template_ref=req.template_ref,
            parameters=stored,
            parameters_sealed=sealed,
            kind=timing.kind,
            at=timing.at,
            every_s=timing.every_s,
            cron=timing.cron,
            timezone=timing.tz.key,
            next_fire_at=first,
            missed=missed,
            requester={
                "identity": who.identity,
                "role": who.role,
                "source": who.source,
                "channel": who.channel,
                "extra": dict(who.extra),
            },
            chat=chat,
            description=req.description,
            idempotency_key=idempotency_key,
        )
        try:
            made = await self.repo.add(fields)
        except Conflict:
            if idempotency_key is None:
                raise
            earlier = await self._made_by(who, idempotency_key)  # made meanwhile, elsewhere
            if earlier is None:
                raise
            return earlier
        await self.gate.audit.record(
            who.entry("schedule create", "accepted", target=action_ref, detail=f"#{made.id}")
        )
        return made

    async def _made_by(self, who: Requester, idempotency_key: str) -> Schedule | None:
        earlier = await self.repo.find_by_key(idempotency_key)
        if earlier is not None and earlier.fields.requester.get("identity") != who.identity:
            raise Conflict("that request key was used by someone else")
        return earlier

    async def _find(self, schedule_id: int) -> Schedule:
        found = await self.repo.get(schedule_id)
        if found is None:
            raise NotFound(f"schedule #{schedule_id} not found")
        return found

    async def _check(self, who: Requester, s: Schedule, verb: Verb, what: str) -> None:
        action_ref = await self._action_of(s)
        if action_ref is None:
            if who.role != "admin":
                raise Forbidden("its template is gone: only an admin may change this schedule")
            return
        await self._allowed(who, verb, action_ref, what)

    async def get(self, who: Requester, schedule_id: int) -> Schedule:
        found = await self._find(schedule_id)
        await self._check(who, found, "view", "schedule view")
        return found

    async def visible(self, who: Requester) -> list[Schedule]:
        out = []
        for s in await self.repo.every_schedule():
            action_ref = await self._action_of(s)
            if (action_ref is None and who.role == "admin") or (
                action_ref is not None and self.gate.policy.allows(who.role, "view", action_ref)
            ):
                out.append(s)
        return out

    async def delete(self, who: Requester, schedule_id: int) -> None:
        found = await self._find(schedule_id)
        await self._check(who, found, "run", "schedule delete")
        if not await self.repo.delete(schedule_id):
            raise NotFound(f"schedule #{schedule_id} not found")
        await self.gate.audit.record(
            who.entry("schedule delete", "accepted", detail=f"#{schedule_id}")
        )

    async def set_paused(self, who: Requester, schedule_id: int, paused: bool) -> Schedule:
        found = await self._find(schedule_id)
        what = "schedule pause" if paused else "schedule resume"
        await self._check(who, found, "run", what)
        nxt = found.next_fire_at
        if not paused:
            if not found.paused:
                return found
            now = now_utc()
            timing = timing_of(found.fields)
            nxt = timing.at if timing.kind == "at" else timing.next_after(now)
            if nxt is None or nxt <= now:
                raise Conflict(
                    f"schedule #{schedule_id} was for {found.fields.at} and that time has passed; "
                    "make a new one"
                )
        elif found.next_fire_at is None:
            raise Conflict(f"schedule #{schedule_id} has ended: nothing to pause")
        changed = await self.repo.set_paused(schedule_id, paused, nxt)
        if changed is None:
            raise NotFound(f"schedule #{schedule_id} not found")
        await self.gate.audit.record(who.entry(what, "accepted", detail=f"#{schedule_id}"))
        return changed

    # -- firing --------------------------------------------------------------------------------

    async def fire_due(self, now: datetime | None = None) -> int:
        """Run every due tick (each once across processes); the number this call ran."""
        now = now or now_utc()
        fired = 0
        for s in await self.repo.due(now, MAX_DUE_PER_PASS):
            scheduled = s.next_fire_at
            assert scheduled is not None
            try:
                timing = timing_of(s.fields)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                log.warning("schedule #%s stopped: %s", s.id, exc)
                await self.repo.claim(s.id, scheduled, None, None)
                continue
            late = (now - scheduled).total_seconds() > MISSED_AFTER_S
            nxt = timing.next_after(scheduled)
            if nxt is not None and nxt <= now:
                nxt = timing.next_after(now)  # far behind: once for all, then on schedule
            run = not (late and s.fields.missed == "skip")
            if not await self.repo.claim(s.id, scheduled, nxt, now if run else None):
                continue  # another process has this tick
            if not run:
                log.info("schedule #%s: tick %s missed, skipped", s.id, scheduled.isoformat())
                continue
            await self._run(s, scheduled)
            fired += 1
        return fired

    async def _run(self, s: Schedule, scheduled: datetime) -> None:
        who = requester_of(s.fields, s.id, scheduled)
        key = f"schedule:{s.id}:{scheduled.isoformat()}"
        f = s.fields
        try:
            params, _ = opened(f.parameters, f.parameters_sealed, self.gate.secrets)
            outcome: Submitted | NeedsConfirmation
            if f.template_ref is not None:
                outcome = await self.templates.execute(
                    who, f.template_ref, params, chat=f.chat, idempotency_key=key, confirmed=True
                )
            else:
                outcome = await self.gate.run(
                    who,
                    str(f.action_ref),
                    params,
                    chat=f.chat,
                    idempotency_key=key,
                    confirmed=True,  # from chat, an action that asks is refused at create
                )
        except EngineError as exc:
            log.warning("schedule #%s: tick %s not run: %s", s.id, scheduled, exc.message)
            return
        if isinstance(outcome, Submitted):
            await self.repo.ran(s.id, outcome.record.id)


def schedules_of(runtime: Runtime) -> ExecSchedules:
    from engine.exec_templates import templates_of
    from engine.storage.exec_schedules import schedule_repository

    return ExecSchedules(
        schedule_repository(runtime.store),
        runtime.catalog,
        runtime.gate,
        templates_of(runtime),
        runtime.settings.default_timezone,
    )


class ScheduleFiring:
    """The loop of a serve process that fires due schedules: a pass every ``poll_s``, or at
    the soonest tick when that comes first (a schedule made in another process is seen within
    ``poll_s``)."""

    def __init__(self, schedules: ExecSchedules, poll_s: float) -> None:
        self.schedules = schedules
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> ScheduleFiring:
        self._task = asyncio.create_task(self._loop(), name="schedules")
        return self

    async def _loop(self) -> None:
        while True:
            started = monotime.monotonic()
            wait = self.poll_s
            try:
                await self.schedules.fire_due()
                soonest = await self.schedules.repo.earliest()
                if soonest is not None:  # a tick before the next poll: wake for it
                    wait = min(wait, (soonest - now_utc()).total_seconds())
            except Exception as exc:
                log.warning("firing schedules failed: %s", exc)
            spent = monotime.monotonic() - started
            await asyncio.sleep(max(0.0, min(wait, self.poll_s - spent)))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
