"""gc: remove the trees no live venv uses, without ever taking one from under a running install.

Mark and sweep. The mark reads every root (:mod:`~wheelstore.store.roots`) and confirms it against the venv itself.
The sweep takes unreferenced units (trees, their pyc units, manifests) older than the grace period, entries of
``trees/`` that no manifest describes (:mod:`~wheelstore.store.orphans`: interrupted publishes, and planted names, files
and symlinks) once unchanged for a day or the grace period, and stale staging.

The race with installs is closed by one store-wide lock file, ``locks/gc.lock``: an install holds it *shared* from
looking up or realizing its trees until its root is written; gc holds it *exclusive* only while it re-reads the roots
that changed since its unlocked first pass and unpublishes its victims: each manifest is unlinked (readers stop
trusting the tree) and the tree renamed to a hidden ``trees/.gc-<key>-<lease>-<rand>`` (so a new install of the
same wheel publishes afresh instead of meeting a half-deleted tree). The slow part, deleting the files, runs after the
lock is released, so installs wait only for the short middle. A gc killed at any point leaves hidden ``.gc-`` entries
named after its lease, which the next gc removes once that lease is dead (:mod:`~wheelstore.store.leftovers`, which
also sweeps other unfinished work, and lock files nobody holds). A service store's clients take no lock: their
installs pin what they are about to link in the venv's root instead, which its service writes under the lock
(:mod:`wheelstore.service.rootdoc`).

The sticky bit decides who may remove what: the owner of a tree removes it; the store's owner may unpublish anyone's
(its files stay until their owner's gc or root removes them); others get a report naming who can.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from dataclasses import dataclass, field, replace

from ..base import fsio
from ..base.errors import GcError, StoreError
from ..base.fsio import open_dir
from ..base.hooks import checkpoint
from . import rootcheck, upstream
from .gclock import LOCK_NAME
from .keylock import LockUnavailable
from .orphans import UNIT_NAME
from .policy import user_name
from .store import STALE_AFTER, Store
from .storelock import StoreLock

#: unreferenced trees younger than this are kept: a venv may be about to be rebuilt from them
DEFAULT_GRACE = 24 * 3600.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``1d``, ``2w`` to seconds."""
    m = _DURATION.match(text)
    if m is None:
        raise GcError(f"{text!r} is not a duration", hint="write it like 0, 90s, 15m, 12h, 1d or 2w")
    return float(m.group(1)) * _SECONDS[m.group(2)]


# -- the store-wide lock -----------------------------------------------------------------------------------------------


def _lock_or_fail(store: Store) -> StoreLock:
    """The store-wide lock, exclusive, or :class:`GcError` naming its holder: gc must never sweep unlocked, and never
    waits forever (:data:`~wheelstore.store.keylock.STORE_TIMEOUT`) for installs, or for a member holding the lock."""
    lock = StoreLock(store, exclusive=True)
    try:
        lock.acquire_or_raise()
    except LockUnavailable as e:
        hint = ("run gc again once that process is done, or wait longer with WHEELSTORE_LOCK_TIMEOUT=SECONDS"
                if e.timed_out else
                f"run 'wheelstore doctor --store {store.root}' for the fix; on a filesystem without flock, gc cannot "
                "run safely")
        raise GcError(f"cannot lock {LOCK_NAME} in the store's locks/: {e}", hint=hint) from None
    return lock


# -- the report --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A store entry gc looked at: a tree, a pyc unit, an orphan tree without manifest, or a staging entry."""

    key: str
    kind: str  #: tree, pyc, orphan, staging
    name: str = ""
    version: str = ""
    owner: str = ""
    bytes: int = 0
    inodes: int = 0
    path: str = ""  #: relative to the store

    def to_json(self) -> dict[str, object]:
        return {"key": self.key, "kind": self.kind, "name": self.name, "version": self.version, "owner": self.owner,
                "bytes": self.bytes, "inodes": self.inodes, "path": self.path}


