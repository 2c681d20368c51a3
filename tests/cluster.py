"""Real cluster filesystems as fixtures: a GlusterFS volume mounted twice, and two sshfs mounts of one directory.

Each pair of mounts stands for two nodes of a cluster: the same files through two separate clients, with their own
caches, devices and locks. GlusterFS is the network filesystem whose locks do cross clients (flock is exclusive
across mounts); sshfs is one whose locks do not (each client's locks are only its kernel's).

Both need root (they mount), /dev/fuse, and Debian's packages glusterfs-server glusterfs-client sshfs openssh-server
(.ci/run installs them; a fixture installs what is missing with apt-get). They skip only where FUSE is missing or the
packages cannot be installed: anything else that fails while setting up is an error. They start their own daemons
(glusterd, a private sshd on a free loopback port) and never touch the machine's /etc configuration.

Names carry the pid of the pytest process that made them (``wsfix-<pid>``), so a run cleans up the volumes, mounts
and sshd of earlier runs that were killed, and never those of a run still going (other worktrees test in parallel).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: glusterd refuses a brick on 127.0.0.1 ("is a loopback address"), but any other loopback address is this machine
GLUSTER_HOST = "127.0.0.2"
SSH_HOST = "127.0.0.1"
PREFIX = "wsfix"
BASE = Path("/var/tmp")
GLUSTER_PACKAGES = ("glusterfs-server", "glusterfs-client")
SSHFS_PACKAGES = ("sshfs", "openssh-server")
#: the glusterd a fixture started, for the last fixture out to stop (never one the machine runs as a service)
GLUSTERD_PID = BASE / f"{PREFIX}-glusterd.pid"
GLUSTERD_LOCK = BASE / f"{PREFIX}-glusterd.lock"


@dataclass
class Mounts:
    """Two mounts of one directory (two "nodes"); each mount's root is 1777 like /tmp, so test users create there."""

    kind: str  #: "glusterfs" or "sshfs"
    one: Path
    two: Path
    _made: list[Path] = field(default_factory=list)

    def fresh(self) -> tuple[Path, Path]:
        """A new directory, made through mount one, sticky and world-writable: its path through each mount."""
        made = Path(tempfile.mkdtemp(prefix="t-", dir=self.one))
        os.chmod(made, 0o1777)
        other = self.two / made.name
        deadline = time.monotonic() + 10
        while not other.is_dir():  # the other client's cache of the parent may be a moment behind
            assert time.monotonic() < deadline, f"{made} is not seen through {self.two}"
            time.sleep(0.05)
        return made, other


# -- shared steps ------------------------------------------------------------------------------------------------------


def _run(*cmd: str, timeout: float = 60, retry_on: str | None = None) -> str:
    """Run a setup command; its output, or RuntimeError with what it said (a failure to set up is an error)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        said = (done.stderr + done.stdout).strip()
        if done.returncode == 0:
            return done.stdout
        if retry_on and re.search(retry_on, said) and time.monotonic() < deadline:
            time.sleep(0.5)
            continue
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {said}")


def _require(tools: tuple[str, ...], packages: tuple[str, ...]) -> None:
    """Skip unless this machine can mount FUSE filesystems and has (or can install) ``packages``."""
    if os.geteuid() != 0:
        pytest.skip("mounting cluster filesystems needs root (CI runs as root)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse here: FUSE filesystems (GlusterFS, sshfs) cannot be mounted")
    if all(shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin") for t in tools):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", *packages],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    missing = [t for t in tools if not shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing and apt-get install {' '.join(packages)} failed: "
                    f"{done.stderr.strip()[-300:]}")


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _stale(name: str) -> bool:
    """Whether ``name`` (``wsfix-<pid>...``) was made by a run that is no longer running (or by this pid before)."""
    m = re.match(rf"{PREFIX}-([0-9]+)\b", name)
    return m is not None and (int(m[1]) == os.getpid() or not _alive(int(m[1])))


def _mounts() -> list[tuple[str, str]]:
    """(source, mount point) of every mount, from /proc/self/mounts (octal escapes undone)."""
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            source, target = line.split()[:2]
            found.append((source, target.encode().decode("unicode_escape")))
    return found


def _unmount(target: str | os.PathLike[str]) -> None:
    """Unmount, lazily if it is busy or its FUSE daemon died ("Transport endpoint is not connected")."""
    if subprocess.run(["umount", os.fspath(target)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", os.fspath(target)], capture_output=True)


def _clean_stale_dirs(kind: str) -> None:
    """Unmount and remove what killed runs left under /var/tmp/wsfix-<pid>-<kind>."""
    for _source, target in _mounts():
        rel = os.path.relpath(target, BASE)
        if not rel.startswith(".") and _stale(rel) and rel.split("/")[0].endswith(f"-{kind}"):
            _unmount(target)
    for d in BASE.glob(f"{PREFIX}-*-{kind}"):
        if _stale(d.name) and not any(t.startswith(f"{d}/") for _s, t in _mounts()):
            shutil.rmtree(d, ignore_errors=True)


def _fresh_base(kind: str) -> Path:
    base = BASE / f"{PREFIX}-{os.getpid()}-{kind}"
    base.mkdir(mode=0o755)
    os.chmod(base, 0o755)
    return base


# -- GlusterFS ---------------------------------------------------------------------------------------------------------


def _gluster(*args: str) -> str:
    # glusterd runs one transaction at a time: another run's create or stop makes ours fail, to be tried again
    return _run("gluster", "--mode=script", *args, timeout=120,
                retry_on=r"Another transaction|Locking failed|try again|Connection failed")


def _glusterd_pid() -> int | None:
    """The running glusterd's pid (from /proc: pgrep's procps may not be installed)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "glusterd":
                return int(comm.parent.name)
        except OSError:
            continue
    return None


