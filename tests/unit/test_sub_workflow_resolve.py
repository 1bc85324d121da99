"""Where a step's ``workflow: NAME`` (``version: V``) is found: the file's own
``workflows:``, then NAME.yaml beside it (of version V, when V is given), then the
registry the caller hands the loader (``resolve``); what is found is embedded.

Only the definition layer, with a dictionary as the registry; the store and the CLI
are in tests/integration/test_workflow_registry.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from podium.definition import workflow_from_dict
from podium.definition.loader import load_workflow
from podium.errors import DefinitionError


def child(version: int | str = 1, agent: str = "double") -> dict[str, Any]:
    return {"name": "child", "version": version, "steps": [{"id": "d", "agent": agent}]}


def parent(**step: Any) -> dict[str, Any]:
    return {"name": "parent", "steps": [{"id": "call", "workflow": "child", **step}]}


class Registry:
    """A registry as the CLI's resolver sees it, counting what it is asked."""

    def __init__(self, *defs: dict[str, Any]) -> None:
        self.defs = {(d["name"], str(d.get("version", 1))): d for d in defs}
        self.asked: list[tuple[str, str | None]] = []

    def __call__(self, name: str, version: str | None) -> dict[str, Any] | None:
        self.asked.append((name, version))
        if version is not None:
            return self.defs.get((name, version))
        mine = [d for (n, _), d in self.defs.items() if n == name]
        return mine[-1] if mine else None


def write(folder: Path, name: str, doc: dict[str, Any]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_registered_sub_workflow_is_embedded_when_no_file_defines_it(
        tmp_path: Path) -> None:
    reg = Registry(child(1), child(2, agent="add"))
    wf = load_workflow(write(tmp_path, "parent", parent()), resolve=reg)
    assert wf.workflows["child"].version == 2  # the newest
    assert reg.asked == [("child", None)]
    pinned = load_workflow(write(tmp_path, "parent", parent(version=1)), resolve=reg)
    assert pinned.workflows["child"].version == 1
    assert pinned.workflows["child"].steps[0].agent == "double"
    # What a run keeps reads back whole without any registry.
    assert workflow_from_dict(pinned.to_dict()).workflows["child"].version == 1


def test_a_file_beside_wins_unless_the_step_pins_another_version(tmp_path: Path) -> None:
    write(tmp_path, "child", child(1, agent="beside"))
    reg = Registry(child(1), child(2))
    wf = load_workflow(write(tmp_path, "parent", parent()), resolve=reg)
    assert wf.workflows["child"].steps[0].agent == "beside"
    assert reg.asked == []
    wf = load_workflow(write(tmp_path, "parent", parent(version=1)), resolve=reg)
    assert wf.workflows["child"].steps[0].agent == "beside"
    wf = load_workflow(write(tmp_path, "parent", parent(version=2)), resolve=reg)
    assert wf.workflows["child"].steps[0].agent == "double"
    assert reg.asked == [("child", "2")]


def test_the_files_own_workflows_entry_wins_and_must_be_the_pinned_version(
        tmp_path: Path) -> None:
    reg = Registry(child(2))
    doc = {**parent(), "workflows": {"child": child(1, agent="inline")}}
    wf = load_workflow(write(tmp_path, "parent", doc), resolve=reg)
    assert wf.workflows["child"].steps[0].agent == "inline"
    assert reg.asked == []
    doc = {**parent(version=2), "workflows": {"child": child(1)}}
    with pytest.raises(DefinitionError) as info:
        load_workflow(write(tmp_path, "parent", doc), resolve=reg)
    [p] = info.value.problems
    assert (p.step, p.field, p.line) == ("call", "version", 5)  # its own line
    assert "calls version 2 of 'child', but this definition holds its version 1" in p.message


def test_an_unknown_name_or_version_says_where_it_looked_and_how_to_fix_it(
        tmp_path: Path) -> None:
    path = write(tmp_path, "parent", parent())
    with pytest.raises(DefinitionError) as info:
        load_workflow(path, resolve=Registry(),
                      registry="not registered in the database sqlite:///x.db")
    [p] = info.value.problems
    assert (p.file, p.line, p.step, p.field) == (str(path), 4, "call", "workflow")
    assert p.message == (f"unknown sub-workflow 'child': not under workflows:, no child.yaml"
                         f" (.yml, .json) in {tmp_path}, not registered in the database"
                         " sqlite:///x.db")
    assert "podium workflow register child.yaml" in (p.hint or "")

    write(tmp_path, "child", child(1))
    path = write(tmp_path, "parent", parent(version=3))
    with pytest.raises(DefinitionError) as info:
        load_workflow(path, resolve=Registry(child(2)), registry="not registered in D")
    [p] = info.value.problems
    assert p.message == (
        f"unknown sub-workflow 'child' version 3: not under workflows:, {tmp_path}/child.yaml"
        " is version 1, not registered in D (its newest registered version there is 2)")
    assert "a file with version: 3" in (p.hint or "")


def test_version_is_only_for_a_step_that_runs_a_sub_workflow() -> None:
    with pytest.raises(DefinitionError) as info:
        workflow_from_dict({"name": "w", "steps": [{"id": "a", "agent": "x", "version": 2}]})
    [p] = info.value.problems
    assert (p.step, p.field) == ("a", "version")
    assert "version is only for a step that runs a sub-workflow" in p.message
    assert "add 'workflow: NAME'" in (p.hint or "")


def test_a_registered_workflow_that_calls_back_its_caller_is_refused(tmp_path: Path) -> None:
    # b was registered when it called a (an older a, embedded in it); a now calls b.
    old_a = {"name": "a", "steps": [{"id": "x", "agent": "x"}]}
    b = {"name": "b", "workflows": {"a": old_a}, "steps": [{"id": "y", "workflow": "a"}]}
    doc = {"name": "a", "steps": [{"id": "z", "workflow": "b"}]}
    with pytest.raises(DefinitionError, match=r"a workflow calls itself: a -> b -> a"):
        load_workflow(write(tmp_path, "a", doc), resolve=Registry(b))


def test_two_steps_pinning_two_versions_of_one_sub_workflow_are_refused(
        tmp_path: Path) -> None:
    doc = {"name": "parent", "steps": [{"id": "one", "workflow": "child", "version": 1},
                                       {"id": "two", "workflow": "child", "version": 2}]}
    with pytest.raises(DefinitionError) as info:
        load_workflow(write(tmp_path, "parent", doc), resolve=Registry(child(1), child(2)))
    [p] = info.value.problems
    assert (p.step, p.field) == ("two", "version")
