"""Issue 18, acceptance 2 on a real GlusterFS volume (tests/cluster.py mounts it twice, as two nodes): gc and stats
run through the other mount than the installs' see the same store, by its id, and the same venvs.

Two FUSE mounts of one volume give it two device numbers, so a store named by path or device was another store
through the other mount: root's gc there counted no live venv and removed every tree.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .cluster import Mounts
from .conftest import Runner, Users
from .test_gc import _imports, _key, _keys, _venv, _wheels

#: the fields of ``stats --json`` that must not depend on the mount it ran through
_STATS_FIELDS = ("logical_bytes", "logical_inodes", "physical_bytes", "physical_inodes", "store_bytes",
                 "store_inodes", "savings_bytes", "savings_inodes", "venvs", "users", "stale_roots")


def _seen(path: Path, timeout: float = 10) -> None:
    """Wait until ``path`` shows through a mount whose cache may be a moment behind the other's."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} is not seen through its mount"
        time.sleep(0.05)


def _stats(run: Runner, user: str | None, store: Path) -> dict[str, Any]:
    done = run(user, "--store", str(store), "stats", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_gc_and_stats_through_the_other_gluster_mount_keep_and_count_every_venv(
    gluster: Mounts, run: Runner, users: Users, workdir: Path
) -> None:
    """Acceptance 2, the mount half: alice's venv on the volume and bob's on this node's local disk, installed
    through mount two; root's gc and the owner's through mount one remove only the tree no venv uses, the venvs
    still import, and stats through either mount reports the same venvs and savings."""
    one, two = gluster.fresh()
    store_one, store_two = one / "store", two / "store"
    done = run(users.alice, "init", str(store_two), "--group", users.group)
    assert done.returncode == 0, done.stderr
    _seen(store_one / "config.toml")
    w = _wheels(workdir / "wheels", ["gl1", "gl2", "gl3", "glunused"], size=20000)
    venvs = {users.alice: (_venv(run, users.alice, two / "venv-alice"), ["gl1", "gl2"]),
             users.bob: (_venv(run, users.bob, workdir / "venv-bob"), ["gl2", "gl3"])}
    for user, (venv, names) in venvs.items():
        done = run(user, "--store", str(store_two), "install", "--venv", str(venv), *(str(w[n]) for n in names))
        assert done.returncode == 0, done.stderr
    assert run(users.bob, "--store", str(store_two), "realize", str(w["glunused"])).returncode == 0
    assert os.stat(store_one).st_dev != os.stat(store_two).st_dev  # what fooled gc before
    before = {n for n in os.listdir(store_two / "trees") if not n.startswith(".")}
    assert len(_stats(run, None, store_two)["venvs"]) == 2

    gcs: list[str | None] = [None, users.alice]  # root, and the store's owner, who may unpublish anyone's tree
    for who in gcs:
        done = run(who, "--store", str(store_one), "gc", "--grace", "0", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert _keys(report["removed"]) <= {_key(w["glunused"])}, report
        assert report["roots"] == {"live": 2, "stale": []}, report
        assert {r["state"] for n in report["nodes"] for r in n["roots"]} == {"checked"}
        assert {r["fs"] for n in report["nodes"] for r in n["roots"]} == {"shared", "local"}
    assert {n for n in os.listdir(store_two / "trees") if not n.startswith(".")} == before - {_key(w["glunused"])}
    for user, (venv, names) in venvs.items():
        _imports(run, user, venv, *names)

    through = {name: _stats(run, None, store) for name, store in (("one", store_one), ("two", store_two))}
    for field in _STATS_FIELDS:
        assert through["one"][field] == through["two"][field], (field, through)
    assert {v["venv"] for v in through["one"]["venvs"]} == {str(v) for v, _n in venvs.values()}
    assert through["one"]["notes"] == []


def test_stats_counts_a_hard_link_into_the_store_once_through_either_mount(
    gluster: Mounts, run: Runner, users: Users, workdir: Path
) -> None:
    """alice's private store and her venv on the volume, hard-linked through mount two: through mount one the
    venv's files show under another device number than the store's, and are still the store's inodes."""
    one, two = gluster.fresh()
    done = run(users.alice, "init", str(two / "store"))
    assert done.returncode == 0, done.stderr
    w = _wheels(workdir / "wheels", ["hl1", "hl2"], size=100000)
    venv = _venv(run, users.alice, two / "venv")
    done = run(users.alice, "--store", str(two / "store"), "install", "--link-mode", "hardlink", "--venv", str(venv),
               str(w["hl1"]), str(w["hl2"]))
    assert done.returncode == 0, done.stderr
    _seen(one / "venv" / "pyvenv.cfg")
    through = {name: _stats(run, users.alice, store) for name, store in (("one", one / "store"),
                                                                          ("two", two / "store"))}
    for field in _STATS_FIELDS:
        assert through["one"][field] == through["two"][field], (field, through)
    (stats,) = through["one"]["venvs"]
    assert stats["venv"] == str(venv) and stats["logical_bytes"] > 400_000
    assert stats["physical_bytes"] < stats["logical_bytes"] // 4, stats  # its own files only: RECORD, launchers
    _imports(run, users.alice, venv, "hl1", "hl2")


def test_venvs_of_an_older_store_named_by_path_are_kept_through_the_other_mount(
    gluster: Mounts, run: Runner, users: Users, workdir: Path
) -> None:
    """A store made before ids, used through mount two: bob's origin files name it by path only. Root's gc through
    mount one gives the store its id, and finds bob's venv through that path's store id, though the path's device
    is another than the store's here: it removes nothing the venv uses."""
    from .test_store_identity import _strip_id

    one, two = gluster.fresh()
    done = run(users.alice, "init", str(two / "store"), "--group", users.group)
    assert done.returncode == 0, done.stderr
    _strip_id(two / "store")
    w = _wheels(workdir / "wheels", ["og1", "ogunused"])
    venv = _venv(run, users.bob, workdir / "venv-bob")
    done = run(users.bob, "--store", str(two / "store"), "install", "--venv", str(venv), str(w["og1"]))
    assert done.returncode == 0, done.stderr
    assert run(users.bob, "--store", str(two / "store"), "realize", str(w["ogunused"])).returncode == 0
    _seen(one / "store" / "config.toml")
    report = json.loads(run(None, "--store", str(one / "store"), "gc", "--grace", "0", "--json").stdout)
    assert report["store_id"] is not None and (two / "store" / "store-id").read_text().strip() == report["store_id"]
    assert _keys(report["removed"]) == {_key(w["ogunused"])}, report
    assert report["roots"] == {"live": 1, "stale": []}
    _imports(run, users.bob, venv, "og1")
