"""Verify: is every published tree still exactly what its manifest says, and re-derive it from its wheel if not.

Published trees are read-only, but their owner can still ``chmod u+w`` and edit one. The quick check compares a stat
signature of every entry (type, size, mode, mtime, owner, group; read through directory fds, never following a
symlink) with the manifest and lists missing and extra entries; it reads no file contents. Any write or chmod also
moves the file's ctime, which nobody can set back, so a ctime that differs while everything else matches means
"re-hash this file" (its mtime may have been restored), not "damaged": ctime also moves whenever a hard link to the
file is added or removed, which the owner's hardlink installs do all the time.

So that links do not make every later check re-hash everything, each user keeps, per store and host, a *mark* per
tree (:class:`Checkpoints`): a time V such that every file of the tree whose ctime is older than V is known intact,
and each file's (inode, link count) at V. A file changed after V has a ctime after V (less one clock tick), so it is
looked at again: if only its link count differs from the mark's (same inode, size, mtime, mode, owner), a link was
added or removed (a venv deleted) and it is taken as intact; otherwise it is re-hashed. V is set when a walk that
started at S found the whole tree intact (V = S less a margin for the clock's granularity), and right after this
user's own hardlink install of a tree it had just checked (every ctime change in between is taken to be that
install's links). A mark also keeps when a walk last listed every directory of the tree: a directory whose ctime
is older has exactly the manifest's entries (adding, removing or renaming one moves it), so later checks look its
names up instead of listing it; installs never move that time. What the quick check cannot see: a write whose mtime
and mode were put back *and* that coincides with a link count change, or that falls inside an install's own window.
``full=True`` re-hashes every file whatever its signature and trusts no mark.

Repair re-derives a damaged tree from its wheel. Under the key's lock the manifest moves out first, so readers stop
trusting the tree before anything else changes; then the tree moves (both into ``staging/quarantine-<key>-...``, where
gc recognises them by name), and the wheel is published again with :meth:`Store.realize`. Bytecode units of the tree
are quarantined too: their pycs were checked against the old files' mtimes, and the next install compiles fresh ones.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import marshal
import os
import stat
import sys
import time
import weakref
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..base import fsio, usercache
from ..base.distinfo import INSTALLER_FILES
from ..base.errors import (
    RepairError,
    StoreError,
    TreeDamaged,
    WheelstoreError,
    printable,
)
from ..base.fsio import open_dir
from ..base.interpreter import Interpreter
from .bytecode import distrust, ensure_pycs
from .commit import make_movable
from .manifest import FileEntry, Manifest, named
from .orphans import Orphan, find_orphans
from .policy import Role, user_name
from .store import MAX_MANIFEST, Store, Tree, cache_id, staging_name
from .wheel import CHUNK

#: the staging kind of quarantined trees and manifests (``staging/quarantine-<key>-<host>-<pid>-<rand>[.json]``)
QUARANTINE = "quarantine"
#: file timestamps come from a coarse clock (one tick, 1-10 ms): a ctime this close to a check's start is not trusted
RACY_NS = 20_000_000
_S_IFREG = stat.S_IFREG
#: finds the wheel a tree was unpacked from: (wheel file name if known, sha256) -> a local file with that sha256
WheelFinder = Callable[[str | None, str], Path | None]


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
    name: str
    version: str
    key: str
    unit: str
    wheel: str | None  #: the wheel it was published from again (None for bytecode: the next install recompiles)
    quarantined: tuple[str, ...]  #: where the damaged copy went, relative to the store

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "key": self.key, "unit": self.unit,
                "wheel": self.wheel, "quarantined": list(self.quarantined)}


class Report:
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
            inos, nlinks = (array(t, base64.b64decode(b)) for t, b in zip("QI", self.packed))
            self.links = list(zip(inos, nlinks)) if len(inos) == len(nlinks) else None
            self.packed = None
        return self.links

    def pack(self) -> tuple[str, str] | None:
        if self.packed is None and self.links is not None:
            inos = array("Q", (i for i, _ in self.links)).tobytes()
            nlinks = array("I", (n for _, n in self.links)).tobytes()
            self.packed = base64.b64encode(inos).decode(), base64.b64encode(nlinks).decode()
        return self.packed


_OPEN: weakref.WeakKeyDictionary[Store, Checkpoints] = weakref.WeakKeyDictionary()


class Checkpoints:
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
    def of(cls, store: Store) -> Checkpoints:
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
        for key in self._changed:
            mine = self.marks.get(key)
            if mine is None:
                merged.pop(key, None)
            elif key not in merged or merged[key].at <= mine.at:
                merged[key] = mine
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


def check_tree(store: Store, tree: Tree, *, full: bool = False, checkpoints: Checkpoints | None = None) -> list[Damage]:
    """Every way ``tree`` differs from its manifest; empty when it is intact. ``full`` re-hashes every file."""
    marks = checkpoints or Checkpoints.of(store)
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

    def __init__(self, store: Store, tree: Tree, full: bool, checkpoints: Checkpoints) -> None:
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
            self._links = dict(zip(self.m.files, links)) if links is not None and ok else {}
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
        a walk listed it, so only the manifest's names are looked up (three system calls fewer per directory); any
        other is listed too, for entries the manifest does not have. A name of the manifest's that is not there is
        missing, and nothing below a missing directory is reported again."""
        names, numbers, subdirs = self.table.get(prefix) or ([], array("q"), [])
        if self.full or dir_st.st_ctime_ns >= self.mark.listed:
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
                if before is not None and before[0] == st.st_ino and before[1] != st.st_nlink:
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
            digest = hashlib.sha256()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != self.m.files[rel].sha256:
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


