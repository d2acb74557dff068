"""What Tab completes in ``attune chat`` (pure: the sources' loaded words, no terminal), and
which lines are kept out of the history file. The pty tests drive it for real."""

from __future__ import annotations

from bot.chat_completion import ActionWords, AliasWords, Candidate, ChatCompleter


def _completer() -> ChatCompleter:
    completer = ChatCompleter()
    completer.actions.actions = {
        "ops.deploy": ActionWords(
            "ops.deploy", "Deploy a build", ("host", "version", "token"), frozenset({"token"})
        ),
        "ops.restart": ActionWords("ops.restart", "Restart a service", ("host",), frozenset()),
        "core.echo": ActionWords("core.echo", "Echo", ("message",), frozenset()),
    }
    completer.templates.templates = {"nightly": ("Nightly deploy", "ops.deploy")}
    return completer


def _texts(completer: ChatCompleter, typed: str) -> list[str]:
    return [c.text for c in completer.words_for(typed)]


def test_completion_of_commands_refs_parameters_and_templates() -> None:
    completer = _completer()
    assert {"run", "help", "status", "cancel", "templates"} <= set(_texts(completer, ""))
    assert {"abort", "history", "last"} <= set(_texts(completer, ""))
    assert _texts(completer, "sta") == ["status"]
    assert _texts(completer, "run ops.") == ["ops.deploy", "ops.restart"]
    assert _texts(completer, "RUN ops.r") == ["ops.restart"]
    assert _texts(completer, "help co") == ["core.echo"]
    assert _texts(completer, "run @") == ["@nightly"]
    assert _texts(completer, "actions ") == ["core", "ops"]
    assert _texts(completer, "run ops.deploy ") == ["host=", "version=", "token="]
    assert _texts(completer, 'run ops.deploy host="web 1" v') == ["version="]
    assert _texts(completer, "run nosuch.action ") == []
    assert _texts(completer, "rule ") == ["enable", "disable"]
    meta = {c.text: c.meta for c in completer.words_for("run ops.deploy t")}
    assert meta == {"token=": "secret"}


def test_a_source_is_one_more_object() -> None:
    class Greetings:
        async def refresh(self, runtime: object, who: object) -> None:
            return None

        def candidates(self, words: object) -> list[Candidate]:
            return [Candidate("hello"), Candidate("help")]

    completer = _completer()
    completer.sources.append(Greetings())  # type: ignore[arg-type]
    assert _texts(completer, "hel") == ["help", "hello"]  # no duplicate "help"


def test_lines_giving_a_secret_are_recognised() -> None:
    completer = _completer()
    assert completer.secrets_given("run ops.deploy host=web1 token=s3cret")
    assert completer.secrets_given("run @nightly token=s3cret")
    assert completer.secrets_given('schedule in 10m run ops.deploy token="a b"')
    assert not completer.secrets_given("run ops.deploy host=web1")
    assert not completer.secrets_given("run @nightly host=web2")
    assert not completer.secrets_given('run ops.deploy token="unbalanced')


def test_alias_words_first_and_next() -> None:
    aliases = AliasWords(
        [
            ("restart", "{service}", "on", "{host}"),
            ("restart", "{service}"),
            ("shout", "hello", "to", "{name}"),
            ("disk", "usage", "of", "{path}"),
        ]
    )
    completer = ChatCompleter([aliases])
    assert _texts(completer, "") == ["restart", "shout", "disk"]
    assert _texts(completer, "re") == ["restart"]
    assert _texts(completer, "restart ") == []  # a value comes next
    assert _texts(completer, "restart nginx ") == ["on"]
    assert _texts(completer, "Restart nginx o") == ["on"]
    assert _texts(completer, "restart nginx on ") == []
    assert _texts(completer, "shout h") == ["hello"]
    assert _texts(completer, "disk usage ") == ["of"]
    assert _texts(completer, "disk space ") == []
    meta = {c.text: c.meta for c in completer.words_for("restart nginx ")}
    assert meta == {"on": "restart {service} on {host}"}
