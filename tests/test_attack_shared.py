"""Attacks on issue 14's acceptance 2-6 that got through: a store root a member made for root to init, an init that
a member's flock silences forever, and key-lock waits that add up past the configured bound. Real users."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error
from .wheelmaker import make_wheel


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _as(run: Runner, user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=run.env(user), cwd="/", timeout=60,
                          **run.popen_kwargs(user, 0o022))


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | (os.O_DIRECTORY if sys.argv[2] == "dir" else os.O_CREAT), 0o660)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def _hold(run: Runner, user: str | None, path: Path, kind: str = "file") -> subprocess.Popen[str]:
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", HOLD, str(path), kind], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=run.env(user), cwd="/",
                            **run.popen_kwargs(user, 0o007))
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


# -- acceptance 3: a layout that cannot be taken over --------------------------------------------------------------


def test_root_does_not_init_a_store_in_a_directory_a_member_planted(run: Runner, users: Users, workdir: Path) -> None:
    """bob creates the (empty) store directory first in a sticky directory that passes the parents check (as /tmp
    or a sticky project directory does), then root runs ``init`` there as the guide says. The store's root is then
    bob's: ``doctor`` calls him the store's owner and says all is well, and bob may rename its areas away and put
    his own in their place (here trees/), which is what the parents check is there to prevent."""
    path = workdir / "store"
    assert _as(run, users.bob, "mkdir", str(path)).returncode == 0
    done = run(None, "init", str(path), "--group", users.group)
    if done.returncode != 0:  # refused, as it should be: with one line naming bob and a fix
        line = one_line_error(done)
        assert users.bob in line and "fix:" in line, line
        assert not (path / "config.toml").exists()
        return
    doctor = run(users.alice, "--store", str(path), "doctor")
    assert f"owned by {users.bob}" not in doctor.stdout, doctor.stdout
    swap = _as(run, users.bob, "sh", "-c", f"mv {path}/trees {path}/trees.old && mkdir {path}/trees")
    assert swap.returncode != 0, "bob replaced the trees/ area of the store root made"


# -- acceptance 5: no wait is unbounded or silent ------------------------------------------------------------------


def test_init_of_a_store_a_member_holds_locked_neither_hangs_nor_is_silent(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Any member may open the store's directory and flock it. ``init`` locks that directory with a blocking flock,
    so root's (or alice's) re-run of ``init`` (a provisioning script's, say) hangs without a word for as long as bob
    likes, instead of saying the store exists."""
    holder = _hold(run, users.bob, group_store, "dir")
    try:
        started = time.monotonic()
        proc = run.popen(None, "init", str(group_store), "--group", users.group,
                         env={"WHEELSTORE_LOCK_TIMEOUT": "2"})
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            raise AssertionError(f"init still waiting after 20s, silently: {err!r}") from None
        assert time.monotonic() - started < 15
        assert users.bob in err, err  # the waiter names who holds the lock
        assert "already a store" in err or "cannot lock" in err, err
    finally:
        holder.communicate("")


def test_key_lock_waits_do_not_add_up_past_the_configured_bound(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob holds the locks of the six wheels alice is about to publish. Each wait is bounded (here 3 s), but they
    add up: with two workers alice waits 3 s three times over, and an install of a hundred new wheels whose keys
    bob guessed (a new release's sha256s are public) waits minutes, each lock announced with its own warning."""
    whls = []
    for i in range(6):
        name = f"heldmany{i}"
        whl = make_wheel(workdir, name, files={f"{name}/__init__.py": f"NAME = {name!r}\n".encode()})
        whl.chmod(0o644)
        whls.append(whl)
    venv = workdir / "venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    holders = [_hold(run, users.bob, group_store / "locks" / f"{_key(w)}.lock") for w in whls]
    try:
        started = time.monotonic()
        done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), *map(str, whls),
                   env={"WHEELSTORE_LOCK_TIMEOUT": "3"})
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert took < 3 + 4.5, f"waited {took:.1f}s for locks bounded at 3s: {done.stderr}"
    finally:
        for h in holders:
            h.communicate("")


