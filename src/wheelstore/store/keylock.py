"""Per-key advisory locks, so that work on one key happens once however many processes ask.

Locks are an optimisation: correctness comes from the atomic, never-replacing rename. So a lock that cannot be had
(a planted non-file, a lock file we may not open, flock unsupported on a network filesystem, a holder stuck for longer
than the timeout) is reported as a warning and the work goes ahead unlocked, never hangs and never fails. Any member
may hold any lock, so the wait for a key another user holds is short (:data:`KEY_TIMEOUT`; a lock the kernel says
the waiter's own processes hold is waited for as long as they need, up to :data:`OWN_TIMEOUT`), and a waiter says,
within a second, who holds the lock and since when (:func:`holder`): a member holding a lock delays others by
seconds, and visibly.

Concurrent processes asking for the same set of keys should split it, not queue on it: :func:`share_work` tries each
key without waiting first (:meth:`KeyLock.try_acquire`), puts aside the ones another process is working on, and waits
for those only when nothing else is left to do.

A lock file lives in the store's sticky ``locks/`` area and appears there with its final mode (it is built under a
private name and linked into place). A key lock's holder removes it when done if it owns it, so lock files do not pile
up; a waiter that then wins a lock on the removed inode notices (the path no longer names its inode) and starts over,
as does one whose lock fails because the file was removed through another client (ESTALE or ENOENT, on GlusterFS).
The store lock's ``gc.lock`` is never removed, nor replaced (:class:`~wheelstore.store.storelock.StoreLock`).

"If it owns it" is the sticky bit's word: the holder unlinks the file, still holding it, wherever ``locks/`` lets it
(its own file, or any as the store's owner or root). A file another member held last stays until gc removes it, once
nobody holds it and it is older than the grace period (:mod:`~wheelstore.store.leftovers`, by the same protocol). The
check after locking compares what one process sees through one mount (its fd, and the path under the same directory
fd), never inode numbers across mounts, which differ between FUSE mounts of one volume; through a network
filesystem's attribute cache it may be fooled for that cache's lifetime, and two holders then do the work twice,
which the rename keeps correct, as when a lock cannot be had at all.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

from ..base import cancel, progress
from ..base.fsio import hidden_name
from ..base.logs import log
from ..base.progress import Kind, Task
from .policy import Policy, Role, user_name

T = TypeVar("T")
R = TypeVar("R")

#: ``WHEELSTORE_LOCK_TIMEOUT``: seconds to wait for any lock, overriding every default below
_TIMEOUT_VARIABLE = "WHEELSTORE_LOCK_TIMEOUT"
#: seconds to wait for another process's lock on a key before going ahead without it: short, since the rename keeps
#: the result correct unlocked and any member may hold a key's lock as long as they like
KEY_TIMEOUT = 10.0
#: seconds to wait for ``locks/gc.lock``: installs hold it shared while they fetch and link, gc exclusive briefly
STORE_TIMEOUT = 60.0
#: seconds to wait for a key's lock that the kernel says this user's own processes hold (concurrent CI jobs of one
#: account): they cannot be another member's stalling, and waiting beats downloading and unpacking a wheel again
OWN_TIMEOUT = 900.0
#: a waiter says who holds the lock once it has waited this long (so short waits, the common case, stay quiet)
NOTICE_AFTER = 0.5


def configured_timeout(default: float) -> float:
    """``WHEELSTORE_LOCK_TIMEOUT`` if it is set to a number of seconds, else ``default``; read when a lock is made, so
    a test or a wrapper may change it in-process."""
    try:
        value = float(os.environ.get(_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return default
    return value if value >= 0 else default


class _WaitBudget:
    """What one process may wait for key locks in all: :data:`KEY_TIMEOUT` (or the configured timeout) across every
    key, not per key. Any member may hold the lock of every key an install is about to publish (a new release's
    sha256s are public), and waits of 10 s each, a few at a time, would add up to minutes; once the budget is spent,
    a key whose lock is held goes ahead without it at once (the rename keeps the result correct)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spent = 0.0

    def left(self, timeout: float) -> float:
        with self._lock:
            return max(0.0, timeout - self.spent)

    def spend(self, seconds: float) -> None:
        with self._lock:
            self.spent += seconds


