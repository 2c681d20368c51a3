"""The install-time check on a network filesystem: a stat of each tree's root instead of a walk of every file, for
trees this user's own earlier walk on this node found intact.

Over FUSE or NFS a stat is a round trip (about 256 us on GlusterFS): walking every file of the benchmark set's 36
trees made a warm install 44 times slower than from a local disk (bench.p7). So where the store is on a network
filesystem (:func:`~wheelstore.base.fsio.network_fs` of ``trees/``), each walk that finds a tree intact leaves a
record in this user's cache (one file per store and node, 0600, read only when the user's own: it is this user's
word, not another member's): the manifest file's identity (inode, size, mtime, ctime) and the tree directory's
(inode, mode, owner, group, mtime, ctime), both taken before the walk. A later install on this node that finds both
unchanged takes the tree as intact without walking it: one stat, beside the manifest's open and the tree's stat
that every lookup makes.

What only the tree's owner (or root) could do, since trees are read-only to everyone else, and what the record
catches, once this client's attribute cache shows it (a second on GlusterFS's FUSE mount; up to ``acdirmax``, 60 s
by default, on NFS):

- caught: the tree or its manifest replaced (a repair's quarantine, gc, a re-publish: new inodes); the manifest
  rewritten or chmod-ed; the tree directory renamed away, chmod-ed or chown-ed, or an entry added, removed or renamed
  directly in it (its mtime moves; and its owner must make it writable first, which moves its ctime, and nobody can
  set a ctime back). Any of these sends the tree to a full walk, which refuses or repairs it as on a local disk.
- not caught: a file rewritten in place anywhere in the tree, or an entry added, removed or renamed in one of its
  subdirectories: that moves only the file's or the subdirectory's times, which only a walk reads. ``wheelstore
  verify`` does that walk (run it from cron: see the README); its ``--repair`` quarantines what it finds damaged,
  which every user's next install sees as a new tree. On sshfs, whose ctime follows the mtime, a root directory
  whose mtime was put back passes too (as a file's does in a walk there).

On a local disk a walk costs about 1 us a file, so it stays: every install there still sees every file, as before.
Trees an install hard-links are walked too: the marks need their link counts from just before
(:func:`wheelstore.venv.checks.linked`).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Collection, Sequence

from ..base import usercache
from ..base.fsio import network_fs
from ..store.store import Store, Tree, cache_id
from ..store.verify import Damage, VerifyMarks, check_tree

_FORMAT = 1
#: records kept per store and node, the most recently walked: gc removes trees but not their records
_MAX_RECORDS = 20_000

#: one record: when the walk started (ns, for pruning only), the manifest's and the tree directory's identities
Record = tuple[int, tuple[int, ...], tuple[int, ...]]

_OPEN: weakref.WeakKeyDictionary[Store, Records] = weakref.WeakKeyDictionary()


class Records:
    """This user's records of intact trees for one store on this node (see the module docstring). Use :meth:`of`,
    one per store and process; a forked checker saves its own before it leaves."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = f"fastcheck/{cache_id(store.root)}-{os.uname().nodename}.json"
        #: the network filesystem the store's trees are on, or None (a local disk: no records, every tree walked)
        self.fs = network_fs(store.area_fd("trees"))
        self.records = self._load() if self.fs else {}
        self._changed: set[str] = set()
        #: keys of the trees (and pyc units) this process took on their records, and of those it had walked
        self._vouched: set[str] = set()
        self._walked: set[str] = set()

    @classmethod
    def of(cls, store: Store) -> Records:
        found = _OPEN.get(store)
        if found is None:
            found = _OPEN[store] = cls(store)
        return found

    @classmethod
    def opened(cls, store: Store) -> Records | None:
        """The records :meth:`of` made in this process, if any: nothing to save or say otherwise."""
        return _OPEN.get(store)

    def _load(self) -> dict[str, Record]:
        data = usercache.read_json(self.name)
        entries = data.get("trees") if isinstance(data, dict) and data.get("format") == _FORMAT else None
        if not isinstance(entries, dict):
            return {}
        records: dict[str, Record] = {}
        for key, raw in entries.items():
            try:
                at, manifest, root = raw
                records[key] = (int(at), tuple(map(int, manifest)), tuple(map(int, root)))
            except (TypeError, ValueError):
                continue
        return records

    def vouches(self, tree: Tree) -> bool:
        """Whether this node's record of a walk that found ``tree`` intact still holds: the same manifest file as
        then, and the same tree directory (one stat, once per process). Never on a local disk."""
        if tree.key in self._vouched:
            return True
        if not self.fs or tree.stamp is None:
            return False
        record = self.records.get(tree.key)
        if record is None or record[1] != tree.stamp[1:] or _identity(self.store, tree.key) != record[2]:
            return False
        self._vouched.add(tree.key)
        return True

    def split(self, trees: Sequence[Tree], walk: Collection[str] = ()) -> tuple[set[str], list[Tree]]:
        """The keys of ``trees`` their records vouch for, and the trees to walk: the rest, and those in ``walk``
        whatever their records say."""
        vouched = {t.key for t in trees if t.key not in walk and self.vouches(t)}
        rest = [t for t in trees if t.key not in vouched]
        self._walked.update(t.key for t in rest)
        return vouched, rest

    def walk(self, tree: Tree, checkpoints: VerifyMarks) -> list[Damage]:
        """:func:`check_tree`, recording the outcome: the identities are taken before the walk (the manifest's when
        it was looked up, or now for a tree this process published), so a change made while it runs leaves a record
        that no longer holds."""
        seen = (_manifest(self.store, tree), _identity(self.store, tree.key)) if self.fs else None
        started = time.time_ns()
        damage = check_tree(self.store, tree, checkpoints=checkpoints)
        if damage:
            self.forget(tree.key)
        elif seen is not None and seen[0] is not None and seen[1] is not None:
            self.records[tree.key] = (started, seen[0], seen[1])
            self._changed.add(tree.key)
        return damage

    def forget(self, key: str) -> None:
        if self.records.pop(key, None) is not None:
            self._changed.add(key)

    def save(self) -> None:
        """Merge this process's changes into the file (the later walk wins), atomically and 0600; never fail."""
        if not self._changed:
            return
        merged = self._load()
        usercache.merge_changes(merged, self.records, self._changed, lambda record: record[0])
        kept = sorted(merged.items(), key=lambda item: item[1][0])[-_MAX_RECORDS:]
        entries = {key: [at, list(manifest), list(root)] for key, (at, manifest, root) in kept}
        if usercache.write_json(self.name, {"format": _FORMAT, "store": str(self.store.root), "trees": entries},
                                compact=True):
            self._changed.clear()

    def summary(self) -> str | None:
        """One line for ``-v``: how this process checked the trees it was given, or None if it checked none."""
        walked, vouched = len(self._walked), len(self._vouched - self._walked)
        if not walked and not vouched:
            return None
        where = f"the store is on {self.fs}" if self.fs else "the store is on a local disk"
        return (f"checked {walked + vouched} trees: {walked} walked, {vouched} by this node's record of an earlier "
                f"walk ({where})")


def _manifest(store: Store, tree: Tree) -> tuple[int, ...] | None:
    """The manifest file's (inode, size, mtime, ctime), as :meth:`Store.lookup` keeps them in ``Tree.stamp``."""
    if tree.stamp is not None:
        return tuple(tree.stamp[1:])
    try:
        st = os.stat(f"{tree.key}.json", dir_fd=store.area_fd("manifests"), follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _identity(store: Store, key: str) -> tuple[int, ...] | None:
    """What anyone who changes the top of tree ``key`` cannot keep unchanged, or None when it cannot be seen."""
    try:
        st = os.stat(key, dir_fd=store.area_fd("trees"), follow_symlinks=False)
    except OSError:
        return None
    return st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ctime_ns
