"""Attacks on issue 18's merged work (points 1, 2 and 4): the store id, roots that say where they live, the root
expiry, ``<node>.confirmed`` files, as a hostile member of the store's group (bob) against another member's live
venv (alice's), and against root's gc.

bob publishes the trees first, so they are his: his own gc may remove them (the sticky bit), and alice's venv links
them. Whatever bob makes his gc believe, it must not take a tree alice's venv uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .cluster import SshfsPair
from .conftest import Runner, Users
from .test_gc import _gc, _imports, _install, _key, _units, _venv, _wheels
from .test_store_identity import _days_ago, _edit_root, _origin, _root_of


def _bobs_trees_in_alices_venv(run: Runner, users: Users, workdir: Path, store: Path, names: list[str],
                               where: Path | None = None) -> tuple[dict[str, Path], Path]:
    """bob publishes ``names``; alice installs them (symlinks into his trees) into her venv (in ``where``, a
    directory she may write, else ``workdir``)."""
    w = _wheels(workdir / "wheels", names)
    done = run(users.bob, "--store", str(store), "realize", *map(str, w.values()))
    assert done.returncode == 0, done.stderr
    venv = _venv(run, users.alice, (where or workdir) / "alice-venv")
    _install(run, users.alice, store, venv, *w.values())
    return w, venv


def _bobs_fake_origin(run: Runner, users: Users, workdir: Path, store: Path, origin: dict[str, Any]) -> Path:
    """bob's own venv, one dist installed from the store, whose origin file he then rewrites to ``origin`` (his own
    file: he may write anything there)."""
    w = _wheels(workdir / "bob-wheels", ["bobown"])
    venv = _venv(run, users.bob, workdir / "bob-venv")
    _install(run, users.bob, store, venv, w["bobown"])
    (dist_info,) = venv.glob("lib/python3.*/site-packages/bobown-*.dist-info")
    target = dist_info / "WHEELSTORE"
    done = run.python(users.bob, "import os, sys; os.unlink(sys.argv[1]); open(sys.argv[1], 'w').write(sys.argv[2])",
                      str(target), json.dumps(origin))
    assert done.returncode == 0, done.stderr
    return venv


# -- a member's origin file names a "store" of his own ----------------------------------------------------------------


def test_a_members_fake_store_config_cannot_crash_everyones_gc(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob's origin file names no store id, only a path: a directory of his with a ``config.toml`` nested 50,000
    deep. gc matches an id-less origin by path, reading the store id at that path (identity.id_at): the TOML parser
    recursed until RecursionError, which nothing caught, so every gc and stats (root's too) failed with a traceback,
    and no tree was ever removed again."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["tb1"])
    fake = workdir / "bobs-store"
    done = run.python(users.bob, "import os, sys; os.mkdir(sys.argv[1]); "
                      "open(sys.argv[1] + '/config.toml', 'w').write('a = ' + '[' * 50000)", str(fake))
    assert done.returncode == 0, done.stderr
    _bobs_fake_origin(run, users, workdir, group_store, {"store": str(fake), "key": "0" * 64})
    for who in (None, users.alice, users.bob):
        for verb in (["gc", "--grace", "0", "--json"], ["stats", "--json"]):
            done = run(who, "--store", str(group_store), *verb, timeout=60)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (who, verb, done.stderr[-2000:])
    assert _key(w["tb1"]) in _units(group_store)
    _imports(run, users.alice, venv, "tb1")
# -- the store id changes: every venv forgotten -----------------------------------------------------------------------


def test_a_config_that_loses_trust_does_not_make_gc_forget_every_venv(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """The store's owner makes ``config.toml`` group-writable for a moment (to add the ``[gc]`` table the README
    tells her about, say). Its id is then not trusted (right), so her next command minted a new id in ``store-id``:
    every origin file names the old one, and a mismatched id was decisive, so her gc took every venv for gone and
    unpublished every tree in use."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["cl1"])
    config = group_store / "config.toml"
    config.chmod(0o664)
    with config.open("a") as f:
        f.write('\n[gc]\nroot_expiry = "60d"\n')
    report = _gc(run, users.alice, group_store)
    assert report["removed"] == [] and report["unpublished"] == [], report
    assert report["roots"]["stale"] == [], report
    config.chmod(0o444)
    assert _gc(run, None, group_store)["removed"] == []
    _imports(run, users.alice, venv, "cl1")

# -- a member's gc in a user namespace of his own ---------------------------------------------------------------------


