"""Fixtures for testing the real thing: real users and groups, a world-readable install, real processes.

The suite runs as root (as CI does). It creates the group ``wstest`` with two members and one outsider, installs
wheelstore into a venv under /var/tmp built from /usr/bin/python3 (root's own interpreter lives under 0700 /root), and
runs the CLI as those users with ``subprocess.run(user=, group=, extra_groups=, umask=)``.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import pytest

from wheelstore.fetch.sources import Sources

from .cluster import gluster, sshfs_pair  # noqa: F401  (fixtures: GlusterFS and sshfs mounts, for every module)
from .wheelmaker import make_sdist

ROOT = Path(__file__).resolve().parents[1]
GROUP = "wstest"
OTHER_GROUP = "wsother"
MEMBERS = ("wsalice", "wsbob")
OUTSIDER = "wscarol"
SYSTEM_PYTHON = "/usr/bin/python3"
#: the benchmark set: 36 real wheels, pinned with hashes, kept next to this checkout (absent elsewhere)
SET36 = ROOT.parent / "shared" / "bench" / "set36.txt"
SET36_CACHE = Path("/var/tmp/wheelstore-cache/set36")


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        _sh("groupadd", name)


def _ensure_user(name: str, groups: tuple[str, ...]) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _sh("useradd", "--create-home", "--shell", "/bin/sh", name)
    for group in groups:
        if name not in grp.getgrnam(group).gr_mem:
            _sh("usermod", "-aG", group, name)


@dataclass(frozen=True)
class Users:
    group: str = GROUP
    other_group: str = OTHER_GROUP
    alice: str = MEMBERS[0]
    bob: str = MEMBERS[1]
    carol: str = OUTSIDER

    def uid(self, user: str) -> int:
        return pwd.getpwnam(user).pw_uid

    @property
    def gid(self) -> int:
        return grp.getgrnam(self.group).gr_gid


@pytest.fixture(scope="session")
def users() -> Users:
    if os.geteuid() != 0:
        pytest.skip("tests with real users need root (CI runs as root)")
    for g in (GROUP, OTHER_GROUP):
        _ensure_group(g)
    for m in MEMBERS:
        _ensure_user(m, (GROUP,))
    _ensure_user(OUTSIDER, ())
    return Users()


@pytest.fixture(scope="session")
def base_dir() -> Iterator[Path]:
    """A world-traversable scratch directory (pytest's tmp_path is 0700, which other users cannot enter)."""
    d = Path(tempfile.mkdtemp(prefix="wheelstore-tests-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workdir(base_dir: Path) -> Path:
    """A fresh directory anyone may create entries in, sticky like /tmp."""
    d = Path(tempfile.mkdtemp(dir=base_dir))
    os.chmod(d, 0o1777)
    return d


@pytest.fixture(scope="session")
def tool(base_dir: Path) -> Path:
    """The ``wheelstore`` executable of a real install every test user can run."""
    venv = base_dir / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-warn-script-location", str(ROOT)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"},
    )
    for p in [venv, *venv.rglob("*")]:  # world-readable whatever root's umask was
        if not p.is_symlink():
            mode = stat.S_IMODE(p.lstat().st_mode)
            p.chmod(mode | 0o444 | (0o111 if p.is_dir() or mode & 0o100 else 0))
    return venv / "bin" / "wheelstore"


@pytest.fixture(scope="session")
def pip_wheel(base_dir: Path) -> Path:
    """A current pip, downloaded once: Debian's bundled pip 23.0.1 refuses to uninstall symlinks that point outside
    the venv (it resolves them first), which current pip does correctly."""
    wheels = base_dir / "pip-wheel"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "-d", str(wheels), "pip>=25"], check=True)
    (wheel,) = wheels.glob("pip-*.whl")
    wheels.chmod(0o755)
    wheel.chmod(0o644)
    return wheel


def make_venv(path: Path, pip_wheel: Path, owner: str | None = None) -> Path:
    """A venv as ``python -m venv`` makes it, with a current pip, owned by ``owner``."""
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True)
    subprocess.run([str(path / "bin" / "python"), str(pip_wheel / "pip"), "install", "-q", "--no-index",
                    str(pip_wheel)], check=True, capture_output=True)
    if owner:
        subprocess.run(["chown", "-R", owner, str(path)], check=True)
    return path


@dataclass(frozen=True)
class Filesystems:
    base: Path  #: a directory on /var/tmp's own filesystem (ext4 here)
    xfs: Path
    btrfs: Path

    def root(self, kind: str) -> Path:
        return {"ext4": self.base, "xfs": self.xfs, "btrfs": self.btrfs}[kind]


def _run_checked(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(done.stderr or done.stdout).strip()}")


