"""Issue 18 on real cluster filesystems (tests/cluster.py mounts them): a GlusterFS volume mounted twice stands for
two nodes; sshfs for a network filesystem whose locks do not cross clients."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wheelstore.store.policy import Role
from wheelstore.store.roots import read_roots, root_name
from wheelstore.store.store import Store

from .cluster import Mounts, SshfsPair
from .conftest import Runner, Users
from .wheelmaker import big_files, make_wheel

ROUNDS = 3


def _locks_cross(one: Path, two: Path) -> bool:
    """Whether an flock taken through one mount keeps the other mount from taking it."""
    (one / "lockfile").write_bytes(b"")
    a = os.open(one / "lockfile", os.O_RDWR)
    b = os.open(two / "lockfile", os.O_RDWR)
    try:
        fcntl.flock(a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            fcntl.flock(b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(a)
        os.close(b)


def test_gluster_is_two_clients_of_one_volume_with_locks_that_cross(gluster: Mounts, run: Runner,
                                                                    users: Users) -> None:
    one, two = gluster.fresh()
    assert os.stat(one).st_dev != os.stat(two).st_dev  # two mounts, as two nodes would have
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(one / "f"))
    assert done.returncode == 0, done.stderr
    assert (two / "f").read_text() == "hi"
    assert (two / "f").stat().st_uid == users.uid(users.alice)
    assert _locks_cross(one, two)


def test_sshfs_is_two_clients_of_one_directory_with_locks_that_do_not_cross(sshfs_pair: SshfsPair, run: Runner,
                                                                           users: Users) -> None:
    one, two = sshfs_pair.fresh()
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(one / "f"))
    assert done.returncode == 0, done.stderr
    assert (two / "f").read_text() == "hi"
    assert (two / "f").stat().st_uid == 0  # the server wrote it as root, who logged in
    assert not _locks_cross(one, two)
    mine_one, mine_two = sshfs_pair.as_user(users.alice).fresh()
    done = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write('hi')", str(mine_one / "f"))
    assert done.returncode == 0, done.stderr
    assert (mine_two / "f").stat().st_uid == users.uid(users.alice)


# -- acceptance 1: two users on two mounts install concurrently -------------------------------------------------------


def _wheels(directory: Path) -> dict[str, Path]:
    """A handful of small wheels, some of several files in subpackages; each module says its name."""
    directory.mkdir(mode=0o755)
    sizes = {"cla": 0, "clb": 3, "clc": 12, "cld": 40, "cle": 1}
    wheels = {}
    for name, count in sizes.items():
        files = {f"{name}/__init__.py": f"NAME = {name!r}\n".encode(), **big_files(count, 300, prefix=name)}
        wheels[name] = make_wheel(directory, name, files=files)
        wheels[name].chmod(0o644)
    return wheels


def _venv(run: Runner, user: str, path: Path) -> Path:
    done = run(user, "venv", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _venvs(run: Runner, user: str, paths: list[Path]) -> list[Path]:
    """Make several venvs at once (one by one, sixty took a quarter of a minute on GlusterFS)."""
    procs = [run.popen(user, "venv", str(path)) for path in paths]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), [err for _out, err in outputs]
    return paths


def _imports(run: Runner, user: str, venv: Path, names: list[str]) -> None:
    code = "; ".join(f"import {m}; assert {m}.NAME == {m!r}" for m in names)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/",
                          **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr


@dataclass
class TwoNodes:
    """What acceptance 1 left: the store through each mount, its wheels, every venv by user, and what each install
    said (with -v: ``published <wheel>`` for every wheel it unpacked)."""

    store: tuple[Path, Path]
    wheels: dict[str, Path]
    venvs: list[tuple[str, Path]]
    logs: list[str]


@pytest.fixture(scope="module")
def two_nodes(gluster: Mounts, run: Runner, users: Users) -> TwoNodes:
    """alice through mount one and bob through mount two install the same wheels at once, two venvs each, in three
    rounds (the first publishes, the others reuse), into venvs on the volume."""
    one, two = gluster.fresh()
    wheels = _wheels(one / "wheels")
    done = run(users.alice, "init", str(one / "store"), "--group", users.group)
    assert done.returncode == 0, done.stderr
    nodes = {users.alice: one, users.bob: two}
    venvs, logs = [], []
    for r in range(ROUNDS):
        batch = [(user, venv) for user, mnt in nodes.items()
                 for venv in _venvs(run, user, [mnt / f"venv-{user}-{r}-{i}" for i in (0, 1)])]
        procs = [run.popen(user, "-v", "--store", str(nodes[user] / "store"), "install", "--venv", str(venv),
                           *(str(nodes[user] / "wheels" / w.name) for w in wheels.values()))
                 for user, venv in batch]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0] * len(procs), [err for _out, err in outputs]
        venvs += batch
        logs += [err for _out, err in outputs]
    return TwoNodes((one / "store", two / "store"), wheels, venvs, logs)


def test_two_users_on_two_mounts_unpack_each_wheel_once(two_nodes: TwoNodes, run: Runner) -> None:
    published = [line for log in two_nodes.logs for line in log.splitlines() if line.startswith("debug: published ")]
    assert sorted(line.split()[2] for line in published) == sorted(w.name for w in two_nodes.wheels.values())
    assert not [line for log in two_nodes.logs for line in log.splitlines() if "another publisher" in line]
    for path in two_nodes.store:  # the same through either node
        trees = list(Store.open(path).trees())
        assert sorted(t.manifest.wheel for t in trees) == sorted(w.name for w in two_nodes.wheels.values())
        assert os.listdir(path / "staging") == []
    for user, venv in two_nodes.venvs:
        _imports(run, user, venv, sorted(two_nodes.wheels))


def test_two_users_on_two_mounts_leave_no_lock_files(two_nodes: TwoNodes) -> None:
    """Each key lock's holder removes its file when done (and a waiter on the other mount, whose lock then fails
    with ESTALE or ENOENT there, starts over on a new file)."""
    for path in two_nodes.store:
        assert os.listdir(path / "locks") == ["gc.lock"]  # the store-wide lock, there by design


# -- point 4 / acceptance 4: a first install's registration is never lost ---------------------------------------------


def _gc_dry_run(run: Runner, user: str, store: Path) -> dict[str, Any]:
    done = run(user, "--store", str(store), "gc", "--dry-run", "--grace", "0", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _registered(store: Path, venvs: list[Path], run: Runner, user: str, mounts: tuple[Path, ...]) -> None:
    """Every venv in ``venvs`` has its root in ``store``, rooting both wheels' trees, and gc reads each root through
    every mount (which of them it confirms depends on the mount until the store has an identity of its own)."""
    trees = {t.key for t in Store.open(store).trees()}
    roots = read_roots(Store.open(store))
    assert sorted(r.venv for r in roots) == sorted(os.path.realpath(v) for v in venvs)
    assert all({d.key for d in r.dists} == trees for r in roots)
    for venv in venvs:
        assert list((store / "roots").glob(f"*/{root_name(venv)}")), venv
    assert not [n for n in os.listdir(store / "roots") if n.startswith(".")]  # no directory left half made
    for mnt in mounts:
        report = _gc_dry_run(run, user, mnt / store.name)
        assert report["roots"]["live"] + len(report["roots"]["stale"]) == len(venvs), report
        assert report["removed"] == []


def test_concurrent_first_installs_by_one_user_all_register(gluster: Mounts, run: Runner, users: Users) -> None:
    """Six first installs by alice at once into a fresh store, through both mounts, ten times: every venv has its
    root. Before, roots/<uid>-<random> was made read-only and then chmod-ed: an install that found it in between
    could not write its root (on GlusterFS, an install in some runs of ten: "you may not write there")."""
    base, other = gluster.fresh()
    wheels = _wheels(base / "wheels")
    for r in range(10):
        store = base / f"store{r}"
        done = run(users.alice, "init", str(store), "--group", users.group)
        assert done.returncode == 0, done.stderr
        mounts = [(base, other)[i % 2] for i in range(6)]
        venvs = _venvs(run, users.alice, [mnt / f"venv{r}-{i}" for i, mnt in enumerate(mounts)])
        procs = [run.popen(users.alice, "-q", "--store", str(mnt / store.name), "install", "--venv", str(venv),
                           str(wheels["cla"]), str(wheels["clb"]))
                 for mnt, venv in zip(mounts, venvs, strict=True)]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [err for _out, err in outputs]
        assert [err for _out, err in outputs] == [""] * 6
        _registered(store, venvs, run, users.alice, (base, other))


def test_a_first_install_registers_while_another_is_making_the_users_roots_directory(
        run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """The same race on a local disk, made certain: alice's first install stops with its directory in roots/ made
    but not yet in view; her second first install meanwhile finds none, makes its own and registers; then the first
    goes on, and registers too. No directory is ever seen under its final name with another mode than its own."""
    wheels = _wheels(workdir / "wheels")
    venvs = [_venv(run, users.alice, workdir / f"venv{i}") for i in (0, 1)]
    markers = workdir / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    hook = {"WHEELSTORE_TEST_HOOK": "roots-dir-made=wait", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
    first = run.popen(users.alice, "--store", str(group_store), "install", "--venv", str(venvs[0]),
                      str(wheels["cla"]), env=hook)
    deadline = time.monotonic() + 60
    while not list(markers.iterdir()):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first install never reached its roots directory"
        time.sleep(0.02)
    roots = group_store / "roots"
    (half,) = os.listdir(roots)
    assert half.startswith(".")  # hidden until done, and already with its final mode
    want = Store.open(group_store).policy.mode(Role.ROOTS_DIR)
    assert stat.S_IMODE((roots / half).stat().st_mode) == want
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venvs[1]), str(wheels["cla"]))
    assert done.returncode == 0, done.stderr
    for marker in markers.iterdir():
        marker.unlink()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert sorted(os.listdir(roots)) == sorted(n for n in os.listdir(roots) if not n.startswith("."))
    assert len(os.listdir(roots)) == 2  # one each: both use the first by name, and gc reads both
    assert {stat.S_IMODE((roots / n).stat().st_mode) for n in os.listdir(roots)} == {want}
    assert sorted(r.venv for r in read_roots(Store.open(group_store))) == sorted(map(str, venvs))
    report = _gc_dry_run(run, users.alice, group_store)
    assert report["roots"] == {"live": 2, "stale": []}
