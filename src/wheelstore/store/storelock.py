"""The store-wide lock (``locks/gc.lock``): gc takes it exclusively, installs shared, so gc never removes a tree from
under an install that is linking it."""

from __future__ import annotations

import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from ..base.logs import log
from . import gclock
from .gclock import LOCK_NAME
from .keylock import STORE_TIMEOUT, KeyLock, LockUnavailable, configured_timeout
from .policy import Role, group_name, user_name
from .store import Store


class StoreLock(KeyLock):
    """``locks/gc.lock``, shared for installs, exclusive for gc, and the same on the ``locks/`` directory itself.

    Unlike a per-key lock its file is never removed, by anyone's release: a shared holder cannot know whether others
    hold it too, an unlinked lock file would let gc lock a new inode while installs still hold the old one, and the
    next to create it would own it.

    ``gc.lock`` must be the store owner's (:mod:`wheelstore.store.gclock`): ``init`` makes it, and a missing one is made
    only by the store's owner or root. In a store made before that, a member may have made it, and its owner may make
    it unusable to others (chmod 600) or unlink it (the sticky bit lets them), which would take every other member's
    installs out from under gc's lock while root's gc (which ignores modes) still takes it; ``doctor`` flags it. So
    both also lock the ``locks/`` directory, the store owner's, which members may open but neither chmod nor replace;
    not in an ``all`` store, whose ``locks/`` everyone may read (:meth:`_take_area`).
    """

    _area_fd: int | None = None

    def __init__(self, store: Store, *, exclusive: bool, timeout: float | None = None) -> None:
        super().__init__(store.area_fd("locks"), LOCK_NAME, store.policy,
                         configured_timeout(STORE_TIMEOUT) if timeout is None else timeout,
                         what="the store (a gc)" if not exclusive else "the store (installs)")
        self._op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        self._owner_uid = store.owner_uid
        self._budget = None  # taken once per command, with its own timeout
        if exclusive:
            self._after_timeout = "giving up"

    def _may_create(self) -> bool:
        return gclock.may_create(self._owner_uid)

    def _take_area(self, deadline: float) -> int | None:
        """An fd holding the flock on ``locks/`` itself; LockUnavailable if it cannot be had by ``deadline``. None
        where everyone may read ``locks/`` (an ``all`` store): there anyone on the machine could hold it, which would
        let readers, who may not even open ``gc.lock``, hold up every install and gc; ``gc.lock`` alone is used."""
        try:
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError as e:
            raise LockUnavailable(f"cannot open locks/ ({e.strerror})") from None
        if os.fstat(fd).st_mode & stat.S_IROTH:
            os.close(fd)
            return None
        try:
            self._wait(fd, deadline, name="")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def acquire(self) -> None:
        """Both locks, ``gc.lock`` first (as gc takes them: the same order, or each could wait for the other), each
        with a warning (and the install going ahead) when it cannot be had."""
        deadline = time.monotonic() + self._timeout
        failed: LockUnavailable | None = None
        try:
            self._fd = self._acquire_by(deadline, True)
        except LockUnavailable as e:
            failed = e
        try:
            self._area_fd = self._take_area(deadline)
        except LockUnavailable as e:
            log.warning("going ahead without the lock on the locks/ directory: %s", e)
        if failed is not None:
            if failed.timed_out or self._area_fd is None:
                log.warning("going ahead without lock locks/%s: %s", self._name, failed)
            else:
                log.warning("cannot use locks/%s (%s); the lock on locks/ itself still keeps gc out", self._name,
                            failed)

    def acquire_or_raise(self) -> None:
        """Take the lock or raise :class:`LockUnavailable`, never going ahead without it (gc must not). A ``gc.lock``
        that cannot be used at all (not held: unusable) is left to the lock on ``locks/``, with a warning."""
        deadline = time.monotonic() + self._timeout
        failed: LockUnavailable | None = None
        try:
            self._fd = self._acquire_by(deadline, True)
        except LockUnavailable as e:
            if e.timed_out:
                raise
            failed = e
        try:
            self._area_fd = self._take_area(deadline)
        except BaseException:
            self.release()
            raise
        if failed is not None:
            if self._area_fd is None:  # nothing keeps installs out
                self.release()
                raise failed
            log.warning("cannot use locks/%s (%s); the lock on locks/ itself keeps installs out", self._name, failed)

    def release(self) -> None:
        for fd in (self._fd, self._area_fd):
            if fd is not None:
                os.close(fd)
        self._fd = self._area_fd = None


