"""Logging set-up: plain text, or one JSON object per line when ``ATTUNE_LOG_FORMAT=json``.

Every module logs to ``attune.<module>`` (``logging.getLogger(f"attune.{__name__}")``, e.g.
``attune.engine.outbox``, ``attune.bot.slack_app``): ``attune`` holds all of this project's
records, ``attune.engine.broker`` one package's."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

#: ``extra=`` fields copied into JSON log lines.
_EXTRA_FIELDS = ("execution_id", "action_ref", "status", "worker", "method", "path", "code")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "alembic", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
