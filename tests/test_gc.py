"""gc roots and ``wheelstore gc``: exactly the unused trees go, live venvs keep working, races with installs are safe,
and the sticky bit decides who may remove what. Real users, real processes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wheelstore.store.store import cache_id

from .conftest import Filesystems, Runner, Users, snapshot
from .wheelmaker import make_wheel

PYC_TAG = "cpython-311"  # /usr/bin/python3 on Debian 12, which the test venvs use


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _wheels(directory: Path, names: list[str], size: int = 2000) -> dict[str, Path]:
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    out = {}
    for n in names:
        whl = make_wheel(directory, n, files={f"{n}/__init__.py": f"NAME = {n!r}\n".encode() + b"#" * size,
                                              f"{n}/data.txt": n.encode() * size})
        whl.chmod(0o644)
        out[n] = whl
    return out


def _venv(run: Runner, user: str, path: Path) -> Path:
    done = run(user, "venv", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _install(run: Runner, user: str, store: Path, venv: Path, *wheels: Path) -> None:
    """Per-file symlinks, so each tree's bytecode is a unit of its own that gc must keep or sweep with it."""
    done = run(user, "--store", str(store), "install", "--link-mode", "symlink", "--venv", str(venv),
               *map(str, wheels))
    assert done.returncode == 0, done.stderr


def _gc(run: Runner, user: str | None, store: Path, *extra: str) -> dict[str, Any]:
    done = run(user, "--store", str(store), "gc", "--grace", "0", "--json", *extra)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)  # the JSON report, as the CLI prints it
    return report


def _keys(units: object) -> set[str]:
    assert isinstance(units, list)
    return {u["key"] for u in units}


def _imports(run: Runner, user: str, venv: Path, *modules: str) -> None:
    code = "; ".join(f"import {m}; assert {m}.NAME == {m!r}" for m in modules)
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr


def _units(store: Path) -> set[str]:
    return set(os.listdir(store / "trees"))


def test_gc_frees_exactly_what_only_the_deleted_venv_used(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Acceptance 1: two venvs (two users) share trees; one is deleted; gc frees only what it alone used."""
    w = _wheels(workdir / "wheels", ["ga", "gb", "gc1", "gd"])
    a = _venv(run, users.alice, workdir / "venv-a")
    b = _venv(run, users.bob, workdir / "venv-b")
    _install(run, users.alice, group_store, a, w["ga"], w["gb"], w["gc1"])
    _install(run, users.bob, group_store, b, w["gb"], w["gc1"], w["gd"])
    only_a = {_key(w["ga"]), f"{_key(w['ga'])}-{PYC_TAG}"}
    assert only_a <= _units(group_store)
    assert _gc(run, users.alice, group_store)["removed"] == []  # both venvs alive: nothing goes

    before = {u: snapshot(group_store / "trees" / u) for u in _units(group_store) - only_a}
    manifests = {m: (group_store / "manifests" / m).read_bytes() for m in os.listdir(group_store / "manifests")
                 if m.removesuffix(".json") not in only_a}
    shutil.rmtree(a)
    report = _gc(run, users.alice, group_store)

    assert _keys(report["removed"]) == only_a
    assert report["not_removable"] == [] and report["unpublished"] == []
    assert _units(group_store) == set(before)
    assert {u: snapshot(group_store / "trees" / u) for u in before} == before
    assert {m: (group_store / "manifests" / m).read_bytes() for m in os.listdir(group_store / "manifests")} == manifests
    _imports(run, users.bob, b, "gb", "gc1", "gd")
    verified = run(users.bob, "--store", str(group_store), "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True, verified.stdout + verified.stderr
    assert report["roots"] == {"live": 1, "stale": [str(a)]}
    # the stale root is gone too, and a second gc finds nothing more to do
    assert _gc(run, users.alice, group_store)["removed"] == []


def test_grace_period_and_dry_run_keep_everything(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    w = _wheels(workdir / "wheels", ["gr"])
    assert run(users.alice, "--store", str(group_store), "realize", str(w["gr"])).returncode == 0
    done = run(users.alice, "--store", str(group_store), "gc", "--json")  # default grace: about a day
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == [] and json.loads(done.stdout)["young"] == 1
    dry = _gc(run, users.alice, group_store, "--dry-run")
    assert _keys(dry["removed"]) == {_key(w["gr"])}
    assert _units(group_store) == {_key(w["gr"])}
    real = _gc(run, users.alice, group_store)  # _gc passes --grace 0
    assert _keys(real["removed"]) == _keys(dry["removed"])
    assert [(u["bytes"], u["inodes"]) for u in real["removed"]] == [(u["bytes"], u["inodes"]) for u in dry["removed"]]
    assert real["removed"][0]["bytes"] > 0  # the dry run says what a real one frees
    bad = run(users.alice, "--store", str(group_store), "gc", "--grace", "soon")
    assert bad.returncode == 1 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (it opens the lock file, then polls for the lock)."""
    fds = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fds.iterdir())
    except OSError:  # an fd closed while we looked
        return False


