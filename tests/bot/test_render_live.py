"""Rendering of the live message, the failure mention and the page link (pure)."""

from __future__ import annotations

from bot import render
from tests.bot.test_render import record, texts


def test_the_live_message_shows_the_last_lines_of_each_stream() -> None:
    text, blocks = render.live(12, {"stdout": "a\nb\nc\n", "stderr": "warn\n"})
    assert text == "#12: running (live output)"
    shown = texts(blocks)
    assert shown[0] == "```a\nb\nc```"
    assert shown[1] == "*stderr*\n```warn```"
    assert "live" in shown[-1]


def test_a_stream_with_nothing_is_left_out() -> None:
    _, blocks = render.live(12, {"stdout": "only\n", "stderr": "  \n"})
    assert len(blocks) == 2  # stdout and the note


def test_long_live_output_keeps_its_end_within_a_section() -> None:
    lines = "".join(f"line {i} <&> ```\n" for i in range(2000))
    _, blocks = render.live(12, {"stdout": lines})
    body = texts(blocks)[0]
    assert len(body) <= render.SECTION_TEXT_LIMIT
    assert body.startswith("```…\n")
    assert "line 1999 &lt;&amp;&gt;" in body
    assert "line 0 " not in body
    assert body.count("```") == 2  # the output cannot close the block early


def test_one_huge_line_is_cut_to_its_end_without_half_an_entity() -> None:
    _, blocks = render.live(12, {"stdout": "<" * 10_000 + "END"})
    body = texts(blocks)[0]
    assert len(body) <= render.SECTION_TEXT_LIMIT
    assert body.endswith("&lt;END```")
    inner = body.removeprefix("```").removesuffix("```").lstrip("…\n")
    assert inner.replace("&lt;", "") == "END"


def test_the_mention_names_requester_and_owners_once() -> None:
    failed = record("failed", error="exit 3 <oops>")
    said = render.mention(failed, ["U1"], ["U1", "UOWNER9", "alice", "@bob", "W2ABC"])
    assert said is not None
    text, blocks = said
    assert text.startswith("<@U1> <@UOWNER9> @alice @bob <@W2ABC> ")
    assert "*failed*" in text
    assert "exit 3 &lt;oops&gt;" in text
    assert texts(blocks) == [text]


def test_nobody_to_mention_is_no_message() -> None:
    assert render.mention(record("failed"), [], []) is None


def test_card_links_to_the_page_only_when_given_one() -> None:
    url = "https://attune.example/ui/executions/12?exp=1&sig=a|b"
    _, blocks = render.card(record(), page_url=url)
    joined = "\n".join(texts(blocks))
    assert "<https://attune.example/ui/executions/12?exp=1&sig=a%7Cb|View run>" in joined
    _, plain = render.card(record())
    assert "View run" not in "\n".join(texts(plain))


def test_output_reply_links_to_the_page() -> None:
    reply = render.output(record(stdout="hi\n"), page_url="https://a.example/ui/executions/12")
    assert reply is not None
    assert texts(reply[1])[-1] == "<https://a.example/ui/executions/12|View run>"