def verify_store(
    store: Store,
    *,
    full: bool = False,
    repair: bool = False,
    find_links: Sequence[str | os.PathLike[str]] = (),
    finder: WheelFinder | None = None,
) -> Report:
    """Check every committed tree and pyc unit; with ``repair``, re-derive the damaged ones from their wheels.

    Wheels are looked for with ``finder`` (default: by file name, then by sha256, in the ``find_links`` directories).
    This is the seam for the index client: a finder that downloads the wheel by name and checks its sha256 fits here.
    """
    report = Report(str(store.root), full)
    checkpoints = Checkpoints.of(store)
    for key in sorted(k for k in store.keys() if len(k) >= 64):
        try:
            tree = store.lookup(key)
        except StoreError as e:
            name, version = _names(store, key)
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
    checkpoints.save()
    if repair:
        find = finder or local_wheels(find_links)
        done: set[str] = set()
        for key in dict.fromkeys(d.key for d in report.damaged):
            if key in done:
                continue
            try:
                fixed = repair_tree(store, key, find, checkpoints)
            except (WheelstoreError, OSError) as e:
                name, version = _names(store, key)
                why = e.oneline() if isinstance(e, WheelstoreError) else f"{e.strerror or e}: {e.filename or ''}"
                report.unrepaired.append((name, version, key, why))
                continue
            report.repaired += fixed
            done.update(r.key for r in fixed)
        checkpoints.save()
    report.orphans = find_orphans(store)
    return report


def _raw_manifest(store: Store, key: str) -> Manifest | None:
    """The manifest, read without the trust checks (to name a damaged tree and find its wheel), or None."""
    data = _manifest_bytes(store, key)
    try:
        return Manifest.from_json(data) if data is not None else None
    except ValueError:
        return None


def _names(store: Store, key: str) -> tuple[str, str]:
    """``key``'s distribution for a report, even when its manifest fails its check (:func:`named`)."""
    data = _manifest_bytes(store, key)
    return named(data) if data is not None else ("?", "?")


def _manifest_bytes(store: Store, key: str) -> bytes | None:
    try:
        fd = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=store.area_fd("manifests"))
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_MANIFEST)
    except OSError:
        return None


