"""Message rendering (pure): Block Kit for Slack and plain text for the terminal.

Slack limits honoured here: section text at most 3,000 characters, at most 50 blocks a message.
Output longer than :data:`INLINE_OUTPUT_CHARS` is cut with a marker naming how much was left
out; the callback listener then uploads the whole output as a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from engine.automation.records import Rule
from engine.catalog_records import Action
from engine.params import REDACTED
from engine.records import Execution
from engine.status import PENDING, TERMINAL
from engine.status import ExecutionStatus as S

#: Slack's limit on a section block's text.
SECTION_TEXT_LIMIT = 3000
#: Slack's limit on blocks per message.
MAX_BLOCKS = 50
#: Escaped output shown inline in a thread reply (under SECTION_TEXT_LIMIT with the fence and
#: title); beyond it the full output is uploaded as a file.
INLINE_OUTPUT_CHARS = 2900
#: Parameters shown on a card before "…".
CARD_PARAMS_CHARS = 400

EMOJI: dict[str, str] = {
    S.REQUESTED: ":hourglass_flowing_sand:",
    S.SCHEDULING: ":hourglass_flowing_sand:",
    S.SCHEDULED: ":hourglass_flowing_sand:",
    S.RUNNING: ":gear:",
    S.COMPLETED: ":white_check_mark:",
    S.FAILED: ":x:",
    S.CANCELING: ":octagonal_sign:",
    S.CANCELLED: ":no_entry_sign:",
    S.TIMEOUT: ":alarm_clock:",
    S.ABANDONED: ":skull:",
}
#: action_id of the buttons (the Slack app listens for them).
CANCEL_ACTION = "attune_cancel"
RERUN_ACTION = "attune_rerun"
CONFIRM_ACTION = "attune_confirm"
ABORT_ACTION = "attune_abort"
TERMINAL_WORDS: frozenset[str] = frozenset(s.value for s in TERMINAL)
#: Statuses whose card offers Cancel.
CANCELLABLE_WORDS: frozenset[str] = frozenset(s.value for s in PENDING | {S.RUNNING})
#: Replaces a code fence inside output, so it cannot end the code block early.
_BROKEN_FENCE = "\u02cb\u02cb\u02cb"
WORDS: dict[str, str] = {s.value: "queued" for s in PENDING}


def _duration(record: Execution) -> str:
    ms = (record.result or {}).get("duration_ms")
    if ms is None:
        return ""
    return f" in {ms} ms" if ms < 1000 else f" in {ms / 1000:.1f} s"


def params_text(config: dict[str, Any], limit: int = CARD_PARAMS_CHARS) -> str:
    parts = []
    for key, value in config.items():
        shown = value if isinstance(value, str) else _json(value)
        if shown != REDACTED and isinstance(value, str) and (" " in value or not value):
            shown = f'"{value}"'
        parts.append(f"{key}={shown}")
    text = " ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), default=str)


def status_line(record: Execution) -> str:
    status = record.status
    word = WORDS.get(status, status)
    line = f"#{record.id} {record.action_ref}: {word}{_duration(record)}"
    retry = retry_text(record)
    if retry:
        line += f" ({retry})"
    if record.retry_due_at is not None:
        line += f" ({RETRY_PENDING})"
    return line


#: Said of an ended run whose retry is pending (engine/retries.py).
RETRY_PENDING = "retry pending: cancel it to call the retry off"


def retry_text(record: Execution) -> str:
    """``retry 1 of 3 of #12`` for a retry (the ``of 3`` is its action's ``max_retries``
    when the retry was made), else empty."""
    if not record.retry_count or record.original_execution is None:
        return ""
    limit = (record.requester or {}).get("max_retries")
    of = f" of {limit}" if isinstance(limit, int) and limit >= record.retry_count else ""
    return f"retry {record.retry_count}{of} of #{record.original_execution}"


def batch(records: Sequence[Execution], *, replayed: bool = False) -> str:
    """The reply to a batch: one row per execution, in the order asked."""
    head = f"Batch of {len(records)} queued"
    if replayed:
        head += " (already queued for this same request: not run again)"
    rows = [head + ":"]
    for record in records:
        params = params_text(record.config)
        rows.append(f"#{record.id} `{record.action_ref}`" + (f" `{params}`" if params else ""))
    return "\n".join(rows)


def who(record: Execution) -> str:
    executor = record.requester or {}
    if executor.get("source") == "rule":
        return f"rule `{executor.get('rule')}` on event #{executor.get('event')}"
    user_id = executor.get("user_id")
    return f"<@{user_id}>" if user_id else str(executor.get("identity", "someone"))


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def confirmation(
    code: str, action_ref: str, config: dict[str, Any], expires_in_s: float, *, buttons: bool
) -> tuple[str, list[dict[str, Any]] | None]:
    """The question asked before a ``confirm: true`` action runs."""
    params = params_text(config)
    minutes = max(1, round(expires_in_s / 60))
    text = (
        f"`{action_ref}`{' `' + escape(params) + '`' if params else ''} asks for "
        f"confirmation. Confirm within {minutes} min: `confirm {code}` (or `abort {code}`)."
    )
    if not buttons:
        return text, None
    question = (
        f":warning: Run `{action_ref}`{' `' + escape(params) + '`' if params else ''}?"
        f" This expires in {minutes} min."
    )
    return text, [
        {"type": "section", "text": {"type": "mrkdwn", "text": question}},
        {
            "type": "actions",
            "block_id": f"confirm-{code}",
            "elements": [
                {
                    "type": "button",
                    "action_id": CONFIRM_ACTION,
                    "style": "primary",
                    "value": code,
                    "text": {"type": "plain_text", "text": "Confirm"},
                },
                {
                    "type": "button",
                    "action_id": ABORT_ACTION,
                    "style": "danger",
                    "value": code,
                    "text": {"type": "plain_text", "text": "Abort"},
                },
            ],
        },
    ]


def page_link(url: str | None) -> str | None:
    """``View run`` as a mrkdwn link to the execution's page, or None without a page URL."""
    if not url:
        return None
    return f"<{url.replace('|', '%7C').replace('>', '%3E')}|View run>"


