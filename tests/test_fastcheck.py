"""Issue 18 point 6: the install-time check on a network filesystem (wheelstore.venv.fastcheck), on a real GlusterFS
volume mounted twice (tests/cluster.py): alice publishes through mount one, bob installs through mount two, each
with a cache of their own.

A warm install there takes each tree on bob's record of his earlier walk (no tree file is stat-ed: strace counts
them), walks again a tree whose top or manifest changed (and refuses it when it is damaged), and leaves what
happens deeper in a tree to ``verify``, whose repair every install then sees. On a local disk every tree is walked
as before, and hard-linked trees are walked everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .cluster import Mounts
from .conftest import Runner, Users, one_line_error
from .wheelmaker import make_wheel

#: a name no other file of an install has, so strace's output says how many tree files were stat-ed
PROBE = "fcprobe"
FILES = 40


@dataclass
class Setup:
    """A group store alice made through mount one, with her trees, seen by bob through mount two."""

    one: Path  #: the store through mount one (alice's node)
    two: Path  #: the same store through mount two (bob's node)
    wheels: Path  #: every user may read it
    keys: dict[str, str]  #: distribution -> tree key
    cache: dict[str, dict[str, str]]  #: user -> environment giving them a cache of their own
    local: Path  #: a directory on this node's local disk (ext4) for venvs


def _caches(workdir: Path, *users: str) -> dict[str, dict[str, str]]:
    """For each user, the environment that gives them a cache of their own in ``workdir``."""
    found = {}
    for user in users:
        (workdir / f"{user}-cache").mkdir()
        shutil.chown(workdir / f"{user}-cache", user)
        found[user] = {"XDG_CACHE_HOME": str(workdir / f"{user}-cache")}
    return found


def _wheels(directory: Path) -> Path:
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    probe = {f"fca/sub{i % 4}/{PROBE}{i}.py": f"N = {i}\n".encode() for i in range(FILES)}
    for name, files in {"fca": {"fca/__init__.py": b"NAME = 'fca'\n", **probe},
                        "fcb": {"fcb/__init__.py": b"NAME = 'fcb'\n", "fcb/deep/mod.py": b"X = 1\n"}}.items():
        make_wheel(directory, name, files=files).chmod(0o644)
    return directory


@pytest.fixture
def setup(gluster: Mounts, run: Runner, users: Users, workdir: Path) -> Setup:
    one, two = gluster.fresh()
    wheels = _wheels(one / "wheels")
    done = run(users.alice, "init", str(one / "store"), "--group", users.group)
    assert done.returncode == 0, done.stderr
    done = run(users.alice, "--store", str(one / "store"), "realize", "--json", *map(str, sorted(wheels.glob("*.whl"))))
    assert done.returncode == 0, done.stderr
    keys = {entry["name"]: entry["key"] for entry in json.loads(done.stdout)}
    return Setup(one / "store", two / "store", two / "wheels", keys, _caches(workdir, users.alice, users.bob), workdir)


def _install(run: Runner, s: Setup, user: str, store: Path, venv: Path, *extra: str,
             strace: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``user``'s install of both wheels into a new venv, with -v; under strace (its stat calls into ``strace``)."""
    made = run(user, "venv", str(venv))
    assert made.returncode == 0, made.stderr
    argv = [str(run.tool), "-v", "--store", str(store), "install", "--venv", str(venv), *extra,
            *map(str, sorted(s.wheels.glob("*.whl")))]
    if strace is not None:
        argv = ["strace", "-f", "-qq", "-o", str(strace), "-e", "trace=newfstatat,statx,stat,lstat,fstat", *argv]
    return subprocess.run(argv, capture_output=True, text=True, env=run.env(user, s.cache[user]), cwd="/",
                          timeout=120, **run.popen_kwargs(user, 0o022))


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def _need_strace() -> None:
    """strace counts the stat calls; installed with apt-get where it is missing (.ci/run installs it)."""
    if shutil.which("strace") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "strace"],
                       capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if shutil.which("strace") is None:
        pytest.skip("strace is missing and apt-get install strace failed")