# -- repair -----------------------------------------------------------------------------------------------------------


def local_wheels(find_links: Sequence[str | os.PathLike[str]]) -> WheelFinder:
    """A finder over local directories: the wheel's own file name first, then any wheel with that sha256."""
    dirs = [Path(d) for d in find_links]

    def find(filename: str | None, sha256: str) -> Path | None:
        named = [d / filename for d in dirs] if filename else []
        others = [p for d in dirs if d.is_dir() for p in sorted(d.glob("*.whl")) if p not in named]
        for path in [*named, *others]:
            if path.is_file() and _sha256_of(path) == sha256:
                return path
        return None

    return find


def _sha256_of(path: Path) -> str | None:
    try:
        with open(path, "rb", buffering=0) as f:
            digest = hashlib.sha256()
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return None


def who_can_repair(store: Store, key: str) -> str | None:
    """None if this user may move the tree and its manifest aside; else who may (besides root).

    Areas are sticky: only an entry's owner (or the area's) may rename it, and moving a directory to another parent
    rewrites its '..', which needs write access to the directory itself, so only the tree's owner or root.
    """
    euid = os.geteuid()
    if euid == 0:
        return None
    trees, manifests = store.area_fd("trees"), store.area_fd("manifests")
    blockers = []
    for name, dir_fd, is_tree in ((key, trees, True), (f"{key}.json", manifests, False)):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        allowed = {st.st_uid} if is_tree and stat.S_ISDIR(st.st_mode) else {st.st_uid, os.fstat(dir_fd).st_uid}
        if euid not in allowed:
            blockers.append(user_name(st.st_uid))
    return " or ".join(dict.fromkeys(blockers)) or None


def repair_tree(
    store: Store, key: str, find: WheelFinder, checkpoints: Checkpoints | None = None
) -> list[Repaired]:
    """Quarantine the tree ``key`` and publish it again from its wheel; return what was repaired.

    A source tree's bytecode units go to quarantine with it (they are compiled again on the next install). A pyc unit
    alone is only quarantined. Nothing is moved unless the wheel was found and this user may move everything.
    """
    manifest = _raw_manifest(store, key)
    name, version = (manifest.name, manifest.version) if manifest else ("?", "?")
    label = f"{name} {version}" if manifest else f"tree {key}"
    who = who_can_repair(store, key)
    if who is not None:
        raise RepairError(f"the store's copy of {label} can only be repaired by {who} or root",
                          hint=f"ask them to run: wheelstore --store {store.root} verify --repair -f DIR")
    store.require_publish_access()
    wheel = None
    if unit_of(key) == "tree":
        wheel = find(manifest.wheel if manifest else None, key)
        if wheel is None:
            wheel_name = manifest.wheel if manifest else "its wheel"
            raise RepairError(f"cannot repair {label}: no wheel with sha256 {key} ({wheel_name}) was found",
                              hint=f"pass -f DIR with a directory holding {wheel_name}")
    marks = checkpoints or Checkpoints.of(store)
    units = [] if unit_of(key) == "bytecode" else _units_of(store, key)
    done = [Repaired(name, version, key, unit_of(key), wheel.name if wheel else None, quarantine(store, key))]
    marks.forget(key)
    for unit in units:  # stale now: their pycs match the old files' mtimes
        if who_can_repair(store, unit) is None:
            done.append(Repaired(name, version, unit, "bytecode", None, quarantine(store, unit)))
            marks.forget(unit)
    if wheel is not None:
        # the tree comes back as it was: with its pycs inside when it had them (folding needs them), compiled by the
        # Python running this when its version matches theirs (else its units are compiled on the next install)
        tag = manifest.bytecode if manifest else None
        compile_for = Interpreter.inspect(sys.executable) if tag and tag == sys.implementation.cache_tag else None
        from .publish import realize_wheel

        realize_wheel(store, wheel, key, compile_for=compile_for)
    if checkpoints is None:
        marks.save()
    return done


