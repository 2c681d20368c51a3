"""Three gaps an attack left in issue 14's layout: a member's ``locks/gc.lock`` in an ``all`` store, a parent another
user makes while ``init`` runs, and a ``roots/`` flooded with names. Real users; the last is a unit test that counts
user-database lookups (it mocks no permission)."""

from __future__ import annotations

import functools
import json
import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from wheelstore.store import roots as rootmod
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error
from .wheelmaker import make_wheel


def _as(run: Runner, user: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=run.env(user), cwd="/", timeout=60,
                          **run.popen_kwargs(user, 0o022))


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def _hold_as_root(path: Path) -> subprocess.Popen[str]:
    """root's gc, as far as the lock goes: ``gc.lock`` held exclusive (root opens it whatever its mode)."""
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _gc_lock_check(run: Runner, user: str, store: Path) -> dict[str, object]:
    done = run(user, "doctor", "--store", str(store), "--json")
    assert "Traceback" not in done.stderr, done.stderr
    checks: list[dict[str, object]] = [c for c in json.loads(done.stdout)["checks"] if c["name"] == "gc-lock"]
    (check,) = checks
    return check


def _all_store(run: Runner, users: Users, workdir: Path) -> Path:
    store = workdir / "store"
    done = run(users.alice, "init", str(store), "--shared", "all", "--group", users.group)
    assert done.returncode == 0, done.stderr
    return store


# -- 1: gc.lock is the store owner's ------------------------------------------------------------------------------


def test_a_member_cannot_make_an_all_stores_gc_lock_unusable(run: Runner, users: Users, workdir: Path) -> None:
    """bob creates ``locks/gc.lock`` before anyone else and makes it 0600. In an ``all`` store that file is the only
    store lock (``locks/`` itself is not locked there), so alice's install could not open it and went ahead without
    it while root's gc held it. Now ``init`` makes it, alice's, and bob can neither replace nor chmod it: alice's
    install waits for root's gc, naming it."""
    store = _all_store(run, users, workdir)
    lock = store / "locks" / "gc.lock"
    _as(run, users.bob, "sh", "-c", f"touch {lock}; chmod 600 {lock}; mv {lock} {lock}.old")
    st = lock.stat()
    assert (st.st_uid, st.st_mode & 0o7777, st.st_gid) == (users.uid(users.alice), 0o660, users.gid)

    whl = make_wheel(workdir, "duringallgc")
    whl.chmod(0o644)
    venv = workdir / "venv"
    assert run(users.alice, "venv", str(venv)).returncode == 0
    gc = _hold_as_root(lock)
    try:
        done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), str(whl),
                   env={"WHEELSTORE_LOCK_TIMEOUT": "2"})
    finally:
        gc.communicate("")
    assert done.returncode == 0, done.stderr
    waits = [line for line in done.stderr.splitlines() if line.startswith("warning: waiting for locks/gc.lock")]
    assert waits and "held by root" in waits[0], done.stderr
    assert "cannot open" not in done.stderr, done.stderr
    assert _gc_lock_check(run, users.bob, store)["status"] == "ok"


def test_only_the_store_owner_remakes_a_missing_gc_lock(run: Runner, users: Users, workdir: Path) -> None:
    """A store made before ``init`` made ``gc.lock`` has none: a member's install does not make it (it would be
    theirs to chmod); the store owner's next install does."""
    store = _all_store(run, users, workdir)
    lock = store / "locks" / "gc.lock"
    lock.unlink()  # as root: the older layout
    whl = make_wheel(workdir, "remade")
    whl.chmod(0o644)
    for user in (users.bob, users.alice):
        venv = workdir / f"venv-{user}"
        assert run(user, "venv", str(venv)).returncode == 0
        done = run(user, "--store", str(store), "install", "--venv", str(venv), str(whl))
        assert done.returncode == 0, done.stderr
        if user == users.bob:
            assert not lock.exists()
            assert "locks/gc.lock" in done.stderr and "only the store's owner or root makes it" in done.stderr
    assert lock.stat().st_uid == users.uid(users.alice) and lock.stat().st_mode & 0o777 == 0o660


def test_doctor_flags_a_members_gc_lock_in_an_older_store_and_its_fix_works(
    run: Runner, users: Users, workdir: Path
) -> None:
    """In a store of the older layout bob made ``gc.lock`` (here: planted, 0600). doctor fails the ``all`` store
    naming bob, and its fix, run by alice, gives the store back an ``gc.lock`` of hers."""
    store = _all_store(run, users, workdir)
    lock = store / "locks" / "gc.lock"
    assert _gc_lock_check(run, users.alice, store)["status"] == "ok"
    lock.unlink()  # as root: the older layout, in which the first user to lock made it
    assert _gc_lock_check(run, users.alice, store)["status"] == "warn"
    assert _as(run, users.bob, "sh", "-c", f"touch {lock} && chmod 600 {lock}").returncode == 0
    check = _gc_lock_check(run, users.alice, store)
    assert check["status"] == "fail" and users.bob in str(check["detail"]), check
    assert users.alice in str(check["detail"]) and check["fix"], check
    fixed = _as(run, users.alice, "sh", "-c", str(check["fix"]))
    assert fixed.returncode == 0, fixed.stderr
    st = lock.stat()
    assert (st.st_uid, st.st_mode & 0o7777, st.st_gid) == (users.uid(users.alice), 0o660, users.gid)
    assert _gc_lock_check(run, users.bob, store)["status"] == "ok"
    assert sorted(os.listdir(store / "locks")) == ["gc.lock"]


