"""Verify: is every published tree still exactly what its manifest says? Only reads the store.

Published trees are read-only, but their owner can still ``chmod u+w`` and edit one. The quick check compares a stat
signature of every entry (type, size, mode, mtime, owner, group; read through directory fds, never following a
symlink) with the manifest and lists missing and extra entries; it reads no file contents. Any write or chmod also
moves the file's ctime, which nobody can set back, so a ctime that differs while everything else matches means
"re-hash this file" (its mtime may have been restored), not "damaged": ctime also moves whenever a hard link to the
file is added or removed, which the owner's hardlink installs do all the time.

So that links do not make every later check re-hash everything, each user keeps, per store and host, a *mark* per
tree (:class:`VerifyMarks`): a time V such that every file of the tree whose ctime is older than V is known intact,
and each file's (inode, link count) at V. A file changed after V has a ctime after V (less one clock tick), so it is
looked at again: if only its link count differs from the mark's (same inode, size, mtime, mode, owner), a link was
added or removed (a venv deleted) and it is taken as intact; otherwise it is re-hashed. V is set when a walk that
started at S found the whole tree intact (V = S less a margin for the clock's granularity), and right after this
user's own hardlink install of a tree it had just checked (every ctime change in between is taken to be that
install's links). A mark also keeps when a walk last listed every directory of the tree: a directory whose ctime
is older has exactly the manifest's entries (adding, removing or renaming one moves it), so later checks look its
names up instead of listing it; installs never move that time. What the quick check cannot see: a write whose mtime
and mode were put back *and* that coincides with a link count change, or that falls inside an install's own window.
In a service store (:mod:`wheelstore.service`) nobody but its owner can write a tree, and every user's venvs hold
the service's hard links, made and removed all the time, so that a count often comes back to the mark's (one venv
deleted, another made): there a file of the mark's inode whose signature matches is taken as intact by every user
but the owner, whatever its link count (the owner, whom every user trusts as the publisher, could as well time a
write with a link change).
``full=True`` re-hashes every file whatever its signature and trusts no mark.

This module checks one tree (:func:`check_tree`) and the whole store (:func:`verify_store`, ``wheelstore verify``)
and keeps the marks. Changing the store to mend what it finds is :mod:`repair`'s; the checks an install runs around
linking are the venv layer's (:mod:`wheelstore.venv.checks`).
"""

from __future__ import annotations

import base64
import errno
import marshal
import os
import stat
import time
import weakref
from array import array
from typing import NamedTuple

from ..base import fsio, usercache
from ..base.errors import StoreError, printable
from ..base.fsio import open_dir
from .bytecode import distrust
from .manifest import FileEntry, named
from .orphans import Orphan, find_orphans
from .policy import Role, user_name
from .store import MAX_MANIFEST, Store, Tree, cache_id

#: file timestamps come from a coarse clock (one tick, 1-10 ms): a ctime this close to a check's start is not trusted
RACY_NS = 20_000_000
_S_IFREG = stat.S_IFREG


class Damage(NamedTuple):
    """One entry of a tree that differs from the manifest."""

    name: str
    version: str
    key: str
    unit: str  #: "tree" (a wheel's files) or "bytecode" (a pyc unit)
    path: str  #: relative to the tree; "" for the tree (or its manifest) as a whole
    problem: str  #: missing, extra, type, content, mode, owner, group, unreadable, untrusted
    detail: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name, "version": self.version, "key": self.key, "unit": self.unit,
            "path": self.path, "problem": self.problem, "detail": self.detail,
        }

    def describe(self) -> str:
        """One line for people: the path and detail come from a tree anyone in the group may have filled, so control
        characters are spelled out (``to_json`` keeps them exact)."""
        return printable(f"{self.path or '(the tree itself)'}: {self.detail}")


class Checked:
    """The outcome of checking one tree."""

    def __init__(self) -> None:
        self.damage: list[Damage] = []
        self.files = 0
        self.rehashed = 0
        self.relinked = 0  #: files whose ctime moved with their link count only: not re-hashed
        self.listed = 0  #: directories listed (changed since the mark, or no mark), not only looked up by name


class Repaired(NamedTuple):
    """One unit :mod:`repair` quarantined (and published again): here because :class:`VerifyReport` lists them."""

    name: str
    version: str
    key: str
    unit: str
    wheel: str | None  #: the wheel it was published from again (None for bytecode: the next install recompiles)
    quarantined: tuple[str, ...]  #: where the damaged copy went, relative to the store

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "key": self.key, "unit": self.unit,
                "wheel": self.wheel, "quarantined": list(self.quarantined)}