def _units_of(store: Store, key: str) -> list[str]:
    return sorted(k for k in store.keys() if k.startswith(key + "-"))


def quarantine(store: Store, key: str) -> tuple[str, ...]:
    """Move ``key``'s manifest, then its tree, into ``staging/`` under one quarantine name; return their paths.

    The manifest goes first: from that moment readers no longer trust the tree, so nobody links it while it moves.
    A crash between the two leaves a tree without a manifest, which readers ignore and the next realize replaces.
    """
    staging, manifests, trees = store.area_fd("staging"), store.area_fd("manifests"), store.area_fd("trees")
    aside = staging_name(QUARANTINE, key[:64])
    moved = []
    with store.key_lock(key):
        if fsio.exists(f"{key}.json", dir_fd=manifests):
            os.rename(f"{key}.json", f"{aside}.json", src_dir_fd=manifests, dst_dir_fd=staging)
            fsio.fsync_dir(manifests)
            moved.append(f"staging/{aside}.json")
        if fsio.exists(key, dir_fd=trees):

            make_movable(key, trees)
            os.rename(key, aside, src_dir_fd=trees, dst_dir_fd=staging)
            fsio.fsync_dir(trees)
            moved.append(f"staging/{aside}")
        fsio.fsync_dir(staging)
    return tuple(moved)


# -- before linking ---------------------------------------------------------------------------------------------------


def intact_trees(
    store: Store,
    trees: Sequence[Tree],
    wheels: Sequence[Path | None],
    notes: list[str],
    hardlinked: frozenset[str] = frozenset(),
) -> list[Tree]:
    """The trees to link, each quick-checked first; a damaged one is repaired from its wheel when it is at hand and
    this user may, else this raises :class:`TreeDamaged` naming the distribution, before any venv is touched.

    The check is mostly system calls and small-object work that one process cannot overlap, so with more than one
    core a forked child checks half of the trees meanwhile (:func:`_check_elsewhere`). Only the trees it found
    intact are taken on its word; the rest, and the ``hardlinked`` ones (whose link counts :func:`linked` needs),
    are checked here.
    """
    checkpoints = Checkpoints.of(store)  # saved by linked(), after the install
    elsewhere = [t for t in trees if t.key not in hardlinked]
    share = _about(elsewhere, 0.5) if _worth_a_child(elsewhere) else []
    clean_there = _check_elsewhere(store, share, checkpoints) if share else None
    shared_keys = {t.key for t in share}
    mine = [t for t in trees if t.key not in shared_keys]
    clean = {t.key for t in mine if not check_tree(store, t, checkpoints=checkpoints)}
    if clean_there is not None:
        clean |= clean_there()
    result = []
    for tree, wheel in zip(trees, wheels):
        if tree.key in clean:
            result.append(tree)
            continue
        damage = check_tree(store, tree, checkpoints=checkpoints)
        if not damage:
            result.append(tree)
            continue
        result.append(_repair_for_install(store, tree, wheel, damage, checkpoints))
        notes.append(f"repaired the store's damaged copy of {tree.manifest.name} {tree.manifest.version} "
                     f"({damage[0].describe()}) from {wheel}")
    return result


