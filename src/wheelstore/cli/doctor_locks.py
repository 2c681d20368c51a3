"""doctor's ``locks`` check: what the store's filesystem does with flock between machines, and whether flock works
here the way wheelstore uses it.

wheelstore locks with flock(2) only, never fcntl locks: each key's lock in ``locks/`` exclusive (a wheel is fetched
and unpacked once), ``locks/gc.lock`` shared by installs and exclusive for gc, and (unless everyone may read it) the
``locks/`` directory itself the same way. Each use is tried here for real, every holder with its own open file
description (two opens of one file or directory), and never one kind of lock while holding another on the same
file: on GlusterFS and NFS a flock and an fcntl lock of one file conflict, which once made doctor call working locks
broken.

Whether a lock taken on another node keeps this one out cannot be tried from one client. :func:`locking` says it from
the filesystem's type and mount options: measured on GlusterFS and sshfs by the tests (tests/test_doctor_locks.py),
documented for NFS, Lustre, GPFS and CephFS.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass

from ..base.mounts import Mount, mount_of
from ..store.policy import Role
from ..store.store import Store
from .doctor_report import Check

#: filesystems of one machine: every process that uses the store locks through the same kernel
LOCAL_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs", "overlay", "bcachefs",
                      "jfs", "reiserfs", "nilfs2", "vfat", "exfat", "hfsplus"})

NFS_FIX = ("mount the NFS filesystem with -o local_lock=none and without nolock (a remount cannot change it: unmount "
           "and mount it again, and change /etc/fstab too)")
NFS_LOCKD_FIX = ("on NFSv3, run rpc.statd on this client (systemctl start rpc-statd) and the lock manager on the "
                 "server; NFSv4 needs neither")
LUSTRE_FIX = "mount the Lustre client with -o flock (not localflock or noflock), and change /etc/fstab too"
SSHFS_FIX = ("no sshfs option makes locks cross clients: install and gc through one node only, or put the store on a "
             "filesystem whose locks do (NFS with local_lock=none, CephFS, GlusterFS, Lustre with -o flock, GPFS)")
#: what FUSE does with a directory's flock, whatever the filesystem: it never passes it to the daemon
FUSE_DIRS = "a directory's flock stays on this client (FUSE passes none to the server)"


@dataclass(frozen=True)
class Locking:
    """What a filesystem does with flock between machines: ``crosses`` is True when a flock on a file taken on one
    node keeps other nodes out, False when it holds on one node only, None when that is unknown."""

    name: str
    crosses: bool | None
    how: str
    fix: str | None = None
    local: bool = False  #: one machine's filesystem: there are no other nodes to cross to


#: network filesystems by their mountinfo type, beyond NFS and Lustre, whose mount options decide
_KNOWN: dict[str, Locking] = {
    "gpfs": Locking("GPFS", True, "flock is granted across nodes by GPFS's token manager (as IBM documents it)"),
    "ceph": Locking("CephFS", True, "flock goes to the metadata server, so it crosses clients"),
    "fuse.ceph-fuse": Locking("CephFS", True, f"ceph-fuse sends flock on files to the metadata server, so it crosses "
                              f"clients; {FUSE_DIRS}"),
    "fuse.glusterfs": Locking("GlusterFS", True, f"the volume's locks translator grants flock on files across "
                              f"clients; {FUSE_DIRS}, so the lock on locks/ itself guards this node only and gc.lock "
                              "alone keeps gc and installs apart between nodes"),
    "fuse.sshfs": Locking("sshfs", False, "SFTP has no locks, so flock is kept by this node's kernel and excludes "
                          "only processes on this node", SSHFS_FIX),
    "beegfs": Locking("BeeGFS", None, "flock holds on one node unless the client enables global file locks",
                      "set tuneUseGlobalFileLocks = true in /etc/beegfs/beegfs-client.conf and restart the client"),
}


def locking(mount: Mount | None) -> Locking:
    """What the filesystem of ``mount`` does with flock between machines, from its type and mount options."""
    if mount is None:
        return Locking("an unknown filesystem", None, "the mount table cannot be read here")
    kind = mount.fstype
    if kind in LOCAL_FS:
        return Locking(kind, True, "it is local to this machine, so every process that uses the store locks "
                       "through one kernel", local=True)
    if kind in ("nfs", "nfs4"):
        return _nfs(mount)
    if kind == "lustre":
        return _lustre(mount)
    if kind in ("cifs", "smb3"):
        if mount.option("nobrl") is not None:
            return Locking("SMB", False, "mounted with nobrl, locks are kept by this client alone",
                           "mount without nobrl")
        return Locking("SMB", None, "flock reaches the server as a byte-range lock only where the client kernel "
                       "supports it")
    if kind in _KNOWN:
        return _KNOWN[kind]
    if kind.startswith("fuse"):
        return Locking("a FUSE filesystem", None, f"whether flock on files reaches its server is up to its "
                       f"daemon; {FUSE_DIRS}")
    return Locking(kind, None, "wheelstore does not know this filesystem: if other machines mount it, whether their "
                   "locks meet these is unknown")


def _nfs(mount: Mount) -> Locking:
    """NFS: ``local_lock=`` (which ``nolock`` sets to ``all``) says whether flock goes to the server."""
    local = mount.option("local_lock")
    if local is None:
        local = "all" if mount.option("nolock") is not None else "none"
    name = f"NFS with local_lock={local}"
    if local in ("flock", "all"):
        return Locking(name, False, "flock is kept by this client alone", NFS_FIX)
    return Locking(name, True, "flock of a file goes to the server as a lock of the whole file, so it crosses "
                   "clients (NFSv3 through the lock manager, NFSv4 in the protocol) and needs the file open for "
                   "writing to be exclusive; a directory's flock stays on this client (the NFS client sends none to "
                   "the server), so the lock on locks/ itself guards this node only and gc.lock alone keeps gc and "
                   "installs apart between nodes")


def _lustre(mount: Mount) -> Locking:
    if mount.option("flock") is not None:
        return Locking("Lustre with flock", True, "flock is coherent across clients")
    if mount.option("localflock") is not None:
        return Locking("Lustre with localflock", False, "flock holds on this node only", LUSTRE_FIX)
    return Locking("Lustre without flock", False, "flock is not supported (noflock, the default) and fails",
                   LUSTRE_FIX)


# -- trying flock here -------------------------------------------------------------------------------------------------


#: opens the scratch file or directory anew: each call is a new open file description, as another process's
Opener = Callable[[], int]


class _Broken(Exception):
    """A probe found flock not doing what wheelstore relies on: the message says what."""


def _flock(fd: int, op: int) -> str | None:
    """None when the lock is granted, ``"held"`` when another holder has it, else the error (``ENOLCK: ...``)."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except BlockingIOError:
        return "held"
    except OSError as e:
        return f"{errno.errorcode.get(e.errno or 0, str(e.errno))}: {e.strerror}"
    return None


