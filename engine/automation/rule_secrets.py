"""A rule's secret action parameters: sealed at rest, never shown, given to the run.

A value of a rule's ``action_params`` whose parameter the action marks ``secret: true`` is
stored sealed with the secret key (``rules.action_params_sealed``, as an execution's secret
parameters are); ``action_params`` holds :data:`~engine.params.REDACTED` in its place, which is
all any listing, GET, chat message or audit entry shows. The enforcement opens the sealed
values, renders the templates and submits the run with them kept secret.

- A templated value (``"Bearer {{ payload.token }}"``) is sealed whole: a template may hold a
  literal secret beside its expression.
- Once sealed, a value stays sealed for that rule, even if the action's schema drops
  ``secret: true`` later (the run still treats it as secret).
- A parameter that becomes secret after a rule was saved is shown redacted at once (listings
  redact by the action's current schema), and its value is sealed when the action changes
  over the API, its pack is registered again, or the server starts
  (:meth:`engine.automation.rules.Rules.seal_secrets`).
- An update that sends the marker back (a client that read the rule and writes it again)
  keeps the stored value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.crypto import SecretBox
from engine.params import REDACTED


def split_secrets(
    params: Mapping[str, Any],
    secret_names: frozenset[str],
    box: SecretBox,
    current: Mapping[str, Any] | None = None,
    sealed_before: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], str | None]:
    """``(action_params to store, the secret values sealed)``. ``current``: the rule's values
    now (secrets opened); a value sent as the marker keeps the current one. ``sealed_before``:
    names sealed until now, which stay sealed."""
    current = current or {}
    seal = secret_names | sealed_before
    stored: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for name, value in params.items():
        if value == REDACTED and name in current:
            value = current[name]
        if name in seal:
            secret[name] = value
            stored[name] = REDACTED
        else:
            stored[name] = value
    return stored, box.seal(secret)


def opened(
    action_params: Mapping[str, Any], sealed: str | None, box: SecretBox
) -> tuple[dict[str, Any], frozenset[str]]:
    """The rule's action parameters with the secret values in place, and the names that were
    sealed (one decryption; EngineError when they were sealed with another secret key)."""
    secret = box.open(sealed)
    return {**action_params, **secret}, frozenset(secret)


def shown(action_params: Mapping[str, Any] | None, secret_names: frozenset[str]) -> dict[str, Any]:
    """What a rule's ``action_params`` look like to anyone: sealed values are the marker
    already; a value of a parameter the action now marks secret is redacted too."""
    return {k: (REDACTED if k in secret_names else v) for k, v in (action_params or {}).items()}
