"""Issue 18, point 3 and acceptance 3: staging work is judged by its lease (a held flock plus a heartbeat), never by
host name and pid; lock files and leases of finished work are removed, by their holder or, once nobody holds them and
they are old, by gc. Real processes in real PID namespaces, real kill -9, real users planting things."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from wheelstore.store import staging
from wheelstore.store.lease import PREFIX, read_record
from wheelstore.store.store import Store

from .cluster import Mounts, SshfsPair
from .conftest import _SPAWNED, Runner, Users
from .test_concurrency import _hook, _wait_for
from .test_member_attacks import _hold
from .wheelmaker import big_files, make_wheel

HOST = os.uname().nodename
DAY = 86400.0


def _wheel(workdir: Path, name: str) -> Path:
    whl = make_wheel(workdir, name, files=big_files(40, 2000, prefix=name))
    os.chmod(whl, 0o644)
    return whl


def _free_pid() -> int:
    """A pid number that no process has here, in the root PID namespace."""
    top = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(top - 1, 1000, -1) if not Path(f"/proc/{p}").exists())


def _in_pid_namespace(run: Runner, user: str, pid: int, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``wheelstore ARGS`` as ``user`` in a new PID namespace (same host name, its own /proc), where it is process
    number ``pid``: the namespace's init sets the next pid, then starts it."""
    ids = run.popen_kwargs(user, 0o022)
    command = ["setpriv", f"--reuid={user}", f"--regid={ids['group']}", "--init-groups", "--", str(run.tool), *args]
    script = f"umask 022; echo {pid - 1} > /proc/sys/kernel/ns_last_pid; " + " ".join(command) + " & wait $!"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.env(user, env), cwd="/")
    _SPAWNED.append(proc)
    return proc


def _outer_pid(inner: int, under: int) -> int:
    """The pid here of process number ``inner`` of a PID namespace below process ``under``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) == 2 and int(nspid[1]) == inner and _descends(int(entry.name), under):
            return int(entry.name)
    raise AssertionError(f"no process {inner} in a namespace under {under}")


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2]).split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _gc(run: Runner, user: str | None, store: Path, grace: str | None, *extra: str) -> dict[str, Any]:
    """gc's JSON report; ``grace`` None: gc's own (a day)."""
    done = run(user, "--store", str(store), "gc", *(("--grace", grace) if grace is not None else ()), "--json", *extra)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _age(path: Path, seconds: float) -> None:
    """Set ``path``'s mtime (a staging entry's last change, a lease's last heartbeat) ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def _leftovers(store: Path) -> dict[str, list[str]]:
    return {"staging": sorted(os.listdir(store / "staging")),
            "hidden trees": sorted(n for n in os.listdir(store / "trees") if n.startswith(".")),
            "locks": sorted(os.listdir(store / "locks"))}


def _removed_paths(report: dict[str, Any]) -> set[str]:
    return {str(u["path"]) for u in report["removed"]}