class VerifyReport:
    """What ``wheelstore verify`` found and did."""

    def __init__(self, store: str, full: bool) -> None:
        self.store = store
        self.full = full
        self.trees = 0
        self.files = 0
        self.rehashed = 0
        self.relinked = 0
        self.damaged: list[Damage] = []
        self.repaired: list[Repaired] = []
        self.unrepaired: list[tuple[str, str, str, str]] = []  #: (name, version, key, reason)
        self.orphans: list[Orphan] = []  #: reported, but not damage: nobody uses them (see :mod:`orphans`)

    @property
    def still_damaged(self) -> list[str]:
        """Keys of damaged trees that were not repaired."""
        fixed = {r.key for r in self.repaired}
        return sorted({d.key for d in self.damaged} - fixed)

    @property
    def ok(self) -> bool:
        return not self.still_damaged

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "full": self.full,
            "ok": self.ok,
            "checked": {"trees": self.trees, "files": self.files, "rehashed": self.rehashed,
                        "relinked": self.relinked},
            "damaged": [d.to_json() for d in self.damaged],
            "repaired": [r.to_json() for r in self.repaired],
            "unrepaired": [{"name": n, "version": v, "key": k, "reason": why} for n, v, k, why in self.unrepaired],
            "orphans": [o.to_json() for o in self.orphans],
        }


# -- checkpoints ------------------------------------------------------------------------------------------------------


class Mark:
    """One tree's checkpoint: every file whose ctime is older than ``at`` is intact; ``links`` holds each file's
    (inode, link count) at ``at``, in manifest order, when known."""

    def __init__(self, at: int, links: list[tuple[int, int]] | None = None, *, listed: int = 0,
                 packed: tuple[str, str] | None = None) -> None:
        self.at = at
        self.links = links
        #: every directory of the tree whose ctime is older than this held exactly the manifest's entries (a walk
        #: listed them all); an install's own links never move it, unlike ``at``
        self.listed = listed
        #: ``links`` as stored (base64 of inode and link-count arrays), decoded only when a check needs them: most
        #: installs find no ctime past the mark and never look
        self.packed = packed

    def unpacked(self) -> list[tuple[int, int]] | None:
        if self.links is None and self.packed is not None:
            # as before: the two packed arrays of a marks file, whatever else a damaged one holds
            inos, nlinks = (array(t, base64.b64decode(b)) for t, b in zip("QI", self.packed, strict=False))
            self.links = list(zip(inos, nlinks, strict=True)) if len(inos) == len(nlinks) else None
            self.packed = None
        return self.links

    def pack(self) -> tuple[str, str] | None:
        if self.packed is None and self.links is not None:
            inos = array("Q", (i for i, _ in self.links)).tobytes()
            nlinks = array("I", (n for _, n in self.links)).tobytes()
            self.packed = base64.b64encode(inos).decode(), base64.b64encode(nlinks).decode()
        return self.packed


_OPEN: weakref.WeakKeyDictionary[Store, VerifyMarks] = weakref.WeakKeyDictionary()


class VerifyMarks:
    """This user's checkpoints for one store on this host (tree key -> :class:`Mark`), see the module docstring.

    Kept in the user's private cache, never in the store: each user trusts only checks they made themselves. A lost
    or unreadable file only costs re-hashing. Use :meth:`of` to share one per store within a process.
    """

    def __init__(self, store: Store) -> None:
        self.name = f"verified/{cache_id(store.root)}-{os.uname().nodename}.json"
        self.store_root = str(store.root)
        self.marks = self._load()
        #: what the last check in this process saw: key -> {file: (inode, link count)}
        self.observed: dict[str, dict[str, tuple[int, int]]] = {}
        self._changed: set[str] = set()

    @classmethod
    def of(cls, store: Store) -> VerifyMarks:
        found = _OPEN.get(store)
        if found is None:
            found = _OPEN[store] = cls(store)
        return found

    def _load(self) -> dict[str, Mark]:
        data = usercache.read_json(self.name)
        trees = data.get("trees") if isinstance(data, dict) and data.get("format") == 2 else None
        if not isinstance(trees, dict):
            return {}
        marks = {}
        for key, raw in trees.items():
            try:
                at, ino, nlink, *rest = raw
                packed = (str(ino), str(nlink)) if isinstance(ino, str) and isinstance(nlink, str) else None
                marks[key] = Mark(int(at), packed=packed, listed=int(rest[0]) if rest else 0)
            except (TypeError, ValueError):
                continue
        return marks

    def get(self, key: str) -> Mark:
        return self.marks.get(key) or Mark(0)

    def set(self, key: str, mark: Mark) -> None:
        self.marks[key] = mark
        self._changed.add(key)

    def forget(self, key: str) -> None:
        self.marks.pop(key, None)
        self.observed.pop(key, None)
        self._changed.add(key)

    def save(self) -> None:
        """Merge our changes into the file on disk (the later mark wins), atomically and 0600; never fail."""
        if not self._changed:
            return
        merged = self._load()
        usercache.merge_changes(merged, self.marks, self._changed, lambda mark: mark.at)
        trees: dict[str, object] = {}
        for key, mark in sorted(merged.items()):
            packed = mark.pack()
            trees[key] = [mark.at, *(packed or (None, None)), mark.listed]
        if usercache.write_json(self.name, {"format": 2, "store": self.store_root, "trees": trees}, compact=True):
            self._changed.clear()


