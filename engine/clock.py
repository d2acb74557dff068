"""The wall clock the engine stamps records with: timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    return datetime.now(UTC)
