"""stats: what the venvs would take as plain copies (logical) against what the store and the venvs use (physical).

Physical is measured the way ``du`` measures: allocated blocks (``st_blocks * 512``) and inodes, each inode counted
once however many hard links it has, walking by directory fd without following symlinks (a symlink counts as itself:
a fast one takes no block, a long one a whole block). The store is walked first, so a hard link in a venv costs that
venv nothing, while a symlink, a reflink or a copy costs what its own inode allocates. Reflinked files are counted
whole, as ``du`` counts them, although they share blocks with the store (``df`` shows less).

Logical is, per live venv (a root :mod:`~wheelstore.store.rootcheck` checks), the allocated size of every
store unit it links, trees and their pyc units alike (a venv without the store would hold those pycs too, once
imported), as if each were a private copy.

Per user, beside their venvs: the units (trees and pyc units) only their gc roots hold, and those they share. A unit
held by one user's roots alone is what that user costs the store: gc would free it if their roots went; a unit held by
several users' roots is charged to none of them. Users are the roots' owners: a root's file owner in a personal or
group store, the uid a service wrote it for in a service store (:attr:`.rootread.Root.owner_uid`); what each root
holds is as gc judges it from here (:mod:`.rootcheck`). A unit is measured whole, its directory and everything under
it, and once (:class:`UnitSizes`): units never change once published. A service's budgets count the same
(:mod:`wheelstore.service.quota`).
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field

from ..base.fsio import open_dir
from . import rootcheck
from .policy import user_name
from .store import Store


@dataclass
class Usage:
    """Allocated bytes and inodes of a walk, and how many entries could not be read."""

    bytes: int = 0
    inodes: int = 0
    unreadable: int = 0

    def __iadd__(self, other: Usage) -> Usage:
        self.bytes += other.bytes
        self.inodes += other.inodes
        self.unreadable += other.unreadable
        return self


class Seen:
    """The inodes a measurement counted already, so each counts once however many hard links lead to it.

    Through two mounts of one network filesystem (GlusterFS gives each FUSE mount its own device number) one inode
    shows under two devices with one inode number: so a hard-linked file under another device than the store's, with
    the inode number, size, mtime and ctime of a hard-linked store file counted already, is taken for that file.
    """

    def __init__(self) -> None:
        self._ids: set[tuple[int, int]] = set()
        self.store_walk = False  #: set while the store is walked
        #: the store's hard-linked files by inode number: (device, size, mtime, ctime)
        self._linked: dict[int, tuple[int, int, int, int]] = {}

    def first(self, st: os.stat_result) -> bool:
        """Whether ``st`` is an inode not counted before (it is counted from now on)."""
        ident = (st.st_dev, st.st_ino)
        if ident in self._ids:
            return False
        self._ids.add(ident)
        if st.st_nlink < 2 or not stat.S_ISREG(st.st_mode):
            return True
        if self.store_walk:
            self._linked[st.st_ino] = (st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            return True
        known = self._linked.get(st.st_ino)
        return known is None or known[0] == st.st_dev or known[1:] != (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def usage(name: str, *, dir_fd: int | None = None, seen: Seen | None = None, skip_root: bool = False) -> Usage:
    """``du -s`` of ``name``: blocks and inodes of it and everything below, skipping inodes already in ``seen``.

    With ``skip_root`` the top directory itself is not counted (a unit's root becomes the venv's site-packages).
    """
    seen = Seen() if seen is None else seen
    total = Usage()
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return total
    if not skip_root:
        _count(st, seen, total)
    if stat.S_ISDIR(st.st_mode):
        try:
            fd = open_dir(name, dir_fd=dir_fd)
        except OSError:
            total.unreadable += 1
            return total
        try:
            _walk(fd, seen, total)
        finally:
            os.close(fd)
    return total


def _count(st: os.stat_result, seen: Seen, total: Usage) -> None:
    if seen.first(st):
        total.bytes += st.st_blocks * 512
        total.inodes += 1


def _walk(fd: int, seen: Seen, total: Usage) -> None:
    try:
        names = os.listdir(fd)
    except OSError:
        total.unreadable += 1
        return
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        except OSError:
            total.unreadable += 1
            continue
        _count(st, seen, total)
        if stat.S_ISDIR(st.st_mode):
            try:
                sub = open_dir(name, dir_fd=fd)
            except OSError:
                total.unreadable += 1
                continue
            try:
                _walk(sub, seen, total)
            finally:
                os.close(sub)


@dataclass
class VenvStats:
    venv: str
    user: str
    units: list[str]  #: the store units it links (trees and pyc units)
    logical: Usage = field(default_factory=Usage)
    pyc_logical_bytes: int = 0
    physical: Usage = field(default_factory=Usage)  #: its own inodes, beyond those it shares with the store

    def to_json(self) -> dict[str, object]:
        return {
            "venv": self.venv,
            "user": self.user,
            "units": len(self.units),
            "logical_bytes": self.logical.bytes,
            "logical_inodes": self.logical.inodes,
            "pyc_logical_bytes": self.pyc_logical_bytes,
            "physical_bytes": self.physical.bytes,
            "physical_inodes": self.physical.inodes,
        }


@dataclass
class Stats:
    store: str
    store_usage: Usage
    venvs: list[VenvStats]
    stale_roots: int
    notes: list[str] = field(default_factory=list)
    shares: dict[str, Share] = field(default_factory=dict)  #: by user name: what their roots pin

    @property
    def logical(self) -> Usage:
        total = Usage()
        for v in self.venvs:
            total += v.logical
        return total

    @property
    def physical(self) -> Usage:
        total = Usage()
        total += self.store_usage
        for v in self.venvs:
            total += v.physical
        return total

    def users(self) -> dict[str, list[VenvStats]]:
        """Each user's venvs, by name: every owner of a venv counted or of a root that pins something."""
        by_user: dict[str, list[VenvStats]] = {user: [] for user in self.shares}
        for v in self.venvs:
            by_user.setdefault(v.user, []).append(v)
        return dict(sorted(by_user.items()))

    def to_json(self) -> dict[str, object]:
        logical, physical = self.logical, self.physical
        users = []
        for user, venvs in self.users().items():
            lg, ph = Usage(), Usage()
            for v in venvs:
                lg += v.logical
                ph += v.physical
            share = self.shares.get(user)
            users.append({"user": user, "venvs": len(venvs), "logical_bytes": lg.bytes, "logical_inodes": lg.inodes,
                          "physical_bytes": ph.bytes, "physical_inodes": ph.inodes,
                          **(share.to_json() if share is not None else _NO_SHARE)})
        return {
            "store": self.store,
            "logical_bytes": logical.bytes,
            "logical_inodes": logical.inodes,
            "physical_bytes": physical.bytes,
            "physical_inodes": physical.inodes,
            "store_bytes": self.store_usage.bytes,
            "store_inodes": self.store_usage.inodes,
            "savings_bytes": logical.bytes - physical.bytes,
            "savings_inodes": logical.inodes - physical.inodes,
            "venvs": [v.to_json() for v in self.venvs],
            "users": users,
            "stale_roots": self.stale_roots,
            "notes": self.notes,
        }


