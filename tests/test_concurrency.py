"""Acceptance 3 and 4: exactly-once publishing under real concurrency, and kill -9 at every step of the protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from wheelstore.store import staging
from wheelstore.store.keylock import share_work
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, Runner, Users, snapshot
from .wheelmaker import big_files, make_wheel


def _hook(markers: Path, step: str) -> dict[str, str]:
    """The environment that makes a wheelstore process stop at ``step`` (``point=action``), leaving its marker in the
    new directory ``markers`` (which any user may write)."""
    markers.mkdir()
    os.chmod(markers, 0o777)
    return {"WHEELSTORE_TEST_HOOK": step, "WHEELSTORE_TEST_HOOK_DIR": str(markers)}


def _wait_for(path: Path, pattern: str, proc: object, timeout: float = 60) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(path.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} in {path} after {timeout}s")


def _tree_matches_wheel(tree: Path, whl: Path) -> None:
    with zipfile.ZipFile(whl) as zf:
        names = {i.filename for i in zf.infolist() if not i.is_dir()}
        on_disk = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}
        compiled = {n for n in on_disk if "/__pycache__/" in f"/{n}" and n.endswith(".pyc")}  # realize compiles
        assert on_disk - compiled == names
        assert {_source_of(n) for n in compiled} <= names
        for name in names:
            assert (tree / name).read_bytes() == zf.read(name), name


def _source_of(pyc: str) -> str:
    """``pkg/__pycache__/mod.cpython-311.pyc`` -> ``pkg/mod.py``."""
    cache_dir, _, name = pyc.rpartition("/")
    package = cache_dir.removesuffix("__pycache__").rstrip("/")
    module = name.split(".")[0] + ".py"
    return f"{package}/{module}" if package else module


def test_eight_processes_unpack_once(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    whl = make_wheel(workdir, "crowd", files=big_files(300, 4000))
    os.chmod(whl, 0o644)
    # The winner holds the lock for a second after taking it, so all eight are surely running at once.
    hook = {"WHEELSTORE_TEST_HOOK": "locked=sleep:1"}
    procs = [
        run.popen(users.alice if i % 2 else users.bob, "--store", str(group_store), "realize", "--json", str(whl),
                  umask=(0o022, 0o077, 0o002)[i % 3], env=hook)
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _out, err in outputs]
    reports = [json.loads(out)[0] for out, _err in outputs]
    assert sum(r["unpacked"] for r in reports) == 1, reports
    assert len({r["tree"] for r in reports}) == 1
    store = Store.open(group_store)
    assert len(list(store.trees())) == 1
    assert os.listdir(group_store / "staging") == []
    assert len(os.listdir(group_store / "trees")) == 1
    _tree_matches_wheel(Path(reports[0]["tree"]), whl)


def test_without_hook_many_realizes_agree(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """The same race with no artificial delay: still one unpack, no error, no leftovers."""
    whl = make_wheel(workdir, "crowd2", files=big_files(200, 2000))
    os.chmod(whl, 0o644)
    procs = [run.popen(users.alice if i % 2 else users.bob, "--store", str(group_store), "realize", "--json", str(whl))
             for i in range(8)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _out, err in outputs]
    assert sum(json.loads(out)[0]["unpacked"] for out, _err in outputs) == 1
    assert os.listdir(group_store / "staging") == []
    assert len(os.listdir(group_store / "trees")) == 1


@pytest.mark.parametrize("point", ["mid-unpack", "unpacked", "renamed"])
def test_kill_9_leaves_nothing_a_reader_uses(
    run: Runner, users: Users, workdir: Path, group_store: Path, point: str
) -> None:
    whl = make_wheel(workdir, "victim", files=big_files(200, 3000))
    os.chmod(whl, 0o644)
    markers = workdir / f"markers-{point}"
    env = _hook(markers, f"{point}=pause")
    # without bytecode: an orphan with pycs is never adopted (tests/test_trust.py), and this one is to be
    publisher = run.popen(users.alice, "--store", str(group_store), "realize", "--no-compile", "--json", str(whl),
                          env=env)
    _wait_for(markers, f"{point}.*", publisher)

    # While the publisher is stopped at this step, readers see no tree.
    store = Store.open(group_store)
    staged = [e for e in staging.entries(store) if e.kind == "tree"]
    assert list(store.trees()) == []
    assert os.listdir(group_store / "manifests") == []
    published = [n for n in os.listdir(group_store / "trees") if not n.startswith(".")]
    if point == "renamed":  # the tree is in place, but without its manifest nobody uses it
        assert staged == [] and len(published) == 1
    else:  # the tree is still being built, hidden beside where it will go
        assert len(staged) == 1 and not staged[0].stale and published == []
        assert staged[0].name.startswith("trees/.tree-")
    info = run(users.bob, "--store", str(group_store), "info", "--json")
    assert json.loads(info.stdout)["trees"] == 0
    # A second publisher arrives and waits on the lock the first one holds.
    second = run.popen(users.bob, "--store", str(group_store), "realize", "--json", str(whl))
    time.sleep(0.5)
    assert second.poll() is None, "the second publisher should wait for the first one's lock"

    os.kill(publisher.pid, signal.SIGKILL)
    publisher.wait(timeout=30)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    report = json.loads(out)[0]
    tree = Path(report["tree"])
    _tree_matches_wheel(tree, whl)
    committed = store.lookup(report["key"])
    assert committed is not None
    assert set(committed.manifest.files) == {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file()}

    if point == "renamed":
        # alice's finished tree was verified against the wheel and adopted, not unpacked again
        assert report["unpacked"] is False
        assert committed.manifest.owner_uid == users.uid(users.alice)
        assert committed.manifest.publisher_uid == users.uid(users.bob)
        assert [e for e in staging.entries(store) if e.kind == "tree"] == []
    else:
        assert report["unpacked"] is True
        assert committed.manifest.owner_uid == users.uid(users.bob)
        # alice's half-built staging directory is recognisably stale: its lease, made here, is free
        stale = [e for e in staging.entries(store) if e.kind == "tree"]
        assert [e.name for e in stale] == [staged[0].name]
        assert stale[0].stale and stale[0].owner_uid == users.uid(users.alice)
        assert stale[0].key == report["key"]

    # and the store is now stable: another realize reuses the tree
    again = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    assert again.returncode == 0 and json.loads(again.stdout)[0]["unpacked"] is False


def _both_use_one_tree(publisher: subprocess.Popen[str], second: subprocess.Popen[str]) -> str:
    """Both realizes succeed and report the same tree; the publisher's output."""
    out, err = publisher.communicate(timeout=120)
    assert publisher.returncode == 0, err
    out2, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2
    assert json.loads(out2)[0]["tree"] == json.loads(out)[0]["tree"]
    return out