_KEY_WAITS = _WaitBudget()


class LockUnavailable(Exception):
    """This lock cannot be taken; the caller proceeds without it."""

    #: whether another process held it for longer than the timeout (rather than the lock being unusable)
    timed_out = False


#: what opening or locking a lock file fails with on GlusterFS once its holder removed it through another client
_REMOVED = (errno.ESTALE, errno.ENOENT)


def _stale_retry(e: OSError, deadline: float) -> None:
    """After :data:`_REMOVED` from opening or locking a lock file: it was removed by its holder through another client
    of a network filesystem (GlusterFS), where the lock fails instead of being won on the removed inode, and the name
    may name that inode for a moment still. Return to start over (as when the path no longer names the locked inode);
    re-raise anything else, and LockUnavailable once ``deadline`` has passed."""
    if e.errno not in _REMOVED:
        raise e
    if time.monotonic() >= deadline:
        raise LockUnavailable(f"its file keeps being removed through another client ({e.strerror})") from None
    time.sleep(0.01)


def _close_lock_fd(fd: int) -> None:
    """Close a lock fd, whose file may have been removed through another client: the close then fails (ESTALE or
    ENOENT on GlusterFS), though the fd is closed all the same, and a lock file holds nothing to lose."""
    try:
        os.close(fd)
    except OSError:
        pass