def _ensure_glusterd() -> None:
    """Start glusterd unless it runs (as the machine's service, or a fixture's of another run), and wait for it."""
    if _glusterd_pid() is None:
        subprocess.run(["glusterd", f"--pid-file={GLUSTERD_PID}"], check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, timeout=60)
    _gluster("volume", "list")  # retried until glusterd answers


def _drop_stale_volumes() -> None:
    for name in _gluster("volume", "list").split():
        if _stale(name):
            for source, target in _mounts():
                if source == f"{GLUSTER_HOST}:/{name}":
                    _unmount(target)
            try:
                _gluster("volume", "stop", name, "force")
            except RuntimeError as e:
                if "is not in the started state" not in str(e):
                    raise
            _gluster("volume", "delete", name)


def _stop_our_glusterd(lock_fd: int) -> None:
    """Stop glusterd if a fixture started it, no run holds the lock shared any more, and it serves no volume."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another run uses it; the last one out stops it
    try:
        recorded = int(GLUSTERD_PID.read_text().strip())
    except (OSError, ValueError):
        return
    if recorded == _glusterd_pid() and not _gluster("volume", "list").split():  # ("No volumes" is on stderr)
        os.kill(recorded, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _alive(recorded) and time.monotonic() < deadline:
            time.sleep(0.1)
        GLUSTERD_PID.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def gluster() -> Iterator[Mounts]:
    """A GlusterFS volume (one brick on a local directory) mounted twice with FUSE, as two nodes."""
    _require(("glusterd", "gluster", "mount.glusterfs"), GLUSTER_PACKAGES)
    lock_fd = os.open(GLUSTERD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    base: Path | None = None
    name = f"{PREFIX}-{os.getpid()}"
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # no other run stops glusterd while this one sets up
        try:
            _ensure_glusterd()
            _drop_stale_volumes()
            _clean_stale_dirs("gluster")
            base = _fresh_base("gluster")
            (base / "brick").mkdir()
            # force: the brick is on the root filesystem, which gluster advises against
            _gluster("volume", "create", name, f"{GLUSTER_HOST}:{base / 'brick'}", "force")
            # as docs/sharing.md tells admins: without it quick-read serves a small file's old content to a client
            # for as long as its mtime stays the same, so verify on that node misses a rewrite that kept the mtime
            _gluster("volume", "set", name, "performance.ctime-invalidation", "on")
            _gluster("volume", "start", name)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        mounts = Mounts("glusterfs", base / "m1", base / "m2")
        for mnt in (mounts.one, mounts.two):
            mnt.mkdir()
            _run("mount", "-t", "glusterfs", f"{GLUSTER_HOST}:/{name}", str(mnt))
            if not os.path.ismount(mnt):
                raise RuntimeError(f"mount -t glusterfs said nothing, but {mnt} is not mounted")
        os.chmod(mounts.one, 0o1777)
        yield mounts
    finally:
        if base is not None:
            for mnt in (base / "m1", base / "m2"):
                if os.path.ismount(mnt):
                    _unmount(mnt)
            if name in _gluster("volume", "list").split():
                _gluster("volume", "stop", name, "force")
                _gluster("volume", "delete", name)
            shutil.rmtree(base, ignore_errors=True)
        _stop_our_glusterd(lock_fd)
        os.close(lock_fd)


# -- sshfs -------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((SSH_HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _kill_stale_sshd() -> None:
    """The sshd of a killed run outlives it (it was its child): stop it, if its command line says it is ours."""
    for pidfile in BASE.glob(f"{PREFIX}-*-sshfs/sshd.pid"):
        if not _stale(pidfile.parent.name):
            continue
        try:
            pid = int(pidfile.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = str(pidfile.parent).encode() in f.read()
        except (OSError, ValueError):
            continue
        if ours:
            os.kill(pid, signal.SIGTERM)


SSHD_CONFIG = """\
Port {port}
ListenAddress {host}
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
StrictModes no
Subsystem sftp internal-sftp
"""


def _start_sshd(base: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private sshd on a free loopback port, with its own host key; the key ``client_key`` logs in (as anyone)."""
    for key in ("host_key", "client_key"):
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"wheelstore tests {key}", "-f", str(base / key))
    shutil.copy(base / "client_key.pub", base / "authorized_keys")
    os.chmod(base / "authorized_keys", 0o644)  # sshd reads it as the user who logs in
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    for _attempt in range(5):  # the free port may be taken before sshd binds it
        port = _free_port()
        (base / "sshd_config").write_text(SSHD_CONFIG.format(port=port, host=SSH_HOST, base=base))
        _run("/usr/sbin/sshd", "-t", "-f", str(base / "sshd_config"))
        with open(base / "sshd.log", "ab") as log:
            proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(base / "sshd_config")],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((SSH_HOST, port)) == 0:
                    return proc, port
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"sshd did not start: {(base / 'sshd.log').read_text()[-500:]}")