def test_doctor_flags_a_members_symlink_in_a_sticky_directory_on_the_way_to_the_store(
    run: Runner, users: Users, workdir: Path
) -> None:
    """alice's store is at ``alice/store``; the members reach it as ``lab/store``, through bob's symlink ``lab`` in
    a sticky directory. ``doctor`` judges the link's target and the sticky directory holding it, never the link, and
    says only root and alice may rename entries above the store: but bob owns the link, so the sticky bit lets him
    replace it, and ``lab/store`` then is a store bob made and owns."""
    mine = workdir / "alice"
    assert _as(run, users.alice, "mkdir", "-m", "755", str(mine)).returncode == 0
    assert run(users.alice, "init", str(mine / "store"), "--group", users.group).returncode == 0
    link = workdir / "lab"
    assert _as(run, users.bob, "ln", "-s", str(mine), str(link)).returncode == 0
    doctor = run(users.alice, "--store", str(link / "store"), "doctor")
    parents = next(line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["parents"])
    if not parents.startswith("ok"):
        assert str(link) in parents and users.bob in parents, parents
        return
    bobs = workdir / "bobs"
    assert _as(run, users.bob, "mkdir", "-m", "755", str(bobs)).returncode == 0
    assert run(users.bob, "init", str(bobs / "store"), "--group", users.group).returncode == 0
    assert _as(run, users.bob, "ln", "-sfn", str(bobs), str(link)).returncode == 0
    after = run(users.alice, "--store", str(link / "store"), "doctor")
    raise AssertionError(f"doctor said {parents!r}, then bob swapped the link: {after.stdout.splitlines()[1]}")


def test_a_member_cannot_take_installs_out_of_gcs_lock_by_chmodding_gc_lock(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """In a store of the older layout, bob's install happened to create ``locks/gc.lock`` (it is never removed), so
    it is his file, and he makes it 0600. From then on every other member's install cannot open it and goes ahead
    without the store lock, with a warning, while root (who ignores modes) still takes it: root's gc holding the lock
    exclusive no longer keeps alice's install from finding trees it is about to remove; and alice's own gc cannot run
    at all. (Now init makes it, the store owner's, and members never do: bob plants his here.)"""
    lock = group_store / "locks" / "gc.lock"
    lock.unlink()  # as root: the older layout, in which whoever locked first made it
    assert _as(run, users.bob, "sh", "-c", f"touch {lock} && chmod 600 {lock}").returncode == 0
    assert lock.stat().st_uid == users.uid(users.bob)

    whl = make_wheel(workdir, "duringgc")
    whl.chmod(0o644)
    venv = workdir / "venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    # root's gc holds the store lock exclusive: gc.lock (which root can open whatever its mode) and, where gc locks
    # it too, the locks/ directory
    gc = [_hold(run, None, lock), _hold(run, None, lock.parent, "dir")]
    try:
        done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl),
                   env={"WHEELSTORE_LOCK_TIMEOUT": "3"})
    finally:
        for h in gc:
            h.communicate("")
    assert done.returncode == 0, done.stderr
    waits = [line for line in done.stderr.splitlines() if line.startswith("warning: waiting for the locks/ directory")]
    assert waits and "held by root" in waits[0], done.stderr


# -- acceptance 2 and 6: bytecode units trusted only from their tree's owner, the store's owner or root ---------------


