"""Shared test set-up: every async test runs twice, under asyncio's default loop and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run each async test under both event loops the pool supports."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
