"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.podium_proc import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """A folder with its own database and execution log; stray processes are reaped after."""
    box = Sandbox(tmp_path)
    try:
        yield box
    finally:
        box.cleanup()
