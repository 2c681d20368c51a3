"""gc's sweep of what unfinished work leaves: staging entries whose lease is dead (:mod:`~wheelstore.store.staging`),
leases nobody holds, and lock files nobody holds.

Every removal follows the lock protocol: a lease or lock file is removed only while this process holds its flock
(taken without waiting, so a held one is never waited for, nor touched), and only if its name still names the inode
locked; where the filesystem has no flock at all, a lease goes by its heartbeat alone, a lock file by its age. A
process that opened it before the unlink and locks it after finds its path gone or another inode there, and takes the
current one (:meth:`~wheelstore.store.keylock.KeyLock._acquire_by`). A dead lease goes when its entries would
(:func:`~wheelstore.store.lease.dead_after`: a minute after its last heartbeat where its free flock proves its holder
gone, else the grace period and :data:`~wheelstore.store.lease.MIN_STALE`), and so does the key lock (``<key>.lock``,
``fetch-<key>.lock``) of each dead entry removed, if nobody holds it: its killed holder could not remove it. Other lock
files go once older than the grace period; ``locks/gc.lock`` never does.

What a member may have planted is handled without trusting it: entries are looked at with ``lstat`` and opened with
``O_NOFOLLOW | O_NONBLOCK``; a lease vouches only for its owner's entries (:func:`~wheelstore.store.lease.vouches`); a
name no process of ours makes is left in ``staging/`` (its owner's to remove); in ``locks/`` anything nobody holds goes
once old. The sticky bit decides who removes what, as for trees: the entry's owner, the store's owner (lock files)
or root; a staging entry is its owner's or root's to delete, and listed with who can otherwise. A lease held forever
(a stuck process, or a member's on purpose) keeps its entries, however old: gc says whose it is.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import time
from dataclasses import dataclass, field

from ..base import fsio
from . import lease as leases
from . import staging
from .gclock import LOCK_NAME
from .lease import MIN_STALE, PREFIX, LeaseState, close_quietly
from .staging import StagingEntry, span
from .stats import Usage, usage
from .store import Store

#: a key lock's name: ``<key>.lock`` (publish, bytecode, repair) or ``fetch-<key>.lock`` (download)
_KEY_LOCK = re.compile(r"(?:fetch-)?([0-9a-f]{64})\.lock")


@dataclass
class Swept:
    """What the sweep did (with ``dry_run``: would do)."""

    removed: list[tuple[StagingEntry, Usage]] = field(default_factory=list)
    not_removable: list[tuple[StagingEntry, Usage]] = field(default_factory=list)
    kept: list[StagingEntry] = field(default_factory=list)  #: work in progress, as far as gc can tell
    problems: list[str] = field(default_factory=list)
    locks: list[str] = field(default_factory=list)  #: lock files and leases removed, relative to the store
    #: the keys of the entries removed whose lease was dead (not orphans, nor older layouts): their key locks' holders
    #: were killed
    dead_keys: set[str] = field(default_factory=set)


def sweep(store: Store, grace: float, *, dry_run: bool) -> Swept:
    """Remove the stale staging entries this process may, then the leases and lock files nobody holds."""
    swept = Swept()
    probes: dict[str, LeaseState] = {}
    try:
        left = _sweep_entries(store, staging.entries(store, grace, probes), grace, swept, dry_run=dry_run)
        _sweep_leases(store, probes, left, grace, swept, dry_run=dry_run)
    finally:
        for state in probes.values():
            state.close()
    _sweep_locks(store, grace, swept, dry_run=dry_run)
    return swept


def _sweep_entries(
    store: Store, found: list[StagingEntry], grace: float, swept: Swept, *, dry_run: bool
) -> set[str]:
    """Remove the stale entries; the leases the entries left behind still name."""
    euid = os.geteuid()
    left = set()
    for entry in found:
        if not entry.stale:
            left.add(entry.lease)
            if entry.state == "mine":
                continue
            swept.kept.append(entry)
            if entry.state == "held" and entry.age_seconds > max(grace, MIN_STALE):
                swept.problems.append(f"{entry.name} is kept, unchanged for {span(entry.age_seconds)}: {entry.why}; "
                                      "gc never removes work in progress: if that process is stuck, its owner or root "
                                      "should end it")
            continue
        area, _, name = entry.name.partition("/")
        dir_fd = store.area_fd(area)
        try:
            used = usage(name, dir_fd=dir_fd)
        except OSError:
            used = Usage()
        if euid not in (0, entry.owner_uid):
            swept.not_removable.append((entry, used))
            left.add(entry.lease)
            continue
        if not dry_run:
            try:
                if _is_dir(name, dir_fd):
                    fsio.remove_tree(name, dir_fd=dir_fd)
                else:
                    os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            except OSError as e:
                swept.problems.append(f"cannot remove {entry.name}: {e.strerror}")
                left.add(entry.lease)
                continue
        swept.removed.append((entry, used))
        if entry.state in ("free", "untried", "gone"):
            swept.dead_keys.add(entry.key)
    return left


def _sweep_leases(
    store: Store, probes: dict[str, LeaseState], left: set[str], grace: float, swept: Swept, *, dry_run: bool
) -> None:
    """Remove the leases nobody holds that name no entry left, once their last heartbeat is older than the grace."""
    locks_fd = store.area_fd("locks")
    here = leases.node_tag(locks_fd)
    mine = store.lease_id(take=False)
    now = time.time()
    for name in sorted(os.listdir(locks_fd)):
        lease_id = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or not leases.LEASE_ID.fullmatch(lease_id) or lease_id in (mine, *left):
            continue
        state = probes.get(lease_id)
        if state is None:
            state = probes[lease_id] = leases.probe(locks_fd, lease_id)
        if state.held is False:  # free: a proof of death here, a hint elsewhere
            bound = leases.dead_after(grace, proven=lease_id[:8] == here)
        elif state.lockless:  # no flock on this filesystem: the heartbeat alone tells
            bound = max(grace, MIN_STALE)
        else:  # held, or not ours to open: untouched
            continue
        if now - state.heartbeat > bound and _may_remove(locks_fd, state.owner_uid):
            _unlink_same(locks_fd, name, state.fd, swept, dry_run=dry_run)


def _sweep_locks(store: Store, grace: float, swept: Swept, *, dry_run: bool) -> None:
    """Remove the lock files (and anything planted among them) that nobody holds and nobody has touched for longer
    than the grace period: the key locks of finished work whose holder could not remove them (another member's
    file, a process killed while holding it), and the private files of a lock or lease being created."""
    locks_fd = store.area_fd("locks")
    now = time.time()
    for name in sorted(os.listdir(locks_fd)):
        if name == LOCK_NAME or (name.startswith(PREFIX) and leases.LEASE_ID.fullmatch(name.removeprefix(PREFIX))):
            continue
        try:
            st = os.stat(name, dir_fd=locks_fd, follow_symlinks=False)
        except OSError:
            continue
        dead_holder = (m := _KEY_LOCK.fullmatch(name)) is not None and m.group(1) in swept.dead_keys
        if (now - st.st_mtime <= grace and not dead_holder) or not _may_remove(locks_fd, st.st_uid):
            continue
        if not stat.S_ISREG(st.st_mode):  # planted: a directory, symlink or FIFO in a lock's place
            if not dry_run:
                try:
                    fsio.remove_tree(name, dir_fd=locks_fd) if stat.S_ISDIR(st.st_mode) else os.unlink(
                        name, dir_fd=locks_fd)
                except OSError as e:
                    swept.problems.append(f"cannot remove locks/{name}: {e.strerror}")
                    continue
            swept.locks.append(f"locks/{name}")
            continue
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=locks_fd)
        except OSError:  # not ours to open (its owner's or root's gc removes it), or gone
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held: left alone, however old
            close_quietly(fd)
            continue
        except OSError:  # no flock here, so no holder to wait for: the lock file is only clutter
            pass
        try:
            _unlink_same(locks_fd, name, fd, swept, dry_run=dry_run)
        finally:
            close_quietly(fd)


def _unlink_same(locks_fd: int, name: str, fd: int, swept: Swept, *, dry_run: bool) -> None:
    """Unlink ``name`` (while holding the flock on ``fd``, where there is flock) if it still names ``fd``'s inode."""
    try:
        here, held = os.stat(name, dir_fd=locks_fd, follow_symlinks=False), os.fstat(fd)
        if (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            return
        if not dry_run:
            os.unlink(name, dir_fd=locks_fd)
    except FileNotFoundError:
        return
    except OSError as e:
        swept.problems.append(f"cannot remove locks/{name}: {e.strerror}")
        return
    swept.locks.append(f"locks/{name}")


def _may_remove(area_fd: int, owner_uid: int) -> bool:
    """Whether the sticky bit lets this process unlink an entry of ``owner_uid`` from the area."""
    euid = os.geteuid()
    area = os.fstat(area_fd)
    return euid == 0 or not area.st_mode & stat.S_ISVTX or euid in (owner_uid, area.st_uid)


def _is_dir(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False
