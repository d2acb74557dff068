"""One logger naming scheme: every module that logs does so to ``attune.<module>``."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

import bot
import config
import engine


def _modules() -> list[str]:
    names = []
    for package in (engine, bot, config):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix):
            if ".migrations" not in info.name:
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_module_loggers_are_named_attune_dot_module(name: str) -> None:
    module = importlib.import_module(name)
    loggers = [v for v in vars(module).values() if isinstance(v, logging.Logger)]
    for logger in loggers:
        assert logger.name == f"attune.{name}"
