"""doctor's ``locks`` check against what locks measurably do (issue 18, point 5 and acceptance 5).

On ext4 (the local disk), GlusterFS (two FUSE mounts of one volume, as two nodes) and sshfs (two mounts of one
directory), each test first measures with two processes, one holding an flock and the other trying it through the
other mount, whether flock is exclusive across them; then it runs the installed ``doctor --json`` as a test user and
asserts that its verdict agrees. NFS, Lustre, GPFS and CephFS cannot be mounted here: what doctor makes of their
mount options is checked on mountinfo lines as those filesystems write them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from wheelstore.base.mounts import mount_of, parse
from wheelstore.cli.doctor_locks import LUSTRE_FIX, NFS_FIX, SSHFS_FIX, _Broken, _exclusive, locking
from wheelstore.venv.linkmode import fs_type

from .cluster import Mounts, SshfsPair
from .conftest import SYSTEM_PYTHON, Runner, Users
from .test_doctor import _doctor

#: holds an exclusive flock on argv[1] (a file; a directory with argv[2] == "dir"; an fcntl lock of the file instead
#: with "fcntl") until stdin closes
HOLD = """\
import fcntl, os, sys
flags = os.O_RDONLY | os.O_DIRECTORY if sys.argv[2] == "dir" else os.O_RDWR | os.O_CREAT
fd = os.open(sys.argv[1], flags, 0o666)
if sys.argv[2] == "fcntl":
    fcntl.lockf(fd, fcntl.LOCK_EX)
else:
    fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""
#: tries an exclusive flock on argv[1] without waiting (always a flock): says whether the holder kept it out
TRY = """\
import fcntl, os, sys, time
flags = os.O_RDONLY | os.O_DIRECTORY if sys.argv[2] == "dir" else os.O_RDWR
deadline = time.monotonic() + 10
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:  # the other client may see it late
    time.sleep(0.05)
fd = os.open(sys.argv[1], flags)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("kept out")
else:
    print("granted")
"""


def _exclusive_across(run: Runner, holder: tuple[str, Path], prober: tuple[str, Path], kind: str = "file") -> bool:
    """Whether an exclusive lock that one process holds through ``holder``'s path keeps a second process, trying an
    flock through ``prober``'s path (the same file through another mount), out: measured, with two real processes.
    ``kind``: the holder's flock of a ``file`` or ``dir``, or its ``fcntl`` lock of a file."""
    (hold_user, hold_path), (try_user, try_path) = holder, prober
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", HOLD, str(hold_path), kind], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd="/", env=run.env(hold_user),
                            **run.popen_kwargs(hold_user, 0))
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        done = run.python(try_user, TRY, str(try_path), kind)
        assert done.returncode == 0, done.stderr
        verdict = done.stdout.strip()
        assert verdict in ("kept out", "granted"), verdict
        return verdict == "kept out"
    finally:
        proc.communicate(timeout=30)


def _locks(run: Runner, user: str, store: Path) -> dict[str, object]:
    done, checks, _ = _doctor(run, user, store)
    assert done.returncode == 0, done.stdout
    return checks["locks"]


def _no_scratch_left(store: Path) -> None:
    """Nothing doctor made is left (its probes, and the lease naming them; libfuse's ``.fuse_hidden`` name for a
    file unlinked while open goes when it is closed)."""
    locks = [n for n in os.listdir(store / "locks") if not n.startswith(".fuse_hidden")]
    assert locks == ["gc.lock"] and os.listdir(store / "staging") == []


def test_ext4_locks_exclude_every_process_and_doctor_says_so(run: Runner, users: Users, workdir: Path) -> None:
    if (kind := fs_type(str(workdir))) != "ext4":
        pytest.skip(f"/var/tmp is on {kind}, not ext4")
    store = workdir / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    scratch = workdir / "measure.lock"
    assert _exclusive_across(run, (users.alice, scratch), (users.bob, scratch))
    (workdir / "measure-dir").mkdir(mode=0o755)
    assert _exclusive_across(run, (users.alice, workdir / "measure-dir"), (users.bob, workdir / "measure-dir"), "dir")
    assert not _exclusive_across(run, (users.alice, scratch), (users.bob, scratch), "fcntl")  # they never meet here
    locks = _locks(run, users.bob, store)
    detail = str(locks["detail"])
    assert locks["status"] == "ok" and locks["fix"] is None, detail
    assert "on ext4" in detail and "local to this machine" in detail and "fcntl" in detail
    assert "not testable" not in detail  # one machine: nothing is left untried
    _no_scratch_left(store)