_NO_SHARE = {"exclusive_units": 0, "exclusive_bytes": 0, "exclusive_inodes": 0, "shared_units": 0, "shared_bytes": 0,
             "shared_inodes": 0}


def measure(store: Store) -> Stats:
    """Measure the store and every venv a live root names that can be checked from here (venvs on other nodes'
    local disks are counted by a stats run there)."""
    marks = rootcheck.Marks(store)
    marks.update()
    held: dict[str, set[str]] = {}
    for root, found in marks.judged.values():
        if found.state == rootcheck.CHECKED and found.keys:
            held.setdefault(root.venv, set()).update(found.keys)
    seen = Seen()
    seen.store_walk = True
    store_usage = usage(os.fspath(store.root), seen=seen)
    seen.store_walk = False
    trees_fd = store.area_fd("trees")
    unit_usage: dict[str, Usage] = {}
    venvs = []
    for venv, keys in sorted(held.items()):
        try:
            owner = user_name(os.stat(venv, follow_symlinks=False).st_uid)
        except OSError:
            continue
        stats = VenvStats(venv, owner, sorted(keys))
        for key in stats.units:
            if key not in unit_usage:
                unit_usage[key] = usage(key, dir_fd=trees_fd, skip_root=True)
            stats.logical += unit_usage[key]
            if "-" in key:
                stats.pyc_logical_bytes += unit_usage[key].bytes
        stats.physical = usage(venv, seen=seen)
        venvs.append(stats)
    by_uid = shares(pins(marks), UnitSizes(store))
    result = Stats(os.fspath(store.root), store_usage, venvs, len(marks.stale()),
                   shares={share.user: share for share in by_uid.values()})
    _notes(result, marks)
    return result


def _notes(result: Stats, marks: rootcheck.Marks) -> None:
    unreadable = len(marks.unreadable) + len(marks.in_state(rootcheck.UNREADABLE))
    if unreadable:
        result.notes.append(f"{unreadable} roots or venvs could not be read and are not counted; run as root for all "
                            "of them")
    elsewhere = len(marks.in_state(rootcheck.BELIEVED))
    if elsewhere:
        result.notes.append(f"{elsewhere} venvs cannot be seen from here (on another node's local disk, or hidden "
                            "from this process) and are not counted; run stats on their nodes")
    entries = result.store_usage.unreadable + sum(v.physical.unreadable for v in result.venvs)
    if entries:
        result.notes.append(f"{entries} entries could not be read and are not counted; run as root for exact "
                            "numbers")


# -- who pins what -----------------------------------------------------------------------------------------------------


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


def measure_shares(store: Store, sizes: UnitSizes | None = None) -> dict[int, Share]:
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
