"""Aliases as written (StackStorm's ``aliases/*.yaml``, or a body sent to ``/api/v1/aliases``)
and as stored. Pure: the SQL is in :mod:`engine.storage.aliases`.

An alias (StackStorm's schema, ``contrib/schemas/alias.json``): ``name``, ``pack``,
``action_ref``, ``description``, ``enabled``, ``formats`` (a string, or ``{display,
representation: [...]}``), ``ack`` and ``result`` (``enabled``, ``format``, ``append_url``,
``extra``), ``extra`` and ``immutable_parameters``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.aliases.formats import FormatError, compile_format
from engine.errors import InvalidRequest
from engine.templates import TemplateProblem, check_templates

#: A pack's or an alias's name.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
_ACTION_REF = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
#: Most formats (representations included) one alias may have.
MAX_FORMATS = 50


class FormatSpec(BaseModel):
    """``{display, representation}``: the help line, and the formats that match (none: the
    display is shown in help and matches nothing)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    display: str | None = None
    representation: list[str] = Field(default_factory=list)
    #: StackStorm's "one execution per match"; accepted, matched as one execution.
    match_multiple: bool = False

    @field_validator("representation", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class MessageSpec(BaseModel):
    """``ack`` and ``result``: whether to say it, a Jinja format, extra data for the adapter,
    and whether the execution's link is added (ack only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    enabled: bool = True
    format: str | None = None
    append_url: bool = True
    extra: dict[str, Any] = Field(default_factory=dict)


class AliasSpec(BaseModel):
    """An alias as written: validated, formats compiled, Jinja checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    pack: str | None = Field(default=None, max_length=128)
    action_ref: str = Field(min_length=3, max_length=256)
    description: str = ""
    enabled: bool = True
    formats: list[str | FormatSpec] = Field(min_length=1)
    ack: MessageSpec | None = None
    result: MessageSpec | None = None
    extra: dict[str, Any] | None = None
    immutable_parameters: dict[str, Any] | None = None

    @field_validator("description", mode="before")
    @classmethod
    def _no_none(cls, value: Any) -> Any:
        return "" if value is None else value

    @property
    def alias_ref(self) -> str:
        return f"{self.pack}.{self.name}"

    def checked(self) -> AliasSpec:
        """Self, or InvalidRequest naming the first field that cannot work."""
        if not NAME.match(self.name):
            raise InvalidRequest(f"name '{self.name}' must be letters, digits, '_' or '-'")
        if not self.pack:
            raise InvalidRequest("an alias needs a 'pack' (or a 'ref' of pack.name)")
        if not NAME.match(self.pack):
            raise InvalidRequest(f"pack '{self.pack}' must be letters, digits, '_' or '-'")
        if not _ACTION_REF.match(self.action_ref):
            raise InvalidRequest(f"action_ref '{self.action_ref}' is not like 'pack.action'")
        shapes = [normalise(f) for f in self.formats]
        if sum(max(len(reps), 1) for _, reps in shapes) > MAX_FORMATS:
            raise InvalidRequest(f"an alias has at most {MAX_FORMATS} formats")
        for index, (display, reps) in enumerate(shapes):
            if display is None and not reps:
                raise InvalidRequest(f"formats[{index}] needs a 'display' or a 'representation'")
            for rep in reps:
                try:
                    compile_format(rep)
                except FormatError as exc:
                    raise InvalidRequest(f"formats[{index}]: {exc.message}") from None
        for field in ("ack", "result"):
            message: MessageSpec | None = getattr(self, field)
            if message is None:
                continue
            try:
                check_templates(message.format or "", f"{field}.format")
                check_templates(message.extra, f"{field}.extra")
            except TemplateProblem as exc:
                raise InvalidRequest(exc.message) from None
        try:
            check_templates(self.immutable_parameters or {}, "immutable_parameters")
        except TemplateProblem as exc:
            raise InvalidRequest(exc.message) from None
        return self


def normalise(fmt: str | FormatSpec | dict[str, Any]) -> tuple[str | None, list[str]]:
    """A format as ``(display, representations)``: a string is both (StackStorm's rule)."""
    if isinstance(fmt, str):
        return fmt, [fmt]
    spec = fmt if isinstance(fmt, FormatSpec) else FormatSpec.model_validate(fmt)
    return spec.display, list(spec.representation)


@dataclass(frozen=True, slots=True)
class Alias:
    """A stored alias."""

    id: int
    ref: str
    pack_ref: str
    name: str
    action_ref: str
    description: str
    enabled: bool
    #: As written: strings and ``{display, representation}`` objects.
    formats: list[Any]
    ack: dict[str, Any] | None
    result: dict[str, Any] | None
    extra: dict[str, Any] | None
    immutable_parameters: dict[str, Any] | None
    #: Created over the API (kept when its pack is registered again from disk).
    adhoc: bool
    created: datetime
    updated: datetime

    def shapes(self) -> list[tuple[str | None, list[str]]]:
        return [normalise(f) for f in self.formats]

    def displays(self) -> list[str]:
        """The help lines: each format's display (a representation-only format has none)."""
        return [display for display, _ in self.shapes() if display]

    def message(self, which: str) -> MessageSpec | None:
        """``ack`` or ``result`` as a spec (None when the alias says nothing of it)."""
        raw = self.ack if which == "ack" else self.result
        return MessageSpec.model_validate(raw) if raw is not None else None

    def as_dict(self) -> dict[str, Any]:
        """StackStorm's ``ActionAliasAPI`` fields, with ours (``pack_ref``, ``adhoc``...)."""
        return {
            "id": self.id,
            "ref": self.ref,
            "name": self.name,
            "pack": self.pack_ref,
            "pack_ref": self.pack_ref,
            "action_ref": self.action_ref,
            "description": self.description,
            "enabled": self.enabled,
            "formats": self.formats,
            "ack": self.ack,
            "result": self.result,
            "extra": self.extra,
            "immutable_parameters": self.immutable_parameters,
            "adhoc": self.adhoc,
            "created": self.created,
            "updated": self.updated,
        }


def stored_fields(spec: AliasSpec) -> dict[str, Any]:
    """The columns of a checked spec (JSON as written, defaults filled in)."""
    return {
        "ref": spec.alias_ref,
        "pack_ref": spec.pack,
        "name": spec.name,
        "action_ref": spec.action_ref,
        "description": spec.description,
        "enabled": spec.enabled,
        "formats": [
            f if isinstance(f, str) else f.model_dump(exclude_defaults=True) for f in spec.formats
        ],
        "ack": spec.ack.model_dump() if spec.ack is not None else None,
        "result": spec.result.model_dump() if spec.result is not None else None,
        "extra": spec.extra,
        "immutable_parameters": spec.immutable_parameters,
    }
