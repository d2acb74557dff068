"""URLs as they may be shown or logged: without credentials, query string or fragment.

A callback URL often carries a token (``?token=...``) or basic-auth credentials
(``https://user:password@host``); they are credentials and never reach a delivery's
``last_error``, the API or the log. Pure functions.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

#: A URL inside free text (an error message): a scheme, ``://``, then anything up to
#: whitespace or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
#: What stands for a removed query string.
ELIDED = "…"


def shown_url(url: str) -> str:
    """``https://u:p@host:8443/path?token=x#f`` -> ``https://host:8443/path?…``."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # not a URL we can take apart: show none of it
        return "<url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = f"?{ELIDED}" if parts.query or parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + query


def scrub_urls(text: str) -> str:
    """``text`` with every URL in it shown as :func:`shown_url` shows it."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: shown_url(m.group(0)), text)