def _wait_for(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_gc_waits_for_an_install_that_found_its_trees(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """The race, made deterministic: an install has found an unreferenced, old tree and is about to link it. A gc
    started then must not remove it: it blocks on the store lock until the install's root is written."""
    w = _wheels(workdir / "wheels", ["race1"])
    assert run(users.alice, "--store", str(group_store), "realize", str(w["race1"])).returncode == 0
    venv = _venv(run, users.bob, workdir / "venv")
    markers = workdir / "markers"
    markers.mkdir(mode=0o777)
    markers.chmod(0o777)
    hook = {"WHEELSTORE_TEST_HOOK": "linking=wait", "WHEELSTORE_TEST_HOOK_DIR": str(markers)}
    install = run.popen(users.bob, "--store", str(group_store), "install", "--venv", str(venv), str(w["race1"]),
                        env=hook)
    _wait_for(lambda: any(markers.iterdir()), "the install to reach the linking checkpoint")
    gc = run.popen(None, "--store", str(group_store), "gc", "--grace", "0", "--json")
    lock = group_store / "locks" / "gc.lock"
    _wait_for(lambda: gc.poll() is not None or _has_open(gc.pid, lock), "gc to try the store lock")
    # the install holds the lock shared: gc cannot have swept anything yet, and is still waiting
    assert gc.poll() is None and _key(w["race1"]) in _units(group_store)
    for marker in markers.iterdir():
        marker.unlink()
    out, err = install.communicate(timeout=60)
    assert install.returncode == 0, err
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert _key(w["race1"]) not in _keys(json.loads(out)["removed"])
    _imports(run, users.bob, venv, "race1")


def test_gc_racing_four_installs_in_a_loop(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """Four concurrent installs (alice and bob, overlapping wheel sets) and a gc --grace 0, round after round. Each
    round starts from the previous round's trees with their venvs deleted, so gc is sweeping exactly what the
    installs want."""
    names = [f"loop{i}" for i in range(6)]
    w = _wheels(workdir / "wheels", names, size=20000)
    rounds = 4
    for r in range(rounds):
        venvs = []
        for i in range(4):
            user = (users.alice, users.bob)[i % 2]
            venvs.append((user, _venv(run, user, workdir / f"r{r}-v{i}"), [names[(i + r + j) % 6] for j in range(3)]))
        procs = [run.popen(user, "--store", str(group_store), "install", "--venv", str(v), *(str(w[n]) for n in ns))
                 for user, v, ns in venvs]
        # root's gc removes anything; alice's (the store owner's) only unpublishes bob's trees
        gc = run.popen(users.alice if r % 2 else None, "--store", str(group_store), "gc", "--grace", "0", "--json")
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [e for _o, e in results]
        _out, err = gc.communicate(timeout=120)
        assert gc.returncode == 0, err
        for user, v, ns in venvs:
            _imports(run, user, v, *ns)
        for _user, v, _ns in venvs:
            shutil.rmtree(v)
    left = {u for u in _units(group_store) if not u.startswith(".")}  # hidden: unpublished by alice
    assert left and left <= {k for n in names for k in (_key(w[n]), f"{_key(w[n])}-{PYC_TAG}")}
    final = _gc(run, None, group_store)  # nothing is live any more: everything goes, and nothing is left over
    assert {u["key"] for u in final["removed"] if u["kind"] != "staging"} == left
    assert _units(group_store) == set() and os.listdir(group_store / "manifests") == []
    assert os.listdir(group_store / "staging") == []


def test_sticky_bit_decides_who_removes(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """bob cannot remove alice's unused tree and is told who can; alice, the store's owner, can only unpublish bob's
    (its files are his); bob's next gc frees those files; root removes anything."""
    w = _wheels(workdir / "wheels", ["sa", "sb", "sc"])
    assert run(users.alice, "--store", str(group_store), "realize", str(w["sa"]), str(w["sc"])).returncode == 0
    assert run(users.bob, "--store", str(group_store), "realize", str(w["sb"])).returncode == 0
    ka, kb, kc = _key(w["sa"]), _key(w["sb"]), _key(w["sc"])

    as_bob = _gc(run, users.bob, group_store)
    assert _keys(as_bob["removed"]) == {kb}
    refused = {u["key"]: u for u in as_bob["not_removable"]}
    assert set(refused) == {ka, kc}
    assert refused[ka]["owner"] == users.alice and users.alice in refused[ka]["who_can"]
    assert {ka, kc} <= _units(group_store)
    text = run(users.bob, "--store", str(group_store), "gc", "--grace", "0")
    said = f" of {users.alice}: only {users.alice} (its owner) or root can, with 'wheelstore --store {group_store} gc'"
    assert text.returncode == 0 and "cannot remove 2 unused entries (" in text.stdout and said in text.stdout, text

    # the store owner unpublishes a member's tree; its files wait for their owner
    assert run(users.bob, "--store", str(group_store), "realize", str(w["sb"])).returncode == 0
    as_alice = _gc(run, users.alice, group_store)
    assert _keys(as_alice["unpublished"]) == {kb} and _keys(as_alice["removed"]) == {ka, kc}
    assert not (group_store / "manifests" / f"{kb}.json").exists()
    hidden = [n for n in os.listdir(group_store / "trees") if n.startswith(".gc-")]
    assert len(hidden) == 1 and (group_store / "trees" / hidden[0]).stat().st_uid == users.uid(users.bob)
    assert _keys(_gc(run, users.bob, group_store)["removed"]) == {kb}  # the leftover, as stale staging
    assert os.listdir(group_store / "trees") == []

    # root removes anyone's
    assert run(users.bob, "--store", str(group_store), "realize", str(w["sb"])).returncode == 0
    assert _keys(_gc(run, None, group_store)["removed"]) == {kb}
    assert _units(group_store) == set()


def test_moved_venv_and_uninstalled_dists_stop_holding(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    w = _wheels(workdir / "wheels", ["m1", "m2", "u1", "u2", "u3"])
    moved = _venv(run, users.alice, workdir / "moved")
    _install(run, users.alice, group_store, moved, w["m1"], w["m2"])
    other = _venv(run, users.bob, workdir / "other")
    _install(run, users.bob, group_store, other, w["u1"], w["u2"], w["u3"])
    keys = {n: _key(p) for n, p in w.items()}

    os.rename(moved, workdir / "moved-away")  # its root still names the old path, where there is no venv now
    # bob uninstalls u1 with wheelstore (the root is refreshed) and removes u2 behind wheelstore's back (the root
    # still lists it, but its dist-info no longer says it came from that tree)
    assert run(users.bob, "uninstall", "--venv", str(other), "u1").returncode == 0
    shutil.rmtree(next((other / "lib").glob("python3.*/site-packages/u2-1.0.dist-info")))
    report = _gc(run, None, group_store)
    gone = {k for k in _keys(report["removed"]) if "-" not in k}
    assert gone == {keys["m1"], keys["m2"], keys["u1"], keys["u2"]}
    assert {keys["u3"], f"{keys['u3']}-{PYC_TAG}"} <= _units(group_store)
    _imports(run, users.bob, other, "u3")

    # a venv that comes back to its recorded path with other contents is judged by its contents
    os.rename(workdir / "moved-away", moved)
    _install(run, users.alice, group_store, moved, w["m1"])
    assert keys["m1"] in _units(group_store) and keys["m1"] not in _keys(_gc(run, None, group_store)["removed"])


def test_roots_are_private_to_their_writer(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """Roots sit in roots/<uid>-<random>/, readable by the group (so anyone's gc can mark) but writable only by the
    user; a directory planted under alice's name is not used (nor read), and her install registers all the same."""
    w = _wheels(workdir / "wheels", ["r1"])
    venv = _venv(run, users.alice, workdir / "venv")
    planted = run.python(users.bob, "import os, sys; os.mkdir(sys.argv[1], 0o777)",
                         str(group_store / "roots" / users.alice))
    assert planted.returncode == 0, planted.stderr
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["r1"]))
    assert done.returncode == 0, done.stderr
    assert "gc" not in done.stderr, done.stderr
    assert list((group_store / "roots" / users.alice).iterdir()) == []
    (mine,) = (group_store / "roots").glob(f"{users.uid(users.alice)}-*")
    assert mine.stat().st_uid == users.uid(users.alice)
    assert [json.loads(r.read_text())["venv"] for r in mine.iterdir()] == [str(venv)]

    venv2 = _venv(run, users.bob, workdir / "venv2")
    _install(run, users.bob, group_store, venv2, w["r1"])
    (root,) = next((group_store / "roots").glob(f"{users.uid(users.bob)}-*")).iterdir()
    st, dst = root.stat(), root.parent.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o440, users.uid(users.bob), users.gid)
    assert (dst.st_mode & 0o777, dst.st_uid) == (0o750, users.uid(users.bob))
    data = json.loads(root.read_text())
    assert data["venv"] == str(venv2) and [d["key"] for d in data["dists"]] == [_key(w["r1"])]


def test_a_venv_gc_cannot_read_is_believed_not_swept(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """alice's venv in her private home links bob's tree. bob's gc cannot look into that home, so it must believe
    alice's root rather than treat the venv as gone; root's gc checks it; once it is deleted, the tree goes."""
    w = _wheels(workdir / "wheels", ["priv"])
    assert run(users.bob, "--store", str(group_store), "realize", str(w["priv"])).returncode == 0
    home = workdir / "alice-home"
    home.mkdir()
    os.chown(home, users.uid(users.alice), -1)
    home.chmod(0o700)
    venv = _venv(run, users.alice, home / "venv")
    _install(run, users.alice, group_store, venv, w["priv"])
    key = _key(w["priv"])

    as_bob = _gc(run, users.bob, group_store)
    assert as_bob["removed"] == [] and key in _units(group_store)
    assert any("could not read 1 venvs" in p for p in as_bob["problems"])
    as_root = _gc(run, None, group_store)
    assert as_root["removed"] == [] and as_root["problems"] == []
    _imports(run, users.alice, venv, "priv")

    shutil.rmtree(venv)  # behind a home bob cannot enter, this still looks like "cannot tell" to him
    assert _gc(run, users.bob, group_store)["removed"] == []
    shutil.rmtree(home)
    assert key in _keys(_gc(run, users.bob, group_store)["removed"])


def test_an_unreadable_root_stops_the_sweep(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """If alice hides her roots, bob's gc cannot know what they hold, so it removes no tree at all."""
    w = _wheels(workdir / "wheels", ["hid", "spare"])
    venv = _venv(run, users.alice, workdir / "venv")
    assert run(users.bob, "--store", str(group_store), "realize", str(w["hid"]), str(w["spare"])).returncode == 0
    _install(run, users.alice, group_store, venv, w["hid"])
    (hidden,) = (group_store / "roots").glob(f"{users.uid(users.alice)}-*")
    assert run.python(users.alice, "import os, sys; os.chmod(sys.argv[1], 0o700)", str(hidden)).returncode == 0
    report = _gc(run, users.bob, group_store)
    assert report["removed"] == [] and {_key(w["hid"]), _key(w["spare"])} <= _units(group_store)
    assert any(f"roots/{hidden.name}" in p for p in report["problems"])


def test_gc_prunes_the_running_users_cache_of_removed_trees(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """What installs kept per tree in the user's cache (manifest fields, prepared links, the check's table, marks)
    goes with the tree when that user runs gc; the entries of trees still in the store stay."""
    w = _wheels(workdir / "wheels", ["pa", "pb"])
    venvs = [_venv(run, users.alice, workdir / f"venv{n}") for n in (1, 2)]
    for venv in venvs:  # the second finds the trees in the store, and keeps their manifests' fields
        done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["pa"]),
                   str(w["pb"]))
        assert done.returncode == 0, done.stderr
    cache = Path(f"/home/{users.alice}/.cache/wheelstore")

    def entries(key: str) -> list[str]:
        """The cache's entries for a tree and its bytecode unit (``<key>-<cache tag>``), by area."""
        return sorted(area for area in ("manifests", "prepared", "checks")
                      for _ in (cache / area / cache_id(group_store)).glob(f"{key}*"))

    def marked() -> set[str]:
        marks = cache / "verified" / f"{cache_id(group_store)}-{os.uname().nodename}.json"
        return set(json.loads(marks.read_text())["trees"])

    kept = entries(_key(w["pa"]))
    assert {"checks", "manifests", "prepared"} <= set(kept) and entries(_key(w["pb"])) == kept
    assert {_key(w["pa"]), _key(w["pb"])} <= marked()
    for venv in venvs:
        done = run(users.alice, "uninstall", "--venv", str(venv), "pb")
        assert done.returncode == 0, done.stderr
    report = _gc(run, users.alice, group_store)
    assert _key(w["pb"]) in _keys(report["removed"]) and report["cache_entries_removed"] == len(kept)
    assert entries(_key(w["pb"])) == [] and entries(_key(w["pa"])) == kept
    assert not any(k.startswith(_key(w["pb"])) for k in marked()) and _key(w["pa"]) in marked()
    _imports(run, users.alice, venvs[1], "pa")


def test_a_second_listing_sees_roots_written_since(filesystems: Filesystems) -> None:
    """gc lists the roots twice (unlocked, then locked) through one store: the second listing must see the roots
    written in between, on btrfs too, whose listing through an fd already listed once missed them."""
    from wheelstore.store.roots import list_roots
    from wheelstore.store.store import Store

    for kind in ("ext4", "btrfs"):
        path = Path(tempfile.mkdtemp(dir=filesystems.root(kind))) / "store"
        with Store.init(path) as store:
            assert list_roots(store) == {}
            user_dir = path / "roots" / f"{os.geteuid()}-{'0' * 16}"
            user_dir.mkdir()
            (user_dir / "late.json").write_text("{}")
            assert list(list_roots(store)) == [f"{user_dir.name}/late.json"], kind
            (user_dir / "later.json").write_text("{}")
            assert len(list_roots(store)) == 2, kind


def test_roots_of_the_old_layout_are_still_read_and_used(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A store from before the random part has roots/<user>/: gc still reads it when its owner is that user, and the
    user's next install keeps writing there rather than starting a second directory."""
    w = _wheels(workdir / "wheels", ["old1", "old2"])
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, group_store, venv, w["old1"])
    (new,) = (group_store / "roots").glob(f"{users.uid(users.alice)}-*")
    old = group_store / "roots" / users.alice
    moved = run.python(users.alice, "import os, sys; os.rename(sys.argv[1], sys.argv[2])", str(new), str(old))
    assert moved.returncode == 0, moved.stderr
    report = _gc(run, None, group_store)
    assert report["removed"] == [] and report["roots"] == {"live": 1, "stale": []}
    _install(run, users.alice, group_store, venv, w["old2"])
    # root's gc left its <node>.confirmed in a directory of its own; alice has still only the old one
    assert [n for n in os.listdir(group_store / "roots") if not n.startswith("0-")] == [users.alice]
    (root,) = old.iterdir()
    assert {d["name"] for d in json.loads(root.read_text())["dists"]} == {"old1", "old2"}
    assert _gc(run, None, group_store)["removed"] == []
    _imports(run, users.alice, venv, "old1", "old2")