def test_init_replaces_a_gc_lock_planted_in_a_half_made_store(run: Runner, users: Users, workdir: Path) -> None:
    """An interrupted init left the areas (shared-writable) and no config: bob plants ``gc.lock`` there. The init
    that finishes the store puts alice's in its place."""
    store = workdir / "half"
    assert _as(run, users.alice, "mkdir", "-p", "-m", "755", str(store / "locks")).returncode == 0
    assert _as(run, users.alice, "chmod", "1777", str(store / "locks")).returncode == 0
    assert _as(run, users.bob, "sh", "-c", f"touch {store}/locks/gc.lock && chmod 600 {store}/locks/gc.lock"
               ).returncode == 0
    done = run(users.alice, "init", str(store), "--shared", "all", "--group", users.group)
    assert done.returncode == 0, done.stderr
    st = (store / "locks" / "gc.lock").stat()
    assert (st.st_uid, st.st_mode & 0o7777) == (users.uid(users.alice), 0o660)
    assert sorted(os.listdir(store / "locks")) == ["gc.lock"]


# -- 2: init re-checks the parents once it has made them -------------------------------------------------------------


def test_init_refuses_a_parent_another_user_made_after_the_check(run: Runner, users: Users, workdir: Path) -> None:
    """alice runs ``init lab/store``, ``lab`` not existing yet, in a sticky directory. Between init's check of the
    parents and its ``mkdir``, bob makes ``lab`` (0777, so alice's mkdir of the store in it succeeds): the store
    would be in bob's directory, where bob may rename it away and put his own in its place."""
    markers = workdir / "markers"
    markers.mkdir()
    markers.chmod(0o777)
    path = workdir / "lab" / "store"
    init = run.popen(users.alice, "init", str(path), "--group", users.group,
                     env={"WHEELSTORE_TEST_HOOK": "parents-checked=wait", "WHEELSTORE_TEST_HOOK_DIR": str(markers)})
    deadline = time.monotonic() + 60
    while not list(markers.iterdir()):
        assert init.poll() is None and time.monotonic() < deadline, init.communicate()
        time.sleep(0.02)
    assert _as(run, users.bob, "mkdir", "-m", "777", str(path.parent)).returncode == 0
    for marker in markers.iterdir():
        marker.unlink()
    out, err = init.communicate(timeout=60)
    line = one_line_error(subprocess.CompletedProcess(init.args, init.returncode, out, err))
    assert str(path.parent) in line and users.bob in line and "fix:" in line, line
    assert not (path / "config.toml").exists()


def test_init_still_makes_missing_parents_of_its_own(run: Runner, users: Users, workdir: Path) -> None:
    """The re-check passes for parents init made itself."""
    path = workdir / "a" / "b" / "store"
    done = run(users.alice, "init", str(path), "--group", users.group)
    assert done.returncode == 0, done.stderr
    assert path.parent.stat().st_uid == users.uid(users.alice) and (path / "config.toml").exists()


# -- 3: a flooded roots/ costs no user lookups per entry -------------------------------------------------------------


def test_a_flooded_roots_costs_no_user_lookup_per_entry(
    users: Users, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bob fills ``roots/`` with names that are no user's (directories and files), and squats alice's old-layout
    name. Listing the roots (as gc and installs do) looked each name up in the user database: 66 us each, a minute for
    a million. Now no name is looked up, and the owner of a directory at most once."""
    store = Store.init(workdir / "store", shared="group", group=users.group)
    roots = store.root / "roots"
    bob, alice = users.uid(users.bob), users.uid(users.alice)
    for i in range(1500):
        os.mkdir(roots / f"nosuchuser{i}")
        os.chown(roots / f"nosuchuser{i}", bob, -1)
        (roots / f"nosuchfile{i}").touch()
    squat = roots / users.alice
    squat.mkdir()
    (squat / "x.json").touch()
    os.chown(squat, bob, -1)
    mine = roots / f"{alice}-{'0' * 16}"
    mine.mkdir()
    (mine / "a.json").write_text("{}")
    os.chown(mine, alice, -1)
    os.chown(mine / "a.json", alice, -1)
    old = roots / "root"  # root's directory of the old layout, by name
    old.mkdir()
    (old / "r.json").write_text("{}")

    calls = {"getpwnam": 0, "getpwuid": 0}

    def counting(name: str, real: object) -> object:
        def call(arg: object) -> object:
            calls[name] += 1
            return real(arg)  # type: ignore[operator]  # real is pwd.getpwnam or pwd.getpwuid
        return call

    monkeypatch.setattr(pwd, "getpwnam", counting("getpwnam", pwd.getpwnam))
    monkeypatch.setattr(pwd, "getpwuid", counting("getpwuid", pwd.getpwuid))
    getattr(rootmod, "_name_of", functools.lru_cache(None)(len)).cache_clear()  # count from a cold cache
    try:
        found = rootmod.list_roots(store)
    finally:
        store.close()
    assert sorted(found) == [f"{mine.name}/a.json", "root/r.json"]
    assert calls["getpwnam"] == 0, calls
    assert calls["getpwuid"] <= 2, calls  # bob's name and root's, once each
