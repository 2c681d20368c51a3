"""wheelstore: one safe, shared, content-addressed store of unpacked wheels, and venvs filled from it.

The pipeline, one module per stage: resolve -> fetch -> realize (:mod:`wheelstore.realize`) -> link -> maintain. Every
writer goes through :mod:`wheelstore.policy` for modes, groups and trust.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import WheelstoreError
    from .policy import Policy
    from .realize import Realized
    from .store import Store, Tree

__version__ = "0.1.0"
__all__ = ["Policy", "Realized", "Store", "Tree", "WheelstoreError", "__version__"]

#: the re-exports, imported on first use: every ``wheelstore.x`` import runs this file, and the CLI starts faster
#: without the realize stage (zipfile, the wheel reader), which a warm install never needs
_LAZY = {"Policy": "policy", "Realized": "realize", "Store": "store", "Tree": "store", "WheelstoreError": "errors"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