class CheckWhileLinking:
    """Quick-check trees in a forked child, so that the check costs no time while this process links them.

    :meth:`intact` waits for the child and says whether every tree is intact; when it says no, the caller removes
    what it linked and goes the :func:`intact_trees` way, which names or repairs the damage. A damaged tree is so
    never left linked, though it is linked for a moment, as it could equally be damaged just after any check. Not
    for hard links: :func:`linked` needs their counts from before. Trees the child could not vouch for (it failed)
    are checked in this process when asked. Use :meth:`start`, which declines when a child would not pay.

    Some trees, the biggest that fit in ``here`` of the files, are left for this process to check once it has
    linked, so that both cores finish together.
    """

    def __init__(self, store: Store, trees: Sequence[Tree], here: float = 0.0) -> None:
        self.store = store
        self.here = _about(trees, here)
        mine = {t.key for t in self.here}
        self.there = [t for t in trees if t.key not in mine]
        self.checkpoints = Checkpoints.of(store)
        self._clean_there: Callable[[], set[str]] | None = _check_elsewhere(store, self.there, self.checkpoints)

    @classmethod
    def start(cls, store: Store, trees: Sequence[Tree], here: float = 0.0) -> CheckWhileLinking | None:
        """None when a child would not pay (few trees, one core): check them before linking then."""
        return cls(store, trees, here) if _worth_a_child(trees) else None

    def intact(self) -> bool:
        if not all(not check_tree(self.store, t, checkpoints=self.checkpoints) for t in self.here):
            return False
        clean = self._answer()
        return all(not check_tree(self.store, t, checkpoints=self.checkpoints) for t in self.there
                   if t.key not in clean)

    def close(self) -> None:
        """Wait for the child if nobody asked for its answer (the install failed first)."""
        self._answer()

    def _answer(self) -> set[str]:
        clean_there, self._clean_there = self._clean_there, None
        return clean_there() if clean_there is not None else set()


#: the fewest trees an install splits with a child process
FORK_AT = 8
#: the share of the check :class:`CheckWhileLinking` leaves to a process that folds every tree: linking the
#: benchmark set folded took it about a third of the time the whole check (with reading the manifests' file lists)
#: took the child (in-process timers, 2 cores), so this much more of the check evens them out. Per-file linking is
#: work enough: it leaves the whole check to the child.
HERE_WHEN_FOLDED = 0.29


def _worth_a_child(trees: Sequence[Tree]) -> bool:
    return len(trees) >= FORK_AT and (os.cpu_count() or 1) > 1


def _about(trees: Sequence[Tree], fraction: float) -> list[Tree]:
    """Some of ``trees`` that hold close to (not more than) ``fraction`` of their files: the biggest that fit first."""
    room = fraction * sum(t.manifest.count for t in trees)
    chosen = []
    for tree in sorted(trees, key=lambda t: t.manifest.count, reverse=True):
        if tree.manifest.count <= room:
            chosen.append(tree)
            room -= tree.manifest.count
    return chosen


