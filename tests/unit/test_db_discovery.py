"""The default database is found as git finds ``.git``: the nearest ``.podium/`` up the tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from podium.store.factory import default_db_url, find_db_dir, open_store
from podium.store.sqlite import SQLiteStore


def no_podium_above(folder: Path) -> None:
    found = [p for p in folder.resolve().parents if (p / ".podium").is_dir()]
    assert not found, f"a .podium/ above the test folder changes what is found: {found}"


def test_the_nearest_podium_folder_here_or_above_wins(tmp_path: Path) -> None:
    no_podium_above(tmp_path)
    deep = tmp_path / "repo" / "examples" / "nested"
    deep.mkdir(parents=True)
    (tmp_path / "repo" / ".podium").mkdir()
    assert find_db_dir(deep) == (tmp_path / "repo" / ".podium").resolve()

    (tmp_path / "repo" / "examples" / ".podium").mkdir()  # a nearer one
    assert find_db_dir(deep) == (tmp_path / "repo" / "examples" / ".podium").resolve()
    assert find_db_dir(tmp_path / "repo") == (tmp_path / "repo" / ".podium").resolve()


def test_without_any_podium_folder_it_is_the_current_folders(tmp_path: Path) -> None:
    no_podium_above(tmp_path)
    assert find_db_dir(tmp_path) == tmp_path.resolve() / ".podium"
    assert not (tmp_path / ".podium").exists()  # finding makes nothing


def test_a_file_named_podium_is_not_a_podium_folder(tmp_path: Path) -> None:
    no_podium_above(tmp_path)
    (tmp_path / ".podium").write_text("not a folder", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    assert find_db_dir(tmp_path / "sub") == (tmp_path / "sub").resolve() / ".podium"


def test_db_flag_then_podium_db_win_over_the_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".podium").mkdir()
    monkeypatch.setenv("PODIUM_DB", "sqlite:///from-env.db")
    assert default_db_url("sqlite:///flag.db", cwd=tmp_path) == "sqlite:///flag.db"
    assert default_db_url(None, cwd=tmp_path) == "sqlite:///from-env.db"
    monkeypatch.delenv("PODIUM_DB")
    assert default_db_url(None, cwd=tmp_path).endswith("/.podium/podium.db")


def test_the_url_of_a_folder_with_odd_characters_opens_that_folders_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PODIUM_DB", raising=False)
    odd = tmp_path / "we ird%20#?dir"
    (odd / ".podium").mkdir(parents=True)
    store = open_store(default_db_url(None, cwd=odd))
    assert isinstance(store, SQLiteStore)
    assert store.path == (odd / ".podium" / "podium.db").resolve()
