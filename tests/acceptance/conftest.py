"""Fixtures of the CLI acceptance tests (see podium_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.podium_cli import Podium, make_project


@pytest.fixture
def podium(tmp_path: Path) -> Podium:
    return make_project(tmp_path)
