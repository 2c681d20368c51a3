"""Leases: whether a staging entry is work still running, on whichever node and in whichever PID namespace it runs.

A process about to make staging entries (a tree being unpacked, a download, a record being linked, gc's hidden
victims) first takes a lease: ``locks/lease-<id>``, which it holds an exclusive flock on for as long as it runs and
whose mtime a daemon thread touches every :data:`HEARTBEAT` seconds; every entry it makes carries ``<id>`` in its name
(:meth:`Store.staging_name <wheelstore.store.store.Store.staging_name>`). When its work is done (the store is closed,
or the process exits) the holder unlinks the lease, still holding it. A host name and pid, which names used to carry,
say nothing on another node or from another PID namespace: gc deleted a live unpack whose pid it did not know, and
kept a dead one whose pid had been reused.

gc judges an entry by its lease (:func:`probe`, :mod:`~wheelstore.store.staging`): held (a flock without blocking
fails) means alive, however old. A free flock proves its holder gone only where every holder's lock is seen: on the
kernel and mount the lease was made on (its id starts with :func:`node_tag`), or on a filesystem whose locks cross
nodes (GlusterFS; not sshfs, nor NFS with ``local_lock``, nor Lustre's ``localflock``), which gc cannot tell. So a
free lease made here is dead once its last heartbeat is older than :data:`DEAD_AFTER` (a minute), whatever gc's
grace (:func:`dead_after`): what a kill -9 leaves goes with the next gc, not a day later. One made elsewhere is dead
only once the heartbeat is older than the grace period and :data:`MIN_STALE`.

The heartbeat is a thread, not a touch at each step of the work, because steps can be long and give no control back
(a download on a slow link, unpacking a 2 GB wheel, an sdist build running for an hour in a subprocess): a
step-driven heartbeat would make a slow but live step look dead on exactly the filesystems that need one. A thread
stops only when its process stops: killed, or frozen (SIGSTOP) for longer than :data:`MIN_STALE`, which on a
filesystem without cross-node locks nobody can tell from dead.

A lease file is its holder's, mode 0600: nobody else (but root) may open it, so no member can hold another's lease
and keep their work from being removed. What a member can do: hold their own leases forever (their own entries stay;
gc names the holder), plant leases under ids no entry of others names (ignored: a lease only vouches for entries of
its own owner, the store's owner or root, :func:`vouches`), or plant anything in ``locks/`` (gc removes it once old,
as it does every lock file nobody holds). The record inside (who, node, PID namespace, since when) is for messages,
and read as hostile input (:func:`read_record`).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import functools
import hashlib
import os
import re
import stat
import threading
import time
from dataclasses import dataclass

from ..base.fsio import hidden_name
from ..base.logs import log
from ..base.node import NODE_ID, node_id
from .policy import Policy, Role, user_name

#: a lease's file name in ``locks/`` is this followed by its id
PREFIX = "lease-"
#: a lease id: 8 hex digits of :func:`node_tag`, then 24 random ones
LEASE_ID = re.compile(r"[0-9a-f]{32}")
#: seconds between heartbeats
HEARTBEAT = 30.0
#: a lease made on another node or mount counts as dead only after missing this many seconds of heartbeats (ten),
#: whatever gc's grace: its free flock proves nothing where locks do not cross nodes; it also absorbs clock skew
MIN_STALE = 10 * HEARTBEAT
#: a lease made on this kernel and mount that nobody holds counts as dead once its last heartbeat is older than this
#: (or gc's grace, if shorter). Its holder locks it before linking it into view (:meth:`Lease._create`), so there is
#: no moment a live lease is free; the two heartbeats are for a holder whose own flock failed (it then lives by its
#: heartbeat alone) where gc's succeeds
DEAD_AFTER = 2 * HEARTBEAT
#: a record is a few short lines; anything longer was not written by a lease holder
_RECORD_MAX = 512
_RECORD_FIELDS = {
    "uid": re.compile(r"[0-9]{1,10}"),
    "pid": re.compile(r"[0-9]{1,10}"),
    "pidns": re.compile(r"[0-9]{1,20}"),
    "since": re.compile(r"[0-9]{1,12}"),
    "host": re.compile(r"[A-Za-z0-9._-]{1,64}"),
    "machine": NODE_ID,
}


def _read_small(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(256).strip()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    return _read_small("/proc/sys/kernel/random/boot_id") or os.urandom(16).hex()  # unknown: matches nothing


def node_tag(locks_fd: int) -> str:
    """This kernel (its boot id, shared by every container on it) and the mount of ``locks/`` (its device, shared by
    bind mounts of one filesystem): where it matches, flock is one lock for every holder, and a free one proves
    death."""
    dev = os.fstat(locks_fd).st_dev
    return hashlib.sha256(f"{_boot_id()}:{dev}".encode()).hexdigest()[:8]


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _record() -> bytes:
    machine = node_id()  # the node roots name too (:mod:`wheelstore.base.node`)
    return (f"wheelstore lease\nuid={os.geteuid()}\npid={os.getpid()}\npidns={_pid_namespace()}\n"
            f"since={int(time.time())}\nhost={os.uname().nodename}\nmachine={machine}\n").encode("ascii", "replace")


class Lease:
    """One process's lease on a store's ``locks/``: created, locked and then linked into view (so gc never meets it
    unlocked), heartbeat from a daemon thread, unlinked and released by :meth:`release`."""

    def __init__(self, locks_fd: int, policy: Policy) -> None:
        self.id = node_tag(locks_fd) + os.urandom(12).hex()
        self.name = PREFIX + self.id
        self._pid = os.getpid()
        self._written = b""
        self._stop = threading.Event()
        self._dir_fd = os.dup(locks_fd)
        try:
            self._fd = self._create(policy)
        except BaseException:
            os.close(self._dir_fd)
            raise
        self._thread = threading.Thread(target=self._beat, name="wheelstore-lease", daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _create(self, policy: Policy) -> int:
        tmp = hidden_name(self.name)
        fd = policy.create(tmp, dir_fd=self._dir_fd)
        try:
            policy.apply(fd, Role.LEASE)
            self._written = _record()
            os.write(fd, self._written)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:  # no flock here: the heartbeat alone says it is alive
                log.debug("lease %s without a lock: %s", self.name, e.strerror)
            os.link(tmp, self.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd, follow_symlinks=False)
        except BaseException:
            os.close(fd)
            raise
        finally:
            try:
                os.unlink(tmp, dir_fd=self._dir_fd)
            except OSError:
                pass
        return fd

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            try:
                os.utime(self._fd)
            except OSError:  # a full disk or a gone mount: the next beat tries again
                pass

    def release(self) -> None:
        """Unlink the lease (if its name still names it) while holding it, then let it go. A forked child leaves its
        parent's lease alone."""
        if self._fd < 0 or os.getpid() != self._pid:
            return
        _LIVE.discard(self)
        self._stop.set()
        self._thread.join()
        try:
            here = os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False)
            mine = os.fstat(self._fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino) or self._says_mine():
                os.unlink(self.name, dir_fd=self._dir_fd)
        except OSError:
            pass
        finally:
            close_quietly(self._fd)
            os.close(self._dir_fd)
            self._fd = -1


    def _says_mine(self) -> bool:
        """Whether the file at the lease's name holds the record this process wrote: on sshfs the name linked into
        place is another inode to FUSE than the file this process opened, though it is the same file. Nobody else
        can have put a file under this name in the sticky ``locks/`` (it is mine), so the record identifies it."""
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError:
            return False
        try:
            return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(self._written) + 1) == self._written
        finally:
            os.close(fd)