def test_gluster_flock_crosses_mounts_and_doctor_says_ok(gluster: Mounts, run: Runner, users: Users) -> None:
    """flock on a file is exclusive across the two mounts, and a directory's is not (FUSE keeps directory locks on
    the client): doctor, through either mount, says both, and no longer calls the locks broken (it took an fcntl
    lock while holding its own flock, and the two conflict on GlusterFS)."""
    one, two = gluster.fresh()
    assert run(users.alice, "init", str(one / "store"), "--group", users.group).returncode == 0
    assert _exclusive_across(run, (users.alice, one / "measure.lock"), (users.bob, two / "measure.lock"))
    (one / "measure-dir").mkdir(mode=0o755)
    assert not _exclusive_across(run, (users.alice, one / "measure-dir"), (users.bob, two / "measure-dir"), "dir")
    # an fcntl lock keeps a flock out there (on a local disk they never meet): never try one while holding the other
    assert _exclusive_across(run, (users.alice, one / "measure.lock"), (users.bob, one / "measure.lock"), "fcntl")
    for user, mnt in ((users.bob, two), (users.alice, one)):
        locks = _locks(run, user, mnt / "store")
        detail = str(locks["detail"])
        assert locks["status"] == "ok" and locks["fix"] is None, detail
        assert "on GlusterFS (fuse.glusterfs" in detail and "grants flock on files across clients" in detail
        assert "a directory's flock stays on this client" in detail
        assert "not testable from one client" in detail and "flock -n FILE true" in detail
        assert "refused" not in detail and "fails" not in detail
        _no_scratch_left(mnt / "store")


def test_sshfs_flock_stays_on_one_mount_and_doctor_warns(sshfs_pair: SshfsPair, run: Runner, users: Users) -> None:
    """flock is not exclusive across two sshfs mounts: doctor warns, names the consequence, and says what to do
    instead, since no mount option fixes it."""
    one, two = sshfs_pair.as_user(users.alice).fresh()
    assert run(users.alice, "init", str(one / "store")).returncode == 0
    assert not _exclusive_across(run, (users.alice, one / "measure.lock"), (users.alice, two / "measure.lock"))
    (one / "measure-dir").mkdir(mode=0o755)
    assert not _exclusive_across(run, (users.alice, one / "measure-dir"), (users.alice, two / "measure-dir"), "dir")
    assert _exclusive_across(run, (users.alice, one / "measure.lock"), (users.alice, one / "measure.lock"))
    assert not _exclusive_across(run, (users.alice, one / "measure.lock"), (users.alice, one / "measure.lock"), "fcntl")
    locks = _locks(run, users.alice, two / "store")
    detail = str(locks["detail"])
    assert locks["status"] == "warn", detail
    assert "on sshfs (fuse.sshfs" in detail and "excludes only processes on this node" in detail
    assert "both unpack it" in detail and "gc on one node does not wait for installs on another" in detail
    assert "tried here, each holder with its own open:" in detail  # it works on this node: the probes pass
    assert locks["fix"] == SSHFS_FIX and "no sshfs option" in SSHFS_FIX
    _no_scratch_left(sshfs_pair.base / "export" / two.name / "store")  # as the server has it: listings are cached


def test_a_lock_that_excludes_nothing_is_reported(tmp_path: Path) -> None:
    """Where a second holder is granted the lock (as on another node of sshfs), the probe says so; shown with one
    open file description handed out twice (dup), whose holder the kernel lets lock it again."""
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(_Broken, match="a second exclusive flock of a file while one is held is granted, so the "
                                          "lock excludes nothing"):
            _exclusive(lambda: os.dup(fd), "file")
    finally:
        os.close(fd)


