"""Where a command's workflow comes from: a file, or a Python object named ``MODULE:ATTR``.

``podium run flows.report:wf``, ``podium run path/to/flows.py:wf`` and
``podium run path/to/flows.py`` (its one workflow) import the user's own code,
as ``python flows.py`` would; nothing the user typed is evaluated, the
reference is only split into a module and attribute names.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from podium.cli.common import Failure
from podium.definition.builder import Flow
from podium.definition.loader import Resolve
from podium.definition.models import Workflow
from podium.errors import DefinitionError, Problem

__all__ = ["LoadedWorkflow", "StoreResolver", "is_python_ref", "load_with_registry",
           "load_workflow_ref", "registry_of"]

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_FIX = ("fix: write MODULE:ATTR (a module importable from the current folder) or"
        " path/to/file.py:ATTR, ATTR naming a podium.Flow or a podium.Workflow")


@dataclasses.dataclass(frozen=True, slots=True)
class LoadedWorkflow:
    """A workflow and what a command needs to know about where it came from."""

    workflow: Workflow
    # The file it was read from (a YAML file or a module's .py): an agents file
    # beside it is found, and problems name it.
    path: Path | None
    flow: Flow | None = None  # when built from one: problems found later get its lines

    def locate(self, problems: list[Problem]) -> list[Problem]:
        """Problems found after loading (an unknown capability), with their file and line."""
        if self.flow is not None:
            return self.flow.locate(problems)
        if self.path is not None and self.path.suffix != ".py":  # @define: no lines known
            from podium.cli.app import with_lines

            return list(with_lines(problems, self.path))
        return problems


def _split(text: str) -> tuple[str, str | None] | None:
    """``(module or file, attr)`` if ``text`` names Python, else None (a workflow file)."""
    target, sep, attr = text.rpartition(":")
    if sep and _DOTTED.match(attr) and (target.endswith(".py") or _DOTTED.match(target)):
        return target, attr
    if text.endswith(".py"):
        return text, None
    return None


def is_python_ref(text: str) -> bool:
    """Whether ``text`` names Python; a workflow file that exists wins (``a:b`` may be one)."""
    if _split(text) is None:
        return False
    return text.endswith(".py") or not Path(text).is_file()


def load_workflow_ref(ref: str | Path, *, resolve: Resolve | None = None,
                      registry: str | None = None) -> LoadedWorkflow:
    """Load a workflow file, or build the Python workflow ``ref`` names.

    Every way to name nothing usable stops the command with exit 2 and a
    message that repeats the reference and says what to write instead. A file's
    sub-workflows that no file defines are asked of ``resolve`` (the registry of the
    command's database, ``registry`` naming it in problems).
    """
    text = str(ref)
    split = _split(text) if is_python_ref(text) else None
    if split is None:
        from podium.definition.loader import load_workflow

        if registry is None:
            return LoadedWorkflow(load_workflow(text, resolve=resolve), Path(text))
        return LoadedWorkflow(load_workflow(text, resolve=resolve, registry=registry),
                              Path(text))
    target, attr = split
    module = _import(text, target)
    obj: Any
    if attr is None:
        obj, attr = _the_one_workflow(text, module)
    else:
        obj = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                found = _workflows_in(module)
                listed = f" (workflows in it: {', '.join(found)})" if found else (
                    " (it defines no workflow)")
                raise Failure(f"{text}: module '{module.__name__}' has no attribute"
                              f" '{part}'{listed} ({_FIX})") from None
    file = getattr(module, "__file__", None)
    path = Path(file) if file else None
    if isinstance(obj, Flow):
        return LoadedWorkflow(obj.build(), path, obj)
    if isinstance(obj, Workflow):
        return LoadedWorkflow(obj, path)
    raise Failure(f"{text}: '{attr}' is a {type(obj).__name__}, not a workflow ({_FIX})")


def _workflows_in(module: ModuleType) -> list[str]:
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and isinstance(value, Flow | Workflow)]


def _the_one_workflow(text: str, module: ModuleType) -> tuple[Any, str]:
    found = _workflows_in(module)
    if len(found) == 1:
        return getattr(module, found[0]), found[0]
    if not found:
        raise Failure(f"{text}: defines no workflow at module level ({_FIX})")
    raise Failure(f"{text}: defines {len(found)} workflows ({', '.join(found)}); say which:"
                  f" {text}:{found[0]}")


def _import(text: str, target: str) -> ModuleType:
    """Import the module; its prints go to stderr (stdout may be a JSON or YAML document)."""
    with contextlib.redirect_stdout(sys.stderr):
        try:
            if target.endswith(".py"):
                return _import_file(text, Path(target))
            cwd = str(Path.cwd())
            if cwd not in sys.path and "" not in sys.path:
                # `python -m podium` has the current folder on sys.path; the `podium`
                # script does not, and users expect the same of both.
                sys.path.insert(0, cwd)
            return importlib.import_module(target)
        except (DefinitionError, Failure):
            raise  # an invalid Flow or @define (every problem, with its line), or ours
        except ModuleNotFoundError as exc:
            if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
                raise Failure(f"{text}: no module named '{exc.name}' in the current folder"
                              f" or on sys.path ({_FIX})") from None
            raise Failure(f"{text}: importing '{target}' failed: {exc}{_where(exc)}") from None
        except SyntaxError as exc:
            raise Failure(f"{text}: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}"
                          ) from None
        except Exception as exc:  # noqa: BLE001 - the user's module raised: say what and where
            raise Failure(f"{text}: importing '{target}' failed: {type(exc).__name__}: {exc}"
                          f"{_where(exc)}") from None


def _where(exc: BaseException) -> str:
    """The innermost frame of the user's code that raised, as `` (at file:line)``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and not f.filename.endswith("workflow_ref.py")]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def _import_file(text: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise Failure(f"{text}: no file {path} ({_FIX})")
    path = path.resolve()
    # Its folder first on sys.path, as `python file.py` has it: its sibling modules import.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = path.stem
    cached = sys.modules.get(name)
    if cached is not None:
        if Path(getattr(cached, "__file__", "") or "").resolve() == path:
            return cached
        name = f"_podium_flow_{abs(hash(str(path)))}_{name}"  # the stem is another module
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise Failure(f"{text}: cannot load {path} as Python ({_FIX})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


# --- sub-workflows registered in the database (podium workflow register) ---------


class StoreResolver:
    """Finds registered workflows in one database, read-only, opening it only when a
    step calls a workflow no file defines (most files never do), once per lookup."""

    def __init__(self, url: str) -> None:
        from podium.redact import mask_url

        self.url = url
        self.where = f"not registered in the database {mask_url(url)}"
        self._seen: dict[tuple[str, str | None], dict[str, Any] | None] = {}

    def __call__(self, name: str, version: str | None) -> dict[str, Any] | None:
        key = (name, version)
        if key not in self._seen:
            self._seen[key] = asyncio.run(self._lookup(name, version))
        return self._seen[key]

    async def _lookup(self, name: str, version: str | None) -> dict[str, Any] | None:
        from podium.store.factory import open_store

        store = open_store(self.url, readonly=True)
        await store.open()
        try:
            found = await store.registered_workflow(name, version)
        finally:
            await store.close()
        return None if found is None else found.definition


def registry_of(db: str | None, *, only_if_exists: bool = False) -> StoreResolver | None:
    """The registry of the database a command uses (``--db``, ``$PODIUM_DB``, the
    project's). ``only_if_exists``: None when none was named and the project's file is
    not there (``validate`` never makes a database)."""
    from podium.store.factory import default_db_url, find_db_dir

    if only_if_exists and not (db or os.environ.get("PODIUM_DB")) and not (
            find_db_dir() / "podium.db").is_file():
        return None
    return StoreResolver(default_db_url(db))


def load_with_registry(ref: str | Path, resolver: StoreResolver | None) -> LoadedWorkflow:
    """``load_workflow_ref`` with sub-workflows also looked for in ``resolver``."""
    if resolver is None:
        from podium.store.factory import find_db_dir

        where = (f"and no database to look in (none at {find_db_dir() / 'podium.db'}; give"
                 " --db URL)")
        return load_workflow_ref(ref, registry=where)
    return load_workflow_ref(ref, resolve=resolver, registry=resolver.where)