# -- checking one tree ------------------------------------------------------------------------------------------------


def unit_of(key: str) -> str:
    """A pyc unit's key is the tree's key plus its cache tag."""
    return "bytecode" if len(key) > 64 else "tree"


def check_tree(store: Store, tree: Tree, *, full: bool = False, checkpoints: VerifyMarks | None = None) -> list[Damage]:
    """Every way ``tree`` differs from its manifest; empty when it is intact. ``full`` re-hashes every file."""
    store = store.home(tree)  # an overlay's site store's tree: checked in the site store, by its policy
    marks = checkpoints or VerifyMarks.of(store)
    damage = _Walk(store, tree, full, marks).run().damage
    if checkpoints is None:
        marks.save()
    return damage


#: one directory of a tree as the check reads it: its files' names, their (mode, size, mtime, ctime) four numbers
#: each in one int64 array, and its subdirectories' names; keyed by the directory's path with a trailing "/" ("" for
#: the tree itself)
Table = dict[str, tuple[list[str], "memoryview | array[int]", list[str]]]
#: bumped whenever the kept form of a table changes (2: only from manifests that passed :mod:`manifest_check`)
_TABLE_FORMAT = 2


def table_of(store: Store, tree: Tree) -> Table:
    """The tree's manifest by directory, as :class:`_Walk` reads it. Kept in the user's cache per manifest file
    (:attr:`Tree.stamp`): a check that finds the tree as sealed then never parses the manifest's file list (JSON,
    1 us a file), and builds no per-directory lists from it."""
    name = f"checks/{cache_id(store.root)}/{tree.key}"
    if tree.stamp is not None and (data := usercache.read_bytes(name)) is not None:
        try:
            fmt, stamp, kept = marshal.loads(data)
            if fmt == _TABLE_FORMAT and stamp == tree.stamp:
                return {d: (names, memoryview(numbers).cast("q"), subdirs)
                        for d, (names, numbers, subdirs) in kept.items()}
        except (EOFError, ValueError, TypeError, AttributeError):  # not a table this wrote: made again
            pass
    table: dict[str, tuple[list[str], array[int], list[str]]] = {"": ([], array("q"), [])}
    m = tree.manifest
    for d in m.dirs:
        head, _, base = d.rpartition("/")
        table.setdefault(head + "/" if head else "", ([], array("q"), []))[2].append(base)
        table.setdefault(d + "/", ([], array("q"), []))
    for rel, e in m.files.items():
        head, _, base = rel.rpartition("/")
        names, numbers, _subdirs = table.setdefault(head + "/" if head else "", ([], array("q"), []))
        names.append(base)
        numbers.extend((e.mode, e.size, e.mtime_ns, e.ctime_ns))
    if tree.stamp is not None:
        kept = {d: (names, numbers.tobytes(), subdirs) for d, (names, numbers, subdirs) in table.items()}
        usercache.write_bytes(name, marshal.dumps((_TABLE_FORMAT, tree.stamp, kept)))
    return dict(table)