def test_a_paused_publisher_in_another_pid_namespace_keeps_its_work_until_it_is_killed(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Acceptance 3. Two publishers, paused mid-publish in PID namespaces of their own on this host: alice's is a pid
    number no process has here, bob's the number of a live process here. gc (root's, with no grace at all, and with
    their entries made to look days old) removes neither while they hold their leases, and says who holds them. Killed
    with kill -9, whatever their pid numbers mean here (one is a live process's), their work stays while their last
    heartbeat is younger than a minute, and then goes (leases and key locks too) with a plain gc, whose grace is a
    day: their leases were made on this kernel and mount, where a free flock proves its holder gone."""
    sleeper = subprocess.Popen(["sleep", "600"], text=True)  # a live process here, whose number bob's publisher has
    _SPAWNED.append(sleeper)
    nothing = _free_pid()
    markers = workdir / "markers"
    env = _hook(markers, "unpacked=pause")
    publishers = {}
    for user, pid, name in ((users.alice, nothing, "nsnothing"), (users.bob, sleeper.pid, "nselse")):
        whl = _wheel(workdir, name)
        publishers[pid] = _in_pid_namespace(run, user, pid, "--store", str(group_store), "realize", "--no-compile",
                                            str(whl), env=env)
    for pid, proc in publishers.items():
        _wait_for(markers, f"unpacked.{pid}", proc)

    with Store.open(group_store) as store:
        work = [e for e in staging.entries(store) if e.kind == "tree"]
    assert len(work) == 2 and {e.state for e in work} == {"held"} and not any(e.stale for e in work)
    claims = " ".join(e.why for e in work)
    for pid in publishers:  # what the old test of host and pid went by: both "on this host"
        assert f"pid {pid} in another PID namespace on {HOST}" in claims, claims
    with pytest.raises(ProcessLookupError):
        os.kill(nothing, 0)
    for entry in work:  # unchanged for three days, as far as anyone can see
        _age(group_store / entry.name, 3 * DAY)

    for gc_user in (None, users.bob):
        report = _gc(run, gc_user, group_store, "0")
        assert not [p for p in _removed_paths(report) if "/." in p or p.startswith("staging/")], report
    report = _gc(run, None, group_store, "0")
    kept = report["staging_kept"]
    assert {(k["path"], k["lease"]) for k in kept} == {(e.name, "held") for e in work}
    problems = " ".join(report["problems"])
    assert "unchanged for 3d" in problems and f"of {users.alice} (pid {nothing}" in problems, problems
    for entry in work:
        assert (group_store / entry.name).is_dir()
    leases = sorted(n for n in os.listdir(group_store / "locks") if n.startswith(PREFIX))
    assert len(leases) == 2

    for pid, proc in publishers.items():  # kill -9 the publishers themselves
        os.kill(_outer_pid(pid, proc.pid), signal.SIGKILL)
    for proc in publishers.values():
        proc.communicate(timeout=60)
    os.kill(sleeper.pid, 0)  # bob's publisher's number still names a live process here

    not_yet = _gc(run, None, group_store, None)  # their last heartbeats: seconds ago
    assert not [p for p in _removed_paths(not_yet) if "/." in p or p.startswith("staging/")], not_yet
    assert {(k["path"], k["lease"]) for k in not_yet["staging_kept"]} == {
        (e.name, "free") for e in work}
    assert not_yet["locks_removed"] == []
    assert sorted(n for n in os.listdir(group_store / "locks") if n.startswith(PREFIX)) == leases

    for name in leases:  # their last heartbeats a minute ago; their key locks taken as recently as ever
        _age(group_store / "locks" / name, 61)
    dry = _gc(run, None, group_store, None, "--dry-run")
    assert _removed_paths(dry) == {e.name for e in work}
    assert len(dry["locks_removed"]) == 4  # two leases, two key locks
    assert all((group_store / e.name).is_dir() for e in work)
    done = _gc(run, None, group_store, None)
    assert _removed_paths(done) == {e.name for e in work}
    assert sorted(done["locks_removed"]) == sorted(dry["locks_removed"])
    assert _leftovers(group_store) == {"staging": [], "hidden trees": [], "locks": ["gc.lock"]}


WORKER = r"""
import json, sys, time
from wheelstore.store import keylock
from wheelstore.store.store import Store

path, counter, rounds, victim = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "victim"
opened = 0
open_file = keylock.KeyLock._open

def counting(self):  # how often a lock file was opened: more than once per lock means a removed file was met
    global opened
    opened += 1
    return open_file(self)

keylock.KeyLock._open = counting
store = Store.open(path)
for i in range(rounds + victim):
    lock = store.key_lock("e" * 64)
    lock.acquire()
    if i == rounds:  # the victim holds its last lock until it is killed
        print("holding", flush=True)
        time.sleep(600)
    with open(counter, "r+") as f:  # a lost update if two ever hold the lock at once
        n = int(f.read())
        time.sleep(0.002)
        f.seek(0)
        f.write(str(n + 1))
        f.truncate()
    lock.release()
print(json.dumps({"rounds": rounds, "opened": opened}))
"""


def test_key_locks_stay_exclusive_while_their_holders_remove_them(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Six processes of three users take one key's lock 40 times each, every holder removing the lock file when done
    where the sticky bit lets it, so that waiters keep meeting removed files; a seventh is killed (kill -9) while it
    holds it. No two ever hold it at once (no update of the shared counter is lost), waiters did meet removed files,
    and what the killed one and the holders that could not remove it left, gc removes."""
    counter = workdir / "counter"
    counter.write_text("0")
    os.chmod(counter, 0o666)
    python = str(run.tool.parent / "python")

    def worker(user: str | None, rounds: int, role: str = "worker") -> subprocess.Popen[str]:
        proc = subprocess.Popen([python, "-c", WORKER, str(group_store), str(counter), str(rounds), role],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                                env=run.env(user, {"WHEELSTORE_LOCK_TIMEOUT": "600"}),
                                **run.popen_kwargs(user, 0o022))
        _SPAWNED.append(proc)
        return proc

    victim = worker(users.bob, 5, "victim")
    workers = [worker((users.alice, users.bob, None)[i % 3], 40) for i in range(6)]
    assert victim.stdout is not None and victim.stdout.readline() == "holding\n"
    time.sleep(0.5)  # the others open the file it holds, and wait
    victim.kill()
    victim.communicate()
    results = []
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "going ahead without lock" not in err, err
        results.append(json.loads(out))
    assert int(counter.read_text()) == 5 + sum(r["rounds"] for r in results)
    assert sum(r["opened"] for r in results) > sum(r["rounds"] for r in results)
    _gc(run, None, group_store, "0")
    assert os.listdir(group_store / "locks") == ["gc.lock"]


def test_finished_work_leaves_no_lock_files_and_a_killed_publishers_go_with_gc(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Concurrent realizes by alice and bob of overlapping wheel sets leave neither staging entries, leases nor lock
    files. A publisher killed mid-unpack leaves its staging tree, its lease and its key's lock file, which bob's
    publish (waiting on that lock) could not remove; a gc whose grace they are younger than keeps them, the store
    owner's gc with no grace removes them all."""
    wheels = [_wheel(workdir, f"overlap{i}") for i in range(5)]
    procs = [run.popen((users.alice, users.bob)[i % 2], "--store", str(group_store), "realize", "--json",
                       *(str(w) for w in wheels[i % 3:i % 3 + 3]), env={"WHEELSTORE_TEST_HOOK": "locked=sleep:0.2"})
             for i in range(6)]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _leftovers(group_store) == {"staging": [], "hidden trees": [], "locks": ["gc.lock"]}

    whl = _wheel(workdir, "killedmid")
    markers = workdir / "markers"
    publisher = run.popen(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "mid-unpack=pause"))
    _wait_for(markers, "mid-unpack.*", publisher)
    second = run.popen(users.bob, "--store", str(group_store), "realize", "--json", str(whl))
    time.sleep(0.5)
    publisher.kill()
    publisher.communicate()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0 and json.loads(out)[0]["unpacked"] is True, err
    left = _leftovers(group_store)
    assert left["staging"] == [] and len(left["hidden trees"]) == 1
    key_lock = f"{json.loads(out)[0]['key']}.lock"
    assert sorted(n.split("-")[0] for n in left["locks"]) == sorted(["gc.lock", "lease", key_lock])

    kept = _gc(run, users.alice, group_store, "1h")
    assert kept["removed"] == [] and kept["locks_removed"] == [] and _leftovers(group_store) == left
    swept = _gc(run, users.alice, group_store, "0")  # alice, the store's owner: not root
    assert f"trees/{left['hidden trees'][0]}" in _removed_paths(swept)
    assert sorted(swept["locks_removed"]) == sorted(f"locks/{n}" for n in left["locks"] if n != "gc.lock")
    after = _leftovers(group_store)
    assert (after["staging"], after["locks"]) == ([], ["gc.lock"])
    assert not [n for n in after["hidden trees"] if n.startswith(".tree-")]


def test_members_cannot_hold_or_fake_others_leases(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """alice's lease is hers alone (0600: bob cannot open it, so cannot hold it). Once her lease is gone (an admin
    removed it by hand), bob plants a lease under its id and holds it forever: it does not keep her leftover, since a
    lease speaks only for its owner's entries. bob's own held lease keeps his entry, however old, whatever garbage its
    record holds, and gc names him; planted FIFOs, symlinks and directories in locks/ go without being followed."""
    whl = _wheel(workdir, "planted")
    markers = workdir / "markers"
    publisher = run.popen(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "mid-unpack=pause"))
    _wait_for(markers, "mid-unpack.*", publisher)
    (lease,) = [n for n in os.listdir(group_store / "locks") if n.startswith(PREFIX)]
    lease_path = group_store / "locks" / lease
    assert lease_path.stat().st_mode & 0o777 == 0o600
    tried = run.python(users.bob, "import os, sys; os.open(sys.argv[1], os.O_RDONLY)", str(lease_path))
    assert "PermissionError" in tried.stderr, tried.stderr
    publisher.kill()
    publisher.communicate()
    lease_path.unlink()  # an admin tidying locks/ by hand
    planted = _hold(run, users.bob, lease_path)

    # bob's own work, held forever, with a record claiming root; and a lease of his nobody holds, full of garbage, made
    # elsewhere (its tag is not this node's) with its last heartbeat an hour ago
    own, idle = "b" * 24 + "00000000", "c" * 24 + "00000000"
    for lease_id, data in ((own, b"uid=0\npid=1\nhost=\x1b[31mroot-of-all\n"), (idle, b"x" * 5000)):
        (group_store / "locks" / f"{PREFIX}{lease_id}").write_bytes(data)
        os.chown(group_store / "locks" / f"{PREFIX}{lease_id}", users.uid(users.bob), users.gid)
        (group_store / "staging" / f"download-{'d' * 64}-{lease_id}-0badc0de").mkdir()
        os.chown(group_store / "staging" / f"download-{'d' * 64}-{lease_id}-0badc0de", users.uid(users.bob),
                 users.gid)
    _age(group_store / "locks" / f"{PREFIX}{idle}", 3600)
    held_own = _hold(run, users.bob, group_store / "locks" / f"{PREFIX}{own}")
    target = workdir / "target"
    target.write_text("keep me")
    for make in (f"mkfifo {group_store}/locks/fifo.lock", f"ln -s {target} {group_store}/locks/link.lock",
                 f"mkdir -p {group_store}/locks/dir.lock/inner"):
        subprocess.run(["setpriv", f"--reuid={users.bob}", f"--regid={users.bob}", "--init-groups", "sh", "-c", make],
                       check=True)
    try:
        report = _gc(run, None, group_store, "0")
    finally:
        for proc in (planted, held_own):
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
    removed = _removed_paths(report)
    assert [p for p in removed if p.startswith("trees/.tree-")], report  # alice's leftover went
    assert f"staging/download-{'d' * 64}-{idle}-0badc0de" in removed
    (kept,) = report["staging_kept"]
    assert kept["path"] == f"staging/download-{'d' * 64}-{own}-0badc0de" and kept["lease"] == "held"
    assert f"of {users.bob}" in kept["why"] and "\x1b" not in kept["why"] and "root-of-all" not in kept["why"]
    assert target.read_text() == "keep me"
    assert sorted(os.listdir(group_store / "locks")) == sorted(["gc.lock", lease, f"{PREFIX}{own}"])


def test_a_record_is_read_as_hostile_input(tmp_path: Path) -> None:
    """Only known keys with values of their exact shape, from at most 512 bytes; anything else is dropped."""
    cases = {
        b"uid=1001\npid=42\npidns=4026531836\nsince=1733400000\nhost=node-7.example\nmachine=" + b"a" * 32 + b"\n":
            {"uid": "1001", "pid": "42", "pidns": "4026531836", "since": "1733400000", "host": "node-7.example",
             "machine": "a" * 32},
        b"pid=12 34\nhost=evil\x1b]0;x\x07\nuid=-1\nuid=5\nextra=1\n": {"uid": "5"},
        b"pid=1\n" + b"#" * 600: {},
    }
    for data, fields in cases.items():
        path = tmp_path / "lease"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert read_record(fd).fields == fields
        finally:
            os.close(fd)


# -- on cluster filesystems (tests/cluster.py): each mount stands for a node -----------------------------------------


def _held_then_dead(
    run: Runner, user: str, mounts: tuple[Path, Path], workdir: Path, *, locks_cross: bool, server: Path
) -> None:
    """``user`` publishes through mount two and stops mid-publish; ``user``'s gc through mount one, with no grace,
    keeps that work (by the held flock where locks cross the mounts, by the heartbeat where they do not). Killed, the
    work is kept while the last heartbeat is younger than MIN_STALE (a free flock seen from another node proves
    nothing), and goes with its lease and key lock once the heartbeat is older than the grace. What is left is looked
    at in ``server``, the store as the server has it (a client's listing may be cached)."""
    one, two = mounts
    whl = _wheel(workdir, "clustered")
    markers = workdir / "markers"
    publisher = run.popen(user, "--store", str(two / "store"), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "unpacked=pause"))
    _wait_for(markers, "unpacked.*", publisher)
    live = _gc(run, user, one / "store", "0")
    (kept,) = live["staging_kept"]
    assert kept["path"].startswith("trees/.tree-") and kept["lease"] == ("held" if locks_cross else "free"), kept
    assert (one / "store" / kept["path"]).is_dir()
    assert not [p for p in live["locks_removed"] if PREFIX in p], live  # its lease stays
    if locks_cross:  # and so does its key lock; on sshfs every lock of another node looks free, and with no grace
        assert live["locks_removed"] == []  # goes (as do libfuse's .fuse_hidden names of files unlinked while open)

    publisher.kill()
    publisher.communicate()
    dead = _gc(run, user, one / "store", "0")  # no grace, but made on another node: MIN_STALE still applies
    assert [(k["path"], k["lease"]) for k in dead["staging_kept"]] == [(kept["path"], "free")]
    assert (one / "store" / kept["path"]).is_dir()
    for name in os.listdir(one / "store" / "locks"):
        if name != "gc.lock":
            _age(one / "store" / "locks" / name, 7200)
    gone = _gc(run, user, one / "store", "1h")
    assert _removed_paths(gone) == {kept["path"]}
    assert _leftovers(server) == {"staging": [], "hidden trees": [], "locks": ["gc.lock"]}


def test_on_glusterfs_a_lease_held_through_the_other_mount_is_never_removed(
    gluster: Mounts, run: Runner, users: Users, workdir: Path
) -> None:
    one, two = gluster.fresh()
    done = run(users.alice, "init", str(one / "store"), "--group", users.group)
    assert done.returncode == 0, done.stderr
    _held_then_dead(run, users.alice, (one, two), workdir, locks_cross=True, server=one / "store")


def test_on_sshfs_where_locks_do_not_cross_the_heartbeat_keeps_a_live_publishers_work(
    sshfs_pair: SshfsPair, run: Runner, users: Users, workdir: Path
) -> None:
    one, two = sshfs_pair.as_user(users.alice).fresh()
    done = run(users.alice, "init", str(one / "store"))
    assert done.returncode == 0, done.stderr
    _held_then_dead(run, users.alice, (one, two), workdir, locks_cross=False,
                    server=sshfs_pair.base / "export" / one.name / "store")
