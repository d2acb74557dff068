"""The action cache reads a spec once however many ask for it at the same time, and a change
made while a read is in flight is not hidden by that read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.catalog import Catalog
from engine.errors import NotFound
from engine.packs import ActionSpec
from engine.params import normalize_schema
from engine.storage import Store


def _spec(description: str = "first") -> ActionSpec:
    return ActionSpec(
        ref="cc.act",
        pack_ref="cc",
        name="act",
        runner_type="shell",
        entry_point=None,
        script="#!/bin/sh\nexit 0\n",
        param_schema=normalize_schema({}),
        description=description,
    )


def _counting(catalog: Catalog) -> list[str]:
    """Count the catalog's reads of actions from the database."""
    reads: list[str] = []
    read = catalog.repo.action

    async def counted(ref: str) -> Any:
        reads.append(ref)
        await asyncio.sleep(0)  # let the other askers arrive while this read is in flight
        return await read(ref)

    catalog.repo.action = counted  # type: ignore[method-assign]
    return reads


async def test_fifty_askers_of_a_spec_not_cached_make_one_read(store: Store) -> None:
    catalog = Catalog(store, cache_s=60)
    await catalog.create_action(_spec())
    catalog.forget()
    reads = _counting(catalog)
    specs = await asyncio.gather(*(catalog.get_action("cc.act") for _ in range(50)))
    assert reads == ["cc.act"]
    assert {s.description for s in specs} == {"first"}
    await catalog.get_action("cc.act")
    assert reads == ["cc.act"], "cached afterwards"


async def test_an_unknown_action_fails_every_asker_and_is_asked_again_later(
    store: Store,
) -> None:
    catalog = Catalog(store, cache_s=60)
    reads = _counting(catalog)
    results = await asyncio.gather(
        *(catalog.get_action("cc.none") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, NotFound) for r in results)
    assert reads == ["cc.none"]
    with pytest.raises(NotFound):
        await catalog.get_action("cc.none")
    assert reads == ["cc.none", "cc.none"], "a failure is not cached"


async def test_a_change_made_during_a_read_is_not_hidden_by_it(store: Store) -> None:
    catalog = Catalog(store, cache_s=60)
    await catalog.create_action(_spec("first"))
    catalog.forget()
    reading = asyncio.ensure_future(catalog.get_action("cc.act"))
    await asyncio.sleep(0)  # the read is in flight
    await catalog.update_action("cc.act", _spec("second"))
    await reading  # whatever it read, it must not be what the cache keeps
    assert (await catalog.get_action("cc.act")).description == "second"


async def test_an_asker_that_gives_up_does_not_cancel_the_read_of_the_others(
    store: Store,
) -> None:
    catalog = Catalog(store, cache_s=60)
    await catalog.create_action(_spec())
    catalog.forget()
    reads = _counting(catalog)
    impatient = asyncio.ensure_future(catalog.get_action("cc.act"))
    patient = asyncio.ensure_future(catalog.get_action("cc.act"))
    await asyncio.sleep(0)
    impatient.cancel()
    assert (await patient).description == "first"
    assert reads == ["cc.act"]
