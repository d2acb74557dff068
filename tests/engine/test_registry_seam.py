"""The records of the catalog, identity, keys, audit, roster and reports are frozen (that their
modules reach the database only through engine/storage/ is tests/test_storage_seam.py's)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.audit_records import AuditRecord, Confirmation
from engine.catalog_records import Action, Pack
from engine.identity import RefreshGrant, StoredUser, TokenHolder, User
from engine.key_records import KeyValue
from engine.report_records import HistoryFacts, HourCount, WorkerLoad


@pytest.mark.parametrize(
    "record",
    [
        Pack,
        Action,
        User,
        StoredUser,
        TokenHolder,
        RefreshGrant,
        KeyValue,
        AuditRecord,
        Confirmation,
        HourCount,
        WorkerLoad,
        HistoryFacts,
    ],
)
def test_records_are_frozen(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    assert record.__dataclass_params__.frozen  # type: ignore[attr-defined]
