"""``podium status`` and its kin import only their own module: the map that says which."""

from __future__ import annotations

import typer.main

from podium.cli.app import COMMAND_HOMES, COMMAND_MODULES, app


def test_each_command_named_in_the_map_is_defined_in_the_module_it_names() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)
    commands = typer.main.get_group(app).commands
    for name, home in COMMAND_HOMES.items():
        assert name in commands, name
        assert commands[name].callback.__module__ == home, name  # type: ignore[union-attr]