class KeyLock:
    """An exclusive ``flock`` on ``locks/<name>``, taken on entry and released on exit."""

    #: the flock operation: exclusive here; a subclass may share
    _op: int = fcntl.LOCK_EX

    def __init__(self, dir_fd: int, name: str, policy: Policy, timeout: float | None = None, *,
                 what: str | None = None) -> None:
        self._dir_fd = dir_fd
        self._name = name
        #: what the lock guards, as a waiter's row names it (``numpy 2.1.0``): a key's lock file name says nothing
        self.what = what or f"locks/{name}"
        self._policy = policy
        self._timeout = configured_timeout(KEY_TIMEOUT) if timeout is None else timeout
        self._fd: int | None = None
        self._writable = False  #: whether the open fd may write (the holder's record)

    def acquire(self) -> None:
        started = time.monotonic()
        try:
            self._fd = self._acquire()
        except LockUnavailable as e:
            log.warning("going ahead without lock locks/%s: %s", self._name, e)
        waited = time.monotonic() - started
        if waited >= 0.1:  # -v evidence of who waited for whom, and how long
            log.debug("waited %.1fs for locks/%s", waited, self._name)

    def try_acquire(self) -> bool:
        """Take the lock unless another process holds it right now: False then, and nothing is held. True when it is
        taken, or when it cannot be had at all (the work then goes ahead unlocked, as with :meth:`acquire`)."""
        try:
            fd = self._acquire(blocking=False)
        except LockUnavailable as e:
            log.warning("going ahead without lock locks/%s: %s", self._name, e)
            return True
        if fd is None:
            return False
        self._fd = fd
        return True

    def take(self, *, wait: bool) -> bool:
        """:meth:`acquire` (always True) with ``wait``, else :meth:`try_acquire`: what :func:`share_work`'s attempts
        need."""
        if wait:
            self.acquire()
            return True
        return self.try_acquire()

    #: the process-wide budget this lock's waits count against, if any (key locks; not the store lock)
    _budget: _WaitBudget | None = _KEY_WAITS

    def _acquire(self, *, blocking: bool = True) -> int | None:
        """The locked fd; None, without ``blocking``, when another process holds the lock."""
        started = time.monotonic()
        left = self._timeout if self._budget is None else self._budget.left(self._timeout)
        deadline = started + left
        try:
            return self._acquire_by(deadline, blocking)
        finally:
            if self._budget is not None and blocking:  # waits for my own processes past it are not counted
                self._budget.spend(min(time.monotonic() - started, left))

    def _acquire_by(self, deadline: float, blocking: bool) -> int | None:
        while True:
            try:
                fd = self._open()
            except OSError as e:  # ESTALE only: others are LockUnavailable
                _stale_retry(e, deadline)
                continue
            try:
                if not self._wait(fd, deadline, blocking):
                    _close_lock_fd(fd)
                    return None
                held = os.fstat(fd)
                try:
                    now = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
            except OSError as e:
                _close_lock_fd(fd)
                _stale_retry(e, deadline)
                continue
            except BaseException:
                _close_lock_fd(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                if self._writable:
                    _write_record(fd)
                return fd
            _close_lock_fd(fd)  # the holder before us removed this lock file: take the current one

    def _wait(self, fd: int, deadline: float, blocking: bool = True, name: str | None = None) -> bool:
        """Lock ``fd``: True once it is locked; False at once, without ``blocking``, if another process holds it.

        A wait longer than :data:`NOTICE_AFTER` is announced once, naming the holder, so that nobody waits in silence:
        a row of the display from then until the wait ends (:func:`_notice`).
        """
        waiting: list[Task] = []
        try:
            return self._poll(fd, deadline, blocking, name, waiting)
        finally:
            for task in waiting:
                task.done()

    def _poll(self, fd: int, deadline: float, blocking: bool, name: str | None, waiting: list[Task]) -> bool:
        delay = 0.002
        notice_at: float | None = time.monotonic() + NOTICE_AFTER
        own_until = time.monotonic() + self._own_timeout if name is None else 0.0
        while True:
            try:
                fcntl.flock(fd, self._op | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking:
                    return False
            except OSError as e:  # e.g. ENOLCK on a network filesystem without lock support
                if e.errno in _REMOVED and name is None:
                    raise  # the file was removed through another client: the caller opens it anew
                raise LockUnavailable(f"flock failed: {e.strerror}") from None
            now = time.monotonic()
            if now >= deadline and now < own_until and _held_by_me(fd):
                pass  # my own process: waited for as long as before, past the short bound meant for others
            elif now >= deadline and _free_now(fd, self._op):  # its holder let go since the try above
                return True
            elif now >= deadline:
                if name is not None:  # not this lock's file (the store lock's directory)
                    error = LockUnavailable(f"waited {self._timeout:g}s, still held by {holder(fd)}")
                elif self._budget is not None and self._budget.left(self._timeout) <= 0 and notice_at is not None:
                    error = LockUnavailable(f"held by {holder(fd)}, and this process has already waited "
                                            f"{self._timeout:g}s for locks")
                else:
                    error = LockUnavailable(f"waited {self._timeout:g}s, still held by {holder(fd)}")
                error.timed_out = True
                raise error
            if notice_at is not None and now >= notice_at:
                notice_at = None
                mine = name is None and own_until > deadline and _held_by_me(fd)
                waiting.append(self._notice(fd, name, self._own_timeout if mine else self._timeout))
            cancel.sleep(delay)
            delay = min(delay * 2, 0.05)

    #: what the waiter does once the timeout has passed, for the notice
    _after_timeout = "going ahead without it"

    def _notice(self, fd: int, name: str | None, timeout: float) -> Task:
        """The wait's row, ``waiting for numpy 2.1.0, held by wsbob (pid 123) since 19:40:12 UTC``, open until the
        wait ends. Where no live display shows it (a log, the API), it is a warning, once."""
        who = holder(fd)
        shown = progress.current()
        task = shown.task(Kind.WAIT, f"for {self.what}")
        task.update(detail=f"held by {who.rpartition(' (')[0] if who.endswith(' ago)') else who}")  # the row counts
        if not shown.live:
            path = f"locks/{self._name if name is None else name}" if name != "" else "the locks/ directory"
            log.warning("waiting for %s, held by %s; %s after %gs", path, who, self._after_timeout, timeout)
        return task

    @property
    def _own_timeout(self) -> float:
        """How long a lock my own processes hold is waited for: :data:`OWN_TIMEOUT` for a key, unless
        ``WHEELSTORE_LOCK_TIMEOUT`` sets one bound for every wait."""
        return configured_timeout(OWN_TIMEOUT) if self._budget is not None else self._timeout

    def _open(self) -> int:
        # O_NONBLOCK: a FIFO planted in locks/ must not hang us in open().
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        while True:
            try:
                try:
                    fd = os.open(self._name, os.O_RDWR | flags, dir_fd=self._dir_fd)
                    self._writable = True
                except PermissionError:  # flock needs no write access on local filesystems
                    fd = os.open(self._name, os.O_RDONLY | flags, dir_fd=self._dir_fd)
                    self._writable = False
            except FileNotFoundError:
                if not self._may_create():
                    raise LockUnavailable("it is missing, and only the store's owner or root makes it") from None
                self._create()  # by us or, if it lost the race, by someone else: open it again either way
                continue
            except OSError as e:  # ELOOP (a symlink), EISDIR, EACCES, ...
                if e.errno == errno.ESTALE:
                    raise  # removed through another client: the caller tries again
                raise LockUnavailable(f"cannot open it ({e.strerror})") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise LockUnavailable("it is not a regular file")
            return fd

    def _may_create(self) -> bool:
        """Whether this process may create the missing lock file: anyone may create a key's."""
        return True

    def _create(self) -> None:
        """Make the lock file appear with its final mode: build it under a private name, then link it into place.

        Creating it in place would expose it, for an instant, with the creator's private mode, and a member opening
        it just then would be refused.
        """
        tmp = hidden_name(self._name)
        try:
            fd = self._policy.create(tmp, dir_fd=self._dir_fd)
        except OSError as e:
            raise LockUnavailable(f"cannot create it ({e.strerror})") from None
        try:
            self._policy.apply(fd, Role.LOCK)
            os.link(tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass  # someone else's appeared first; the caller opens that one
        except OSError as e:  # no hard links on this filesystem, a full disk or quota: go ahead unlocked
            raise LockUnavailable(f"cannot create it ({e.strerror})") from None
        finally:
            os.close(fd)
            try:
                os.unlink(tmp, dir_fd=self._dir_fd)
            except OSError:
                pass

    def release(self) -> None:
        """Remove the lock file while still holding it, if the sticky bit lets this process (otherwise gc does, once
        it is old), then let go. Only the file locked is removed, never one that replaced it."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            held = os.fstat(fd)
            now = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
            if (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                os.unlink(self._name, dir_fd=self._dir_fd)
        except OSError:  # gone already, or another member's file in the sticky locks/
            pass
        finally:
            _close_lock_fd(fd)  # releases the flock

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


# -- who holds a lock -------------------------------------------------------------------------------------------------

#: the record a holder writes into its lock file: its pid and uid (for when ``/proc`` hides them); the file's mtime
#: is then when it took the lock
_RECORD = "pid={pid} uid={uid}\n"
_RECORD_MAX = 128


def _write_record(fd: int) -> None:
    """Say in the lock file who holds it, and (by its mtime) since when. Best effort: the lock works without it."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _RECORD.format(pid=os.getpid(), uid=os.geteuid()).encode(), 0)
    except OSError:
        pass


def holder(fd: int) -> str:
    """Who holds the lock on ``fd``'s file and since when, for a message: ``wsbob (pid 123) since 19:40:12 UTC (35s
    ago)``.

    The kernel's word first (``/proc/locks`` names the holding pids, ``/proc/<pid>/status`` their uid), which no
    member can forge. Where ``/proc`` says nothing (another pid namespace, ``hidepid``), what the holder wrote into the
    lock file is shown, marked as its claim and sanitised, since any member may write that file; failing that, the
    file's owner. "Since" is the file's mtime: when the last holder wrote its record (or created the file).
    """
    try:
        st = os.fstat(fd)
    except OSError:
        return "another process"
    pids = kernel_holders(st)
    if pids:
        who = ", ".join(f"{_uid_of(pid)} (pid {pid})" for pid in pids[:3]) + (" and others" if len(pids) > 3 else "")
    else:
        claim = _record_claim(fd)
        who = f"a process the lock file names as {claim}" if claim else f"a process (the file belongs to " \
            f"{user_name(st.st_uid)})"
    age = max(0, int(time.time() - st.st_mtime))
    return f"{who} since {time.strftime('%H:%M:%S', time.gmtime(st.st_mtime))} UTC ({age}s ago)"


def kernel_holders(st: os.stat_result) -> list[int]:
    """The pids ``/proc/locks`` lists as holding (not waiting for) a lock on this inode: any user may read it, for a
    file only its owner may open (another user's lease)."""
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[5] != ident:  # "->": a process blocked on the lock
            continue
        if fields[4].isdigit() and int(fields[4]) > 0 and int(fields[4]) not in pids:
            pids.append(int(fields[4]))
    return pids


def _uid_of(pid: int) -> str:
    """The user a process runs as (its effective uid), by name; "an unknown user" if ``/proc`` does not say."""
    uid = _euid_of(pid)
    return "an unknown user" if uid is None else user_name(uid)


def _euid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _free_now(fd: int, op: int) -> bool:
    """One more try at the lock on ``fd``, before giving up on it: a holder that let go between the last try and the
    look at ``/proc/locks`` is no longer listed there, and is neither mine nor anyone's to wait for."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _held_by_me(fd: int) -> bool:
    """Whether the kernel says only processes of this user hold the lock on ``fd``'s file (never the lock file's
    own record, which any member may write)."""
    try:
        pids = kernel_holders(os.fstat(fd))
    except OSError:
        return False
    return bool(pids) and all(_euid_of(pid) == os.geteuid() for pid in pids)


def _record_claim(fd: int) -> str:
    """What the lock file's record says, reduced to ``pid N, user X`` (anything else in it is ignored)."""
    try:
        data = os.pread(fd, _RECORD_MAX, 0).decode("ascii", "replace")
    except OSError:
        return ""
    fields = dict(part.partition("=")[::2] for part in data.split())
    pid, uid = fields.get("pid", ""), fields.get("uid", "")
    if not (pid.isdigit() and uid.isdigit() and len(pid) < 10 and len(uid) < 10):
        return ""
    return f"{user_name(int(uid))} (pid {int(pid)})"


def share_work(items: Sequence[T], attempt: Callable[[T, bool], R | None], *, jobs: int) -> list[R]:
    """``attempt(item, wait)`` for every item, on up to ``jobs`` threads; the results in item order.

    Several processes given the same keys split them instead of queueing on them: every item is first tried with
    ``wait=False``, and ``attempt`` returns None when another process holds the item's lock. Such an item is put
    aside and tried again with ``wait=True`` (which must not return None) once nothing untried is left, so a process
    waits only when it has nothing else to do, and the waits end as the holders finish (or die: their flocks go with
    them). The first exception stops the items not yet started and is raised once the running ones are done; a
    cancel (Ctrl-C) stops them too, and is not waited for (:func:`wheelstore.base.cancel.threads`).
    """
    board = _Board(len(items))
    results: dict[int, R] = {}

    def worker() -> None:
        while (turn := board.next()) is not None:
            index, wait = turn
            try:
                result = attempt(items[index], wait)
            except BaseException as e:
                board.fail(e)
                return
            if result is not None:
                results[index] = result
            elif wait:
                board.fail(AssertionError(f"{attempt!r} returned None although told to wait"))
                return
            else:
                board.put_aside(index)

    workers = max(1, min(jobs, len(items)))
    if workers == 1:
        worker()
    else:
        with cancel.threads(workers, "share") as pool:
            for future in [pool.submit(worker) for _ in range(workers)]:
                future.result()
    if board.error is not None:
        raise board.error
    cancel.check()  # the board stopped handing out items
    return [results[i] for i in range(len(items))]


class _Board:
    """What is left to do, shared by one process's workers: untried items first, then the put-aside ones."""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._untried = deque(range(count))
        self._aside: deque[int] = deque()
        self.error: BaseException | None = None

    def next(self) -> tuple[int, bool] | None:
        """The next item and whether to wait for it; None when all is done or something failed."""
        with self._lock:
            if self.error is not None or cancel.cancelled():
                return None
            if self._untried:
                return self._untried.popleft(), False
            if self._aside:
                return self._aside.popleft(), True
            return None

    def put_aside(self, index: int) -> None:
        with self._lock:
            self._aside.append(index)

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error


# -- the store-wide lock -----------------------------------------------------------------------------------------------


