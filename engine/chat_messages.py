"""What a chat sink remembers of the message it posted for an execution.

The engine routes an execution's news to a target (``slack``, ``terminal:<session>``,
``callback``) and knows nothing of what the target made of it. A sink that posts a message and
edits it later (Slack's status card) keeps its own row per execution: the message's id in its
channel, the status the message shows, whether the output went out, whether it fell back to
the command's reply URL, the message showing the output live while the run lasts, and whether
the requester was told of a failure. Stored by :mod:`engine.storage.chat_messages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """A sink's message for one execution; a fresh one has been posted nowhere yet."""

    execution_id: int
    sink: str
    #: Where the message is (Slack's channel id).
    channel: str
    #: The posted message's id in its channel (Slack's ``ts``); None until posted.
    message_id: str | None = None
    #: The execution status the message shows (so queued news need not edit it again).
    shows_status: str | None = None
    output_posted: bool = False
    #: The sink could not post in the channel and answers through the command's reply URL.
    fallback: bool = False
    #: The message (in the card's thread) showing the last lines while the run lasts; at the
    #: end it is edited into the output.
    live_message_id: str | None = None
    #: The requester (or the rule's owners) was mentioned about a failure: never again.
    notified: bool = False


class ChatMessages(Protocol):
    """A sink's rows: read one before delivering news, save it after each change."""

    async def get(self, execution_id: int, sink: str) -> ChatMessage | None: ...

    async def save(self, message: ChatMessage) -> None:
        """Insert or replace the row of ``(message.execution_id, message.sink)``."""
        ...

    async def set_live_message(self, execution_id: int, sink: str, message_id: str) -> None:
        """Record the live message of an existing row, leaving its other fields as they are."""
        ...

    async def of_statuses(
        self, sink: str, statuses: Sequence[str], limit: int
    ) -> list[ChatMessage]:
        """Rows with a posted message, its output not yet out, whose execution's status is one
        of ``statuses`` (newest first): the runs a restarted process shows live again."""
        ...
