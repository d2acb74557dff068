"""Which unsafe requests the login cookie is accepted for: those a page of this server sent
(``Origin``, else ``Referer``, naming the host asked or ``ATTUNE_PUBLIC_URL``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from engine.api.page_auth import same_origin


def _runtime(public_url: str | None) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(public_url=public_url))


def _request(host: str, **headers: str) -> Any:
    return make_mocked_request("POST", "/ui/logout", headers={"Host": host, **headers})


@pytest.mark.parametrize(
    ("public_url", "host", "headers", "expected"),
    [
        # Behind a proxy that sends its own Host: ATTUNE_PUBLIC_URL names the origin, with or
        # without the default port written out.
        (
            "https://attune.example.com",
            "10.0.0.5:8080",
            {"Origin": "https://attune.example.com"},
            True,
        ),
        (
            "https://attune.example.com:443",
            "10.0.0.5:8080",
            {"Origin": "https://attune.example.com"},
            True,
        ),
        (
            "http://attune.example.com:80/",
            "10.0.0.5:8080",
            {"Origin": "http://Attune.Example.com"},
            True,
        ),
        (
            "https://attune.example.com:8443",
            "10.0.0.5:8080",
            {"Origin": "https://attune.example.com"},
            False,
        ),
        (
            "https://attune.example.com",
            "10.0.0.5:8080",
            {"Origin": "http://attune.example.com"},
            False,
        ),
        # The host asked, as the browser sent it (a default port in Host too).
        (None, "attune.example.com", {"Origin": "https://attune.example.com"}, True),
        (None, "attune.example.com:443", {"Origin": "https://attune.example.com"}, True),
        (None, "attune.example.com:8080", {"Referer": "http://attune.example.com:8080/ui/x"}, True),
        (None, "attune.example.com:8080", {"Origin": "http://attune.example.com"}, False),
        # Another site, however it is dressed up, and no header at all.
        (None, "attune.example.com", {"Origin": "https://attune.example.com.evil.example"}, False),
        (None, "attune.example.com", {"Origin": "https://evil.example"}, False),
        (
            None,
            "attune.example.com",
            {"Origin": "null", "Referer": "https://attune.example.com/"},
            False,
        ),
        (
            None,
            "attune.example.com",
            {"Origin": "https://evil.example", "Referer": "https://attune.example.com/"},
            False,
        ),
        ("https://attune.example.com", "attune.example.com", {}, False),
    ],
)
def test_same_origin(
    public_url: str | None, host: str, headers: dict[str, str], expected: bool
) -> None:
    assert same_origin(_request(host, **headers), _runtime(public_url)) is expected
