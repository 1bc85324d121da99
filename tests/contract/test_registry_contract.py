"""The workflow registry's contract, the same on the in-memory, SQLite and PostgreSQL
stores: a version is written once, the same content again is a no-op that says so,
other content under a taken version is refused, and two registrations at once (two
connections, on PostgreSQL) leave exactly one row.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from podium.errors import ConfigError, VersionTaken
from podium.store.base import Store, workflow_digest
from tests.contract.conftest import make_store


def definition(name: str = "child", version: int | str = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "steps": [{"id": "a", "agent": "x"}], **extra}


async def test_a_registered_version_reads_back_and_the_same_content_again_is_a_no_op(
        store: Store) -> None:
    d = definition()
    got, new = await store.register_workflow("child", 1, d)
    assert new is True
    assert (got.name, got.version, got.definition) == ("child", "1", d)
    assert got.digest == workflow_digest(d)
    assert len(got.digest) == 64
    assert got.registered_at > 0
    again, new = await store.register_workflow("child", 1, {**d})  # equal, not the same dict
    assert new is False
    assert (again.digest, again.registered_at) == (got.digest, got.registered_at)
    read = await store.registered_workflow("child", 1)
    assert read is not None
    assert read.definition == d
    assert read.version == "1"
    # The version is its string form: 1 and "1" are one version.
    assert await store.registered_workflow("child", "1") == read


async def test_other_content_under_a_registered_version_is_refused(store: Store) -> None:
    await store.register_workflow("child", 1, definition())
    with pytest.raises(VersionTaken, match=r"'child' version 1 .*other content.*bump version"):
        await store.register_workflow("child", 1, definition(description="changed"))
    kept = await store.registered_workflow("child", 1)
    assert kept is not None
    assert "description" not in kept.definition
    # A key order is not other content: the digest is of canonical JSON.
    d = definition()
    await store.register_workflow("child", 1, dict(reversed(list(d.items()))))


async def test_without_a_version_the_newest_registration_is_found(store: Store) -> None:
    assert await store.registered_workflow("child") is None
    assert await store.registered_workflows() == []
    await store.register_workflow("child", 2, definition(version=2))
    await asyncio.sleep(0.01)  # registration times apart on every store's clock
    await store.register_workflow("child", 1, definition(version=1))
    await asyncio.sleep(0.01)
    await store.register_workflow("other", "beta", definition("other", "beta"))
    newest = await store.registered_workflow("child")
    assert newest is not None
    assert newest.version == "1"
    assert await store.registered_workflow("child", 3) is None
    assert await store.registered_workflow("nobody") is None
    listed = [(v.name, v.version) for v in await store.registered_workflows()]
    assert listed == [("child", "1"), ("child", "2"), ("other", "beta")]


async def test_a_definition_over_the_file_size_limit_is_refused(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODIUM_MAX_FILE_BYTES", "1KiB")
    with pytest.raises(ConfigError, match="over the limit of 1 KiB"):
        await store.register_workflow("child", 1, definition(description="x" * 2000))
    assert await store.registered_workflows() == []


@pytest.mark.parametrize("same", [True, False], ids=["same-content", "other-content"])
async def test_two_registrations_at_once_leave_one_row(
        store: Store, backend: str, tmp_path: Path, same: bool) -> None:
    """On PostgreSQL from two stores (two pools, two connections), as two hosts would;
    the loser no-ops (same digest) or is refused (another), never a second row."""
    other = make_store(backend, tmp_path) if backend.startswith("postgresql://") else store
    if other is not store:
        await other.open()
    try:
        for i in range(10):
            a = definition(version=i)
            b = a if same else definition(version=i, description="other")
            results = await asyncio.gather(store.register_workflow("child", i, a),
                                           other.register_workflow("child", i, b),
                                           return_exceptions=True)
            added = [r for r in results if isinstance(r, tuple) and r[1]]
            assert len(added) == 1, results
            loser = next(r for r in results if not (isinstance(r, tuple) and r[1]))
            if same:
                assert isinstance(loser, tuple)
                assert loser[0].digest == workflow_digest(a)
            else:
                assert isinstance(loser, VersionTaken), loser
            kept = await other.registered_workflow("child", i)
            assert kept is not None
            assert kept.digest == added[0][0].digest
        assert len(await store.registered_workflows()) == 10
    finally:
        if other is not store:
            await other.close()