def card(
    record: Execution, *, attached: bool = True, page_url: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The status card: fallback text and blocks, with Cancel while it may still be stopped
    and Re-run once it has ended; ``page_url``: a ``View run`` link to the execution's page."""
    status = record.status
    emoji = EMOJI.get(status, ":grey_question:")
    headline = (
        f"{emoji} *#{record.id}* `{record.action_ref}` "
        f"{WORDS.get(status, status)}{_duration(record)}"
    )
    context = [f"by {who(record)}"]
    if schedule := (record.requester or {}).get("schedule"):
        context.append(f"scheduled by schedule #{schedule}")
    if retry := retry_text(record):
        reason = f" ({record.retry_reason})" if record.retry_reason else ""
        context.append(f":repeat: {retry}{reason}")
    if record.retry_due_at is not None:
        context.append(f":repeat: {RETRY_PENDING}")
    params = params_text(record.config or {})
    if params:
        context.append(f"`{escape(params)}`")
    link = page_link(page_url)
    if link:
        context.append(link)
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]},
    ]
    button = (
        (CANCEL_ACTION, "Cancel")
        if status in CANCELLABLE_WORDS
        else (RERUN_ACTION, "Re-run")
        if status in TERMINAL_WORDS
        else None
    )
    error = (record.result or {}).get("error")
    if error and status != "completed":
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(f"*Error:* {escape(error)}", SECTION_TEXT_LIMIT),
                },
            }
        )
    if status in TERMINAL_WORDS and cut_streams(record):
        where = (
            "attached as a file in the thread"
            if attached
            else f"at GET /api/v1/executions/{record.id}"
        )
        note = f":paperclip: the output is long: the full text is {where}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    buttons = [] if button is None else [button]
    if record.retry_due_at is not None:
        buttons.insert(0, (CANCEL_ACTION, "Cancel retry"))
    if buttons:
        blocks.append(
            {
                "type": "actions",
                "block_id": f"card-{record.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": action_id,
                        "value": str(record.id),
                        "text": {"type": "plain_text", "text": label},
                    }
                    for action_id, label in buttons
                ],
            }
        )
    return status_line(record), blocks


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fenced(text: str) -> tuple[str, int]:
    """Escaped output for a code block, cut to fit a section; also how many raw characters fit."""
    fenced = escape(text).replace("```", _BROKEN_FENCE)
    if len(fenced) <= INLINE_OUTPUT_CHARS:
        return fenced, len(text)
    fenced = fenced[:INLINE_OUTPUT_CHARS]
    amp = fenced.rfind("&", max(0, INLINE_OUTPUT_CHARS - 5))
    if amp != -1 and ";" not in fenced[amp:]:
        fenced = fenced[:amp]  # do not leave half an entity such as "&am"
    shown = fenced.replace(_BROKEN_FENCE, "```")
    raw = shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return fenced, len(raw)


