"""Issue 14, acceptance 4, 5 and 6: what one member (or root's own habits) can do to others through the store's
shared bookkeeping: squatting gc roots, holding locks, and root writing through its own venv. Real users."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, snapshot
from .wheelmaker import make_wheel


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _wheel(workdir: Path, name: str) -> Path:
    whl = make_wheel(workdir, name, files={f"{name}/__init__.py": f"NAME = {name!r}\n".encode(),
                                           f"{name}/data.txt": name.encode() * 100})
    whl.chmod(0o644)
    return whl


def _venv(run: Runner, user: str | None, path: Path) -> Path:
    done = run(user, "venv", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _imports(run: Runner, user: str | None, venv: Path, name: str) -> None:
    code = f"import {name}; assert {name}.NAME == {name!r}"
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3.*/site-packages")
    return site


# -- acceptance 6: root's own venvs ------------------------------------------------------------------------------------


def test_roots_default_install_from_a_group_store_keeps_its_writes_private(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Root installs alice's tree into root's own venv with the default mode, then appends to a module there (as
    root's pip or editor would): the store file, alice's venv and ``verify`` are untouched."""
    whl = _wheel(workdir, "rootedit")
    alice_venv = _venv(run, users.alice, workdir / "alice-venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(alice_venv), str(whl))
    assert done.returncode == 0, done.stderr
    store_file = group_store / "trees" / _key(whl) / "rootedit/__init__.py"
    stored = hashlib.sha256(store_file.read_bytes()).hexdigest()
    alice_before = snapshot(alice_venv)

    root_venv = _venv(run, None, workdir / "root-venv")
    done = run(None, "--store", str(group_store), "install", "--json", "--venv", str(root_venv), str(whl))
    assert done.returncode == 0, done.stderr
    (installed,) = json.loads(done.stdout)["installed"]
    assert installed["link_mode"] in ("copy", "reflink"), installed
    mine = _site(root_venv) / "rootedit/__init__.py"
    assert not mine.is_symlink() and not os.path.samefile(mine, store_file)
    with open(mine, "a") as f:  # root: file modes do not stop this write
        f.write("ROOT_WAS_HERE = 1\n")

    assert hashlib.sha256(store_file.read_bytes()).hexdigest() == stored
    assert snapshot(alice_venv) == alice_before
    _imports(run, users.alice, alice_venv, "rootedit")
    verified = run(users.alice, "--store", str(group_store), "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.stdout + verified.stderr


def test_root_may_still_ask_for_symlinks_and_is_warned_once(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whls = [_wheel(workdir, "rsym1"), _wheel(workdir, "rsym2")]
    assert run(users.alice, "--store", str(group_store), "realize", *map(str, whls)).returncode == 0
    venv = _venv(run, None, workdir / "root-venv")
    done = run(None, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(venv),
               *map(str, whls))
    assert done.returncode == 0, done.stderr
    assert (_site(venv) / "rsym1/__init__.py").is_symlink()
    warnings = [line for line in done.stderr.splitlines() if "--link-mode symlink as root" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: "), done.stderr
    assert "copy or reflink" in warnings[0]


# -- acceptance 5: a lock held by another member -----------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o660)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def _hold(run: Runner, user: str, lock: Path) -> subprocess.Popen[str]:
    """``user`` holds an exclusive flock on ``lock`` (creating it if need be) until the test lets go."""
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", HOLD, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=run.env(user), cwd="/",
                            **run.popen_kwargs(user, 0o007))
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def _stderr_lines(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    """The lines of ``proc``'s stderr as they come (None at its end), read by a thread."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _first(lines: queue.Queue[str | None], needle: str, within: float) -> str:
    """The first line containing ``needle``, which must come within ``within`` seconds (a generous bound)."""
    deadline = time.monotonic() + within
    seen: list[str] = []
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        assert line is not None, f"no {needle!r} before stderr closed: {seen}"
        if needle in line:
            return line
        seen.append(line)


def test_a_members_key_lock_is_named_and_waited_for_briefly(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob holds the lock of the key alice is about to publish: her install says at once that bob holds it, then goes
    ahead without it after the configured bound, and the result is correct (the rename decides)."""
    whl = _wheel(workdir, "heldkey")
    venv = _venv(run, users.alice, workdir / "venv")
    holder = _hold(run, users.bob, group_store / "locks" / f"{_key(whl)}.lock")
    try:
        install = run.popen(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl),
                            env={"WHEELSTORE_LOCK_TIMEOUT": "3"})
        lines = _stderr_lines(install)
        notice = _first(lines, "waiting for locks/", within=30)
        assert notice.startswith(f"warning: waiting for locks/{_key(whl)}.lock, held by {users.bob} (pid "), notice
        assert f"(pid {holder.pid}) since " in notice and "going ahead without it after 3s" in notice
        assert "going ahead without lock" in _first(lines, "going ahead without lock", within=60)
        assert install.wait(timeout=60) == 0
    finally:
        holder.communicate("")
    _imports(run, users.alice, venv, "heldkey")
    assert (group_store / "trees" / _key(whl)).is_dir()


def test_the_default_wait_for_a_key_is_short_and_quiet_is_quiet(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whl, other = _wheel(workdir, "quietkey"), _wheel(workdir, "quietkey2")
    holders = [_hold(run, users.bob, group_store / "locks" / f"{_key(w)}.lock") for w in (whl, other)]
    try:
        loud = run.popen(users.alice, "--store", str(group_store), "realize", str(whl))
        notice = _first(_stderr_lines(loud), "waiting for locks/", within=30)
        assert "going ahead without it after 10s" in notice  # the default for keys, not 900 s
        assert loud.wait(timeout=120) == 0
        # a wheel not published yet, so that -q really waits on bob's lock (the first one is in the store now)
        quiet = run(users.alice, "--store", str(group_store), "-q", "realize", str(other),
                    env={"WHEELSTORE_LOCK_TIMEOUT": "1"})
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
        assert (group_store / "trees" / _key(other)).is_dir()
    finally:
        for holder in holders:
            holder.communicate("")


def test_a_key_lock_my_own_process_holds_is_waited_for_past_the_short_bound(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """alice's own process holds the lock of a key (another of her CI jobs fetching it): the kernel says so, no member
    can stall her that way, so she waits for it past the 10 s meant for others' locks instead of doing the work
    again."""
    whl = _wheel(workdir, "ownkey")
    holder = _hold(run, users.alice, group_store / "locks" / f"{_key(whl)}.lock")
    try:
        realize = run.popen(users.alice, "--store", str(group_store), "realize", str(whl))
        lines = _stderr_lines(realize)
        notice = _first(lines, "waiting for locks/", within=30)
        assert f"held by {users.alice} (pid {holder.pid})" in notice and "going ahead without it after 900s" in notice
        time.sleep(12)  # past the short bound
        assert realize.poll() is None, "alice gave up waiting for her own process's lock"
    finally:
        holder.communicate("")
    assert realize.wait(timeout=120) == 0
    rest = []
    while (line := lines.get(timeout=30)) is not None:
        rest.append(line)
    assert not any("going ahead without lock" in line for line in rest), rest


def test_a_lock_file_that_cannot_be_linked_into_place_is_gone_ahead_without(
    group_store: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A filesystem without hard links (or a full disk) refuses the link that puts a new lock file in place: locks
    are an optimisation, so the work goes ahead without the lock, with a warning, instead of failing."""
    from wheelstore.store.store import Store

    real_link = os.link

    def no_links(src: str, dst: str, **kwargs: object) -> None:
        if dst.endswith(".lock"):
            raise PermissionError(1, "Operation not permitted")
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]  # os.link's own keywords, passed through

    store = Store.open(group_store)
    monkeypatch.setattr(os, "link", no_links)
    with store.key_lock("c" * 64):
        pass
    assert "going ahead without lock locks/" + "c" * 64 + ".lock: cannot create it" in caplog.text
    assert [n for n in os.listdir(group_store / "locks") if "c" * 64 in n] == []


def test_a_members_gc_lock_stops_neither_installs_nor_gc_for_long(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob holds locks/gc.lock exclusively: alice's install says so and goes ahead after the bound; root's gc says so
    and fails within the bound with one error line naming bob; once bob lets go, gc runs."""
    whl = _wheel(workdir, "heldgc")
    venv = _venv(run, users.alice, workdir / "venv")
    holder = _hold(run, users.bob, group_store / "locks" / "gc.lock")
    try:
        install = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl),
                      env={"WHEELSTORE_LOCK_TIMEOUT": "2"}, timeout=60)
        assert install.returncode == 0, install.stderr
        assert f"waiting for locks/gc.lock, held by {users.bob} (pid {holder.pid})" in install.stderr
        gc = run(None, "--store", str(group_store), "gc", "--grace", "0", env={"WHEELSTORE_LOCK_TIMEOUT": "2"},
                 timeout=60)
        assert gc.returncode != 0 and "Traceback" not in gc.stderr, gc.stderr
        notice, error = gc.stderr.strip().splitlines()
        assert notice.startswith(f"warning: waiting for locks/gc.lock, held by {users.bob}") and "giving up" in notice
        assert error.startswith("error: cannot lock gc.lock in the store's locks/: waited 2s, still held by "
                                f"{users.bob} (pid {holder.pid}) since "), error
        assert "(fix: run gc again once" in error
    finally:
        holder.communicate("")
    _imports(run, users.alice, venv, "heldgc")
    done = run(None, "--store", str(group_store), "gc", "--grace", "0", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["removed"] == [], done.stderr
    _imports(run, users.alice, venv, "heldgc")


# -- acceptance 4: roots that cannot be squatted ----------------------------------------------------------------------

SQUAT = """
import os, sys
roots, name, uid, bob_dir = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
for d in (name, uid, uid + "-0000000000000000", uid + "-ffffffffffffffff", "." + uid):
    os.mkdir(os.path.join(roots, d), 0o777)
    os.chmod(os.path.join(roots, d), 0o777)
open(os.path.join(roots, uid + "-0123456789abcdef"), "w").close()  # a file where a directory might go
os.symlink(bob_dir, os.path.join(roots, uid + "-aaaaaaaaaaaaaaaa"))  # a link to a directory bob owns
"""


def _squat(run: Runner, users: Users, store: Path) -> set[str]:
    """bob plants every name a squatter could guess for alice's roots; returns them."""
    before = set(os.listdir(store / "roots"))
    bob_dir = store / "staging" / "bobs"
    planted = run.python(users.bob, "import os, sys; os.mkdir(sys.argv[1], 0o777)", str(bob_dir))
    assert planted.returncode == 0, planted.stderr
    planted = run.python(users.bob, SQUAT, str(store / "roots"), users.alice, str(users.uid(users.alice)),
                         str(bob_dir))
    assert planted.returncode == 0, planted.stderr
    return set(os.listdir(store / "roots")) - before


def _alices_roots(users: Users, store: Path) -> list[Path]:
    uid = users.uid(users.alice)
    return [f for d in (store / "roots").iterdir() if not d.is_symlink() and d.is_dir() and d.stat().st_uid == uid
            for f in d.iterdir()]


def test_squatted_root_names_do_not_stop_registration_and_roots_gc_keeps_her_trees(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whl = _wheel(workdir, "squatted")
    planted = _squat(run, users, group_store)
    venv = _venv(run, users.alice, workdir / "venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0 and "gc" not in done.stderr, done.stderr

    (root,) = _alices_roots(users, group_store)
    assert root.parent.name not in planted and root.parent.name.startswith(f"{users.uid(users.alice)}-")
    assert json.loads(root.read_text())["venv"] == str(venv)
    for name in planted:  # nothing was written through bob's entries
        entry = group_store / "roots" / name
        assert entry.is_symlink() or not entry.is_dir() or list(entry.iterdir()) == []

    report = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json").stdout)
    assert report["removed"] == [] and report["roots"]["live"] == 1, report
    assert (group_store / "trees" / _key(whl)).is_dir() and (group_store / "manifests" / f"{_key(whl)}.json").exists()
    _imports(run, users.alice, venv, "squatted")

    # her next install finds the same directory again, past bob's entries
    other = _wheel(workdir, "squatted2")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(other))
    assert done.returncode == 0, done.stderr
    assert _alices_roots(users, group_store) == [root]


def test_a_foreign_root_file_is_not_counted_as_alices(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob writes root files naming alice's venv into directories under alice's names (which he owns): gc does not
    read them as alice's roots (nor as anyone's), and root's gc does not remove them either."""
    whl = _wheel(workdir, "claimed")
    venv = _venv(run, users.alice, workdir / "venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr
    (real_root,) = _alices_roots(users, group_store)
    claim = real_root.read_text()
    planted = _squat(run, users, group_store)
    names = (users.alice, f"{users.uid(users.alice)}-0000000000000000")
    fakes = [group_store / "roots" / d / real_root.name for d in names]
    for fake in fakes:
        written = run.python(users.bob, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(fake), claim)
        assert written.returncode == 0, written.stderr
    assert planted

    report = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json").stdout)
    assert report["roots"] == {"live": 1, "stale": []} and report["removed"] == [], report
    os.rename(venv, workdir / "moved")  # alice's venv is gone: her one root is stale, bob's claims are not roots
    report = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json").stdout)
    assert report["roots"] == {"live": 0, "stale": [str(venv)]}, report
    assert _key(whl) in {u["key"] for u in report["removed"]}
    assert all(fake.read_text() == claim for fake in fakes)


def test_a_root_that_cannot_be_written_is_an_error(run: Runner, users: Users, workdir: Path) -> None:
    """A member whose root cannot be written (the owner took the group's write bit off roots/) gets a filled venv and
    then one error line saying it is not protected from gc, and what to do. A reader of an 'all' store, who never
    may write roots/, is warned instead: failing each of their installs would protect nothing."""
    store = workdir / "all"
    assert run(users.alice, "init", str(store), "--group", users.group, "--shared", "all").returncode == 0
    whl = _wheel(workdir, "readonly")
    assert run(users.alice, "--store", str(store), "realize", str(whl)).returncode == 0
    os.chmod(store / "roots", 0o3755)  # what an owner's chmod g-w does to a member's registration
    venv = _venv(run, users.bob, workdir / "venv")
    done = run(users.bob, "--store", str(store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"{venv} is filled, but not protected from gc" in line, line
    assert "(you may not write there)" in line, line
    assert f"(fix: see 'wheelstore doctor --store {store}', then run the command again" in line
    _imports(run, users.bob, venv, "readonly")

    reader_venv = _venv(run, users.carol, workdir / "reader-venv")
    done = run(users.carol, "--store", str(store), "install", "--venv", str(reader_venv), str(whl))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"{reader_venv} is not protected from gc: readers of {store} cannot register venvs" in done.stderr
    _imports(run, users.carol, reader_venv, "readonly")
