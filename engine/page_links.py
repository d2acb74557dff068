"""Links to an execution's page, optionally signed so that their bearer needs no login.

``{public_url}/ui/executions/{id}?exp=<unix seconds>&sig=<HMAC>``: the signature is
HMAC-SHA256 over the execution id and the expiry, with a key derived from the secret key (as
callbacks and session tokens derive theirs), so any process that shares the secret key (the
server, ``attune chat``, a worker posting to Slack) makes links the server accepts, with no
database and no running server. A signed link shows that one execution (and its output
streams) read-only, until ``exp``; its Cancel and Re-run buttons still need a login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

from config.settings import Settings
from engine.crypto import load_or_create_secret_key

#: The purpose mixed into the key, so that a page signature is no other signature.
_KEY_PURPOSE = b"attune-page-links"


def page_link_key(secret_key: str) -> bytes:
    """The key that signs page links, derived from the server's secret key."""
    return hmac.new(secret_key.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def _secret_key(settings: Settings, secret_key: str | None) -> str:
    if secret_key:
        return secret_key
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    return load_or_create_secret_key(settings.data_dir)


def signature(key: bytes, execution_id: int, exp: int) -> str:
    """The ``sig`` of a link to ``execution_id`` valid until ``exp`` (unix seconds)."""
    digest = hmac.new(key, f"execution:{execution_id}:{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def execution_page_path(execution_id: int) -> str:
    return f"/ui/executions/{int(execution_id)}"


def signed_query(
    settings: Settings,
    execution_id: int,
    *,
    now: float | None = None,
    secret_key: str | None = None,
) -> str:
    """``exp=...&sig=...`` for a link to ``execution_id`` valid ``page_link_ttl_s`` from ``now``."""
    exp = int((time.time() if now is None else now) + settings.page_link_ttl_s)
    key = page_link_key(_secret_key(settings, secret_key))
    return urlencode({"exp": exp, "sig": signature(key, int(execution_id), exp)})


def execution_page_url(
    settings: Settings,
    execution_id: int,
    *,
    signed: bool = True,
    now: float | None = None,
    secret_key: str | None = None,
) -> str | None:
    """The page of ``execution_id`` under ``ATTUNE_PUBLIC_URL`` (None when it is unset),
    signed unless ``signed=False`` (then viewing it needs a login)."""
    if not settings.public_url:
        return None
    url = settings.public_url.rstrip("/") + execution_page_path(execution_id)
    if not signed:
        return url
    return f"{url}?{signed_query(settings, execution_id, now=now, secret_key=secret_key)}"


def verify_signed(
    settings: Settings,
    execution_id: int,
    exp: str | int | None,
    sig: str | None,
    now: float | None = None,
    *,
    secret_key: str | None = None,
) -> bool:
    """Whether ``exp``/``sig`` (as found in a link's query) sign ``execution_id`` and have not
    expired at ``now``. Compared in constant time; malformed values are simply False."""
    if exp is None or not sig:
        return False
    try:
        expires = int(exp)
    except (TypeError, ValueError):
        return False
    if expires <= (time.time() if now is None else now):
        return False
    key = page_link_key(_secret_key(settings, secret_key))
    expected = signature(key, int(execution_id), expires)
    return hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace"))