def cut_streams(record: Execution) -> list[str]:
    """The streams (stdout, stderr) too long to show whole in a message."""
    result = record.result or {}
    return [
        name
        for name in ("stdout", "stderr")
        if (text := result.get(name) or "") and _fenced(text)[1] < len(text)
    ]


def needs_upload(record: Execution) -> bool:
    return bool(cut_streams(record))


def output(
    record: Execution, *, attached: bool = True, page_url: str | None = None
) -> tuple[str, list[dict[str, Any]]] | None:
    """The thread reply with the output, or None when there is none to show.

    ``attached`` says whether the full output of a cut stream is uploaded as a file; when it
    cannot be (the bot is not in the channel), the note points to the API instead.
    ``page_url``: a ``View run`` link to the execution's page, at the end.
    """
    result = record.result or {}
    blocks: list[dict[str, Any]] = []
    notes: list[str] = []
    where = (
        "the full output is attached as a file"
        if attached
        else f"the full output is at GET /api/v1/executions/{record.id}"
    )
    for name in ("stdout", "stderr"):
        text = result.get(name) or ""
        if not text.strip():
            continue
        fenced, shown = _fenced(text)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{name}*\n```{fenced}```"}}
        )
        if shown < len(text):
            notes.append(f"{name} cut after {shown:,} of {len(text):,} characters; {where}")
        if result.get(f"{name}_truncated"):
            notes.append(f"{name} was capped by the worker")
    if not blocks:
        return None
    if notes:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "✂️ " + "; ".join(notes)}]}
        )
    link = page_link(page_url)
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return f"Output of #{record.id}", blocks[:MAX_BLOCKS]


def no_output(record: Execution) -> tuple[str, list[dict[str, Any]]]:
    """What the live message becomes when the run ends with nothing to show."""
    text = f"#{record.id} ended {record.status} with no output to show"
    return text, [{"type": "context", "elements": [{"type": "mrkdwn", "text": f"_{text}_"}]}]


#: Characters of live output shown per stream (the last ones; under SECTION_TEXT_LIMIT).
LIVE_OUTPUT_CHARS = 1400
#: The word the live message carries while the run lasts.
LIVE_WORD = "live"