def test_a_planted_unit_name_costs_the_bytecode_not_the_install(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A wheel's sha256 is public, so bob can create ``trees/<sha256>-<cache tag>`` (an empty directory will do)
    before anyone installs it. The docs say a unit from someone else is "ignored as if absent"; instead every
    install that needs the tree's unit fails, for good: root's default install (copy), and any member's install in
    a mode other than fold."""
    whl = make_wheel(workdir, "unitsquat", files={"unitsquat/__init__.py": b"NAME = 'unitsquat'\n",
                                                  "unitsquat/mod.py": b"VALUE = 2\n"})
    whl.chmod(0o644)
    tag = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    planted = group_store / "trees" / f"{_key(whl)}-{tag}"
    assert _as(run, users.bob, "mkdir", "-m", "550", str(planted)).returncode == 0

    venv = workdir / "venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    done = run(users.alice, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(venv),
               str(whl))
    assert done.returncode == 0, done.stderr
    root_venv = workdir / "root-venv"
    assert run(None, "venv", str(root_venv)).returncode == 0
    done = run(None, "--store", str(group_store), "install", "--venv", str(root_venv), str(whl))
    assert done.returncode == 0, done.stderr
    assert f"{planted.name} is {users.bob}'s" in done.stderr, done.stderr
    for v, user in ((venv, users.alice), (root_venv, None)):
        ran = subprocess.run([str(v / "bin" / "python"), "-c", "import unitsquat.mod as m; print(m.VALUE)"],
                             capture_output=True, text=True, **run.popen_kwargs(user, 0o022))
        assert ran.stdout == "2\n", ran.stderr


def test_roots_install_from_a_members_private_store_keeps_its_writes_private(
    run: Runner, users: Users, workdir: Path
) -> None:
    """Root uses alice's private store (``sudo`` keeping ``HOME``, or ``--store``) to install a wheel the store lacks.
    The tree root publishes there is root's, mode 0400/0500: alice's own installs of that wheel then fail ("permission
    denied") in her own store; and since the store is private and the tree root's, root's ``auto`` folds it, so
    root's edit in its own venv would change alice's store (acceptance 6 allows links only "if the store is root's
    own")."""
    store = workdir / "alice-store"
    assert run(users.alice, "init", str(store)).returncode == 0
    whl = make_wheel(workdir, "rootpriv", files={"rootpriv/__init__.py": b"NAME = 'rootpriv'\n"})
    whl.chmod(0o644)
    root_venv = workdir / "root-venv"
    assert run(None, "venv", str(root_venv)).returncode == 0
    rooted = run(None, "--store", str(store), "install", "--json", "--venv", str(root_venv), str(whl))
    if rooted.returncode == 0:
        assert '"link_mode": "fold"' not in rooted.stdout, rooted.stdout
    else:
        assert users.alice in one_line_error(rooted)
    venv = workdir / "alice-venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr


def test_roots_install_from_a_members_private_store_does_not_stop_her_gc(
    run: Runner, users: Users, workdir: Path
) -> None:
    """Root installs (by copy) a wheel alice already has in her private store: root's gc root directory there is
    root's, mode 0700, so alice's gc can no longer read every root, and from then on removes nothing."""
    store = workdir / "alice-store"
    assert run(users.alice, "init", str(store)).returncode == 0
    whls = []
    for name in ("keptpa", "droppb"):
        whl = make_wheel(workdir, name, files={f"{name}/__init__.py": b"X = 1\n"})
        whl.chmod(0o644)
        whls.append(whl)
    venv = workdir / "alice-venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), *map(str, whls)).returncode == 0
    root_venv = workdir / "root-venv"
    assert run(None, "venv", str(root_venv)).returncode == 0
    done = run(None, "--store", str(store), "install", "--venv", str(root_venv), str(whls[0]))
    assert done.returncode == 0, done.stderr
    assert run(users.alice, "--store", str(store), "uninstall", "--venv", str(venv), "droppb").returncode == 0
    gc = run(users.alice, "--store", str(store), "gc", "--grace", "0")
    assert gc.returncode == 0 and "cannot read roots/" not in gc.stdout + gc.stderr, gc.stdout + gc.stderr
    assert not (store / "trees" / _key(whls[1])).exists()