@dataclass
class GcReport:
    store: str
    dry_run: bool
    grace_seconds: float
    root_expiry_seconds: float = rootcheck.DEFAULT_EXPIRY
    store_id: str | None = None
    #: a site store's overlays whose roots were read (:mod:`~wheelstore.store.upstream`)
    overlays: list[dict[str, object]] = field(default_factory=list)
    roots_live: int = 0
    roots_stale: list[str] = field(default_factory=list)  #: roots holding nothing (venv gone or moved, expired)
    #: every root, by the node that wrote it (:meth:`rootcheck.Marks.by_node`)
    nodes: list[dict[str, object]] = field(default_factory=list)
    live: int = 0  #: units some live root holds
    young: int = 0  #: unreferenced, but within the grace period
    removed: list[Unit] = field(default_factory=list)  #: (or, with --dry-run, would be removed)
    unpublished: list[Unit] = field(default_factory=list)  #: manifest gone, files left for their owner
    not_removable: list[Unit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: entries of the running user's cache for trees the store no longer has, removed
    cache_entries_removed: int = 0
    #: staging entries kept as work in progress (:meth:`~wheelstore.store.staging.StagingEntry.to_json`)
    staging_kept: list[dict[str, object]] = field(default_factory=list)
    #: lock files and leases nobody held, removed (or, with --dry-run, would be)
    locks_removed: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(u.bytes for u in self.removed)

    def to_json(self) -> dict[str, object]:
        return {
            "store": self.store,
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "root_expiry_seconds": self.root_expiry_seconds,
            "store_id": self.store_id,
            "overlays": self.overlays,
            "roots": {"live": self.roots_live, "stale": self.roots_stale},
            "nodes": self.nodes,
            "live": self.live,
            "young": self.young,
            "removed": [u.to_json() for u in self.removed],
            "freed_bytes": self.freed_bytes,
            "unpublished": [u.to_json() for u in self.unpublished],
            "not_removable": [dict(u.to_json(), who_can=who_can(u.owner)) for u in self.not_removable],
            "problems": self.problems,
            "cache_entries_removed": self.cache_entries_removed,
            "staging_kept": self.staging_kept,
            "locks_removed": self.locks_removed,
        }


def who_can(owner: str) -> str:
    return f"{owner} (its owner) or root" if owner and owner != "root" else "root"


# -- sweep -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    unit: Unit
    has_manifest: bool
    has_tree: bool
    owner_uid: int


def collect_garbage(store: Store, *, grace: float = DEFAULT_GRACE, dry_run: bool = False,
                    root_expiry: float | None = None) -> GcReport:
    """Mark from the live roots and sweep what nothing holds; with ``dry_run`` only say what would go.

    ``root_expiry`` (else the store's ``[gc] root_expiry``, else 30 days): how long a root this gc cannot check
    (:mod:`~wheelstore.store.rootcheck`) is believed after any node last confirmed it."""
    expiry = configured_expiry(store) if root_expiry is None else root_expiry
    report = GcReport(str(store.root), dry_run, grace, expiry, store.id)
    overlays = upstream.registered_overlays(store, report.problems)
    report.overlays = [{"store": str(o.root), "id": o.id, "owner": user_name(o.owner_uid)} for o in overlays]
    with contextlib.ExitStack() as closing:
        for overlay in overlays:
            closing.enter_context(overlay)
        return _collect(store, report, rootcheck.Marks(store, expiry, overlays), grace, dry_run)


def _collect(store: Store, report: GcReport, marks: rootcheck.Marks, grace: float, dry_run: bool) -> GcReport:
    from .stats import usage

    marks.update()  # the slow pass (reading venvs) runs unlocked
    doomed: list[tuple[str, _Candidate]] = []
    if marks.blocker() is not None:
        pass
    elif dry_run:
        for cand in _candidates(store, marks.live, grace, report):
            verdict = _may_do(store, cand)
            unit = cand.unit
            if cand.has_tree:  # what a real run would report freeing
                try:
                    used = usage(cand.unit.key, dir_fd=store.area_fd("trees"))
                    unit = replace(unit, bytes=used.bytes, inodes=used.inodes)
                except OSError:
                    pass
            {"remove": report.removed, "unpublish": report.unpublished, "keep": report.not_removable}[verdict].append(
                unit)
    else:
        doomed = _unpublish_locked(store, marks, grace, report)
        for hidden, cand in doomed:
            _delete(store, hidden, cand, report)
    _summarize(store, marks, report)
    _sweep_staging(store, report, dry_run=dry_run)
    if not dry_run:
        rootcheck.record_confirmations(store, marks.confirmed())
        report.cache_entries_removed = _prune_user_cache(store)
    return report


def _unpublish_locked(store: Store, marks: rootcheck.Marks, grace: float,
                      report: GcReport) -> list[tuple[str, _Candidate]]:
    """Under the exclusive lock: read the roots written meanwhile, unpublish what nothing holds, and remove the
    stale roots; return the hidden names of the trees whose files are to be deleted once the lock is released."""
    doomed = []
    checkpoint("gc-locking")
    lock = _lock_or_fail(store)
    try:
        marks.update()  # roots written meanwhile by installs that have now finished
        for cand in [] if marks.blocker() else _candidates(store, marks.live, grace, report):
            hidden = _unpublish(store, cand, report)
            if hidden is not None:
                doomed.append((hidden, cand))
        _sweep_roots(store, marks)  # locked: an install may be rewriting one of them
    finally:
        lock.release()
    checkpoint("gc-unlocked")
    return doomed


def _summarize(store: Store, marks: rootcheck.Marks, report: GcReport) -> None:
    """What the report says of the roots, and the problems the mark met."""
    blocked = marks.blocker()
    if blocked is not None:
        report.problems.append(blocked)
    unreadable = marks.in_state(rootcheck.UNREADABLE)
    if unreadable:
        report.problems.append(f"could not read {len(unreadable)} venvs (permission denied); their roots were "
                               "believed as written: run gc as root to check them")
    if store.id is None:
        report.problems.append(f"{store.root} has no store id yet (its owner's or root's next command records one): "
                               "venvs are matched by the store's path, which another mount of it does not share")
    stale = marks.stale()
    report.roots_live = len(marks.judged) - len(stale)
    report.roots_stale = sorted(str(r.venv) for r in stale.values())
    report.nodes = marks.by_node()


def configured_expiry(store: Store) -> float:
    """``root_expiry`` in the ``[gc]`` table of the store's config (its owner's, the same for every node's gc),
    else 30 days."""
    table = store.config().get("gc")
    value = table.get("root_expiry") if isinstance(table, dict) else None
    if value is None:
        return rootcheck.DEFAULT_EXPIRY
    if isinstance(value, str):
        return parse_duration(value)
    raise GcError(f"root_expiry in {store.root}/config.toml is {value!r}, not a duration",
                  hint='write it like root_expiry = "30d" in the [gc] table')


def _prune_user_cache(store: Store) -> int:
    """The running user's cache entries (see :mod:`~wheelstore.base.usercache`) for trees this store no longer has: each
    user's cache keeps what installs derived per tree, and nothing else would ever remove it. Other users' caches are
    theirs to prune, by running gc themselves."""
    from ..base import usercache
    from .store import cache_id
    from .verify import VerifyMarks

    try:
        present = store.keys() | (set() if store.upstream is None else store.upstream.keys())  # checks of both
    except OSError:  # the sweep is done; a cache left as it was only costs space
        return 0
    marks = VerifyMarks.of(store)
    for key in [k for k in marks.marks if k not in present]:
        marks.forget(key)
    marks.save()
    return usercache.prune(cache_id(store.root), present.__contains__)


def _candidates(store: Store, live: set[str], grace: float, report: GcReport) -> list[_Candidate]:
    """Every unit nothing holds that is old enough to go; counts the rest into the report."""
    now = time.time()
    manifests_fd, trees_fd = store.area_fd("manifests"), store.area_fd("trees")
    keys = store.keys() | {n for n in os.listdir(trees_fd) if not n.startswith(".")}
    out = []
    for key in sorted(keys):
        m = UNIT_NAME.match(key)
        if m is None:
            continue
        if key in live:
            report.live += 1
            continue
        mst = _lstat(f"{key}.json", manifests_fd)
        tst = _lstat(key, trees_fd)
        kind = "pyc" if m.group(2) else "tree"
        if mst is None:
            if tst is None:
                continue
            # A tree without manifest: an interrupted publish (realize adopts or replaces it), or one being committed
            # right now by a realize outside any install; or a planted entry (a pyc unit's name, a file or a symlink
            # where a tree goes), which blocks its name. Only a long-dead one is ours to remove.
            if now - max(tst.st_mtime, tst.st_ctime) <= max(grace, STALE_AFTER):
                report.young += 1
                continue
            kind, name, version, owner = "orphan", "", "", tst.st_uid
        else:
            if now - mst.st_mtime <= grace:
                report.young += 1
                continue
            try:
                tree = store.lookup(key)
            except StoreError as e:
                if tst is not None:  # damaged or planted: verify and its owner deal with it, not gc
                    report.problems.append(e.oneline())
                    continue
                tree = None  # a manifest without its tree: useless, and it makes every lookup fail
            if tree is None:
                name = version = ""
                owner = mst.st_uid
            else:
                name, version, owner = tree.manifest.name, tree.manifest.version, tree.manifest.owner_uid
        if tst is not None:
            owner = tst.st_uid  # whose files they are decides who may delete them
        unit = Unit(key, kind, name, version, user_name(owner), path=f"trees/{key}")
        out.append(_Candidate(unit, mst is not None, tst is not None, owner))
    return out


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as e:  # a planted trees/ name of a unit's shape, too long to have a manifest: it has none
        if e.errno == errno.ENAMETOOLONG:
            return None
        raise


def _may_remove(area_fd: int, entry: os.stat_result | None) -> bool:
    """Whether this process may unlink or rename ``entry`` out of its (possibly sticky) area."""
    if entry is None:
        return True
    euid = os.geteuid()
    area = os.fstat(area_fd)
    if euid == 0 or not area.st_mode & stat.S_ISVTX:
        return True
    return euid in (entry.st_uid, area.st_uid)


def _may_do(store: Store, cand: _Candidate) -> str:
    """What this process may do with an unreferenced unit: ``remove`` it, only ``unpublish`` it (the store owner,
    for someone else's tree: the sticky bit lets them unlink and rename it, but not delete its read-only files), or
    ``keep`` it."""
    manifests_fd, trees_fd = store.area_fd("manifests"), store.area_fd("trees")
    mst = _lstat(f"{cand.unit.key}.json", manifests_fd)
    tst = _lstat(cand.unit.key, trees_fd)
    if not (_may_remove(manifests_fd, mst) and _may_remove(trees_fd, tst)):
        return "keep"
    if tst is None or not stat.S_ISDIR(tst.st_mode) or os.geteuid() in (0, tst.st_uid):
        return "remove"
    return "unpublish"


def _unpublish(store: Store, cand: _Candidate, report: GcReport) -> str | None:
    """Under the exclusive lock: unlink the manifest, then move the tree to a hidden name. Return that name."""
    key = cand.unit.key
    manifests_fd, trees_fd = store.area_fd("manifests"), store.area_fd("trees")
    if _may_do(store, cand) == "keep":
        report.not_removable.append(_measured(store, cand))
        return None
    mst = _lstat(f"{key}.json", manifests_fd)
    tst = _lstat(key, trees_fd)
    try:
        if mst is not None:
            os.unlink(f"{key}.json", dir_fd=manifests_fd)
            fsio.fsync_dir(manifests_fd)
        if tst is None:
            report.removed.append(cand.unit)
            return None
        if not stat.S_ISDIR(tst.st_mode):  # planted, without files to delete later
            os.unlink(key, dir_fd=trees_fd)
            fsio.fsync_dir(trees_fd)
            report.removed.append(cand.unit)
            return None
        hidden = "." + store.staging_name("gc", key[:64])
        fsio.rename_noreplace(key, hidden, dir_fd=trees_fd)
    except PermissionError:
        report.not_removable.append(_measured(store, cand))
        return None
    except OSError as e:
        report.problems.append(f"cannot remove trees/{key}: {e.strerror}")
        return None
    return hidden


def _measured(store: Store, cand: _Candidate) -> Unit:
    """The unit with its tree's size: what its owner's gc would free, said to whoever could not."""
    from .stats import usage

    if not cand.has_tree:
        return cand.unit
    try:
        used = usage(cand.unit.key, dir_fd=store.area_fd("trees"))
    except OSError:
        return cand.unit
    return replace(cand.unit, bytes=used.bytes, inodes=used.inodes)


def _delete(store: Store, hidden: str, cand: _Candidate, report: GcReport) -> None:
    """After the lock: delete an unpublished tree's files, if this process may."""
    from .stats import usage

    trees_fd = store.area_fd("trees")
    used = usage(hidden, dir_fd=trees_fd)
    unit = replace(cand.unit, bytes=used.bytes, inodes=used.inodes)
    if os.geteuid() not in (0, cand.owner_uid):
        report.unpublished.append(unit)  # the store owner's gc: the files are their owner's to delete
        return
    try:
        fsio.remove_tree(hidden, dir_fd=trees_fd)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            report.unpublished.append(unit)
        else:
            report.problems.append(f"cannot delete trees/{hidden}: {e.strerror}")
        return
    report.removed.append(unit)


def _sweep_staging(store: Store, report: GcReport, *, dry_run: bool) -> None:
    """Leftovers of dead publishers, downloads and gcs, judged by their leases, and lock files nobody holds
    (:mod:`~wheelstore.store.leftovers`)."""
    from .leftovers import sweep

    swept = sweep(store, report.grace_seconds, dry_run=dry_run)
    for done, into in ((swept.removed, report.removed), (swept.not_removable, report.not_removable)):
        for entry, used in done:
            into.append(Unit(entry.key, "staging", owner=user_name(entry.owner_uid), bytes=used.bytes,
                             inodes=used.inodes, path=entry.name))
    report.staging_kept = [e.to_json() for e in swept.kept]
    report.problems += swept.problems
    report.locks_removed = swept.locks


def _sweep_roots(store: Store, marks: rootcheck.Marks) -> None:
    """Delete the stale roots this process may (its own, those a service store's owner wrote for its users, or any as
    root); they hold nothing either way."""
    roots_fd = store.area_fd("roots")
    euid = os.geteuid()
    for path, root in marks.stale().items():
        if euid not in (0, root.owner_uid, root.writer_uid):
            continue
        user, _, name = path.partition("/")
        try:
            ufd = open_dir(user, dir_fd=roots_fd)
        except OSError:
            continue
        try:
            os.unlink(name, dir_fd=ufd)
        except OSError:
            pass
        finally:
            os.close(ufd)
