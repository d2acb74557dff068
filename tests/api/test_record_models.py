"""The API writes records (engine/records.py) as JSON; its documented response models read
exactly those fields, in that order, and accept what a record writes."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import BaseModel

from engine import records
from engine.api import schemas

WHEN = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)


@pytest.mark.parametrize(
    ("record", "model"),
    [(records.Execution, schemas.Execution), (records.Delivery, schemas.Delivery)],
)
def test_the_models_have_the_records_fields(record: type, model: type[BaseModel]) -> None:
    assert list(model.model_fields) == [f.name for f in fields(record)]


def test_a_record_written_as_json_is_what_the_model_reads() -> None:
    execution = records.Execution(
        id=1,
        action_ref="core.noop",
        status="failed",
        config={"x": 1},
        parent=None,
        enforcement=2,
        result={"succeeded": False, "error": "boom"},
        created=WHEN,
        updated=WHEN,
        started_at=None,
        finished_at=WHEN,
        executor=None,
        requester={"identity": "alice", "source": "api", "channel": None, "role": "admin"},
    )
    body = orjson.dumps(execution)
    assert body == orjson.dumps(execution.as_dict())
    read = schemas.Execution.model_validate_json(body)
    assert (read.id, read.executor, read.requester.identity) == (1, None, "alice")
    delivery = records.Delivery(1, 1, "slack", "created", "pending", 0, None, WHEN, WHEN, None)
    assert schemas.Delivery.model_validate_json(orjson.dumps(delivery)).target == "slack"