def _live_tail(text: str) -> str:
    """The last whole lines of ``text`` that fit LIVE_OUTPUT_CHARS escaped (a longer last line
    is cut to its end), escaped for a code block; "…" first when something was left out."""
    kept: list[str] = []
    size = 0
    lines = text.split("\n")
    for line in reversed(lines):
        if len(line) > LIVE_OUTPUT_CHARS // 4:
            line = "…" + line[-(LIVE_OUTPUT_CHARS // 4) :]  # raw text: no half entity
        shown = escape(line).replace("```", _BROKEN_FENCE)
        if kept and size + len(shown) + 1 > LIVE_OUTPUT_CHARS:
            break
        kept.append(shown)
        size += len(shown) + 1
    body = "\n".join(reversed(kept))
    return body if len(kept) == len(lines) else "…\n" + body


def live(record_id: int, tails: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """The live message: the last lines of each stream that has any, as code blocks.

    ``tails`` maps a stream name (``stdout``, ``stderr``) to its last lines."""
    blocks: list[dict[str, Any]] = []
    for name in ("stdout", "stderr"):
        text = (tails.get(name) or "").rstrip("\n")
        if not text.strip():
            continue
        fenced = _live_tail(text)
        title = "" if name == "stdout" else f"*{name}*\n"
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{title}```{fenced}```"}}
        )
    note = f":gear: {LIVE_WORD}: the last lines of #{record_id} while it runs"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return f"#{record_id}: running ({LIVE_WORD} output)", blocks


#: A Slack user id (mentioned as ``<@id>``); any other owner is named as ``@login``.
_SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


def mention_names(user_ids: Sequence[str], owners: Sequence[str] = ()) -> list[str]:
    """``user_ids`` (Slack's) and the owners that are Slack user ids as mentions, the other
    owners (logins) as plain ``@name``; each once."""
    shown = [f"<@{u}>" for u in user_ids]
    for owner in owners:
        is_id = _SLACK_USER_ID.match(owner)
        shown.append(f"<@{owner}>" if is_id else f"@{escape(owner.lstrip('@'))}")
    return list(dict.fromkeys(shown))


def mention(
    record: Execution, user_ids: Sequence[str], owners: Sequence[str] = ()
) -> tuple[str, list[dict[str, Any]]] | None:
    """The thread message telling the requester (``user_ids``) and a rule's ``owners`` that
    the run ended badly (None: nobody to tell)."""
    names = mention_names(user_ids, owners)
    if not names:
        return None
    status = record.status
    error = (record.result or {}).get("error")
    line = (
        f"{' '.join(names)} {EMOJI.get(status, '')} #{record.id} `{record.action_ref}` "
        f"ended *{status}*{_duration(record)}"
    )
    if error:
        line += f": {escape(str(error))}"
    text = _clip(line, SECTION_TEXT_LIMIT)
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]


def plain_output(record: Execution) -> str:
    """The terminal's rendering of a finished execution's output and error."""
    result = record.result or {}
    lines = []
    for name in ("stdout", "stderr"):
        text = (result.get(name) or "").rstrip("\n")
        if text:
            lines.append(text if name == "stdout" else f"[stderr] {text}")
        if result.get(f"{name}_truncated"):
            lines.append(f"[{name} was capped by the worker]")
    if result.get("error") and record.status != "completed":
        lines.append(f"error: {result['error']}")
    return "\n".join(lines)


def action_help(action: dict[str, Any], command: str = "/attune run") -> str:
    schema = action.get("param_json_schema") or {}
    props: dict[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    lines = [f"*{action['ref']}*: {action.get('description') or action.get('label', '')}"]
    if not props:
        lines.append("No parameters.")
    for name, prop in props.items():
        ptype = prop.get("type", "any")
        ptype = "|".join(ptype) if isinstance(ptype, list) else ptype
        bits = [f"`{name}` ({ptype}{', required' if name in required else ''})"]
        if "default" in prop:
            bits.append(f"default {_json(prop['default'])}")
        if "enum" in prop:
            bits.append("one of " + ", ".join(_json(v) for v in prop["enum"]))
        if prop.get("secret"):
            bits.append("secret")
        if prop.get("description"):
            bits.append(f"— {prop['description']}")
        lines.append("• " + " ".join(bits))
    if action.get("max_retries"):
        lines.append(
            f"Retried up to {action['max_retries']} times when a run is abandoned or times out."
        )
    example = " ".join(f"{n}=…" for n in props if n in required)
    lines.append(f"Run it: `{command} {action['ref']}{' ' + example if example else ''}`")
    return "\n".join(lines)


def actions_list(actions: Sequence[Action], pack: str | None) -> str:
    if not actions:
        return f"No actions in pack `{pack}`." if pack else "No actions registered."
    lines = [f"*Actions{' in ' + pack if pack else ''}* ({len(actions)}):"]
    for a in actions[:100]:
        lines.append(f"• `{a.spec.ref}` — {a.spec.description or a.spec.label}")
    if len(actions) > 100:
        lines.append(f"… and {len(actions) - 100} more: `/attune actions <pack>`")
    return _clip("\n".join(lines), SECTION_TEXT_LIMIT)


def rules_list(rules: Sequence[Rule]) -> str:
    if not rules:
        return "No rules."
    lines = [f"*Rules* ({len(rules)}):"]
    for r in rules[:100]:
        state = "on" if r.enabled else "off"
        where = f" → <#{r.chat_channel}>" if r.chat_channel else ""
        lines.append(f"• `{r.ref}` ({state}): `{r.trigger_ref}` → `{r.action_ref}`{where}")
    if len(rules) > 100:
        lines.append(f"… and {len(rules) - 100} more (GET /api/v1/rules)")
    return _clip("\n".join(lines), SECTION_TEXT_LIMIT)


# -- inquiries (engine/inquiries.py) ------------------------------------------------------------

INQUIRY_ANSWER_ACTION = "attune_inquiry_answer"
INQUIRY_OPEN_ACTION = "attune_inquiry_open"
INQUIRY_MODAL = "attune_inquiry_modal"
#: Most buttons offered for an enum answer; more values are asked in a modal.
MAX_CHOICE_BUTTONS = 5


def inquiry_choices(schema: dict[str, Any] | None) -> tuple[str, list[Any]] | None:
    """The one field and its values when the answer is one click: an object schema with a
    single property, boolean or a short enum; None when a modal must ask."""
    props = (schema or {}).get("properties")
    if not isinstance(props, dict) or len(props) != 1:
        return None
    name, prop = next(iter(props.items()))
    if not isinstance(prop, dict):
        return None
    enum = prop.get("enum")
    if isinstance(enum, list) and 0 < len(enum) <= MAX_CHOICE_BUTTONS:
        return str(name), list(enum)
    if prop.get("type") == "boolean":
        return str(name), [True, False]
    return None


def _choice_label(value: Any) -> str:
    if value is True:
        return "Yes"
    if value is False:
        return "No"
    return str(value)[:75]


def inquiry_prompt(inquiry: Any) -> tuple[str, list[dict[str, Any]]]:
    """The question as posted under the card: buttons, or an Answer button for a modal."""
    who = ", ".join(inquiry.assignees) or "the requester or an admin"
    text = f"Inquiry #{inquiry.id} (execution #{inquiry.execution}): {inquiry.prompt}"
    choices = inquiry_choices(inquiry.response_schema)
    if choices is not None:
        name, values = choices
        buttons = [
            {
                "type": "button",
                "action_id": f"{INQUIRY_ANSWER_ACTION}_{i}",
                "value": json.dumps({"i": inquiry.id, "f": name, "v": value}),
                "text": {"type": "plain_text", "text": _choice_label(value)},
                **({"style": "primary"} if value is True else {}),
            }
            for i, value in enumerate(values)
        ]
    else:
        buttons = [
            {
                "type": "button",
                "action_id": INQUIRY_OPEN_ACTION,
                "value": str(inquiry.id),
                "text": {"type": "plain_text", "text": "Answer…"},
            }
        ]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":question: *{inquiry.prompt}*"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Inquiry #{inquiry.id} · answered by {who}"}],
        },
        {"type": "actions", "elements": buttons},
    ]
    return text, blocks


