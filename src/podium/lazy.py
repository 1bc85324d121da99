"""A package's exports imported when first asked for (PEP 562).

``podium`` and ``podium.definition`` re-export names from many modules; importing
them all with the package made every CLI command pay for the engine, the agents
and the workflow models (~0.1 s of each start) when it needed one leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from importlib import import_module
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any],
                 names: Collection[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``exports`` maps each name to
    the module it comes from; a name found once is kept in ``namespace`` (the package's
    globals), so it is looked up only the first time."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