# -- filesystems that cannot be mounted here: their mount options, as mountinfo lists them ----------------------------

NFS4 = ("61 27 0:53 / /shared rw,relatime shared:31 - nfs4 filer:/export rw,vers=4.2,rsize=1048576,wsize=1048576,"
        "namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.7,local_lock={},addr=10.0.0.2")
NFS3_NOLOCK = ("62 27 0:54 / /old rw,relatime - nfs filer:/old rw,vers=3,nolock,proto=tcp,mountaddr=10.0.0.2,"
               "mountvers=3,mountproto=tcp,local_lock=all,addr=10.0.0.2")
LUSTRE = "70 27 0:60 / /lustre rw,{} - lustre 10.0.0.3@tcp:/scratch rw,{}lazystatfs"


@pytest.mark.parametrize(("line", "name", "crosses", "fix"), [
    (NFS4.format("none"), "NFS with local_lock=none", True, None),
    (NFS4.format("posix"), "NFS with local_lock=posix", True, None),
    (NFS4.format("flock"), "NFS with local_lock=flock", False, NFS_FIX),
    (NFS3_NOLOCK, "NFS with local_lock=all", False, NFS_FIX),
    (NFS3_NOLOCK.replace(",local_lock=all", ""), "NFS with local_lock=all", False, NFS_FIX),  # nolock alone
    (LUSTRE.format("relatime", "flock,"), "Lustre with flock", True, None),
    (LUSTRE.format("relatime", "localflock,"), "Lustre with localflock", False, LUSTRE_FIX),
    (LUSTRE.format("relatime", ""), "Lustre without flock", False, LUSTRE_FIX),
    ("80 27 0:70 / /gpfs/fs1 rw,relatime - gpfs fs1 rw", "GPFS", True, None),
    ("81 27 0:71 / /cephfs rw,relatime - ceph 10.0.0.4:6789:/ rw,name=admin,acl", "CephFS", True, None),
    ("82 27 0:72 / /mnt/g rw,relatime - fuse.glusterfs 127.0.0.2:/v rw,user_id=0,allow_other", "GlusterFS", True,
     None),
    ("83 27 0:73 / /mnt/s rw,nosuid - fuse.sshfs a@h:/d rw,user_id=0,allow_other", "sshfs", False, SSHFS_FIX),
    ("84 27 0:74 / /mnt/b rw,relatime - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/c.conf", "BeeGFS", None,
     "set tuneUseGlobalFileLocks = true in /etc/beegfs/beegfs-client.conf and restart the client"),
    ("85 27 0:75 / /mnt/x rw - fuse.rclone r:/ rw,user_id=0", "a FUSE filesystem", None, None),
    ("86 27 254:0 / / rw,relatime - ext4 /dev/vda rw,discard", "ext4", True, None),
])
def test_what_doctor_makes_of_each_filesystems_mount_options(line: str, name: str, crosses: bool | None,
                                                              fix: str | None) -> None:
    (mount,) = parse(line)
    found = locking(mount)
    assert (found.name, found.crosses, found.fix) == (name, crosses, fix)
    assert found.local == (mount.fstype == "ext4")


def test_the_mount_holding_a_path_is_the_deepest_one_with_escapes_undone() -> None:
    table = "\n".join([
        "1 0 254:0 / / rw - ext4 /dev/vda rw",
        NFS4.format("none"),
        r"90 61 0:80 / /shared/with\040space rw - fuse.sshfs u@h:/d rw",
        "garbage line",
    ])
    nfs = mount_of("/shared/store/locks", table)
    assert nfs is not None and nfs.fstype == "nfs4" and nfs.option("local_lock") == "none"
    assert nfs.source == "filer:/export" and nfs.option("hard") == "" and nfs.option("nolock") is None
    spaced = mount_of("/shared/with space/store", table)
    assert spaced is not None and spaced.fstype == "fuse.sshfs" and spaced.point == "/shared/with space"
    root = mount_of("/sharedx/store", table)
    assert root is not None and root.fstype == "ext4"
