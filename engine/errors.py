"""The engine's error tree. Every expected failure carries a message fit to show a user.

The API translates these into ``{"error": message, "code": code}`` with ``http_status``.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(EngineError):
    code = "BAD_REQUEST"
    http_status = 400


class InvalidParameters(InvalidRequest):
    """Parameters do not match an action's schema; the message names the parameter."""

    code = "INVALID_PARAMETERS"


class PackError(InvalidRequest):
    """A pack or action definition on disk (or in a request) is malformed."""

    code = "INVALID_PACK"


class Unauthorized(EngineError):
    code = "UNAUTHORIZED"
    http_status = 401


class Forbidden(EngineError):
    code = "FORBIDDEN"
    http_status = 403


class NotYours(Forbidden):
    """Only the requester of a request (or an admin) may settle it. ``executor`` is who asked,
    as recorded (:meth:`engine.records.Executor.as_dict`): a chat face names them its own way."""

    def __init__(self, verb: str, requester: str, executor: dict[str, object]) -> None:
        super().__init__(f"only {requester} (or an admin) can {verb} this request")
        self.verb = verb
        self.requester = requester
        self.executor = executor


class NotFound(EngineError):
    code = "NOT_FOUND"
    http_status = 404


class Conflict(EngineError):
    code = "CONFLICT"
    http_status = 409


class PayloadTooLarge(EngineError):
    """A body (a webhook's, an uploaded pack) over its limit; the message names the limit."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class TooManyRequests(EngineError):
    code = "TOO_MANY_REQUESTS"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(EngineError):
    """A backing service (database, broker) does not answer."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class CannotStart(EngineError):
    """A process cannot start (a busy port, an unreachable database); the message names the
    cause and the setting to change, and is shown as one line."""
