"""``podium workflow``: workflows registered in the database, for steps that call them
by name (``workflow: NAME``, ``version: V``) from any folder.

How ``run``, ``submit``, ``schedule add`` and ``validate`` find them is
``workflow_ref.registry_of``.
"""

# Annotations stay evaluated (no ``from __future__ import annotations``), as in the
# other command modules: typer reads every command's signature at start-up.

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from podium.cli.app import AgentsOpt, DbOpt, JsonOpt, app
from podium.cli.common import dump_json, err, fail, guarded, run_async
from podium.cli.workflow_ref import load_with_registry, registry_of

workflow_app = typer.Typer(
    help="Register workflows in the database, for steps that call them by name.",
    no_args_is_help=True)
app.add_typer(workflow_app, name="workflow")

FileArg = Annotated[Path, typer.Argument(
    metavar="FILE", help="Workflow file (YAML or JSON), or a Python workflow: MODULE:ATTR"
    " or FILE.py[:ATTR].")]


@workflow_app.command("register")
def register(file: FileArg, agents: AgentsOpt = None, db: DbOpt = None,
             as_json: JsonOpt = False) -> None:
    """Register a workflow by its name and version (checked as `podium validate` does).

    Registering the same content again changes nothing; other content under a
    registered version is refused (bump version:). Its sub-workflows are kept in it.
    """

    def body() -> None:
        from podium.cli.app import _AgentChecker, _agents_file
        from podium.errors import DefinitionError

        loaded = load_with_registry(file, registry_of(db))
        wf = loaded.workflow
        agents_file = _agents_file(agents, loaded.path)
        if agents_file is not None:
            checker = _AgentChecker()
            try:
                problems = checker.problems(loaded, agents_file)
            finally:
                checker.close()
            if problems:
                raise DefinitionError(problems)

        async def go() -> Any:
            from podium.store.factory import default_db_url, open_store

            store = open_store(default_db_url(db))
            await store.open()
            try:
                return await store.register_workflow(wf.name, wf.version, wf.to_dict())
            finally:
                await store.close()

        got, new = run_async(go, json_stdout=as_json)
        if as_json:
            dump_json({**_version_doc(got), "new": new})
            return
        print(f"{got.name} {got.version}")
        if new:
            err(f"registered {got.name} version {got.version}; a step calls it with"
                f" 'workflow: {got.name}' (and 'version: {got.version}' to pin it)")
        else:
            err(f"{got.name} version {got.version} was registered already, with the same"
                " content: nothing changed")

    guarded(body, as_json=as_json)


@workflow_app.command("list")
def list_(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """The registered workflows, each with its versions (newest first)."""

    async def go() -> Any:
        from podium.store.factory import default_db_url, open_store

        store = open_store(default_db_url(db), readonly=True)
        await store.open()
        try:
            return await store.registered_workflows()
        finally:
            await store.close()

    def body() -> None:
        found = run_async(go, json_stdout=as_json)
        names: dict[str, list[Any]] = {}
        for v in found:
            names.setdefault(v.name, []).append(v)
        if as_json:
            dump_json([{"name": name, "versions": [_version_doc(v) for v in versions]}
                       for name, versions in names.items()])
            return
        if not names:
            print("no registered workflows (register one: podium workflow register FILE)")
            return
        print(f"{'WORKFLOW':<32} {'NEWEST':<12} {'REGISTERED':<20} VERSIONS")
        for name, versions in names.items():
            newest = versions[0]
            print(f"{name:<32} {newest.version[:12]:<12} {_at(newest.registered_at):<20}"
                  f" {', '.join(v.version for v in versions)}", file=sys.stdout)

    guarded(body, as_json=as_json)


@workflow_app.command("show")
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The workflow's name.")],
    version: Annotated[
        str | None, typer.Option("--version", metavar="V",
                                 help="Which version (default: the newest registered).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A registered workflow's definition: YAML, or with --json a JSON document."""

    async def go() -> Any:
        from podium.store.factory import default_db_url, open_store

        store = open_store(default_db_url(db), readonly=True)
        await store.open()
        try:
            found = await store.registered_workflow(name, version)
            listed = [] if found else [v.version for v in await store.registered_workflows()
                                       if v.name == name]
            return found, listed
        finally:
            await store.close()

    def body() -> None:
        found, listed = run_async(go, json_stdout=as_json)
        if found is None:
            what = f"'{name}'" + (f" version {version}" if version is not None else "")
            fix = (f"one of its versions: {', '.join(listed)}" if listed else
                   "see `podium workflow list`, or register it: podium workflow register FILE")
            fail(f"no registered workflow {what} (fix: {fix})")
        if as_json:
            dump_json({**_version_doc(found), "definition": found.definition})
            return
        import yaml

        # As registered (the fields it sets, in the file's order): a file to start from.
        sys.stdout.write(yaml.safe_dump(found.definition, sort_keys=False, allow_unicode=True,
                                        width=100))

    guarded(body, as_json=as_json)


def _version_doc(v: Any) -> dict[str, Any]:
    from podium.docs import rfc3339

    return {"name": v.name, "version": v.version, "digest": v.digest,
            "registered_at": rfc3339(v.registered_at)}


def _at(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