def _userns_gc(run: Runner, user: str, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``user``'s gc in a user namespace that maps only his own uid (anyone may make one where the kernel allows
    unprivileged user namespaces, as Debian's and Fedora's do): every other user's files look like nobody's."""
    cmd = ["unshare", "-U", "--map-current-user", str(run.tool), "--store", str(store), "gc", "--grace", "0",
           "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=run.env(user), cwd="/", timeout=120,
                          **run.popen_kwargs(user, 0o022))
    if "unshare failed" in done.stderr:
        pytest.skip(f"no unprivileged user namespaces here: {done.stderr.strip()}")
    return done


def test_a_members_gc_in_a_user_namespace_does_not_take_anothers_trees(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """In bob's user namespace alice's ``roots/`` directory is owned by the overflow uid, not the uid it is named
    for: gc skipped it as squatted, so no root held alice's trees, and bob's gc removed his trees her venv links."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["un1"])
    done = _userns_gc(run, users.bob, group_store)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["removed"] == [], report
    assert any("not mapped in this user namespace" in p and "no tree was removed" in p for p in report["problems"])
    assert _key(w["un1"]) in _units(group_store)
    _imports(run, users.alice, venv, "un1")


# -- a venv on a shared filesystem, and another one at its path on another node --------------------------------------


def test_a_members_venv_at_the_same_shared_path_on_another_node_does_not_unroot_anothers(
    run: Runner, users: Users, workdir: Path, group_store: Path, sshfs_pair: SshfsPair
) -> None:
    """alice's venv is on a shared filesystem at P on node A. Node B mounts another shared filesystem there (another
    cluster's /scratch, say) where bob, in a sticky directory, made a "venv" at P whose origin file names this store
    and another tree at alice's dist-info path. gc on node B took bob's venv for alice's (it is on a shared
    filesystem, and names this store) and so took alice's tree for unused."""
    shared = workdir / "scratch"  # node A's shared filesystem
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["sp1"], shared)
    root = _root_of(group_store, venv)
    doc = json.loads(root.read_text())
    doc.update(node="node-a", fs="shared", fs_type="nfs4")  # as node A saw it: on NFS
    root.write_text(json.dumps(doc))
    rel = doc["dists"][0]["dist_info"]
    scratch, _two = sshfs_pair.as_user(users.bob).fresh()  # node B's other shared filesystem, bob's files
    fake = scratch / venv.name
    made = run.python(users.bob, "import os, sys; os.makedirs(sys.argv[1] + '/' + sys.argv[2]); "
                      "open(sys.argv[1] + '/pyvenv.cfg', 'w').write('home = /usr/bin\\n'); "
                      "open(sys.argv[1] + '/' + sys.argv[2] + '/WHEELSTORE', 'w').write(sys.argv[3])",
                      str(fake), rel, json.dumps({"store": str(group_store), "store_id": _origin(venv, "sp1")[
                          "store_id"], "key": "0" * 64}))
    assert made.returncode == 0, made.stderr
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(scratch), str(venv.parent),
           str(run.tool), "--store", str(group_store), "gc", "--grace", "0", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=run.env(None, {"WHEELSTORE_NODE_ID": "node-b"}),
                          cwd="/", timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["removed"] == [] and report["unpublished"] == [], report
    assert _key(w["sp1"]) in _units(group_store)
    _imports(run, users.alice, venv, "sp1")


# -- the root expiry: what the README promises a quiet node's venv ---------------------------------------------------


