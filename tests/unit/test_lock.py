"""The lock file CI installs through pins every dependency, at a version pyproject allows."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(";")[0].strip().split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_of_the_dev_install_is_pinned_within_its_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = list(project["dependencies"])
    todo, seen = ["dev"], set()
    while todo:  # dev names other extras (podium[test,server,...]): follow them
        extra = todo.pop()
        seen.add(extra)
        for spec in extras[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "podium":
                todo += [e for e in req.extras if e not in seen]
            else:
                wanted.append(spec)
    pins = _pins()
    for spec in wanted:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements-lock.txt (fix: refresh it)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements-lock.txt pins {req.name}=={pins[name]}, outside {req.specifier}")


def test_the_lock_pins_only_versions_never_a_path_of_one_machine() -> None:
    """pip-compile writes the project itself as ``podium @ file:///its/path``: CI's clone
    lives elsewhere, and pip then refuses the editable install as a conflict."""
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        if line.strip() and not line.startswith((" ", "#")):
            why = (f"requirements-lock.txt: {line!r} is not name==version (fix: drop it, see"
                   " the README's refresh command)")
            assert "==" in line, why
            assert " @ " not in line, why
