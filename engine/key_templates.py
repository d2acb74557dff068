"""Keys in rule templates: ``kv.get('ref')`` and ``kv.get_secret('ref')`` in a rule's
``action_params`` (engine/events.py renders them with :func:`render_with_keys`).

Templates render synchronously (a sandboxed Jinja environment, engine/templates.py), so the keys
they name are loaded first: a probe rendering notes the refs asked for, they are loaded, and the
rendering runs again until no new ref is asked for (a ref may itself come from a key). Values a
template reads with ``kv.get_secret`` make their parameter a secret parameter of the execution:
sealed at rest, redacted in the record and the audit log, never shown in an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, select

from engine.crypto import SecretBox
from engine.keys import live_clause, plain_value
from engine.storage import Store
from engine.storage.tables import keys
from engine.templates import KvView, TemplateProblem, mentions_kv, render, render_with_kv

#: Keys one rendering may read, and rounds of loading them (a ref may be read from a key).
MAX_TEMPLATE_KEYS = 100
MAX_TEMPLATE_ROUNDS = 4
#: What a secret's text becomes in an error message.
SECRET_MARK = "********"  # noqa: S105 (a mask, not a secret)


async def render_with_keys(
    store: Store, box: SecretBox, value: Any, context: Mapping[str, Any]
) -> tuple[Any, frozenset[str]]:
    """Render a rule's ``action_params`` with ``kv`` beside the event: the keys the templates
    name are loaded first (templates render synchronously), then rendered for good. Returns
    the rendered value and the top-level names that read a secret (``kv.get_secret``), which
    the execution keeps as secret parameters. A problem's message never shows a secret."""
    if not mentions_kv(value):
        return render(value, context), frozenset()
    loaded: dict[str, tuple[Any, bool] | None] = {}
    for _ in range(MAX_TEMPLATE_ROUNDS):
        probe = KvView(loaded)
        with contextlib.suppress(TemplateProblem):
            render_with_kv(value, context, probe)
        if not probe.missing:
            break
        if len(loaded) + len(probe.missing) > MAX_TEMPLATE_KEYS:
            raise TemplateProblem(f"the templates read more than {MAX_TEMPLATE_KEYS} keys")
        loaded.update(await template_values(store, box, probe.missing))
    view = KvView(loaded)
    try:
        return render_with_kv(value, context, view)
    except TemplateProblem as exc:
        raise TemplateProblem(scrub(exc.message, view.secrets)) from None


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
    store: Store, box: SecretBox, names: set[str]
) -> dict[str, tuple[Any, bool] | None]:
    """``(value, encrypted)`` of each named key that exists and has not expired, decrypted;
    None for the others. Keys owned by an identity are not for templates (a rule acts for no
    identity) and read as missing."""
    found: dict[str, tuple[Any, bool] | None] = dict.fromkeys(names)
    query = select(keys).where(
        and_(keys.c.ref.in_(sorted(names)), keys.c.owner_type != "identity", live_clause())
    )
    async with store.read() as conn:
        rows = (await conn.execute(query)).all()
    for row in rows:
        value = box.open(row.sealed).get("v") if row.encrypted else plain_value(row)
        found[row.ref] = (value, bool(row.encrypted))
    return found