_LIVE: set[Lease] = set()


@atexit.register
def _release_all() -> None:
    """A process that never closed its store still removes its leases on the way out (kill -9 leaves them to gc)."""
    for lease in list(_LIVE):
        lease.release()


def take(locks_fd: int, policy: Policy) -> str:
    """A new lease's id, or, where none can be made (``locks/`` not writable, a full disk), a random id no lease
    file has: the process's entries then count as left over once older than gc's grace (and the lease sweep's
    :data:`MIN_STALE`, as made elsewhere)."""
    try:
        return Lease(locks_fd, policy).id
    except OSError as e:
        log.warning("cannot take a lease in the store's locks/ (%s): gc may take this process's unfinished work for "
                    "leftovers once it is older than its grace period", e.strerror)
        return "00000000" + os.urandom(12).hex()


def release(lease_id: str) -> None:
    """Release this process's lease ``lease_id``, if it holds it."""
    for lease in list(_LIVE):
        if lease.id == lease_id:
            lease.release()


# -- what gc sees ------------------------------------------------------------------------------------------------------


@dataclass
class Record:
    """What a lease file says of its holder: claims, each field checked on its own and dropped if malformed."""

    fields: dict[str, str]

    def describe(self) -> str:
        f = self.fields
        parts = []
        if "pid" in f:
            other_ns = "pidns" in f and int(f["pidns"]) != _pid_namespace()
            parts.append(f"pid {f['pid']}" + (" in another PID namespace" if other_ns else ""))
        if "host" in f:
            parts.append(f"on {f['host']}")
        if "since" in f:
            parts.append("since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(f["since"]))))
        return " ".join(parts)


def read_record(fd: int) -> Record:
    """The record in an open lease file, as hostile input: a bounded read, known keys, each value matched whole."""
    try:
        data = os.pread(fd, _RECORD_MAX + 1, 0)
    except OSError:
        data = b""
    fields: dict[str, str] = {}
    if len(data) <= _RECORD_MAX:
        for line in data.decode("ascii", "replace").splitlines():
            key, _, value = line.partition("=")
            pattern = _RECORD_FIELDS.get(key)
            if pattern is not None and pattern.fullmatch(value) and key not in fields:
                fields[key] = value
    return Record(fields)


@dataclass
class LeaseState:
    """A lease as gc found it."""

    id: str
    #: whether ``locks/lease-<id>`` is a regular file (anything else there is planted, and vouches for nothing)
    exists: bool
    #: True: someone holds its flock; False: nobody did, and this process now does (:attr:`fd`); None: untried
    #: (not ours to open, or no flock on this filesystem)
    held: bool | None
    owner_uid: int = -1
    heartbeat: float = 0.0  #: its mtime: the last heartbeat
    record: Record | None = None
    #: open (and locked by this process when ``held`` is False) until :meth:`close`; -1 when ``held`` is True
    fd: int = -1
    #: whether its flock failed for want of flock here (not because another holds it): only heartbeats tell
    lockless: bool = False

    def close(self) -> None:
        if self.fd >= 0:
            close_quietly(self.fd)
            self.fd = -1

    def describe(self) -> str:
        """For a message: whose lease it is, by its file's owner, and what its record claims."""
        if not self.exists:
            return f"its lease locks/{PREFIX}{self.id} is gone"
        claim = self.record.describe() if self.record is not None else ""
        return f"lease locks/{PREFIX}{self.id} of {user_name(self.owner_uid)}" + (f" ({claim})" if claim else "")


def probe(locks_fd: int, lease_id: str) -> LeaseState:
    """Look at a lease without waiting: try its flock once. A free one stays open and locked by this process (so that
    no other gc judges it at the same time), and one that cannot be locked here stays open, until the caller closes
    it."""
    name = PREFIX + lease_id
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never a symlink, never hang on a FIFO
    try:
        fd = os.open(name, flags, dir_fd=locks_fd)
    except FileNotFoundError:
        return LeaseState(lease_id, False, None)
    except PermissionError:  # another user's: its age is all we may know
        try:
            st = os.stat(name, dir_fd=locks_fd, follow_symlinks=False)
        except OSError:
            return LeaseState(lease_id, False, None)
        return LeaseState(lease_id, stat.S_ISREG(st.st_mode), None, st.st_uid, st.st_mtime)
    except OSError:  # a symlink, a socket: planted
        return LeaseState(lease_id, False, None)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return LeaseState(lease_id, False, None)
    state = LeaseState(lease_id, True, None, st.st_uid, st.st_mtime, read_record(fd))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        state.held = True
        close_quietly(fd)
        return state
    except OSError:  # no flock here (or the file was removed through another client): untried
        state.lockless = True
    else:
        state.held = False
    state.fd = fd
    return state


def dead_after(grace: float, *, proven: bool) -> float:
    """How long a lease nobody holds must have missed heartbeats to count as dead for a gc of this ``grace``:
    :data:`DEAD_AFTER` where its free flock is ``proven`` (made on this kernel and mount: :func:`node_tag`), else the
    grace and :data:`MIN_STALE`."""
    return min(grace, DEAD_AFTER) if proven else max(grace, MIN_STALE)


def close_quietly(fd: int) -> None:
    """Close an fd whose file may have been removed through another client: GlusterFS then fails the close with
    ESTALE, though the fd is closed all the same."""
    try:
        os.close(fd)
    except OSError as e:
        if e.errno != errno.ESTALE:
            raise


def vouches(state: LeaseState, entry_uid: int, store_owner: int) -> bool:
    """Whether a lease speaks for an entry: a regular file of the entry's owner, the store's owner or root. A member
    may plant ``lease-<id>`` once another's lease is gone, and hold it forever; it must not keep their leftovers."""
    return state.exists and state.owner_uid in (entry_uid, store_owner, 0)
