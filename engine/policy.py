"""Who may do what (pure): roles, and per role which actions (by pattern) it may run, cancel,
view and manage (create, change or delete the action, and the rules that run it).

Patterns are shell-style (``ops.*``, ``core.echo``, ``*``). The defaults: ``admin`` may do
everything, ``operator`` may run, cancel and view every action, ``viewer`` may only view,
``none`` may do nothing (configuration cannot give it permissions).
``manage`` defaults to the role's ``run`` patterns for the operator (it manages only what it
may run: narrowing ``run`` narrows ``manage`` with it) and to nothing for the viewer.
Configuration replaces the patterns of the permissions it names (the others keep their
defaults), e.g. in TOML::

    [permissions.operator]
    run = ["core.*", "examples.*"]
    cancel = ["*"]
    view = ["*"]
    manage = ["examples.*"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from engine.errors import Forbidden

Verb = Literal["run", "cancel", "view", "manage"]
VERBS: tuple[Verb, ...] = ("run", "cancel", "view", "manage")

#: Without ``manage`` here a role manages what its ``run`` patterns name (see the docstring).
DEFAULT_RULES: dict[str, dict[str, list[str]]] = {
    "admin": {"run": ["*"], "cancel": ["*"], "view": ["*"], "manage": ["*"]},
    "operator": {"run": ["*"], "cancel": ["*"], "view": ["*"]},
    "viewer": {"run": [], "cancel": [], "view": ["*"]},
    "none": {"run": [], "cancel": [], "view": [], "manage": []},
}
#: The role that may do nothing, whatever the configuration says.
NO_ACCESS = "none"


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
                    f"{', '.join(sorted(unknown))} (expected run, cancel, view, manage)"
                )
            if role == NO_ACCESS:
                raise ValueError(f"permissions.{role}: the {NO_ACCESS} role may do nothing")
            if role not in merged:
                raise ValueError(f"permissions.{role}: unknown role (admin, operator, viewer)")
            merged[role].update({verb: list(patterns) for verb, patterns in verbs.items()})
        for verbs_of in merged.values():
            verbs_of.setdefault("manage", list(verbs_of["run"]))
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

    def grants(self, role: str) -> list[dict[str, Any]]:
        """Attune's ``effective_permissions`` of ``role``: ``[{resource, actions}]`` sorted by
        resource, as Attune's ``/auth/me``. ``actions: execute`` when the role may run some
        action, ``executions: cancel`` when it may cancel some run, ``executions: read`` when
        it may view some (which ones the policy's patterns say, per action)."""
        held: dict[str, set[str]] = {}
        for source in (*_INHERITS.get(role, ()), role):
            for resource, actions in ROLE_GRANTS.get(source, {}).items():
                held.setdefault(resource, set()).update(actions)
        verbs = self.rules.get(role, {})
        for verb, resource, action in (
            ("view", "executions", "read"),
            ("run", "actions", "execute"),
            ("cancel", "executions", "cancel"),
        ):
            if verbs.get(verb):
                held.setdefault(resource, set()).add(action)
        return [
            {"resource": resource, "actions": sorted(actions)}
            for resource, actions in sorted(held.items())
        ]

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


#: Attune's RBAC grants (``resource: [actions]``, its names) that each role holds, for the
#: resources this server serves, as its routes allow them: a viewer reads, an operator also
#: writes actions, rules, triggers and keys (and decrypts keys), an admin also installs and
#: deletes packs and reads the audit log. Running actions and cancelling runs come from the
#: policy (:meth:`Policy.grants`). Attune's web UI shows a page, and some buttons, by these.
ROLE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "viewer": {
        "packs": ("read",),
        "actions": ("read",),
        "queues": ("read",),
        "artifacts": ("read",),
        "rules": ("read",),
        "triggers": ("read",),
        "events": ("read",),
        "enforcements": ("read",),
        "keys": ("read",),
        "runtimes": ("read",),
        "workers": ("read",),
    },
    "operator": {
        "actions": ("create", "update", "delete"),
        "rules": ("create", "update", "delete"),
        "triggers": ("create", "update", "delete"),
        "keys": ("create", "update", "delete", "decrypt"),
    },
    "admin": {
        "packs": ("create", "install", "delete"),
        "audit_log": ("read",),
    },
}
#: Each role holds the grants of the roles below it.
_INHERITS = {"viewer": (), "operator": ("viewer",), "admin": ("viewer", "operator")}
# ``none`` holds no grant: it is in neither table.


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
