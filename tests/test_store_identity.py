"""Issue 18, points 1 and 2: a store id that survives mounts, and roots that say where they live.

A venv's origin files and its gc root name the store by an id recorded in the store, never by a path or device
number; each root records the node that wrote it, whether the venv's filesystem is shared or node-local, and the
directories its path led through. gc checks the roots it can see and believes the others until they expire.

Other nodes are played by ``WHEELSTORE_NODE_ID`` (documented as the override for tests) and by mount namespaces that
hide the venvs' homes under a tmpfs, as a service's ProtectHome or another node's view would.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Runner, Users, one_line_error
from .test_gc import _gc, _imports, _install, _key, _keys, _units, _venv, _wheels

DAY = 86400


def _config(store: Path) -> str:
    return (store / "config.toml").read_text()


def _store_id(store: Path) -> str:
    (line,) = [ln for ln in _config(store).splitlines() if ln.startswith("id = ")]
    return line.split('"')[1]


def _origin(venv: Path, name: str) -> dict[str, Any]:
    (dist_info,) = venv.glob(f"lib/python3.*/site-packages/{name}-*.dist-info")
    data: dict[str, Any] = json.loads((dist_info / "WHEELSTORE").read_text())
    return data


def _roots(store: Path, user: str | None = None) -> list[Path]:
    """The root files in ``roots/`` (of ``user``'s directories, if given)."""
    return sorted(f for d in (store / "roots").iterdir() if d.is_dir()
                  and (user is None or d.stat().st_uid == _uid(user)) for f in d.glob("*.json"))


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _root_of(store: Path, venv: Path) -> Path:
    (found,) = [r for r in _roots(store) if json.loads(r.read_text())["venv"] == str(venv)]
    return found


def _edit_root(root: Path, **fields: object) -> None:
    """Rewrite a root's fields in place, as root: its owner and mode stay (the owner could write the same)."""
    doc = json.loads(root.read_text())
    doc.update(fields)
    root.write_text(json.dumps(doc))


def _days_ago(days: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - days * DAY))


def _as_node(node: str) -> dict[str, str]:
    return {"WHEELSTORE_NODE_ID": node}


def _strip_id(store: Path) -> None:
    """Make ``store`` look like one made before ids: config.toml without its ``id`` line, owner and mode kept."""
    config = store / "config.toml"
    st = config.stat()
    text = "".join(ln for ln in config.read_text().splitlines(keepends=True) if not ln.startswith("id = "))
    config.chmod(0o600)
    config.write_text(text)
    os.chown(config, st.st_uid, st.st_gid)
    config.chmod(stat.S_IMODE(st.st_mode))


# -- point 1: the store id -------------------------------------------------------------------------------------------


