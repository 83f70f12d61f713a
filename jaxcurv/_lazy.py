"""Names a package serves from submodules it imports on first use: the one lazy-loading helper,
used where ``jaxcurv --help`` needs it (the top package and the workflow build the command line
without importing jax)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_names"]


def lazy_names(package: str, names: Mapping[str, str], namespace: dict
               ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: attribute ``name`` is imported from the module
    ``names[name]`` (absolute, or relative to the package when it starts with ".") on first
    access and stored in the package's ``namespace``; a name that maps to "" is the submodule of
    that name itself."""

    def __getattr__(name: str) -> object:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        where = names[name]
        if where == "":
            value = importlib.import_module(f"{package}.{name}")
        else:
            module = importlib.import_module(where if not where.startswith(".")
                                             else package + where)
            value = getattr(module, name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
