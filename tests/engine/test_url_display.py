"""URLs as shown and logged: no credentials, no query string."""

from __future__ import annotations

from engine.url_display import scrub_urls, shown_url


def test_credentials_and_query_are_dropped() -> None:
    assert shown_url("https://u:p@host/path?token=x") == "https://host/path?…"
    assert shown_url("http://[::1]:8080/a#frag") == "http://[::1]:8080/a?…"
    assert shown_url("https://host/plain") == "https://host/plain"
    assert shown_url("http://u:p@host:99999/") == "<url>"


def test_every_url_in_a_message_is_scrubbed() -> None:
    text = "POST https://a:b@one.example/x?k=1 then http://two.example/y?s=2 failed"
    assert scrub_urls(text) == "POST https://one.example/x?… then http://two.example/y?… failed"
    assert scrub_urls("no url here") == "no url here"