@contextmanager
def install_lock(store: Store) -> Iterator[None]:
    """Held (shared) by an install from finding its trees until its root is written, so gc cannot sweep them between.

    If it cannot be had (a reader who may not create the lock file, no flock here, a holder of the exclusive lock for
    longer than :data:`STORE_TIMEOUT`: gc holds it only briefly, so that is not gc), the install goes ahead with a
    warning, as with every lock in wheelstore.

    Not taken by the clients of a service store: its ``gc.lock`` is the service's alone, since a client holding it
    shared could hold off the service's gc forever. What it just published is kept for the grace period; before it
    links, a client has the service pin the trees in the venv's root, under this lock (``linking``:
    :mod:`wheelstore.service.rootdoc`), and plans again if a gc took one before the pin.
    """
    site = store.upstream  # an overlay's site store: its lock too, where this user may take it (readers may not)
    locks = [StoreLock(s, exclusive=False) for s in (site, store)
             if s is not None and (s is store or s.policy.trusted_writer(os.geteuid(), s.owner_uid))
             and not (s.policy.service and os.geteuid() != s.owner_uid)]
    for lock in locks:
        lock.acquire()
    try:
        yield
    finally:
        for lock in locks:
            lock.release()


def judge_gc_lock(store: Store) -> tuple[Literal["ok", "warn", "fail"], str, str | None]:
    """doctor: whether ``gc.lock`` is the store owner's (or root's) regular file with the lock role's mode and group;
    the fix replaces it, run by the store's owner or root (who may replace any entry of ``locks/``)."""
    import shlex  # here: every install imports this module, and only doctor quotes

    policy, owner = store.policy, user_name(store.owner_uid)
    path = shlex.quote(str(store.root / "locks" / LOCK_NAME))
    chgrp = f' && chgrp {shlex.quote(policy.group)} "$t"' if policy.group else ""
    fix = (f"t=$(mktemp {shlex.quote(str(store.root / 'locks'))}/.gc.lock.XXXXXX){chgrp} && chmod "
           f'{policy.mode(Role.LOCK):04o} "$t" && mv -f "$t" {path}')
    who = f"run the fix as {owner} (the store's owner) or root"
    try:
        st = os.stat(LOCK_NAME, dir_fd=store.area_fd("locks"), follow_symlinks=False)
    except FileNotFoundError:
        return ("warn", f"locks/{LOCK_NAME} is missing (the store predates init making it): the next install or gc "
                f"by {owner} or root makes it; until then others' installs may go ahead without the store lock; {who}",
                fix)
    if not stat.S_ISREG(st.st_mode):
        return "fail", f"locks/{LOCK_NAME} is not a regular file, so no install can take the store lock; {who}", fix
    if st.st_uid not in (0, store.owner_uid):
        return ("fail" if policy.shared == "all" else "warn",
                f"locks/{LOCK_NAME} belongs to {user_name(st.st_uid)}, who may make it unusable to others (chmod) or "
                f"remove it, so that their installs go ahead without the store lock while gc holds it; {who}", fix)
    have, want = stat.S_IMODE(st.st_mode), policy.mode(Role.LOCK)
    if have != want or (policy.gid is not None and st.st_gid != policy.gid):
        return ("warn", f"locks/{LOCK_NAME} is {have:04o} with group {group_name(st.st_gid)}, the policy wants "
                f"{want:04o}{f' with group {policy.group}' if policy.group else ''}: publishers may not all open "
                f"it; {who}", fix)
    return "ok", f"locks/{LOCK_NAME} is {user_name(st.st_uid)}'s, as it must be (the store's owner or root)", None
