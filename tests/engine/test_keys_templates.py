"""Keys in rule templates: ``kv.get`` and ``kv.get_secret`` render from loaded keys, name the
parameters that read a secret, and never show a secret in an error (pure: engine/templates.py),
and :func:`render_with_keys` loads the keys a template names, however it names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.audit import AuditLog
from engine.auth import Principal
from engine.automation.key_templates import render_with_keys, scrub
from engine.crypto import SecretBox
from engine.keys import KeyCreate, KeyStore
from engine.storage import Store
from engine.templates import KvView, TemplateProblem, mentions_kv, render_with_kv

EVENT = {"event": {"id": 1, "trigger": "ops.alert", "payload": {"env": "prod", "n": 2}}}
VALUES: dict[str, tuple[Any, bool] | None] = {
    "cfg": ({"host": "db1", "port": 5432}, False),
    "pw": ("hunter2", True),
    "gone": None,
}


def test_kv_get_keeps_json_types_and_defaults() -> None:
    view = KvView(VALUES)
    params = {
        "host": "{{ kv.get('cfg').host }}",
        "port": "{{ kv.get('cfg')['port'] }}",
        "missing": "{{ kv.get('gone', 'fallback') }}",
        "none": "{{ kv.get('gone') }}",
    }
    out, secret = render_with_kv(params, EVENT, view)
    assert out == {"host": "db1", "port": 5432, "missing": "fallback", "none": None}
    assert secret == frozenset()


def test_get_secret_marks_its_parameter_secret() -> None:
    view = KvView(VALUES)
    out, secret = render_with_kv(
        {"url": "https://u:{{ kv.get_secret('pw') }}@h", "n": "{{ event.payload.n }}"}, EVENT, view
    )
    assert out == {"url": "https://u:hunter2@h", "n": 2}
    assert secret == frozenset({"url"})


def test_kv_get_refuses_an_encrypted_key_and_names_get_secret() -> None:
    with pytest.raises(TemplateProblem) as caught:
        render_with_kv({"p": "{{ kv.get('pw') }}"}, EVENT, KvView(VALUES))
    assert "kv.get_secret('pw')" in caught.value.message
    assert "hunter2" not in caught.value.message


def test_refs_not_loaded_are_noted_for_loading() -> None:
    view = KvView({})
    out, _ = render_with_kv({"p": "{{ kv.get('env.' ~ event.payload.env) }}"}, EVENT, view)
    assert out == {"p": None}
    assert view.missing == {"env.prod"}


def test_mentions_kv_only_in_templates() -> None:
    assert mentions_kv({"a": ["{{ kv.get('x') }}"]})
    assert not mentions_kv({"a": "kv.get('x') outside a template", "b": "{{ event.id }}"})


def test_scrub_masks_secret_text_inside_structures() -> None:
    text = "failed: invalid literal 'hunter2' and 'tok-123456' and 7"
    assert scrub(text, ["hunter2", {"t": ["tok-123456"]}, 7]) == (
        "failed: invalid literal '********' and '********' and 7"
    )


# -- with the store -----------------------------------------------------------------------------

ADMIN = Principal(login="admin", role="admin", token_name="t")


@pytest.fixture
def box() -> SecretBox:
    return SecretBox("k" * 40)


async def test_render_with_keys_loads_named_keys_even_when_a_ref_comes_from_a_key(
    store: Store, box: SecretBox, tmp_path: Path
) -> None:
    ks = KeyStore(store, box, AuditLog(store))
    for ref, value, encrypted in (
        ("which", "env.prod", False),
        ("env.prod", {"url": "https://prod"}, False),
        ("token", "t0ps3cret", True),
    ):
        await ks.create(
            ADMIN,
            KeyCreate(ref=ref, name=ref, owner_type="system", value=value, encrypted=encrypted),
        )
    params = {
        "url": "{{ kv.get(kv.get('which')).url }}",
        "auth": "Bearer {{ kv.get_secret('token') }}",
        "plain": "{{ event.payload.env }}",
    }
    out, secret = await render_with_keys(store, box, params, EVENT)
    assert out == {"url": "https://prod", "auth": "Bearer t0ps3cret", "plain": "prod"}
    assert secret == frozenset({"auth"})

    with pytest.raises(TemplateProblem) as caught:
        await render_with_keys(store, box, {"n": "{{ {}[kv.get_secret('token')] }}"}, EVENT)
    assert "t0ps3cret" not in caught.value.message
    assert "********" in caught.value.message


async def test_identity_keys_are_not_for_templates(store: Store, box: SecretBox) -> None:
    from engine.auth import AuthService

    await AuthService(store, token_ttl_s=60).ensure_admin("admin", "password-123")
    ks = KeyStore(store, box, AuditLog(store))
    await ks.create(ADMIN, KeyCreate(ref="mine", name="m", owner_type="identity", value="x"))
    out, _ = await render_with_keys(store, box, {"p": "{{ kv.get('mine', 'no') }}"}, EVENT)
    assert out == {"p": "no"}