class _Walk:
    """One pass over a tree by directory fds, comparing each entry with the manifest (by its :func:`table_of`)."""

    def __init__(self, store: Store, tree: Tree, full: bool, checkpoints: VerifyMarks) -> None:
        self.store = store
        self.tree = tree
        self.m = tree.manifest
        self.full = full
        self.checkpoints = checkpoints
        self.mark = checkpoints.get(tree.key)
        self._links: dict[str, tuple[int, int]] | None = None
        self.table = table_of(store, tree)
        self.observed: dict[str, tuple[int, int]] = {}
        self.result = Checked()
        self.gid = store.policy.gid
        self.dir_mode = store.policy.mode(Role.PUBLISHED_DIR)
        #: on a network filesystem every directory is listed, unchanged ones too: the listing (READDIRPLUS) brings
        #: its entries' attributes into the client's cache, so the stats after it are answered there, not each by a
        #: round trip (16,728 files on GlusterFS: 2.5 s instead of 6.7 s)
        self.list_all = full or fsio.network_fs(store.area_fd("trees")) is not None
        #: a service store's files: see the module docstring
        self.any_count = store.service is not None and os.geteuid() != self.m.owner_uid

    def damaged(self, path: str, problem: str, detail: str) -> None:
        m = self.m
        self.result.damage.append(Damage(m.name, m.version, self.tree.key, unit_of(self.tree.key), path, problem,
                                         detail))

    def run(self) -> Checked:
        started = time.time_ns()
        try:
            root_fd = open_dir(self.tree.key, dir_fd=self.store.area_fd("trees"))
        except FileNotFoundError:
            self.damaged("", "missing", "the tree is missing")
            return self.result
        except OSError as e:
            self.damaged("", "type" if e.errno in (errno.ELOOP, errno.ENOTDIR) else "unreadable",
                         f"the tree cannot be opened as a directory: {e.strerror}")
            return self.result
        try:
            root_st = os.fstat(root_fd)
            self._check_dir("", root_st)
            self._walk(root_fd, "", root_st)
        finally:
            os.close(root_fd)
        self.result.damage.sort(key=lambda d: d.path)
        key, result = self.tree.key, self.result
        self.checkpoints.observed[key] = self.observed
        if (result.rehashed or result.relinked or result.listed) and not result.damage:  # else the old mark holds
            at = started - RACY_NS
            self.checkpoints.set(key, Mark(at, [self.observed[r] for r in self.m.files], listed=at))
        return result

    def links_at_mark(self) -> dict[str, tuple[int, int]]:
        if self._links is None:
            links = self.mark.unpacked()
            ok = links is not None and len(links) == len(self.m.files)
            self._links = dict(zip(self.m.files, links, strict=True)) if links is not None and ok else {}
        return self._links

    def _check_dir(self, rel: str, st: os.stat_result) -> bool:
        """Report a directory's wrong mode, owner or group; False if it is not a directory at all."""
        if not stat.S_ISDIR(st.st_mode):
            self.damaged(rel, "type", f"is {_kind(st)} where a directory should be")
            return False
        problems = self._owner_problems(st)
        if stat.S_IMODE(st.st_mode) != self.dir_mode:
            problems.append(("mode", f"mode {_octal(st)}, expected {self.dir_mode:#o}"))
        if problems:
            self.damaged(rel, problems[0][0], "; ".join(d for _, d in problems))
        return True

    def _owner_problems(self, st: os.stat_result) -> list[tuple[str, str]]:
        problems = []
        if st.st_uid != self.m.owner_uid:
            problems.append(("owner", f"owned by {user_name(st.st_uid)}, not {user_name(self.m.owner_uid)}"))
        if self.gid is not None and st.st_gid != self.gid:
            problems.append(("group", f"group id {st.st_gid}, not the store's group {self.store.policy.group}"))
        return problems

    def _walk(self, dir_fd: int, prefix: str, dir_st: os.stat_result) -> None:
        """Check one directory, then walk its subdirectories. Every install runs this over every file of every tree
        it links, so the common case (a file whose signature matches, with no ctime past the mark) is one
        comparison, inline.

        A directory whose ctime is older than the mark's ``listed`` has had no entry added, removed or renamed since
        a walk listed it, so on a local disk only the manifest's names are looked up (three system calls fewer per
        directory); any other is listed too, for entries the manifest does not have. A name of the manifest's that
        is not there is missing, and nothing below a missing directory is reported again."""
        names, numbers, subdirs = self.table.get(prefix) or ([], array("q"), [])
        if self.list_all or dir_st.st_ctime_ns >= self.mark.listed:
            self.result.listed += 1
            self._extras(dir_fd, prefix, {*names, *subdirs})
        observed, result = self.observed, self.result
        uid, gid, at, full = self.m.owner_uid, self.gid, self.mark.at, self.full
        for i, name in enumerate(names):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                self.damaged(prefix + name, "missing", "the file is missing")
                continue
            result.files += 1
            j = 4 * i
            if (st.st_mode != _S_IFREG | numbers[j] or st.st_size != numbers[j + 1]
                    or st.st_mtime_ns != numbers[j + 2] or st.st_uid != uid or (gid is not None and st.st_gid != gid)):
                self._file_problems(prefix + name, st, self.m.files[prefix + name])
                continue
            observed[prefix + name] = (st.st_ino, st.st_nlink)
            if full:
                self._rehash(dir_fd, name, prefix + name)
            elif st.st_ctime_ns != numbers[j + 3] and st.st_ctime_ns >= at:
                before = self.links_at_mark().get(prefix + name)
                if before is not None and before[0] == st.st_ino and (before[1] != st.st_nlink or self.any_count):
                    result.relinked += 1  # a hard link was added or removed since the mark
                else:
                    self._rehash(dir_fd, name, prefix + name)
        for name in subdirs:
            self._subdir(dir_fd, name, prefix + name)

    def _extras(self, dir_fd: int, prefix: str, expected: set[str]) -> None:
        for name in os.listdir(dir_fd):
            if name not in expected:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue  # gone again
                self.damaged(prefix + name, "extra", f"{_kind(st)} that the manifest does not list")

    def _subdir(self, dir_fd: int, name: str, rel: str) -> None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            self.damaged(rel, "missing", "the directory is missing")
            return
        if not self._check_dir(rel, st):
            return
        try:
            sub = open_dir(name, dir_fd=dir_fd)
        except OSError as err:
            self.damaged(rel, "unreadable", f"cannot be read: {err.strerror}")
            return
        try:
            self._walk(sub, rel + "/", os.fstat(sub))  # what was opened: its ctime says whether to list it
        finally:
            os.close(sub)

    def _file_problems(self, rel: str, st: os.stat_result, entry: FileEntry) -> None:
        """Report what is wrong with a file whose signature does not match its entry."""
        if not stat.S_ISREG(st.st_mode):
            self.damaged(rel, "type", f"is {_kind(st)} where a file should be")
            return
        problems = []
        if st.st_size != entry.size:
            problems.append(("content", f"size {st.st_size}, expected {entry.size}"))
        elif st.st_mtime_ns != entry.mtime_ns:
            problems.append(("content", "modified (its mtime changed)"))
        if stat.S_IMODE(st.st_mode) != entry.mode:
            problems.append(("mode", f"mode {_octal(st)}, expected {entry.mode:#o}"))
        problems += self._owner_problems(st)
        self.damaged(rel, problems[0][0], "; ".join(d for _, d in problems))

    def _rehash(self, dir_fd: int, name: str, rel: str) -> None:
        self.result.rehashed += 1
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            self.damaged(rel, "unreadable", f"cannot be read: {e.strerror}")
            return
        with os.fdopen(fd, "rb", buffering=0) as f:
            digest = fsio.sha256_stream(f)
        if digest != self.m.files[rel].sha256:
            self.damaged(rel, "content", "its content differs from the manifest")


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a file"
    return "a special file"


