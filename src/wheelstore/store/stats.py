"""stats: what the venvs would take as plain copies (logical) against what the store and the venvs use (physical).

Physical is measured the way ``du`` measures: allocated blocks (``st_blocks * 512``) and inodes, each inode counted
once however many hard links it has, walking by directory fd without following symlinks (a symlink counts as itself:
a fast one takes no block, a long one a whole block). The store is walked first, so a hard link in a venv costs that
venv nothing, while a symlink, a reflink or a copy costs what its own inode allocates. Reflinked files are counted
whole, as ``du`` counts them, although they share blocks with the store (``df`` shows less).

Logical is, per live venv (a root :func:`~wheelstore.store.roots.confirm` confirms), the allocated size of every
store unit it links, trees and their pyc units alike (a venv without the store would hold those pycs too, once
imported), as if each were a private copy.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from ..base.fsio import open_dir
from . import roots as rootmod
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


def usage(
    name: str, *, dir_fd: int | None = None, seen: set[tuple[int, int]] | None = None, skip_root: bool = False
) -> Usage:
    """``du -s`` of ``name``: blocks and inodes of it and everything below, skipping inodes already in ``seen``.

    With ``skip_root`` the top directory itself is not counted (a unit's root becomes the venv's site-packages).
    """
    seen = set() if seen is None else seen
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


def _count(st: os.stat_result, seen: set[tuple[int, int]], total: Usage) -> None:
    ident = (st.st_dev, st.st_ino)
    if ident in seen:
        return
    seen.add(ident)
    total.bytes += st.st_blocks * 512
    total.inodes += 1


def _walk(fd: int, seen: set[tuple[int, int]], total: Usage) -> None:
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
        by_user: dict[str, list[VenvStats]] = {}
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
            users.append({"user": user, "venvs": len(venvs), "logical_bytes": lg.bytes, "logical_inodes": lg.inodes,
                          "physical_bytes": ph.bytes, "physical_inodes": ph.inodes})
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


def measure(store: Store) -> Stats:
    """Measure the store and every venv a live root names."""
    same = rootmod.SameStore(store)
    held: dict[str, set[str]] = {}
    stale = 0
    unreadable: list[str] = []
    unverified = 0
    for root in rootmod.read_roots(store, unreadable):
        found = rootmod.confirm(store, root, same)
        if not found.verified:
            unverified += 1
        elif found.keys:
            held.setdefault(root.venv, set()).update(found.keys)
        else:
            stale += 1
    seen: set[tuple[int, int]] = set()
    store_usage = usage(os.fspath(store.root), seen=seen)
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
    result = Stats(os.fspath(store.root), store_usage, venvs, stale)
    if unreadable or unverified:
        result.notes.append(f"{len(unreadable)} roots and {unverified} venvs could not be read and are not counted; "
                            "run as root for all of them")
    entries = store_usage.unreadable + sum(v.physical.unreadable for v in venvs)
    if entries:
        result.notes.append(f"{entries} entries could not be read and are not counted; run as root for exact "
                            "numbers")
    return result
