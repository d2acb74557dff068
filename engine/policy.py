"""Who may do what (pure): roles, and per role which actions (by pattern) it may run, cancel
and view.

Patterns are shell-style (``ops.*``, ``core.echo``, ``*``). The defaults: ``admin`` may do
everything, ``operator`` may run, cancel and view every action, ``viewer`` may only view.
Configuration replaces the patterns of the permissions it names (the others keep their
defaults), e.g. in TOML::

    [permissions.operator]
    run = ["core.*", "examples.*"]
    cancel = ["*"]
    view = ["*"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

from engine.errors import Forbidden

Verb = Literal["run", "cancel", "view"]
VERBS: tuple[Verb, ...] = ("run", "cancel", "view")

DEFAULT_RULES: dict[str, dict[str, list[str]]] = {
    "admin": {"run": ["*"], "cancel": ["*"], "view": ["*"]},
    "operator": {"run": ["*"], "cancel": ["*"], "view": ["*"]},
    "viewer": {"run": [], "cancel": [], "view": ["*"]},
}


@dataclass(frozen=True)
class Denied:
    role: str
    verb: Verb
    action_ref: str

    @property
    def message(self) -> str:
        return f"the {self.role} role lacks the '{self.verb}' permission on {self.action_ref}"


class Policy:
    def __init__(self, rules: Mapping[str, Mapping[str, Sequence[str]]] | None = None) -> None:
        merged = {role: dict(verbs) for role, verbs in DEFAULT_RULES.items()}
        for role, verbs in (rules or {}).items():
            unknown = set(verbs) - set(VERBS)
            if unknown:
                raise ValueError(
                    f"permissions.{role}: unknown permission "
                    f"{', '.join(sorted(unknown))} (expected run, cancel, view)"
                )
            if role not in merged:
                raise ValueError(f"permissions.{role}: unknown role (admin, operator, viewer)")
            merged[role].update({verb: list(patterns) for verb, patterns in verbs.items()})
        self.rules = merged

    def allows(self, role: str, verb: Verb, action_ref: str) -> bool:
        patterns = self.rules.get(role, {}).get(verb, [])
        return any(p == "*" or fnmatchcase(action_ref, p) for p in patterns)

    def check(self, role: str, verb: Verb, action_ref: str) -> None:
        """Raise :class:`Forbidden` naming the missing permission."""
        if not self.allows(role, verb, action_ref):
            raise Forbidden(Denied(role, verb, action_ref).message)

    def sees_everything(self, role: str) -> bool:
        return "*" in self.rules.get(role, {}).get("view", [])

    def like_patterns(self, role: str, verb: Verb) -> list[str]:
        """The role's patterns for ``verb`` as SQL LIKE patterns (escaped with a backslash):
        ``*`` and ``?`` translate; a pattern with ``[...]`` cannot and is left out (so a
        listing may show less than the role may view, never more)."""
        out = []
        for pattern in self.rules.get(role, {}).get(verb, []):
            if "[" in pattern:
                continue
            escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            out.append(escaped.replace("*", "%").replace("?", "_"))
        return out


def slack_role(
    user_id: str, groups: Sequence[str], mapping: Mapping[str, str], default: str
) -> str:
    """A Slack user's role: by user id first, then by the first of their user groups mapped."""
    if user_id in mapping:
        return mapping[user_id]
    for group in groups:
        if group in mapping:
            return mapping[group]
    return default