def _checked(done: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(walked, by record) from the install's -v line."""
    assert done.returncode == 0, done.stderr
    found = re.search(r"checked (\d+) trees: (\d+) walked, (\d+) by this node's record", done.stderr)
    assert found, done.stderr
    return int(found[2]), int(found[3])


def _seen_through(path: Path, field: str, before: int) -> None:
    """Wait until this mount's caches (a second on GlusterFS's FUSE client) show ``path``'s new ``field``."""
    deadline = time.monotonic() + 30
    while getattr(os.stat(path, follow_symlinks=False), field) == before:
        assert time.monotonic() < deadline, f"{path} does not change through this mount"
        time.sleep(0.1)


def _as(run: Runner, user: str, code: str, *args: str) -> None:
    done = run.python(user, code, *args)
    assert done.returncode == 0, done.stderr


def _imports(run: Runner, user: str, venv: Path) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", "import fca, fcb, fca.sub1.fcprobe1"],
                          capture_output=True, text=True, cwd="/", **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr


# -- the fast path -------------------------------------------------------------------------------------------------


def test_a_warm_install_from_gluster_stats_no_tree_file(setup: Setup, run: Runner, users: Users) -> None:
    _need_strace()
    s = setup
    first = _install(run, s, users.bob, s.two, s.local / "v1", strace=s.local / "first.trace")
    assert _checked(first) == (2, 0)
    warm = _install(run, s, users.bob, s.two, s.local / "v2", strace=s.local / "warm.trace")
    assert _checked(warm) == (0, 2)
    _imports(run, users.bob, s.local / "v2")

    def stats(trace: Path, name: str) -> int:
        return len(re.findall(rf'^\d+ +(?:newfstatat|statx|stat|lstat)\(.*"{name}"', trace.read_text(), re.M))

    # the walk stat-ed every file of the tree; the warm install none, and each tree's directory twice (its lookup,
    # and the record's check of it)
    assert sum(stats(s.local / "first.trace", f"{PROBE}{i}.py") for i in range(FILES)) == FILES
    assert sum(stats(s.local / "warm.trace", f"{PROBE}{i}.py") for i in range(FILES)) == 0
    assert [stats(s.local / "warm.trace", key) for key in s.keys.values()] == [2, 2]


def test_on_a_local_disk_every_install_walks(run: Runner, users: Users, workdir: Path) -> None:
    s = Setup(workdir / "store", workdir / "store", _wheels(workdir / "wheels"), {}, _caches(workdir, users.bob),
              workdir)
    assert run(users.alice, "init", str(s.one), "--group", users.group).returncode == 0
    assert _checked(_install(run, s, users.bob, s.one, workdir / "venv0")) == (2, 0)  # published now, walked
    assert _checked(_install(run, s, users.bob, s.one, workdir / "venv1")) == (2, 0)


def test_hardlinked_trees_are_walked_even_with_a_record(run: Runner, users: Users, setup: Setup) -> None:
    """alice's own private store, her venvs on the same mount: hard links are hers to use, and need their walk."""
    s = setup
    store = s.one.parent / "private"
    assert run(users.alice, "init", str(store)).returncode == 0
    assert _checked(_install(run, s, users.alice, store, s.one.parent / "a0")) == (2, 0)
    assert _checked(_install(run, s, users.alice, store, s.one.parent / "a1")) == (0, 2)
    done = _install(run, s, users.alice, store, s.one.parent / "a2", "--link-mode", "hardlink")
    assert _checked(done) == (2, 0)
    assert "(hardlink)" in done.stdout + done.stderr
    assert _checked(_install(run, s, users.alice, store, s.one.parent / "a3")) == (0, 2)


# -- what the revalidation catches, across mounts ---------------------------------------------------------------------

PLANT = """
import os, sys
root = sys.argv[1]
st = os.stat(root)
os.chmod(root, st.st_mode | 0o200)
open(os.path.join(root, "planted.py"), "w").write("import os\\n")
os.utime(root, ns=(st.st_atime_ns, st.st_mtime_ns))
os.chmod(root, st.st_mode)
"""

REWRITE = """
import os, sys
p, data = sys.argv[1], sys.argv[2].encode()
st = os.stat(p)
os.chmod(p, st.st_mode | 0o200)
with open(p, "r+b") as f:
    f.write(data)
os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
os.chmod(p, st.st_mode)
"""


def test_an_entry_planted_at_the_top_through_one_mount_is_caught_through_the_other(setup: Setup, run: Runner,
                                                                                   users: Users) -> None:
    s = setup
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v1")) == (2, 0)
    key = s.keys["fca"]
    before = os.stat(s.two / "trees" / key).st_ctime_ns
    _as(run, users.alice, PLANT, str(s.one / "trees" / key))  # mtime and mode put back: only ctime says so
    _seen_through(s.two / "trees" / key, "st_ctime_ns", before)
    line = one_line_error(_install(run, s, users.bob, s.two, s.local / "v2"))
    assert "fca 1.0" in line and "damaged" in line and "planted.py" in line and users.alice in line
    assert not list(_site(s.local / "v2").glob("fc*"))  # refused before the venv changed


def test_a_changed_manifest_sends_its_tree_to_a_walk(setup: Setup, run: Runner, users: Users) -> None:
    s = setup
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v1")) == (2, 0)
    manifest = f"manifests/{s.keys['fcb']}.json"
    before = os.stat(s.two / manifest).st_ctime_ns
    _as(run, users.alice, "import os, sys; m = os.stat(sys.argv[1]).st_mode; os.chmod(sys.argv[1], 0o600); "
                          "os.chmod(sys.argv[1], m)", str(s.one / manifest))
    _seen_through(s.two / manifest, "st_ctime_ns", before)
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v2")) == (1, 1)
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v3")) == (0, 2)


def test_a_rewrite_deep_in_a_tree_is_left_to_verify_whose_repair_installs_then_see(setup: Setup, run: Runner,
                                                                                     users: Users) -> None:
    """What the record cannot see, as documented: verify (cron) finds it, and its repair makes a new tree, which
    every node's next install walks."""
    s = setup
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v1")) == (2, 0)
    rel = f"fca/sub1/{PROBE}1.py"
    original = (s.two / "trees" / s.keys["fca"] / rel).read_bytes()
    before = os.stat(s.two / "trees" / s.keys["fca"] / rel).st_ctime_ns
    _as(run, users.alice, REWRITE, str(s.one / "trees" / s.keys["fca"] / rel), "N=666\n")  # size, mtime, mode kept
    _seen_through(s.two / "trees" / s.keys["fca"] / rel, "st_ctime_ns", before)
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v2")) == (0, 2)  # not caught here

    tree, manifest = s.two / "trees" / s.keys["fca"], s.two / "manifests" / f"{s.keys['fca']}.json"
    seen = {tree: os.stat(tree).st_ino, manifest: os.stat(manifest).st_ino}
    found = run(users.bob, "--store", str(s.two), "verify", "--json", env=s.cache[users.bob])
    assert found.returncode == 1, found.stdout + found.stderr
    assert [(d["name"], d["path"]) for d in json.loads(found.stdout)["damaged"]] == [("fca", rel)]
    fixed = run(users.alice, "--store", str(s.one), "verify", "--repair", "-f", str(s.one.parent / "wheels"),
                env=s.cache[users.alice])
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr

    for path, before in seen.items():  # a new tree and manifest, once mount two's caches show them
        _seen_through(path, "st_ino", before)
    assert _checked(_install(run, s, users.bob, s.two, s.local / "v3")) == (1, 1)
    assert (_site(s.local / "v3") / rel).read_bytes() == original