def _sshfs(base: Path, port: int, user: str, mnt: Path) -> None:
    mnt.mkdir()
    options = ",".join((
        "allow_other",  # as root, no user_allow_other in /etc/fuse.conf is needed
        f"IdentityFile={base / 'client_key'}", f"Port={port}", "BatchMode=yes",
        "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR",
    ))
    _run("sshfs", "-o", options, f"{user}@{SSH_HOST}:{base / 'export'}", str(mnt))
    if not os.path.ismount(mnt):
        raise RuntimeError(f"sshfs said nothing, but {mnt} is not mounted")


@dataclass
class SshfsPair(Mounts):
    """Two sshfs mounts of one directory, as root: flock and fcntl locks do not cross them.

    The server writes as the user who logged in, so whatever anyone creates through these mounts is root's; and
    without ``default_permissions``, the server (root) is the one that checks permissions. :meth:`as_user` gives two
    more mounts, logged in as a test user, where files are that user's (as a user's own sshfs mount would be).
    """

    base: Path = Path()
    port: int = 0

    def as_user(self, user: str) -> Mounts:
        """Two mounts of the same directory, logged in as ``user`` (made once per user, unmounted at the end)."""
        one, two = self.base / f"{user}-m1", self.base / f"{user}-m2"
        if not os.path.ismount(one):
            for mnt in (one, two):
                _sshfs(self.base, self.port, user, mnt)
        return Mounts("sshfs", one, two)


@pytest.fixture(scope="session")
def sshfs_pair() -> Iterator[SshfsPair]:
    """Two sshfs mounts (as two nodes) of one directory, served by a private sshd on a free loopback port."""
    _require(("sshfs", "/usr/sbin/sshd", "ssh-keygen"), SSHFS_PACKAGES)
    _kill_stale_sshd()
    _clean_stale_dirs("sshfs")
    base = _fresh_base("sshfs")
    sshd: subprocess.Popen[bytes] | None = None
    try:
        (base / "export").mkdir()
        os.chmod(base / "export", 0o1777)
        sshd, port = _start_sshd(base)
        pair = SshfsPair("sshfs", base / "m1", base / "m2", base=base, port=port)
        for mnt in (pair.one, pair.two):
            _sshfs(base, port, "root", mnt)
        yield pair
    finally:
        for _source, target in _mounts():
            if target.startswith(f"{base}/"):
                _unmount(target)
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=20)
        shutil.rmtree(base, ignore_errors=True)