@pytest.fixture(scope="session")
def filesystems() -> Iterator[Filesystems]:
    if os.geteuid() != 0:
        pytest.skip("loop-mounting filesystems needs root (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="wheelstore-linkfs-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    mounted: list[Path] = []
    try:
        for kind in ("xfs", "btrfs"):
            image, mnt = base / f"{kind}.img", base / kind
            mnt.mkdir()
            with open(image, "wb") as f:
                f.truncate(300 << 20)
            try:
                _run_checked(f"mkfs.{kind}", "-q", str(image))
                _run_checked("mount", "-o", "loop", str(image), str(mnt))
            except (OSError, RuntimeError) as e:
                pytest.skip(f"cannot make and mount {kind} here: {e}")
            mounted.append(mnt)
            os.chmod(mnt, 0o755)
        yield Filesystems(base, base / "xfs", base / "btrfs")
    finally:
        for mnt in mounted:
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


class AsUser(TypedDict, total=False):
    """The keyword arguments of ``subprocess.run`` and ``Popen`` that run a command as a user, with a umask."""

    user: str
    group: str
    extra_groups: list[str]
    umask: int


class Runner:
    """Runs the installed CLI as a given user, with an explicit umask and a clean environment."""

    def __init__(self, tool: Path, users: Users) -> None:
        self.tool = tool
        self.users = users

    def env(self, user: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
        home = pwd.getpwnam(user).pw_dir if user else "/root"
        env = {
            "HOME": home,
            "USER": user or "root",
            "LOGNAME": user or "root",
            "PATH": f"{self.tool.parent}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        env.update(extra or {})
        return env

    def popen_kwargs(self, user: str | None, umask: int) -> AsUser:
        if user is None:
            return {"umask": umask}
        groups = [] if user == self.users.carol else [self.users.group]
        return {"user": user, "group": user, "extra_groups": groups, "umask": umask}

    def __call__(
        self,
        user: str | None,
        *args: str,
        umask: int = 0o022,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.tool), *args],
            capture_output=True,
            text=True,
            env=self.env(user, env),
            cwd="/",
            timeout=timeout,
            **self.popen_kwargs(user, umask),
        )

    def popen(
        self, user: str | None, *args: str, umask: int = 0o022, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(self.tool), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(user, env),
            cwd="/",
            **self.popen_kwargs(user, umask),
        )
        _SPAWNED.append(proc)
        return proc

    def python(self, user: str, code: str, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
        """Run a snippet with the system Python as ``user`` (to attempt things the CLI would never do)."""
        return subprocess.run(
            [SYSTEM_PYTHON, "-c", code, *args],
            capture_output=True,
            text=True,
            env=self.env(user),
            cwd="/",
            timeout=60,
            **self.popen_kwargs(user, umask),
        )


_SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_spawned() -> Iterator[None]:
    """A test that fails while a publisher is paused at a checkpoint must not leave it running forever."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture(scope="session")
def run(tool: Path, users: Users) -> Runner:
    return Runner(tool, users)


@pytest.fixture
def group_store(workdir: Path, run: Runner, users: Users) -> Path:
    """A group store created by alice, with no root involved."""
    path = workdir / "store"
    result = run(users.alice, "init", str(path), "--group", users.group)
    assert result.returncode == 0, result.stderr
    return path


#: an entry's type, mode, owner, group and content hash (None but for regular files)
Entry = tuple[int, int, int, int, str | None]


def snapshot(path: Path) -> dict[str, Entry]:
    """Every entry under ``path`` with its type, mode, owner, group and content hash: to prove nothing changed."""
    result: dict[str, Entry] = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        result[str(p.relative_to(path))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, digest)
    return result


def published(store: Path) -> dict[str, Entry]:
    """A store's published content and policy (:func:`snapshot`), without the bookkeeping every install and gc may
    change: gc roots and lock files."""
    return {k: v for k, v in snapshot(store).items() if k.split("/")[0] not in ("roots", "locks")}


#: the plain lines progress leaves in a log as the work goes (a phase done before the error came): not the error's
PROGRESS = re.compile(r"(Resolved \d+ packages? in |downloaded \S+ \(|built \S+ \S+ in |unpacked \d+ trees? in "
                      r"|compiled \d+ modules? in )")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed with exactly one line on stderr and no traceback; return that line."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def dev_python() -> str:
    """The interpreter running the tests, which has wheelstore importable (for in-process API checks)."""
    return sys.executable


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG cache per test, never root's own: the digests collect keeps, link probe results and the marks
    of in-process checks neither leak between tests nor into root's real cache."""
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def flit_core_wheel() -> Path:
    """A flit_core wheel on this machine, the build backend of sdists built offline (skips the test if none)."""
    for d in (Path("/opt/pypi/files"), Path("/opt/wheels")):
        found = sorted(d.glob("flit_core-*-py3-none-any.whl")) if d.is_dir() else []
        if found:
            return found[-1]
    pytest.skip("no flit_core wheel on this machine to build sdists offline")


@pytest.fixture
def kit(workdir: Path) -> tuple[Path, Path, Sources]:
    """An sdist, the directory its builds mark, and sources that offer only a local flit_core (all offline)."""
    links = workdir / "links"
    links.mkdir(mode=0o755)
    shutil.copy(flit_core_wheel(), links)
    for p in links.iterdir():
        p.chmod(0o644)
    markers = workdir / "markers"
    markers.mkdir()
    markers.chmod(0o1777)
    sdist = make_sdist(workdir, markers)
    return sdist, markers, Sources(index_urls=(), no_index=True, find_links=(str(links),), offline=True)


@pytest.fixture(scope="session")
def set36_wheels() -> Path:
    """The benchmark wheels, downloaded once per machine (hash-checked by pip) and kept."""
    if not SET36.exists():
        pytest.skip(f"{SET36} is not here")
    if len(list(SET36_CACHE.glob("*.whl"))) < 36:
        SET36_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--require-hashes", "-r", str(SET36), "-d", str(SET36_CACHE)], check=True)
    for p in (SET36_CACHE.parent, SET36_CACHE, *SET36_CACHE.iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return SET36_CACHE