def inquiry_settled(inquiry: Any) -> tuple[str, list[dict[str, Any]]]:
    """The question once answered (who, and what), timed out or cancelled: no buttons."""
    if inquiry.status == "responded":
        answer = ", ".join(f"{k}={json.dumps(v)}" for k, v in (inquiry.response or {}).items())
        outcome = f"answered by {inquiry.responded_by}: {answer}"
    elif inquiry.status == "timeout":
        outcome = "not answered in time (timed out)"
    elif inquiry.status == "cancelled":
        outcome = "cancelled with its run"
    else:
        outcome = inquiry.status
    text = f"Inquiry #{inquiry.id}: {inquiry.prompt} — {outcome}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{inquiry.prompt}*"}},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"Inquiry #{inquiry.id} · {outcome}"}],
        },
    ]
    return text, blocks


def inquiry_modal(inquiry: Any) -> dict[str, Any]:
    """A modal with one text field per property of the answer's schema (values that are not
    text are read as JSON: numbers, true/false, lists)."""
    props = (inquiry.response_schema or {}).get("properties") or {"response": {}}
    required = set((inquiry.response_schema or {}).get("required") or ())
    blocks = []
    for name, prop in list(props.items())[:50]:
        kind = prop.get("type", "string") if isinstance(prop, dict) else "string"
        hint = prop.get("description", "") if isinstance(prop, dict) else ""
        blocks.append(
            {
                "type": "input",
                "block_id": f"field:{name}"[:255],
                "optional": name not in required,
                "label": {"type": "plain_text", "text": f"{name} ({kind})"[:2000]},
                **({"hint": {"type": "plain_text", "text": str(hint)[:2000]}} if hint else {}),
                "element": {"type": "plain_text_input", "action_id": "value"},
            }
        )
    return {
        "type": "modal",
        "callback_id": INQUIRY_MODAL,
        "private_metadata": str(inquiry.id),
        "title": {"type": "plain_text", "text": f"Inquiry #{inquiry.id}"[:24]},
        "submit": {"type": "plain_text", "text": "Answer"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": inquiry.prompt[:3000]}},
            *blocks,
        ],
    }


def alias_result(text: str | None) -> tuple[str, list[dict[str, Any]]]:
    """An action alias's rendered ``result.format`` as the output message (mrkdwn, cut to
    what a section holds)."""
    shown = _clip(
        (text or "").strip() or "_(the alias's result format rendered nothing)_", SECTION_TEXT_LIMIT
    )
    return shown, [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}]