def _check_elsewhere(store: Store, trees: Sequence[Tree], checkpoints: Checkpoints) -> Callable[[], set[str]]:
    """Quick-check ``trees`` in a forked child while this process goes on; return a function that waits for it and
    gives the keys it found intact. The child saves the marks its re-hashing moved. A child that fails in any way
    vouches for nothing, so those trees are simply checked again here."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: walk, report, and leave without running any of the parent's cleanup
        code = 1
        try:
            os.close(read_fd)
            clean = [t.key for t in trees if _intact(store, t, checkpoints)]
            checkpoints.save()
            view = memoryview("\n".join(clean).encode())
            while view:
                view = view[os.write(write_fd, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)

    def result() -> set[str]:
        chunks = []
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(1 << 16):
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return set()
        return set(b"".join(chunks).decode().split("\n")) & {t.key for t in trees}

    return result


def _intact(store: Store, tree: Tree, checkpoints: Checkpoints) -> bool:
    return not check_tree(store, tree, checkpoints=checkpoints)


def _repair_for_install(
    store: Store, tree: Tree, wheel: Path | None, damage: list[Damage], checkpoints: Checkpoints
) -> Tree:
    m = tree.manifest
    more = f", and {len(damage) - 1} more" if len(damage) > 1 else ""
    what = f"the store's copy of {m.name} {m.version} is damaged ({damage[0].describe()}{more}); it was not linked"
    who = who_can_repair(store, tree.key)
    if who is not None:
        raise TreeDamaged(what, hint=f"ask {who} or an admin to run: wheelstore --store {store.root} verify "
                                     f"--repair -f DIR (a directory holding {m.wheel})")
    if wheel is None or not wheel.is_file():
        raise TreeDamaged(what, hint=f"wheelstore --store {store.root} verify --repair -f DIR "
                                     f"(a directory holding {m.wheel})")
    try:
        repair_tree(store, tree.key, lambda _name, sha: wheel if _sha256_of(wheel) == sha else None, checkpoints)
    except WheelstoreError as e:
        raise TreeDamaged(f"{what}, and repairing it failed: {e.message}", hint=e.hint) from None
    fresh = store.lookup(tree.key)
    if fresh is None or check_tree(store, fresh, checkpoints=checkpoints):
        raise TreeDamaged(f"{what}, and it is still damaged after a repair", hint="run: wheelstore verify --full")
    return fresh


def intact_pycs(store: Store, tree: Tree, interpreter: Interpreter) -> Tree | None:
    """The tree's pyc unit for ``interpreter`` (see :func:`ensure_pycs`), quick-checked first. A damaged unit is
    quarantined and compiled again if this user may; else the venv gets no pycs from the store (never damaged ones)."""
    checkpoints = Checkpoints.of(store)
    unit = ensure_pycs(store, tree, interpreter)
    if unit is None or not check_tree(store, unit, checkpoints=checkpoints):
        return unit
    if who_can_repair(store, unit.key) is not None:
        return None
    try:
        store.require_publish_access()
        quarantine(store, unit.key)
    except (OSError, WheelstoreError):
        return None
    checkpoints.forget(unit.key)
    unit = ensure_pycs(store, tree, interpreter)
    return unit if unit is not None and not check_tree(store, unit, checkpoints=checkpoints) else None


def linked(store: Store, units: Iterable[Tree], cache_tag: str | None = None) -> None:
    """Note that this process just hard-linked ``units``, which :func:`intact_trees` or :func:`intact_pycs` had
    found intact before the linking began, into a venv whose interpreter has ``cache_tag``, and save this process's
    checkpoints (call it after every install).

    Each link moved the ctimes. The new mark (now) takes those changes as this install's own, and records each
    file's link count as one more than the check saw, so that deleting the venv later (which moves the ctimes again,
    and the link counts back) is recognised as an unlink, not re-hashed. Taken on trust: that nothing else wrote the
    files, restoring their mtimes, between the check and now. ``verify --full`` relies on neither.
    """
    checkpoints = Checkpoints.of(store)
    now = time.time_ns()
    for unit in units:
        seen = checkpoints.observed.get(unit.key)
        m = unit.manifest
        if seen is None or len(seen) != len(m.files):
            continue
        plus = _hardlinked(unit, cache_tag)
        checkpoints.set(unit.key, Mark(now, [(seen[r][0], seen[r][1] + (r in plus)) for r in m.files],
                                       listed=checkpoints.get(unit.key).listed))
    checkpoints.save()


def _hardlinked(unit: Tree, cache_tag: str | None) -> set[str]:
    """The files of ``unit`` an install links: not scripts and installer metadata (it writes those itself), nor pycs
    compiled into the tree for another Python. Counting one too few only costs a re-hash later; one too many would
    let a rewrite pass for an unlink, so when in doubt a file is left out."""
    m = unit.manifest
    if unit_of(unit.key) == "bytecode":
        return set(m.files)
    scripts = m.dist_info.removesuffix(".dist-info") + ".data/scripts/"
    own = {f"{m.dist_info}/{name}" for name in INSTALLER_FILES}
    in_tree_pyc = f".{m.bytecode}.pyc" if m.bytecode and m.bytecode != cache_tag else None

    def links(rel: str) -> bool:
        if rel.startswith(scripts) or rel in own:
            return False
        return not (in_tree_pyc and rel.endswith(in_tree_pyc) and "/__pycache__/" in "/" + rel)

    return {r for r in m.files if links(r)}