def test_a_waiter_that_gives_up_on_the_lock_lets_a_publish_being_committed_finish(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob's publish is between its rename and its manifest, holding the wheel's lock. alice's realize gives up on the
    lock (after 1 s here) and finds his tree without a manifest, which she may not adopt (it is his). She waits for his
    manifest and uses his tree, rather than failing on it as a tree left unfinished."""
    whl = make_wheel(workdir, "slowcommit", files=big_files(20, 1000))
    os.chmod(whl, 0o644)
    markers = workdir / "markers"
    publisher = run.popen(users.bob, "--store", str(group_store), "realize", "--json", str(whl),
                          env=_hook(markers, "renamed=wait"))
    marker = _wait_for(markers, "renamed.*", publisher)
    second = run.popen(users.alice, "--store", str(group_store), "realize", "--json", str(whl),
                       env={"WHEELSTORE_LOCK_TIMEOUT": "1"})
    time.sleep(3)  # she gives up on the lock after 1 s and then waits for the manifest for up to 10 s
    marker.unlink()
    out = _both_use_one_tree(publisher, second)
    committed = Store.open(group_store).lookup(json.loads(out)[0]["key"])
    assert committed is not None and committed.manifest.owner_uid == users.uid(users.bob)
    assert [e for e in staging.entries(Store.open(group_store)) if e.kind == "orphan"] == []
    assert run(users.alice, "--store", str(group_store), "verify").returncode == 0


def test_a_publish_being_committed_without_the_lock_is_waited_for_by_the_locks_next_holder(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob gave up on the wheel's lock (another process held it) and published without it; he is between his rename
    and his manifest when the lock's holder lets go and alice takes it. Holding the lock tells her nothing about
    publishers that went ahead without it: she waits for his manifest, rather than failing on his tree as one left
    unfinished."""
    import fcntl
    import hashlib

    whl = make_wheel(workdir, "unlockedcommit", files=big_files(5, 1000))
    os.chmod(whl, 0o644)
    key = hashlib.sha256(whl.read_bytes()).hexdigest()
    holder = os.open(group_store / "locks" / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)  # root's, held meanwhile
    fcntl.flock(holder, fcntl.LOCK_EX)
    markers = workdir / "markers"
    publisher = run.popen(users.bob, "--store", str(group_store), "realize", "--json", str(whl),
                          env={**_hook(markers, "renamed=wait"), "WHEELSTORE_LOCK_TIMEOUT": "0"})
    try:
        marker = _wait_for(markers, "renamed.*", publisher)
    finally:
        os.close(holder)
    second = run.popen(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    time.sleep(2)
    marker.unlink()
    _both_use_one_tree(publisher, second)
    assert run(users.alice, "--store", str(group_store), "verify").returncode == 0


def test_orphan_that_does_not_match_is_replaced(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """A tree left without a manifest and then altered is moved aside, never adopted."""
    whl = make_wheel(workdir, "tampered", files={"tampered/__init__.py": b"GOOD = True\n"})
    os.chmod(whl, 0o644)
    markers = workdir / "markers"
    env = _hook(markers, "renamed=pause")
    publisher = run.popen(users.alice, "--store", str(group_store), "realize", "--json", str(whl), env=env)
    _wait_for(markers, "renamed.*", publisher)
    os.kill(publisher.pid, signal.SIGKILL)
    publisher.wait(timeout=30)
    (orphan,) = (group_store / "trees").iterdir()
    # alice, the orphan's owner, edits it before anyone commits it
    tamper = run.python(users.alice, "import os,sys; f=sys.argv[1]; os.chmod(f, 0o640); open(f,'a').write('EVIL=1\\n')",
                        str(orphan / "tampered/__init__.py"))
    assert tamper.returncode == 0, tamper.stderr

    fixed = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    assert fixed.returncode == 0, fixed.stderr
    tree = Path(json.loads(fixed.stdout)[0]["tree"])
    assert (tree / "tampered/__init__.py").read_bytes() == b"GOOD = True\n"
    aside = [e for e in staging.entries(Store.open(group_store)) if e.kind == "orphan"]
    assert len(aside) == 1 and aside[0].stale


def test_failed_publish_cleans_up_after_itself(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """A RECORD mismatch found mid-stream removes the staging tree and the lock file it created."""
    from .wheelmaker import record_hash

    files = big_files(50, 1000)
    last = sorted(files)[-1]
    whl = make_wheel(workdir, "late", files=files, record_overrides={last: (record_hash(b"other"), "1000")})
    os.chmod(whl, 0o644)
    before = snapshot(group_store)
    result = run(users.bob, "--store", str(group_store), "realize", str(whl))
    assert result.returncode != 0
    assert snapshot(group_store) == before


# -- processes split a set of keys instead of queueing on it (P2) ---------------------------------------------------


def test_share_work_tries_everything_before_waiting() -> None:
    """One worker, so the order is exact: every item once without waiting, then the busy ones, waiting."""
    calls: list[tuple[int, bool]] = []

    def attempt(item: int, wait: bool) -> str | None:
        calls.append((item, wait))
        return None if item % 3 == 0 and not wait else f"done {item}"

    assert share_work(list(range(7)), attempt, jobs=1) == [f"done {i}" for i in range(7)]
    assert calls == [*((i, False) for i in range(7)), (0, True), (3, True), (6, True)]


def test_share_work_stops_at_the_first_error() -> None:
    started: list[int] = []

    def attempt(item: int, wait: bool) -> int:
        started.append(item)
        if item == 2:
            raise OSError("disk full")
        return item

    with pytest.raises(OSError, match="disk full"):
        share_work(list(range(6)), attempt, jobs=1)
    assert started == [0, 1, 2]
    with pytest.raises(OSError, match="disk full"):  # several workers: the error is raised once the others are done
        share_work(list(range(40)), attempt, jobs=4)


def test_realizing_processes_split_the_wheels(
    run: Runner, users: Users, tool: Path, workdir: Path, group_store: Path
) -> None:
    """alice stops while publishing the largest wheel; bob, one wheel at a time, realizes the three others meanwhile and
    only then waits for hers, which he reuses."""
    held = make_wheel(workdir, "held", files=big_files(60, 2000, prefix="held"))
    free = [make_wheel(workdir, f"free{i}", files=big_files(5, 2000, prefix=f"free{i}")) for i in range(3)]
    for whl in (held, *free):
        os.chmod(whl, 0o644)
    markers = workdir / "markers"
    hook = _hook(markers, "locked=wait")
    holder = run.popen(users.alice, "--store", str(group_store), "realize", "--json", str(held), env=hook)
    marker = _wait_for(markers, "locked.*", holder)
    code = ("import json, sys; from wheelstore import Store; from wheelstore.store.publish import realize_wheels; "
            "done = realize_wheels(Store.open(sys.argv[1]), [(w, None) for w in sys.argv[2:]], jobs=1); "
            "print(json.dumps([d.unpacked for d in done]))")
    sharer = subprocess.Popen([str(tool.parent / "python"), "-c", code, str(group_store), str(held), *map(str, free)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=run.env(users.bob),
                              cwd="/", **run.popen_kwargs(users.bob, 0o022))
    store = Store.open(group_store)
    deadline = time.monotonic() + 60
    while len(list(store.trees())) < 3:
        assert sharer.poll() is None, sharer.communicate()
        assert time.monotonic() < deadline, "bob queued behind alice's wheel instead of realizing the others"
        time.sleep(0.02)
    assert {t.manifest.wheel for t in store.trees()} == {w.name for w in free}
    assert sharer.poll() is None  # and now waits for alice's
    marker.unlink()
    out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    out, err = sharer.communicate(timeout=120)
    assert sharer.returncode == 0, err
    assert json.loads(out) == [False, True, True, True]  # alice's tree reused, the others unpacked by bob


@pytest.mark.parametrize("modules", [3, 300])
def test_pycs_compiled_in_one_process_or_a_pool(workdir: Path, group_store: Path, modules: int) -> None:
    """A small tree is one compiler job, a large one is split over several (PER_WORKER modules each): every module gets
    a valid pyc for the target interpreter either way, listed in the manifest."""
    from wheelstore.base.interpreter import Interpreter
    from wheelstore.store.bytecode import PER_WORKER, InTree
    from wheelstore.store.publish import realize

    assert (modules // PER_WORKER > 1) == (modules == 300)
    whl = make_wheel(workdir, "many", files={f"many/m{i}.py": f"VALUE = {i}\n".encode() for i in range(modules)})
    target = Interpreter.inspect(SYSTEM_PYTHON)
    with Store.open(group_store) as store:
        tree = realize(store, whl, compiler=InTree(store, target)).tree
    pycs = {n for n in tree.manifest.files if n.endswith(".pyc")}
    assert pycs == {f"many/__pycache__/m{i}.{target.cache_tag}.pyc" for i in range(modules)}
    assert tree.manifest.bytecode == target.cache_tag
    check = ("import importlib.util, marshal, sys; data = open(sys.argv[1], 'rb').read(); "
             "assert data[:4] == importlib.util.MAGIC_NUMBER; ns = {}; exec(marshal.loads(data[16:]), ns); "
             "print(ns['VALUE'])")
    last = subprocess.run([SYSTEM_PYTHON, "-c", check, str(tree.path / f"many/__pycache__/m{modules - 1}."
                                                              f"{target.cache_tag}.pyc")],
                          capture_output=True, text=True)
    assert last.stdout.strip() == str(modules - 1), last.stderr


def test_compilers_are_reused_across_trees_and_a_dead_one_is_an_error(tmp_path: Path) -> None:
    """Many small trees share a few long-lived compiler processes (never more than the cores); one that dies gives a
    one-line BytecodeError, and the next compile starts a fresh one."""
    from wheelstore.base.errors import BytecodeError
    from wheelstore.base.interpreter import Interpreter
    from wheelstore.store.bytecode import _Compilers, _run_compiler

    target = Interpreter.inspect(SYSTEM_PYTHON)
    pool = _Compilers.of(target)
    for t in range(40):
        (tmp_path / f"t{t}/pkg").mkdir(parents=True)
        (tmp_path / f"t{t}/pkg/m.py").write_text(f"X = {t}\n")
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda t: _run_compiler(target, str(tmp_path / f"t{t}"), str(tmp_path / f"t{t}"),
                                                 ["pkg/m.py"], f"t{t}"), range(40)))
    assert all((tmp_path / f"t{t}/pkg/__pycache__/m.{target.cache_tag}.pyc").is_file() for t in range(40))
    assert 1 <= pool.started <= (os.cpu_count() or 1)
    for compiler in pool.idle:  # killed while idle: replaced unnoticed
        compiler.proc.kill()
        compiler.proc.wait()
    (tmp_path / "t1/pkg/__pycache__").rename(tmp_path / "old")
    _run_compiler(target, str(tmp_path / "t1"), str(tmp_path / "t1"), ["pkg/m.py"], "t1")
    assert (tmp_path / f"t1/pkg/__pycache__/m.{target.cache_tag}.pyc").is_file()
    assert 1 <= pool.started <= (os.cpu_count() or 1)
    broken = target._replace(executable="/bin/false")  # exits at once: dies during its job
    with pytest.raises(BytecodeError, match="^compiling t0 for cpython-3.*failed: it exited$"):
        _run_compiler(broken, str(tmp_path / "t0"), str(tmp_path / "t0"), ["pkg/m.py"], "t0")
    assert _Compilers.of(broken).started == 0
