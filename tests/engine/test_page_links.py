"""Signed execution-page links: made without a server, accepted only as signed and in time."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from config.settings import Settings
from engine.page_links import execution_page_url, verify_signed

NOW = 1_800_000_000.0


def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        public_url="https://attune.example.com/",
        secret_key="k" * 40,
        data_dir=tmp_path,
        **extra,  # type: ignore[arg-type]
    )


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_no_public_url_no_link(tmp_path: Path) -> None:
    assert execution_page_url(Settings(data_dir=tmp_path), 7) is None


def test_unsigned_link(tmp_path: Path) -> None:
    url = execution_page_url(_settings(tmp_path), 7, signed=False)
    assert url == "https://attune.example.com/ui/executions/7"


def test_signed_link_verifies_until_it_expires(tmp_path: Path) -> None:
    settings = _settings(tmp_path, page_link_ttl_s=3600)
    url = execution_page_url(settings, 7, now=NOW)
    assert url is not None
    assert url.startswith("https://attune.example.com/ui/executions/7?")
    q = _query(url)
    assert int(q["exp"]) == NOW + 3600
    assert verify_signed(settings, 7, q["exp"], q["sig"], NOW + 3599)
    assert not verify_signed(settings, 7, q["exp"], q["sig"], NOW + 3600)


def test_tampering_is_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    q = _query(execution_page_url(settings, 7, now=NOW) or "")
    assert not verify_signed(settings, 8, q["exp"], q["sig"], NOW)  # another execution
    assert not verify_signed(settings, 7, str(int(q["exp"]) + 1), q["sig"], NOW)  # longer life
    assert not verify_signed(settings, 7, q["exp"], q["sig"][:-1] + "A", NOW)
    assert not verify_signed(settings, 7, "soon", q["sig"], NOW)
    assert not verify_signed(settings, 7, None, q["sig"], NOW)
    assert not verify_signed(settings, 7, q["exp"], "", NOW)
    other = Settings(public_url="https://x", secret_key="z" * 40, data_dir=tmp_path)
    assert not verify_signed(other, 7, q["exp"], q["sig"], NOW)  # another server's key


def test_generated_secret_key_is_shared(tmp_path: Path) -> None:
    """Without ATTUNE_SECRET_KEY the key generated into the data folder signs: a process
    reading the same folder (the server) accepts the link."""
    maker = Settings(public_url="https://a", data_dir=tmp_path)
    q = _query(execution_page_url(maker, 3, now=NOW) or "")
    assert verify_signed(Settings(data_dir=tmp_path), 3, q["exp"], q["sig"], NOW)


def test_public_url_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings(public_url="attune.example.com", data_dir=tmp_path)
    assert Settings(public_url="  ", data_dir=tmp_path).public_url is None