def _granted(fd: int, op: int, what: str) -> None:
    if (found := _flock(fd, op)) is not None:
        raise _Broken(f"{what} is refused ({'held by nobody else' if found == 'held' else found})")


def _kept_out(fd: int, op: int, what: str) -> None:
    found = _flock(fd, op)
    if found is None:
        raise _Broken(f"{what} is granted, so the lock excludes nothing")
    if found != "held":
        raise _Broken(f"{what} fails ({found}) instead of waiting")


def _exclusive(opener: Opener, kind: str) -> None:
    """One holder keeps a second one out, and lets go when it closes its file."""
    fds: list[int] = []
    try:
        for _ in range(2):
            fds.append(opener())
        _granted(fds[0], fcntl.LOCK_EX, f"an exclusive flock of a {kind}")
        _kept_out(fds[1], fcntl.LOCK_EX, f"a second exclusive flock of a {kind} while one is held")
        os.close(fds.pop(0))
        _granted(fds[0], fcntl.LOCK_EX, f"a {kind}'s exclusive flock once its holder closed it")
    finally:
        for fd in fds:
            os.close(fd)


def _shared(opener: Opener) -> None:
    """Shared holders admit each other (installs) and keep an exclusive one out (gc)."""
    fds: list[int] = []
    try:
        for _ in range(3):
            fds.append(opener())
        _granted(fds[0], fcntl.LOCK_SH, "a shared flock")
        _granted(fds[1], fcntl.LOCK_SH, "a second shared flock while one is held")
        _kept_out(fds[2], fcntl.LOCK_EX, "an exclusive flock while shared ones are held")
    finally:
        for fd in fds:
            os.close(fd)


def _read_only(opener: Opener) -> None:
    fd = opener()
    try:
        _granted(fd, fcntl.LOCK_EX, "an exclusive flock of a file opened read-only")
    finally:
        os.close(fd)