def test_a_quiet_nodes_live_venv_loses_its_trees_to_another_nodes_gc_and_an_install_puts_them_back(
    run: Runner, users: Users, workdir: Path
) -> None:
    """alice's private store (on a shared filesystem, say); her venv on node A's local disk, where nothing ran for 40
    days. Root's gc on node A does not confirm it (root writes nothing in a private store): only hers does. Once no
    node confirmed it for the expiry, her gc on node B removes the trees the live venv uses, and it fails to import;
    installing the same wheels again puts them back. The README says all of this."""
    store = workdir / "private"
    assert run(users.alice, "init", str(store)).returncode == 0
    w = _wheels(workdir / "wheels", ["qn1"])
    venv = _venv(run, users.alice, workdir / "venv")
    node_a, node_b = {"WHEELSTORE_NODE_ID": "node-a"}, {"WHEELSTORE_NODE_ID": "node-b"}
    done = run(users.alice, "--store", str(store), "install", "--link-mode", "symlink", "--venv", str(venv),
               str(w["qn1"]), env=node_a)
    assert done.returncode == 0, done.stderr
    _edit_root(_root_of(store, venv), updated_at=_days_ago(40))

    by_root = run(None, "--store", str(store), "gc", "--grace", "0", "--json", env=node_a)
    assert by_root.returncode == 0 and json.loads(by_root.stdout)["removed"] == [], by_root.stderr
    assert not list((store / "roots").glob("*/*.confirmed"))  # root's gc on node A confirmed nothing
    dry = run(users.alice, "--store", str(store), "gc", "--grace", "0", "--dry-run", env=node_b)
    assert f"{venv} ({users.alice}, local ext4): expired, 0 units, confirmed 40d ago" in dry.stdout, dry.stdout
    gone = run(users.alice, "--store", str(store), "gc", "--grace", "0", "--json", env=node_b)
    assert _key(w["qn1"]) in {u["key"] for u in json.loads(gone.stdout)["removed"]}
    broken = subprocess.run([str(venv / "bin" / "python"), "-c", "from qn1 import NAME"], capture_output=True,
                            text=True, **run.popen_kwargs(users.alice, 0o022))
    assert broken.returncode != 0 and "qn1" in broken.stderr

    again = run(users.alice, "--store", str(store), "install", "--link-mode", "symlink", "--venv", str(venv),
                str(w["qn1"]), env=node_a)
    assert again.returncode == 0, again.stderr
    _imports(run, users.alice, venv, "qn1")
    assert _gc(run, users.alice, store, "--dry-run")["removed"] == []  # her own gc on node A: checked, confirmed


# -- a member keeps everything: what the listing says -----------------------------------------------------------------


def _bobs_dir(store: Path, users: Users) -> Path:
    (found,) = [d for d in (store / "roots").iterdir() if d.stat().st_uid == users.uid(users.bob)]
    return found


def _write_as(run: Runner, user: str, path: Path, doc: dict[str, Any]) -> None:
    done = run.python(user, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(path), json.dumps(doc))
    assert done.returncode == 0, done.stderr


