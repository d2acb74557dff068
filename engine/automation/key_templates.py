"""Keys in rule templates: ``kv.get('ref')`` and ``kv.get_secret('ref')`` in a rule's
``action_params`` (engine/automation/enforcement.py renders them with :func:`evaluate_rule`).

Templates render synchronously (a sandboxed Jinja environment, engine/templates.py, in a worker
process: engine/template_pool.py), so the keys they name are loaded between renderings: a
rendering notes the refs asked for, they are loaded, and the rendering runs again until no new
ref is asked for (a ref may itself come from a key). Values a template reads with
``kv.get_secret`` make their parameter a secret parameter of the execution: sealed at rest,
redacted in the record and the audit log, never shown in an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from engine.automation.records import TemplateKeys
from engine.crypto import SecretBox
from engine.keys import plain_value
from engine.storage import Store
from engine.storage.automation import automation_repository
from engine.templates import TemplateProblem, evaluate, mentions_kv

#: Keys one rendering may read, and rounds of loading them (a ref may be read from a key).
MAX_TEMPLATE_KEYS = 100
MAX_TEMPLATE_ROUNDS = 4
#: What a secret's text becomes in an error message.
SECRET_MARK = "********"  # noqa: S105 (a mask, not a secret)


class Evaluator(Protocol):
    """Runs :func:`engine.templates.evaluate` (in process, or in a worker with a deadline:
    :class:`engine.template_pool.TemplatePool`)."""

    async def evaluate(
        self,
        conditions: Any,
        action_params: Any,
        context: Mapping[str, Any],
        loaded: Mapping[str, Any] | None,
    ) -> dict[str, Any]: ...


class InProcess:
    """Evaluates in this process, on the caller's thread (tests, and tools without a loop to
    keep free)."""

    async def evaluate(
        self,
        conditions: Any,
        action_params: Any,
        context: Mapping[str, Any],
        loaded: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        return evaluate(conditions, action_params, context, loaded)


async def evaluate_rule(
    repo: TemplateKeys,
    box: SecretBox,
    evaluator: Evaluator,
    conditions: Any,
    action_params: Any,
    context: Mapping[str, Any],
) -> tuple[Any, frozenset[str]] | None:
    """Check a rule's conditions and render its ``action_params`` for an event, with ``kv``
    beside the event: None when the conditions do not hold, else the rendered value and the
    top-level names that read a secret (``kv.get_secret``), which the execution keeps as
    secret parameters. The keys the templates name are loaded between renderings (a ref may
    itself come from a key). Raises TemplateProblem, whose message never shows a secret."""
    loaded: dict[str, list[Any] | None] | None = {} if mentions_kv(action_params) else None
    outcome: dict[str, Any] = {}
    for round_ in range(MAX_TEMPLATE_ROUNDS + 1):
        outcome = await evaluator.evaluate(
            conditions if round_ == 0 else None, action_params, context, loaded
        )
        if not outcome["matched"]:
            return None
        missing = set(outcome["missing"])
        if loaded is None or not missing or round_ == MAX_TEMPLATE_ROUNDS:
            break
        if len(loaded) + len(missing) > MAX_TEMPLATE_KEYS:
            raise TemplateProblem(f"the templates read more than {MAX_TEMPLATE_KEYS} keys")
        found = await template_values(repo, box, missing)
        loaded.update({ref: None if v is None else [v[0], v[1]] for ref, v in found.items()})
    if outcome["problem"] is not None:
        secrets = [v[0] for v in (loaded or {}).values() if v is not None and v[1]]
        raise TemplateProblem(scrub(str(outcome["problem"]), secrets))
    return outcome["result"], frozenset(outcome["secret"])


async def render_with_keys(
    store: Store, box: SecretBox, value: Any, context: Mapping[str, Any]
) -> tuple[Any, frozenset[str]]:
    """Render a rule's ``action_params`` with ``kv`` beside the event, in process (see
    :func:`evaluate_rule`)."""
    repo = automation_repository(store)
    rendered = await evaluate_rule(repo, box, InProcess(), None, value, context)
    assert rendered is not None  # no conditions: they hold
    return rendered


def scrub(text: str, secrets: list[Any]) -> str:
    """``text`` with every secret's text (and each text inside a structured secret) masked."""
    found: list[str] = []
    stack = list(secrets)
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item:
            found.append(item)
        elif item is not None and len(str(item)) >= 4:
            found.append(str(item))
    for secret in sorted(set(found), key=len, reverse=True):
        text = text.replace(secret, SECRET_MARK)
    return text


async def template_values(
    repo: TemplateKeys, box: SecretBox, names: set[str]
) -> dict[str, tuple[Any, bool] | None]:
    """``(value, encrypted)`` of each named key that exists and has not expired, decrypted;
    None for the others. Keys owned by an identity are not for templates (a rule acts for no
    identity) and read as missing."""
    found: dict[str, tuple[Any, bool] | None] = dict.fromkeys(names)
    for key in await repo.template_keys(sorted(names)):
        value = box.open(key.sealed).get("v") if key.encrypted else plain_value(key)
        found[key.ref] = (value, key.encrypted)
    return found