def _probes(directory_locked: bool) -> list[tuple[Callable[[Opener, Opener, Opener], None], str]]:
    """Each way wheelstore uses flock (tried with openers of the scratch file read-write, read-only, and of the
    scratch directory), and what breaks where it does not work."""
    return [
        (lambda rw, ro, d: _exclusive(rw, "file"),
         "per-key locks do not hold, so concurrent installs may fetch and unpack one wheel more than once (the rename "
         "keeps the result correct)"),
        (lambda rw, ro, d: _shared(rw), "gc.lock cannot keep gc away from trees that installs are linking"),
        (lambda rw, ro, d: _read_only(ro), "a member who may only read a lock file goes ahead without that lock"),
        (lambda rw, ro, d: _exclusive(d, "directory"),
         "gc cannot lock the locks/ directory and refuses to run" if directory_locked else
         "init's lock on the store directory does not hold"),
    ]


def probe(store: Store) -> list[str] | None:
    """Try each way wheelstore uses flock on scratch entries (a file in ``locks/``, a directory in ``staging/``, named
    like every staging entry and removed at once): what broke and what that breaks, or None when this user may not
    create them."""
    if not os.access(store.root / "locks", os.W_OK | os.X_OK):  # nor a lease: staging_name would try to take one
        return None
    locks, staging = store.area_fd("locks"), store.area_fd("staging")
    name = store.staging_name("doctor", secrets.token_hex(32), ".lock")
    dirname = store.staging_name("doctor", secrets.token_hex(32))
    try:
        os.close(store.policy.create(name, dir_fd=locks))
    except PermissionError:
        return None
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    problems = []
    try:
        os.close(store.policy.mkdir(dirname, Role.STAGING_DIR, dir_fd=staging))
        openers = (lambda: os.open(name, os.O_RDWR | flags, dir_fd=locks),
                   lambda: os.open(name, os.O_RDONLY | flags, dir_fd=locks),
                   lambda: os.open(dirname, os.O_RDONLY | os.O_DIRECTORY | flags, dir_fd=staging))
        for run, breaks in _probes(not os.fstat(locks).st_mode & stat.S_IROTH):
            try:
                run(*openers)
            except _Broken as e:
                problems.append(f"{e}: {breaks}")
    finally:
        os.unlink(name, dir_fd=locks)
        try:
            os.rmdir(dirname, dir_fd=staging)
        except FileNotFoundError:
            pass
    return problems


# -- the check ---------------------------------------------------------------------------------------------------------

TRIED = ("tried here, each holder with its own open: an exclusive flock of a file or a directory keeps a second "
         "holder out and ends on close, shared ones admit each other and keep an exclusive one out, and a file opened "
         "read-only locks exclusively (wheelstore takes only flock, never fcntl locks)")
NOT_CROSSING = ("processes on different nodes do not wait for each other: two nodes installing one wheel at once "
                "both unpack it (the rename keeps one), and gc on one node does not wait for installs on another, "
                "which may be linking a tree it removes; wheelstore still takes every lock, so each node's own "
                "processes exclude each other, and the rename keeps every tree whole")
UNTESTABLE = ("not testable from one client: whether a flock taken on another node keeps this one out (to see it, "
              "hold `flock FILE sleep 60` on one node while `flock -n FILE true` on another, FILE on this filesystem, "
              "must fail)")


def check(store: Store) -> Check:
    """The ``locks`` check: the filesystem of ``locks/`` and what it does with flock between nodes, then flock tried
    here for real; ok only when both are sound."""
    mount = mount_of(store.root / "locks")
    fs = locking(mount)
    parts = [f"the store's locks/ is on {fs.name}{_where(fs, mount)}: {fs.how}"]
    problems = probe(store)
    if problems is None:
        parts.append("flock not tried: you may not create files in the store's locks/ and staging/")
    elif problems:
        parts.append("tried here: " + "; ".join(problems))
    else:
        parts.append(TRIED)
    if fs.crosses is False:
        parts.append(f"so {NOT_CROSSING}")
    elif fs.crosses is None:
        parts.append(f"where they do not cross nodes, {NOT_CROSSING}")
    elif not fs.local:
        parts.append(UNTESTABLE)
    fix = fs.fix
    if fix is None and problems and mount is not None and mount.fstype in ("nfs", "nfs4") \
            and any("ENOLCK" in p for p in problems):
        fix = NFS_LOCKD_FIX
    ok = problems == [] and fs.crosses is True
    return Check("locks", "ok" if ok else "warn", "; ".join(parts), fix)


def _where(fs: Locking, mount: Mount | None) -> str:
    """`` (fuse.sshfs, alice@host:/x on /mnt)``: the type when the name does not say it, what is mounted, and where."""
    if mount is None:
        return ""
    kind = "" if fs.name.startswith(mount.fstype) else f"{mount.fstype}, "
    return f" ({kind}{mount.source} on {mount.point})"
