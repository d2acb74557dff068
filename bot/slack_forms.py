"""Forms for parameters (pure): an action's parameter schema as a Slack modal, and the values
submitted in it read back as parameters, with a problem per field.

Each parameter is one input block, ``block_id`` ``param:<name>``, its element's
``action_id`` ``value``:

- a string: a one-line text input; an ``enum`` (of any type, up to 100 short values): a
  select whose options carry the values as JSON, so ``3`` comes back a number;
- an integer or a number: a number input (decimals only for ``number``, the schema's
  ``minimum``/``maximum`` as its bounds);
- a boolean: two radio buttons, ``true`` and ``false`` (a checkbox cannot tell "false" from
  "not given", and a required one could not be left unticked);
- an object, an array, or several types: a multi-line text input read as JSON on submit;
- a secret: a one-line text input, never prefilled (not from the schema's default, not from the
  command) and never sent back to Slack. Slack's Block Kit has no masked input, so it is shown
  while typed; the card and the audit show it as ``********``. A secret given in the command is
  not put in the form: it travels sealed (encrypted with ``ATTUNE_SECRET_KEY``) in the view's
  metadata, and its field may be left empty to keep it.

Defaults of the schema and values typed in the command prefill the fields; parameters that are
not required, or that have a default, are optional fields. A form that would break Slack's
limits on a modal (100 blocks, 255-character block ids, 3,000 characters of metadata) is not
built: the caller answers with the usage message instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bot.render import escape
from engine.params import parameter_problems

#: ``callback_id`` of the run form.
RUN_FORM = "attune_run_form"
FIELD_PREFIX = "param:"
VALUE_ACTION = "value"

# Slack's limits on a modal and its parts (Block Kit reference).
MAX_BLOCKS = 100
TITLE_MAX = 24
LABEL_MAX = 2000
HINT_MAX = 2000
BLOCK_ID_MAX = 255
METADATA_MAX = 3000
TEXT_MAX = 3000
SECTION_MAX = 3000
OPTIONS_MAX = 100
OPTION_TEXT_MAX = 75
OPTION_VALUE_MAX = 150
#: Length a field's error is cut to (Slack shows it under the field).
ERROR_MAX = 150

HIDDEN_FIELD_HINT = (
    "Secret: not prefilled and never shown back; the card and the audit show it as ********. "
    "Slack has no masked input: it is visible on your screen while you type it."
)
KEPT_HINT = "Given in your command (not shown): leave empty to keep it, or type a new value."
JSON_HINT = "JSON"

Kind = Literal["text", "secret", "integer", "number", "boolean", "choice", "json"]


@dataclass(frozen=True)
class FormOrigin:
    """Where and by whom the form was asked for; carried in the view's ``private_metadata``
    (Slack hands it back with the submission, signed like every request)."""

    action_ref: str
    channel_id: str | None = None
    team_id: str | None = None
    response_url: str | None = None
    #: Unix seconds when the command was typed (its ``response_url`` lasts 30 minutes).
    asked_at: float = 0.0
    #: Secret values given in the command, sealed with the server's key.
    sealed: str | None = None

    def to_metadata(self) -> str:
        data = {
            "a": self.action_ref,
            "c": self.channel_id,
            "t": self.team_id,
            "r": self.response_url,
            "at": self.asked_at,
            "s": self.sealed,
        }
        return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def from_metadata(cls, text: str) -> FormOrigin | None:
        """The origin, or None when the metadata is not one of ours."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("a"), str):
                return None
            return cls(
                action_ref=data["a"],
                channel_id=_str_or_none(data.get("c")),
                team_id=_str_or_none(data.get("t")),
                response_url=_str_or_none(data.get("r")),
                asked_at=float(data.get("at") or 0.0),
                sealed=_str_or_none(data.get("s")),
            )
        except (ValueError, TypeError):
            return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def properties(schema: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    props = schema.get("properties") or {}
    return {str(k): dict(v) if isinstance(v, Mapping) else {} for k, v in props.items()}


def missing_required(schema: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    """The required parameters neither given nor defaulted, in the schema's order."""
    props = properties(schema)
    required = [str(n) for n in schema.get("required") or []]
    return [n for n in required if n not in given and "default" not in props.get(n, {})]


def field_kind(prop: Mapping[str, Any]) -> Kind:
    """How one parameter is asked for (see the module's docstring)."""
    if prop.get("secret"):
        return "secret"
    if _choices(prop) is not None:
        return "choice"
    raw = prop.get("type")
    types = [raw] if isinstance(raw, str) else [str(t) for t in raw or []]
    if len(types) > 1:
        types = [t for t in types if t != "null"]
    if not types or types == ["string"]:
        return "text"
    if len(types) > 1:
        return "json"
    kind = types[0]
    if kind in ("integer", "number", "boolean"):
        return kind  # type: ignore[return-value]
    return "json"


def _choices(prop: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """An enum as (shown text, value as JSON) options, or None when it is not one a select
    can hold (too many values, or a value too long)."""
    values = prop.get("enum")
    if not isinstance(values, list) or not values or len(values) > OPTIONS_MAX:
        return None
    options = []
    for value in values:
        encoded = json.dumps(value, separators=(",", ":"))
        if len(encoded) > OPTION_VALUE_MAX:
            return None
        shown = value if isinstance(value, str) and value else encoded
        options.append((_clip(shown, OPTION_TEXT_MAX), encoded))
    return options


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text}


def _option(shown: str, value: str) -> dict[str, Any]:
    return {"text": _plain(shown), "value": value}


def _as_text(value: Any, kind: Kind) -> str | None:
    """A prefill for a text input, or None when there is none that fits."""
    if value is None and kind != "json":
        return None
    text = (
        value if isinstance(value, str) else json.dumps(value, indent=2 if kind == "json" else None)
    )
    return text if 0 < len(text) <= TEXT_MAX else None


def _as_number(value: Any, kind: Kind, prop: Mapping[str, Any]) -> str | None:
    """A prefill for a number input: a finite number of the field's kind within its bounds
    (Slack refuses a view whose initial value is not)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if not isinstance(number, int | float) or not math.isfinite(number):
        return None
    if kind == "integer" and not float(number).is_integer():
        return None
    low, high = prop.get("minimum"), prop.get("maximum")
    if isinstance(low, int | float) and number < low:
        return None
    if isinstance(high, int | float) and number > high:
        return None
    if kind == "integer":
        return str(int(number))
    return str(value).strip() if isinstance(value, str) else json.dumps(value)


def _element(kind: Kind, prop: Mapping[str, Any], value: Any, has_value: bool) -> dict[str, Any]:
    element: dict[str, Any] = {"action_id": VALUE_ACTION}
    if kind == "choice":
        options = [_option(s, v) for s, v in _choices(prop) or []]
        element.update(type="static_select", options=options)
        if has_value:
            wanted = json.dumps(value, separators=(",", ":"))
            chosen = [o for o in options if o["value"] == wanted]
            if chosen:
                element["initial_option"] = chosen[0]
        return element
    if kind == "boolean":
        options = [_option("true", "true"), _option("false", "false")]
        element.update(type="radio_buttons", options=options)
        if has_value and isinstance(value, bool | str):
            text = str(value).strip().lower()
            chosen = [o for o in options if o["value"] == text]
            if chosen:
                element["initial_option"] = chosen[0]
        return element
    if kind in ("integer", "number"):
        element.update(type="number_input", is_decimal_allowed=kind == "number")
        for key, bound in (("min_value", "minimum"), ("max_value", "maximum")):
            limit = prop.get(bound)
            if isinstance(limit, int | float) and not isinstance(limit, bool):
                element[key] = str(int(limit)) if kind == "integer" else str(limit)
        initial = _as_number(value, kind, prop) if has_value else None
        if initial is not None:
            element["initial_value"] = initial
        return element
    element.update(type="plain_text_input", multiline=kind == "json")
    if kind != "secret" and has_value:
        initial_text = _as_text(value, kind)
        if initial_text is not None:
            element["initial_value"] = initial_text
    if kind in ("text", "secret"):
        for key, bound in (("min_length", "minLength"), ("max_length", "maxLength")):
            limit = prop.get(bound)
            if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit <= TEXT_MAX:
                element[key] = limit
    return element


def _field(
    name: str, prop: Mapping[str, Any], required: bool, given: Mapping[str, Any], kept: bool
) -> dict[str, Any]:
    kind = field_kind(prop)
    if name in given:
        value, has_value = given[name], True
    else:
        value, has_value = prop.get("default"), "default" in prop
    hints = [str(prop["description"])] if prop.get("description") else []
    if kind == "secret":
        hints.append(KEPT_HINT if kept else HIDDEN_FIELD_HINT)
    elif kind == "json":
        hints.append(f"{JSON_HINT} ({_type_words(prop)})")
    label = str(prop.get("title") or name)
    block: dict[str, Any] = {
        "type": "input",
        "block_id": FIELD_PREFIX + name,
        "optional": not required or "default" in prop or kept,
        "label": _plain(_clip(label, LABEL_MAX)),
        "element": _element(kind, prop, value, has_value),
    }
    if hints:
        block["hint"] = _plain(_clip(" ".join(hints), HINT_MAX))
    return block


def _type_words(prop: Mapping[str, Any]) -> str:
    raw = prop.get("type")
    types = [raw] if isinstance(raw, str) else [str(t) for t in raw or []]
    return " or ".join(f"an {t}" if t[:1] in "aeiou" else f"a {t}" for t in types) or "any value"


def build_form(
    action_ref: str,
    description: str,
    schema: Mapping[str, Any],
    given: Mapping[str, Any],
    origin: FormOrigin,
    *,
    kept_secrets: frozenset[str] = frozenset(),
    confirm: bool = False,
) -> dict[str, Any] | None:
    """The modal asking for ``action_ref``'s parameters, or None when it would not fit Slack's
    limits. ``given``: values typed in the command (not the secrets: those are in
    ``origin.sealed``, named by ``kept_secrets``)."""
    props = properties(schema)
    required = {str(n) for n in schema.get("required") or []}
    metadata = origin.to_metadata()
    intro = [f"*{escape(action_ref)}*"] + ([escape(description)] if description else [])
    if confirm:
        intro.append("_You will be asked to confirm before it runs._")
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip("\n".join(intro), SECTION_MAX)},
        }
    ]
    for name, prop in props.items():
        if len(FIELD_PREFIX + name) > BLOCK_ID_MAX:
            return None
        blocks.append(_field(name, prop, name in required, given, name in kept_secrets))
    if len(blocks) > MAX_BLOCKS or len(metadata) > METADATA_MAX or len(blocks) == 1:
        return None
    return {
        "type": "modal",
        "callback_id": RUN_FORM,
        "private_metadata": metadata,
        "title": _plain(_clip(f"Run {action_ref}", TITLE_MAX)),
        "submit": _plain("Run"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }


@dataclass(frozen=True)
class Submission:
    """The parameters read from a submitted form, and the problem of each field that has one
    (by ``block_id``); run only when there is none."""

    parameters: dict[str, Any]
    errors: dict[str, str]


def _read_value(kind: Kind, state: Mapping[str, Any]) -> tuple[Any, str | None]:
    """(value, problem) of one field's state; value None: left empty."""
    if kind in ("choice", "boolean"):
        selected = state.get("selected_option") or {}
        raw = selected.get("value") if isinstance(selected, Mapping) else None
        if raw is None:
            return None, None
        try:
            return json.loads(str(raw)), None
        except ValueError:
            return None, "pick one of the options"
    raw = state.get("value")
    if raw is None or raw == "":
        return None, None
    text = str(raw)
    if kind == "integer":
        try:
            return int(text.strip()), None
        except ValueError:
            return None, "must be a whole number"
    if kind == "number":
        try:
            number = float(text.strip())
        except ValueError:
            return None, "must be a number"
        if not math.isfinite(number):
            return None, "must be a finite number"
        return (int(number) if number.is_integer() and "." not in text else number), None
    if kind == "json":
        try:
            return json.loads(text), None
        except (ValueError, RecursionError) as exc:
            return None, _clip(f"not valid JSON: {exc}", ERROR_MAX)
    return text, None


def read_form(
    schema: Mapping[str, Any],
    values: Mapping[str, Any],
    kept: Mapping[str, Any] | None = None,
) -> Submission:
    """Read a submitted form's ``view.state.values``: each field by its kind, empty fields
    left out (their defaults apply), ``kept`` (secrets given in the command) where their field
    was left empty; then the whole checked against the schema, each problem on its field (one
    that names no field goes on the first)."""
    props = properties(schema)
    params: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, prop in props.items():
        block = values.get(FIELD_PREFIX + name)
        state = block.get(VALUE_ACTION) if isinstance(block, Mapping) else None
        value, problem = _read_value(field_kind(prop), state if isinstance(state, Mapping) else {})
        if problem is not None:
            errors[FIELD_PREFIX + name] = problem
        elif value is not None:
            params[name] = value
        elif kept and name in kept:
            params[name] = kept[name]
    for name, problem in parameter_problems(schema, params).items():
        block_id = FIELD_PREFIX + name if name in props else FIELD_PREFIX + next(iter(props), "")
        errors.setdefault(block_id, _clip(problem, ERROR_MAX))
    return Submission(params, errors)


def first_field(view: Mapping[str, Any]) -> str | None:
    """The ``block_id`` of a view's first input block (where a problem naming no field goes)."""
    for block in view.get("blocks") or []:
        if isinstance(block, Mapping) and block.get("type") == "input" and block.get("block_id"):
            return str(block["block_id"])
    return None
