"""wheelstore: one safe, shared, content-addressed store of unpacked wheels, and venvs filled from it.

The pipeline, one module per stage: resolve -> fetch -> realize (:mod:`wheelstore.realize`) -> link -> maintain. Every
writer goes through :mod:`wheelstore.policy` for modes, groups and trust.
"""

from .errors import WheelstoreError
from .policy import Policy
from .realize import Realized
from .store import Store, Tree

__version__ = "0.1.0"
__all__ = ["Policy", "Realized", "Store", "Tree", "WheelstoreError", "__version__"]
