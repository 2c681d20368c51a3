"""wheelstore: one safe, shared, content-addressed store of unpacked wheels, and venvs filled from it.

The layers, each a subpackage importing only those below it: :mod:`wheelstore.base` <- :mod:`wheelstore.store` <-
:mod:`wheelstore.fetch` <- :mod:`wheelstore.resolve` <- :mod:`wheelstore.venv` <- :mod:`wheelstore.cli`. Every store
writer goes through :mod:`wheelstore.store.policy` for modes, groups and trust. This module is the public face: the
names below, imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base.errors import WheelstoreError
    from .store.policy import Policy
    from .store.publish import Realized, realize_wheel, realize_wheels
    from .store.store import Store, Tree

__version__ = "0.1.0"
__all__ = ["Policy", "Realized", "Store", "Tree", "WheelstoreError", "__version__", "realize_wheel", "realize_wheels"]

#: the re-exports, imported on first use: every ``wheelstore.x`` import runs this file, and the CLI starts faster
#: without the realize stage (zipfile, the wheel reader), which a warm install never needs
_LAZY = {"Policy": "store.policy", "Realized": "store.publish", "realize_wheel": "store.publish",
         "realize_wheels": "store.publish", "Store": "store.store", "Tree": "store.store",
         "WheelstoreError": "base.errors"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
