"""Acceptance 3 and 4: exactly-once publishing under real concurrency, and kill -9 at every step of the protocol."""

from __future__ import annotations

import json
import os
import signal
import time
import zipfile
from pathlib import Path

import pytest

from wheelstore import Store

from .conftest import Runner, Users, snapshot
from .wheelmaker import big_files, make_wheel


def _wait_for(path: Path, pattern: str, proc: "object", timeout: float = 60) -> Path:
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
        assert on_disk == names
        for name in names:
            assert (tree / name).read_bytes() == zf.read(name), name


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
    markers.mkdir(mode=0o777)
    os.chmod(markers, 0o777)
    env = {"WHEELSTORE_TEST_HOOK": f"{point}=pause", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
    publisher = run.popen(users.alice, "--store", str(group_store), "realize", "--json", str(whl), env=env)
    _wait_for(markers, f"{point}.*", publisher)

    # While the publisher is stopped at this step, readers see no tree.
    store = Store.open(group_store)
    staged = [e for e in store.staging_entries() if e.kind == "tree"]
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
        assert [e for e in store.staging_entries() if e.kind == "tree"] == []
    else:
        assert report["unpacked"] is True
        assert committed.manifest.owner_uid == users.uid(users.bob)
        # alice's half-built staging directory is recognisably stale: its process is gone
        stale = [e for e in store.staging_entries() if e.kind == "tree"]
        assert [e.name for e in stale] == [staged[0].name]
        assert stale[0].stale and stale[0].owner_uid == users.uid(users.alice)
        assert stale[0].key == report["key"]

    # and the store is now stable: another realize reuses the tree
    again = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    assert again.returncode == 0 and json.loads(again.stdout)[0]["unpacked"] is False


def test_orphan_that_does_not_match_is_replaced(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """A tree left without a manifest and then altered is moved aside, never adopted."""
    whl = make_wheel(workdir, "tampered", files={"tampered/__init__.py": b"GOOD = True\n"})
    os.chmod(whl, 0o644)
    markers = workdir / "markers"
    markers.mkdir()
    os.chmod(markers, 0o777)
    env = {"WHEELSTORE_TEST_HOOK": "renamed=pause", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
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
    aside = [e for e in Store.open(group_store).staging_entries() if e.kind == "orphan"]
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
