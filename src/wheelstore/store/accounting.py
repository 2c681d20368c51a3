"""Who pins what: per user, the store units (trees and pyc units) only their gc roots hold, and those they share.

A unit held by one user's roots alone is what that user costs the store: gc would free it if their roots went. A unit
held by several users' roots is shared, and charged to none of them. Users are the roots' owners: a root's file owner
in a personal or group store, the uid a service wrote it for in a service store (:attr:`.rootread.Root.owner_uid`).
What each root holds is as gc judges it from here (:mod:`.rootcheck`): a gone venv holds nothing.

A unit is measured as ``du`` measures it (:func:`.stats.usage`): its directory and everything under it, allocated
blocks and inodes. Units never change once published, so each is measured once (:class:`UnitSizes`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from . import rootcheck
from .policy import user_name
from .stats import Usage, usage
from .store import Store


class UnitSizes:
    """The usage of each unit in ``trees/``, measured once: a published unit is sealed, its size fixed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, Usage] = {}
        self._lock = threading.Lock()

    def of(self, key: str) -> Usage:
        with self._lock:
            known = self._known.get(key)
        if known is not None:
            return known
        measured = usage(key, dir_fd=self.store.area_fd("trees"))
        if measured.inodes and not measured.unreadable:  # a unit gc took (or one not readable) is not remembered
            with self._lock:
                self._known[key] = measured
        return measured

    def forget(self, keep: set[str]) -> None:
        """Drop what is remembered of units not in ``keep`` (gone from the store)."""
        with self._lock:
            self._known = {k: v for k, v in self._known.items() if k in keep}


@dataclass
class Share:
    """One user's part of the store: the units only they pin, and those they pin with others."""

    uid: int
    user: str
    units: set[str] = field(default_factory=set)
    exclusive: Usage = field(default_factory=Usage)
    exclusive_units: int = 0
    shared: Usage = field(default_factory=Usage)
    shared_units: int = 0

    def to_json(self) -> dict[str, object]:
        return {"exclusive_units": self.exclusive_units, "exclusive_bytes": self.exclusive.bytes,
                "exclusive_inodes": self.exclusive.inodes, "shared_units": self.shared_units,
                "shared_bytes": self.shared.bytes, "shared_inodes": self.shared.inodes}


def pins(marks: rootcheck.Marks) -> dict[int, set[str]]:
    """The units each uid's roots hold, as ``marks`` judged them (call its ``update`` first)."""
    held: dict[int, set[str]] = {}
    for root, found in marks.judged.values():
        if found.keys:
            held.setdefault(root.owner_uid, set()).update(found.keys)
    return held


def shares(pinned: dict[int, set[str]], sizes: UnitSizes) -> dict[int, Share]:
    """Each uid's :class:`Share` of the units in ``pinned``."""
    holders: dict[str, int] = {}
    for keys in pinned.values():
        for key in keys:
            holders[key] = holders.get(key, 0) + 1
    result = {}
    for uid, keys in sorted(pinned.items()):
        share = Share(uid, user_name(uid), set(keys))
        for key in keys:
            if holders[key] == 1:
                share.exclusive += sizes.of(key)
                share.exclusive_units += 1
            else:
                share.shared += sizes.of(key)
                share.shared_units += 1
        result[uid] = share
    return result


def measure(store: Store, sizes: UnitSizes | None = None) -> dict[int, Share]:
    """Every user's share of ``store``, from its roots read now."""
    marks = rootcheck.Marks(store)
    marks.update()
    return shares(pins(marks), sizes or UnitSizes(store))


def present(store: Store, keys: set[str]) -> set[str]:
    """Those of ``keys`` that are in ``trees/`` now."""
    trees_fd = store.area_fd("trees")
    found = set()
    for key in keys:
        try:
            os.stat(key, dir_fd=trees_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        found.add(key)
    return found