def test_a_members_forged_root_on_a_node_nobody_runs_keeps_trees_and_the_listing_names_him(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob writes a root of his for a venv on "node-x", a node that does not exist, claiming alice's tree: every
    gc believes it (nobody can check a venv on another node's disk) until the expiry, and bob can rewrite it daily.
    That is as much as a real venv of his could hold; what matters is that it is said: gc --dry-run lists it under
    node-x, as bob's, with what it holds."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["fr1"])
    _bobs_fake_origin(run, users, workdir, group_store, {"store": str(group_store), "key": "0" * 64})
    key = _key(w["fr1"])
    _write_as(run, users.bob, _bobs_dir(group_store, users) / "forged.json", {
        "format": 1, "venv": "/nowhere/venv", "node": "node-x", "fs": "local", "fs_type": "ext4",
        "dists": [{"name": "fr1", "version": "1.0", "dist_info": "x.dist-info", "key": key, "pyc": None}]})
    import shutil

    shutil.rmtree(venv)
    assert key not in {u["key"] for u in _gc(run, None, group_store)["removed"]}
    dry = run(None, "--store", str(group_store), "gc", "--grace", "0", "--dry-run")
    assert "roots written on another node (node id node-x):" in dry.stdout, dry.stdout
    assert f"  /nowhere/venv ({users.bob}, local ext4): believed, 1 unit, confirmed " in dry.stdout, dry.stdout
    assert _key(w["fr1"]) in _units(group_store)


def test_the_listing_names_whose_confirmation_keeps_anothers_root(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """alice's venv on node-y is gone and its root 40 days old: it should expire. bob's ``<node>.confirmed`` names
    her root, so every gc keeps believing it, for ever if he touches the file. Only keeping more, as the README says;
    but gc --dry-run showed it as alice's root, confirmed moments ago, without saying that bob confirmed it."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["cf2"])
    _bobs_fake_origin(run, users, workdir, group_store, {"store": str(group_store), "key": "0" * 64})
    done = run(users.alice, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(venv),
               str(w["cf2"]), env={"WHEELSTORE_NODE_ID": "node-y"})
    assert done.returncode == 0, done.stderr
    roots = [r for r in (group_store / "roots").glob("*/*.json") if json.loads(r.read_text())["venv"] == str(venv)]
    for r in roots:
        _edit_root(r, updated_at=_days_ago(40))
    import shutil

    shutil.rmtree(venv)
    _write_as(run, users.bob, _bobs_dir(group_store, users) / "node-z.confirmed",
              {"roots": [str(r.relative_to(group_store / "roots")) for r in roots]})
    assert _key(w["cf2"]) not in {u["key"] for u in _gc(run, None, group_store)["removed"]}  # kept: only ever more
    dry = run(None, "--store", str(group_store), "gc", "--grace", "0", "--dry-run")
    assert f"{venv} ({users.alice}, local ext4): believed" in dry.stdout, dry.stdout
    assert users.bob in dry.stdout.split(str(venv))[1].splitlines()[0], dry.stdout


# -- what a member may put where root's gc reads ----------------------------------------------------------------------


@pytest.mark.parametrize("trap", ["fifo-confirmed", "symlink-confirmed", "dir-confirmed", "fifo-store",
                                  "fifo-store-config", "symlink-store-config", "garbage-store-id"])
def test_root_gc_neither_hangs_nor_fails_on_a_members_traps(
    run: Runner, users: Users, workdir: Path, group_store: Path, trap: str
) -> None:
    """What issue 18 made gc read besides roots: ``<node>.confirmed`` files in each member's roots directory, and the
    store an id-less origin file names by path (its ``config.toml`` and ``store-id``). bob makes each a FIFO, a
    symlink to a file only root may read, or a directory: root's gc and stats finish, say nothing of it, and keep
    alice's tree."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["tp1"])
    fake = workdir / "bobs-store"
    origin = {"store": str(fake), "key": "0" * 64}
    _bobs_fake_origin(run, users, workdir, group_store, origin)
    mine = _bobs_dir(group_store, users)
    code = {
        "fifo-confirmed": ("os.mkfifo(sys.argv[1] + '/node.confirmed')", mine),
        "symlink-confirmed": ("os.symlink('/etc/shadow', sys.argv[1] + '/node.confirmed')", mine),
        "dir-confirmed": ("os.mkdir(sys.argv[1] + '/node.confirmed')", mine),
        "fifo-store": ("os.mkfifo(sys.argv[1])", fake),
        "fifo-store-config": ("os.mkdir(sys.argv[1]); os.mkfifo(sys.argv[1] + '/config.toml'); "
                              "os.mkfifo(sys.argv[1] + '/store-id')", fake),
        "symlink-store-config": ("os.mkdir(sys.argv[1]); os.symlink('/etc/shadow', sys.argv[1] + '/config.toml'); "
                                 "os.symlink('/etc/shadow', sys.argv[1] + '/store-id')", fake),
        "garbage-store-id": ("os.mkdir(sys.argv[1]); open(sys.argv[1] + '/config.toml', 'w').write('a = 1'); "
                             "open(sys.argv[1] + '/store-id', 'w').write('\\x1b[2J' * 10)", fake),
    }[trap]
    done = run.python(users.bob, f"import os, sys; {code[0]}", str(code[1]))
    assert done.returncode == 0, done.stderr
    for verb in (["gc", "--grace", "0", "--json"], ["stats", "--json"]):
        done = run(None, "--store", str(group_store), *verb, timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
    assert _key(w["tp1"]) in _units(group_store)
    _imports(run, users.alice, venv, "tp1")


# -- one machine: a deleted venv frees its trees ----------------------------------------------------------------------


def test_a_venv_deleted_with_its_directory_frees_its_trees_when_the_directory_is_made_again(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """A CI job's workspace: ``ws/job/venv``; the next run removes ``ws/job`` and makes it again, without a venv
    this time. On this one machine, nothing is hidden: the venv is gone. But the nearest directory above it is no
    longer the recorded one, which gc took for another view (a tmpfs, a namespace), so it believed the root for 30
    days instead."""
    job = workdir / "ws" / "job"
    job.mkdir(parents=True)
    for d in (job.parent, job):
        os.chown(d, users.uid(users.alice), -1)
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["cj1"], job)
    before = job.stat().st_ino
    shutil.rmtree(job)
    (job.parent / "spare").mkdir()  # takes the inode number ext4 would give the new job directory again
    job.mkdir()
    os.chown(job, users.uid(users.alice), -1)
    assert job.stat().st_ino != before
    report = _gc(run, None, group_store)
    assert _key(w["cj1"]) in {u["key"] for u in report["removed"]}, report["nodes"]


# -- an older wheelstore on the same store, at the same time ----------------------------------------------------------

#: the last commit of main before issue 18's merged work: a wheelstore that knows no store id, node or anchor
BEFORE_ISSUE_18 = "4aa7ccc"


@pytest.fixture(scope="module")
def old_tool(tmp_path_factory: pytest.TempPathFactory, base_dir: Path) -> Path:
    """``wheelstore`` as it was before issue 18, installed where every test user may run it."""
    from .conftest import ROOT, SYSTEM_PYTHON

    src = Path(tempfile.mkdtemp(dir=base_dir, prefix="old-src-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE_ISSUE_18], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    venv = Path(tempfile.mkdtemp(dir=base_dir, prefix="old-venv-"))
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"})
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return venv / "bin" / "wheelstore"


def test_a_store_made_before_ids_used_by_an_older_wheelstore_at_the_same_time(
    run: Runner, users: Users, workdir: Path, old_tool: Path
) -> None:
    """An older wheelstore makes the store and keeps installing and collecting while the new one is used beside it:
    its origin files name no id (matched by path), the owner's new command gives the store an id, and neither gc
    takes a tree any venv uses; the older gc leaves ``store-id`` and ``<node>.confirmed`` alone."""
    old = Runner(old_tool, users)
    store = workdir / "store"
    assert old(users.alice, "init", str(store), "--group", users.group).returncode == 0
    w = _wheels(workdir / "wheels", ["ol1", "ol2", "ol3"])
    venvs = {n: _venv(run, users.bob, workdir / f"venv-{n}") for n in w}
    _install(old, users.bob, store, venvs["ol1"], w["ol1"])
    assert _gc(run, users.alice, store, "--dry-run")["store_id"] is not None  # the owner's command: an id
    _install(run, users.bob, store, venvs["ol2"], w["ol2"])
    _install(old, users.bob, store, venvs["ol3"], w["ol3"])
    assert "store_id" in _origin(venvs["ol2"], "ol2") and "store_id" not in _origin(venvs["ol3"], "ol3")
    for gc in (old, run, old):
        report = _gc(gc, None, store)
        assert not {_key(p) for p in w.values()} & {u["key"] for u in report["removed"]}, report
    assert (store / "store-id").exists() and list((store / "roots").glob("*/*.confirmed"))
    for name, venv in venvs.items():
        _imports(run, users.bob, venv, name)
    # a venv the older wheelstore rooted (no node, no anchor), deleted: nothing tells it from a hidden one, so it is
    # believed until it expires (as the README says), then freed
    shutil.rmtree(venvs["ol3"])
    report = _gc(run, None, store)
    assert _key(w["ol3"]) not in {u["key"] for u in report["removed"]}
    (older,) = [r for n in report["nodes"] for r in n["roots"] if r["venv"] == str(venvs["ol3"])]
    assert older["state"] == "believed" and older["fs"] is None
    _edit_root(_root_of(store, venvs["ol3"]), updated_at=_days_ago(31))
    assert _key(w["ol3"]) in {u["key"] for u in _gc(run, None, store)["removed"]}


# -- two nodes with one node id ---------------------------------------------------------------------------------------


def test_a_root_of_another_host_with_this_nodes_id_is_not_checked_as_this_nodes(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """Nodes cloned from one image share /etc/machine-id unless it is made anew (systemd's documented pitfall), and
    their image's directories have the same device and inode numbers: node B's gc took node A's root for its own,
    found the venv's directory missing under a directory that matched the anchor, and called the venv gone. The
    root also records its host name: one from another host is believed, as another node's. (Played here by editing
    the host the root names: the directories match because this is the same machine.)"""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["cn1"])
    _edit_root(_root_of(group_store, venv), host="node-a")
    shutil.rmtree(venv)  # as node B sees it: not on its disk
    report = _gc(run, None, group_store)
    assert _key(w["cn1"]) not in {u["key"] for u in report["removed"]}, report["nodes"]
    assert report["nodes"][0]["roots"][0]["state"] == "believed"


def test_a_renamed_host_still_checks_and_confirms_its_own_venvs(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """The other side of the host check: a node whose host name changed still finds its live venvs (by their inode)
    and confirms them, so they do not expire under its own gc; one deleted since is believed until it expires."""
    w, venv = _bobs_trees_in_alices_venv(run, users, workdir, group_store, ["rn1"])
    _edit_root(_root_of(group_store, venv), host="old-name", updated_at=_days_ago(40))
    report = _gc(run, None, group_store)
    assert report["removed"] == [] and report["nodes"][0]["roots"][0]["state"] == "checked", report["nodes"]
    assert report["nodes"][0]["roots"][0]["age_seconds"] < 60
    _imports(run, users.alice, venv, "rn1")