def _octal(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):#o}"


# -- the whole store --------------------------------------------------------------------------------------------------


def verify_store(store: Store, *, full: bool = False) -> VerifyReport:
    """Check every committed tree and pyc unit against its manifest (``wheelstore verify``); repairing what is
    damaged is :func:`repair.verify_and_repair`'s."""
    checkpoints = VerifyMarks.of(store)
    report = check_store(store, full, checkpoints)
    checkpoints.save()
    report.orphans = find_orphans(store)
    return report


def check_store(store: Store, full: bool, checkpoints: VerifyMarks) -> VerifyReport:
    """Every committed tree and pyc unit checked, into a report without its orphans; ``checkpoints`` not saved."""
    report = VerifyReport(str(store.root), full)
    for key in sorted(k for k in store.keys() if len(k) >= 64):
        try:
            tree = store.lookup(key)
        except StoreError as e:
            name, version = names_of(store, key)
            report.trees += 1
            report.damaged.append(Damage(name, version, key, unit_of(key), "", "untrusted", e.message))
            continue
        if tree is None:  # removed meanwhile (gc)
            continue
        report.trees += 1
        if unit_of(key) == "bytecode" and (why := distrust(store, tree)) is not None:
            report.damaged.append(Damage(tree.manifest.name, tree.manifest.version, key, "bytecode", "", "untrusted",
                                         f"not used: {why}"))
            continue
        checked = _Walk(store, tree, full, checkpoints).run()
        report.files += checked.files
        report.rehashed += checked.rehashed
        report.relinked += checked.relinked
        report.damaged += checked.damage
    return report


def names_of(store: Store, key: str) -> tuple[str, str]:
    """``key``'s distribution for a report, even when its manifest fails its check (:func:`named`)."""
    data = manifest_bytes(store, key)
    return named(data) if data is not None else ("?", "?")


def manifest_bytes(store: Store, key: str) -> bytes | None:
    try:
        fd = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=store.area_fd("manifests"))
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_MANIFEST)
    except OSError:
        return None
