"""``history`` and ``last`` in chat: recent executions with status, duration and who ran them,
newest first, and one's own last execution with its output.

Both show only what the viewer may ``view`` (the policy's patterns narrow the query, as the
API's execution list is narrowed); the rendering is plain functions of the records.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from bot import render
from bot.commands import HISTORY_MAX, History
from engine.clock import now_utc
from engine.gate import Requester
from engine.records import Execution

if TYPE_CHECKING:
    from engine.runtime import Runtime

#: Most characters of output ``last`` shows (its end: where errors are).
EXCERPT_CHARS = 1500
#: Replaces a code fence inside output, so it cannot end the excerpt's block early.
_BROKEN_FENCE = "\u02cb\u02cb\u02cb"


def ago(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 10:
        return "just now"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 86_400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86_400} d ago"


def span(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def duration(record: Execution, now: datetime) -> str:
    """How long it ran (``in 1.8 s``), ``for 3.0 s`` while it runs, "" before it starts."""
    ms = (record.result or {}).get("duration_ms")
    if isinstance(ms, int | float):
        return "in " + span(ms)
    if record.started_at is None:
        return ""
    if record.finished_at is not None:
        return "in " + span((record.finished_at - record.started_at).total_seconds() * 1000)
    return "for " + span((now - record.started_at).total_seconds() * 1000)


def requested_by(record: Execution, slack: bool) -> str:
    """Who asked: a Slack mention in Slack, a name in the terminal, a rule by its ref."""
    executor = record.requester or {}
    if executor.get("source") == "rule":
        return f"rule `{executor.get('rule')}`"
    user_id = executor.get("user_id")
    if user_id and slack:
        return f"<@{user_id}>"
    name = executor.get("user_name") or executor.get("identity") or "someone"
    return render.escape(str(name))


def history_line(record: Execution, now: datetime, slack: bool) -> str:
    word = render.WORDS.get(record.status, record.status)
    took = duration(record, now)
    parts = [f"#{record.id} `{record.action_ref}` {word}" + (f" {took}" if took else "")]
    parts += [requested_by(record, slack), ago(record.created, now)]
    return "• " + " · ".join(parts)


def history_text(
    query: History, records: list[Execution], total: int, now: datetime, slack: bool
) -> str:
    scope = ""
    if query.action_ref:
        scope = f" of `{query.action_ref}`"
    elif query.pack:
        scope = f" in pack `{query.pack}`"
    elif query.user:
        scope = " by " + (f"<@{query.user}>" if slack and query.user[:1] in "UW" else query.user)
    if not records:
        return f"No executions{scope} that you may view."
    head = f"*Recent executions{scope}* ({len(records)} of {total}, newest first):"
    lines = [head, *(history_line(r, now, slack) for r in records)]
    if total > len(records) and query.limit < HISTORY_MAX:
        lines.append(f"`history {_args(query)}{HISTORY_MAX}` shows up to {HISTORY_MAX}.")
    return "\n".join(lines)


def _args(query: History) -> str:
    target = query.action_ref or query.pack or (f"@{query.user}" if query.user else "")
    return f"{target} " if target else ""


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The end of ``text``, at most ``limit`` characters, whole lines where it can."""
    text = text.rstrip("\n")
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find("\n")
    if 0 <= cut < limit // 2:
        tail = tail[cut + 1 :]
    return f"… ({len(text) - len(tail)} characters before)\n{tail}"


def last_text(record: Execution, now: datetime, slack: bool) -> str:
    word = render.WORDS.get(record.status, record.status)
    took = duration(record, now)
    lines = [
        f"*Your last execution*: #{record.id} `{record.action_ref}` {word}"
        + (f" {took}" if took else "")
        + f", asked {ago(record.created, now)}"
    ]
    params = render.params_text(record.config)
    if params:
        lines.append(f"parameters: `{render.escape(params)}`")
    result = record.result or {}
    for stream in ("stdout", "stderr"):
        text = result.get(stream) or ""
        if isinstance(text, str) and text.strip():
            shown = excerpt(text).replace("```", _BROKEN_FENCE)
            lines.append(f"{stream}:\n```\n{shown}\n```")
    error = result.get("error")
    if error and record.status != "completed":
        lines.append(f"error: {render.escape(str(error)[:500])}")
    if not result and record.status in render.WORDS:
        lines.append(f"Not started yet: `status {record.id}` tells where it stands.")
    return "\n".join(lines)


def _narrowed(runtime: Runtime, who: Requester) -> list[str] | None:
    """The viewer's ``view`` patterns as SQL LIKE patterns (None: they see everything)."""
    policy = runtime.gate.policy
    return None if policy.sees_everything(who.role) else policy.like_patterns(who.role, "view")


async def history(runtime: Runtime, who: Requester, query: History, *, slack: bool) -> str:
    """The reply to ``history``. Asking for an action one may not view is refused (audited);
    an action that neither exists nor ran raises NotFound (the caller suggests others)."""
    if query.action_ref:
        await runtime.gate.deny(who, "view", query.action_ref, audit_verb="history")
    records, total = await runtime.service.list(
        action_ref=query.action_ref,
        pack=query.pack,
        person=query.user,
        action_like=_narrowed(runtime, who),
        per_page=query.limit,
    )
    if not records and query.action_ref:
        await runtime.catalog.action(query.action_ref)  # NotFound when there is no such action
    return history_text(query, records, total, now_utc(), slack)


async def last(runtime: Runtime, who: Requester, *, slack: bool) -> tuple[str, int | None]:
    """The reply to ``last`` and the execution it shows (None when there is none)."""
    records, _ = await runtime.service.list(
        requester=who.identity, action_like=_narrowed(runtime, who), per_page=1
    )
    if not records:
        return "You have not run anything yet (that you may view); `help` lists what you may.", None
    return last_text(records[0], now_utc(), slack), records[0].id