def test_init_records_an_id_that_origin_files_and_roots_name(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    w = _wheels(workdir / "wheels", ["id1"])
    venv = _venv(run, users.bob, workdir / "venv")
    _install(run, users.bob, group_store, venv, w["id1"])
    ident = _store_id(group_store)
    assert len(ident) == 32 and int(ident, 16) >= 0
    assert _origin(venv, "id1")["store_id"] == ident
    root = json.loads(_root_of(group_store, venv).read_text())
    assert root["store_id"] == ident and root["fs"] == "local" and root["fs_type"] == "ext4"
    assert root["node"] == Path("/etc/machine-id").read_text().strip() and root["host"] == os.uname().nodename
    assert root["anchor"][0] == [venv.stat().st_dev, venv.stat().st_ino] and root["anchor"][-1][1] == 2  # up to /
    other = workdir / "other"
    assert run(users.alice, "init", str(other), "--group", users.group).returncode == 0
    assert _store_id(other) != ident
    dry = run(users.bob, "--store", str(group_store), "gc", "--dry-run", "--json")
    assert json.loads(dry.stdout)["store_id"] == ident
    info = run(users.carol, "--store", str(other), "info", "--json")  # not a member: cannot read alice's store
    assert info.returncode != 0
    for user in (users.bob, None):
        info = run(user, "--store", str(group_store), "info", "--json")
        assert json.loads(info.stdout)["id"] == ident, info.stderr


def test_an_older_store_gets_its_id_from_its_owner_never_from_a_member(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A store made before ids: a member's install still works and names the store by path; the member cannot
    record an id; the owner's next command does, once (the file is never replaced), and venvs from before keep
    their trees."""
    _strip_id(group_store)
    w = _wheels(workdir / "wheels", ["old1", "old2"])
    venv = _venv(run, users.bob, workdir / "venv")
    _install(run, users.bob, group_store, venv, w["old1"])
    assert "store_id" not in _origin(venv, "old1") and not (group_store / "store-id").exists()
    assert "store_id" not in json.loads(_root_of(group_store, venv).read_text())
    tried = run.python(users.bob, "open(__import__('sys').argv[1], 'x')", str(group_store / "store-id"))
    assert tried.returncode != 0 and "Permission denied" in tried.stderr
    member_gc = _gc(run, users.bob, group_store)
    assert member_gc["removed"] == [] and any("has no store id yet" in p for p in member_gc["problems"])

    assert run(users.alice, "--store", str(group_store), "gc", "--grace", "0").returncode == 0  # the owner's command
    id_file = group_store / "store-id"
    st = id_file.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (_uid(users.alice), users.gid, 0o440)
    ident = id_file.read_text().strip()
    assert len(ident) == 32
    assert _gc(run, None, group_store)["removed"] == []  # bob's path-named venv still holds its tree
    _install(run, users.bob, group_store, venv, w["old2"])
    assert _origin(venv, "old2")["store_id"] == ident and id_file.read_text().strip() == ident
    assert json.loads(_root_of(group_store, venv).read_text())["store_id"] == ident
    _imports(run, users.bob, venv, "old1", "old2")


def test_root_gives_an_older_store_an_id_that_is_its_owners(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    _strip_id(group_store)
    assert run(None, "--store", str(group_store), "gc", "--dry-run").returncode == 0
    st = (group_store / "store-id").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (_uid(users.alice), users.gid, 0o440)
    assert [n for n in os.listdir(group_store) if n.startswith(".")] == []  # its temp file is gone


@pytest.mark.parametrize("planted", ["members", "symlink", "fifo", "garbage", "writable"])
def test_an_id_file_its_owner_did_not_make_is_ignored(
    run: Runner, users: Users, workdir: Path, group_store: Path, planted: str
) -> None:
    """What a member could plant if the store directory were writable to them, or what else may stand there: it
    names no store (a warning says so), commands neither hang nor fail, and gc keeps every venv's trees."""
    _strip_id(group_store)
    w = _wheels(workdir / "wheels", ["pl1"])
    venv = _venv(run, users.bob, workdir / "venv")
    _install(run, users.bob, group_store, venv, w["pl1"])
    id_file = group_store / "store-id"
    foreign = "f" * 32
    if planted == "symlink":
        (workdir / "elsewhere").write_text(foreign + "\n")
        id_file.symlink_to(workdir / "elsewhere")
    elif planted == "fifo":
        os.mkfifo(id_file, 0o444)
        os.chown(id_file, _uid(users.alice), users.gid)
    else:
        id_file.write_text(foreign + "\n" if planted != "garbage" else "../../etc/passwd\n")
        os.chown(id_file, _uid(users.bob if planted == "members" else users.alice), users.gid)
        id_file.chmod(0o664 if planted == "writable" else 0o444)
    for user in (users.alice, users.bob, None):
        done = run(user, "--store", str(group_store), "gc", "--grace", "0", "--json", timeout=60)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["store_id"] is None and report["removed"] == [], (user, report)
        if planted != "symlink":  # O_NOFOLLOW: a symlink cannot even be opened, which says so too
            assert "store-id is not a store id its owner made" in done.stderr
    again = run(users.bob, "--store", str(group_store), "install", "--venv", str(venv), str(w["pl1"]))
    assert again.returncode == 0, again.stderr
    assert "store_id" not in _origin(venv, "pl1")
    _imports(run, users.bob, venv, "pl1")


# -- point 2: roots that say where they live -------------------------------------------------------------------------


def _namespace_gc(run: Runner, user: str | None, hidden: Path, store: Path, *extra: str) -> dict[str, Any]:
    """gc run in a mount namespace of its own where ``hidden`` is an empty tmpfs (the venvs' homes are not there):
    as another node would see a path that is node-local here, or a service with ProtectHome."""
    drop = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    script = 'mount -t tmpfs tmpfs "$1" && shift && exec "$@"'
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(hidden), *drop, str(run.tool),
           "--store", str(store), "gc", "--grace", "0", "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=run.env(user), cwd="/", timeout=120)
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot make a mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_gc_where_the_venvs_homes_are_not_visible_removes_nothing_they_use(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Acceptance 2, the node-local half: venvs in homes on this node's local disk; gc by root and by the store's
    owner from a mount namespace where those homes are an empty tmpfs believes their roots (the directories above
    the venvs are not the recorded ones), removes only what no root holds, and the venvs still import."""
    w = _wheels(workdir / "wheels", ["ns1", "ns2", "ns3", "unused"])
    homes = workdir / "homes"
    homes.mkdir()
    homes.chmod(0o755)
    venvs = {}
    for user, names in ((users.alice, ["ns1", "ns2"]), (users.bob, ["ns2", "ns3"])):
        (homes / user).mkdir()
        os.chown(homes / user, _uid(user), -1)
        venvs[user] = _venv(run, user, homes / user / "venv")
        _install(run, user, group_store, venvs[user], *(w[n] for n in names))
    assert run(users.bob, "--store", str(group_store), "realize", str(w["unused"])).returncode == 0
    used = _units(group_store) - {_key(w["unused"])}

    dry = _namespace_gc(run, None, homes, group_store, "--dry-run")
    (this,) = dry["nodes"]
    assert this["this_node"] and {r["state"] for r in this["roots"]} == {"believed"}
    assert {r["venv"] for r in this["roots"]} == {str(v) for v in venvs.values()}
    assert _keys(dry["removed"]) == {_key(w["unused"])}
    gcs: list[str | None] = [None, users.alice]  # root, and the store's owner (who may unpublish anyone's tree)
    for who in gcs:
        report = _namespace_gc(run, who, homes, group_store)
        assert report["removed"] == [] or _keys(report["removed"]) == {_key(w["unused"])}, report
        assert report["roots"] == {"live": 2, "stale": []}, report
    assert _units(group_store) == used
    stats = json.loads(run(None, "--store", str(group_store), "stats", "--json").stdout)
    assert {v["venv"] for v in stats["venvs"]} == {str(v) for v in venvs.values()}
    _imports(run, users.alice, venvs[users.alice], "ns1", "ns2")
    _imports(run, users.bob, venvs[users.bob], "ns2", "ns3")

    # where the homes are seen as they were, a deleted venv is known to be gone
    shutil.rmtree(venvs[users.alice])
    assert _namespace_gc(run, None, homes, group_store)["removed"] == []  # still hidden: still believed
    gone = _gc(run, None, group_store)
    assert {k for k in _keys(gone["removed"]) if "-" not in k} == {_key(w["ns1"])}
    assert gone["roots"] == {"live": 1, "stale": [str(venvs[users.alice])]}
    _imports(run, users.bob, venvs[users.bob], "ns2", "ns3")


def test_roots_of_another_node_are_believed_until_no_node_confirmed_them_for_the_expiry(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A gc on node B cannot check node A's local venvs: it keeps their trees, even for a venv deleted on A, until
    no node confirmed the root for 30 days (installs rewrite it; A's gc confirms it in A.confirmed)."""
    w = _wheels(workdir / "wheels", ["nd1", "nd2"])
    deleted = _venv(run, users.alice, workdir / "deleted")
    _install(run, users.alice, group_store, deleted, w["nd1"])
    alive = _venv(run, users.bob, workdir / "alive")
    _install(run, users.bob, group_store, alive, w["nd2"])
    shutil.rmtree(deleted)
    node_b = _as_node("node-b")

    kept = run(None, "--store", str(group_store), "gc", "--grace", "0", "--json", env=node_b)
    report = json.loads(kept.stdout)
    assert report["removed"] == [] and report["roots"]["live"] == 2
    (node_a,) = report["nodes"]
    assert not node_a["this_node"] and {r["state"] for r in node_a["roots"]} == {"believed"}

    _edit_root(_root_of(group_store, deleted), updated_at=_days_ago(40))
    dry = run(None, "--store", str(group_store), "gc", "--grace", "0", "--dry-run", env=node_b)
    assert dry.returncode == 0, dry.stderr
    assert "roots written on another node (host " in dry.stdout
    assert f"  {deleted} ({users.alice}, local ext4): expired, 0 units, confirmed 40d ago" in dry.stdout
    assert f"  {alive} ({users.bob}, local ext4): believed, 2 units, confirmed " in dry.stdout, dry.stdout
    assert "expires in 30d" in dry.stdout
    longer = run(None, "--store", str(group_store), "gc", "--grace", "0", "--json", "--root-expiry", "41d", env=node_b)
    assert json.loads(longer.stdout)["removed"] == []
    expired = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json", env=node_b).stdout)
    assert {k for k in _keys(expired["removed"]) if "-" not in k} == {_key(w["nd1"])}
    assert expired["roots"] == {"live": 1, "stale": [str(deleted)]}

    # the live venv's root is as old, but node A's gc confirmed it: node B keeps believing it
    _edit_root(_root_of(group_store, alive), updated_at=_days_ago(40))
    assert _gc(run, users.bob, group_store)["removed"] == []  # on node A: checked, and confirmed
    (confirmed,) = [f for f in (group_store / "roots").glob("*/*.confirmed") if f.stat().st_uid == _uid(users.bob)]
    assert confirmed.name == Path("/etc/machine-id").read_text().strip() + ".confirmed"
    assert json.loads(confirmed.read_text())["roots"] == [str(_root_of(group_store, alive).relative_to(
        group_store / "roots"))]
    still = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json", env=node_b).stdout)
    assert still["removed"] == [] and still["nodes"][0]["roots"][0]["state"] == "believed"
    old = time.time() - 40 * DAY
    os.utime(confirmed, (old, old))
    late = json.loads(run(None, "--store", str(group_store), "gc", "--dry-run", "--grace", "0", "--json",
                          env=node_b).stdout)
    assert late["nodes"][0]["roots"][0]["state"] == "expired" and _key(w["nd2"]) in _keys(late["removed"])
    _imports(run, users.bob, alive, "nd2")


def test_the_stores_config_sets_the_expiry(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    w = _wheels(workdir / "wheels", ["cf1"])
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, group_store, venv, w["cf1"])
    _edit_root(_root_of(group_store, venv), updated_at=_days_ago(40))
    config = group_store / "config.toml"
    config.chmod(0o644)
    with config.open("a") as f:
        f.write('\n[gc]\nroot_expiry = "60d"\n')
    config.chmod(0o444)
    report = json.loads(run(None, "--store", str(group_store), "gc", "--grace", "0", "--json",
                            env=_as_node("node-b")).stdout)
    assert report["root_expiry_seconds"] == 60 * DAY and report["removed"] == []
    config.chmod(0o644)
    config.write_text(config.read_text().replace('"60d"', "60"))
    config.chmod(0o444)
    line = one_line_error(run(None, "--store", str(group_store), "gc"))
    assert "root_expiry" in line and "not a duration" in line and "[gc]" in line


def test_a_venv_at_one_local_path_on_two_nodes_has_two_roots(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """The same path on two nodes' local disks is two venvs: each node's install writes a root of its own, and a
    root written before nodes were recorded (named by the path alone) is replaced by the next install's."""
    w = _wheels(workdir / "wheels", ["tn1", "tn2"])
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, group_store, venv, w["tn1"])
    (mine,) = _roots(group_store, users.alice)
    legacy = json.loads(mine.read_text())
    for field in ("node", "host", "fs", "fs_type", "anchor", "store_id"):
        del legacy[field]
    from wheelstore.store.roots import root_name

    older = mine.parent / root_name(str(venv))
    written = run.python(users.alice, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(older),
                         json.dumps(legacy))
    assert written.returncode == 0, written.stderr
    assert len(_roots(group_store, users.alice)) == 2
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(w["tn2"]),
               env=_as_node("node-b"))
    assert done.returncode == 0, done.stderr
    nodes = sorted(json.loads(r.read_text())["node"] for r in _roots(group_store, users.alice))
    assert nodes == sorted([Path("/etc/machine-id").read_text().strip(), "node-b"])  # the older one went
    assert not older.exists()


def test_a_root_whose_device_numbers_changed_is_still_checked_by_its_node(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """After a reboot a filesystem may have another device number (btrfs numbers its mounts as they come): the venv's
    directories no longer match the root's anchor by device, but the venv directory is the same inode, so its own
    node still checks it (and a gc confirms it) rather than believe it until it expires; once it is gone, it is
    believed, as anything this node cannot tell apart from a hidden venv."""
    w = _wheels(workdir / "wheels", ["rb1"])
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, group_store, venv, w["rb1"])
    root = _root_of(group_store, venv)
    anchor = json.loads(root.read_text())["anchor"]
    _edit_root(root, anchor=[[dev + 1, ino] for dev, ino in anchor], updated_at=_days_ago(40))
    report = _gc(run, None, group_store)
    assert report["removed"] == [] and report["nodes"][0]["roots"][0]["state"] == "checked"
    assert report["nodes"][0]["roots"][0]["age_seconds"] < 60  # confirmed by this gc
    shutil.rmtree(venv)
    _edit_root(root, updated_at=_days_ago(40))
    kept = _gc(run, None, group_store)
    assert kept["removed"] == [] and kept["nodes"][0]["roots"][0]["state"] == "believed"


def test_a_root_whose_where_fields_are_forged_is_read_as_an_older_root(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A root's node, filesystem, anchor, store id and time are its writer's word: of the wrong shape, each reads as
    absent (as in a root written before it was recorded), and gc neither fails nor drops a venv it can see."""
    w = _wheels(workdir / "wheels", ["fg1"])
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, group_store, venv, w["fg1"])
    root = _root_of(group_store, venv)
    _edit_root(root, node="../../etc", fs="remote", fs_type=7, anchor="x", store_id=["a"], host="\x1b[31m",
               updated_at="2999-01-01T00:00:00+00:00")
    report = _gc(run, None, group_store)
    assert report["removed"] == [] and report["roots"] == {"live": 1, "stale": []}
    (older,) = report["nodes"]
    assert older["node"] is None and older["roots"][0]["state"] == "checked" and older["hosts"] == []
    assert older["roots"][0]["age_seconds"] < 60  # a time in the future is taken as now
    dry = run(None, "--store", str(group_store), "gc", "--dry-run")
    assert dry.returncode == 0 and "\x1b" not in dry.stdout and "unknown nodes (older roots)" in dry.stdout
    _edit_root(root, anchor=[[1, 2]] * 100)
    assert _gc(run, None, group_store)["removed"] == []
    # what the root says of the store is for people: the venv's origin files decide
    _edit_root(root, store_id="0" * 32, node=None, anchor=None)
    assert _gc(run, None, group_store)["removed"] == []
    _imports(run, users.alice, venv, "fg1")
