"""Entries of ``trees/`` without a manifest, and manifests one member writes for another's tree (issue 14).

``verify`` names every visible entry of ``trees/`` that no manifest describes (an interrupted publish, or a member's
planted pyc-unit name, which installs ignore) with its owner and what removes it, without failing on it: it is not
damage to a published tree. gc removes such entries after its grace, planted names and non-directories included.
And a manifest is trusted only from the publisher it names, for a tree that is the publisher's own or, adopted, the
store owner's or root's: bob cannot commit alice's interrupted publish under his name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from wheelstore.base.errors import StoreError
from wheelstore.store.store import Store

from .conftest import Runner, Users, one_line_error
from .test_concurrency import _hook, _wait_for
from .test_trust import _key, _wheel, _wheelstore_python

#: a member's gc with no grace at all (gc's own floor for orphans, ``STALE_AFTER``, is a day): what it does a day later
AGED_GC = r"""
import json, sys
from wheelstore.store import gc
from wheelstore.store.store import Store

gc.STALE_AFTER = 0
report = gc.collect_garbage(Store.open(sys.argv[1]), grace=0)
print(json.dumps(report.to_json()))
"""

#: bob commits the orphan tree of another member as its adopter, with wheelstore's own code, as if realize adopted
#: everyone's orphans: the manifest is derived from the tree (each file's size, sha256, mode and times), names the
#: tree's owner as ``owner_uid`` and bob as publisher, and is sealed read-only like every real one
ADOPT_ANYONES = r"""
import sys
from wheelstore.store import publish as realize
from wheelstore.base.errors import StoreError
from wheelstore.store.publish import realize_wheel
from wheelstore.store.store import Store

realize.adopters = lambda store: frozenset(range(65536))
try:
    realize_wheel(Store.open(sys.argv[1]), sys.argv[2])
except StoreError as e:  # the commit's own read-back refuses it, once the fix is in: the manifest is written anyway
    print(e.oneline())
"""


def _plant(run: Runner, user: str, *commands: str) -> None:
    done = subprocess.run(["sh", "-c", " && ".join(commands)], capture_output=True, text=True, env=run.env(user),
                          cwd="/", timeout=60, **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr


def _orphans(run: Runner, user: str, store: Path) -> tuple[int, dict[str, dict[str, object]]]:
    checked = run(user, "--store", str(store), "verify", "--json")
    assert "Traceback" not in checked.stderr, checked.stderr
    return checked.returncode, {o["key"]: o for o in json.loads(checked.stdout)["orphans"]}



def _killed_after_rename(run: Runner, user: str, store: Path, whl: Path, markers: Path) -> None:
    """``user``'s publish of ``whl``, killed between its rename and its manifest: a tree without a manifest."""
    publisher = run.popen(user, "--store", str(store), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "renamed=pause"))
    _wait_for(markers, "renamed.*", publisher)
    os.kill(publisher.pid, signal.SIGKILL)
    publisher.wait(timeout=30)

def test_verify_names_a_planted_bytecode_unit_name(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """bob takes the name of the pyc unit of alice's tree, without a manifest: installs ignore it, and verify, which
    said "all intact", now names it, its owner and who removes it, and still exits 0 (no published tree is damaged)."""
    whl = _wheel(workdir, "plantedunit")
    assert run(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl)).returncode == 0
    unit = group_store / "trees" / f"{_key(whl)}-cpython-311"
    _plant(run, users.bob, f"mkdir -p {unit}/plantedunit/__pycache__", f"chmod -R a-w {unit}")

    checked = run(users.alice, "--store", str(group_store), "verify")
    assert checked.returncode == 0, checked.stderr
    (line,) = [ln for ln in checked.stdout.splitlines() if ln.startswith("no manifest: ")]
    assert line.startswith(f"no manifest: trees/{unit.name}: a bytecode unit without a manifest, owned by wsbob; "
                           f"wsbob or root can remove it: rm -rf {unit}; gc run by wsbob or root removes it once it "
                           "is unchanged for 24 hours (or gc's grace, if longer), and wsalice's, as the store's owner, "
                           "moves it out of the way"), line
    assert "all intact; 1 entry of trees/ without a manifest (above)" in checked.stdout, checked.stdout

    status, orphans = _orphans(run, users.alice, group_store)
    assert status == 0
    assert {k: (o["kind"], o["owner"], o["path"]) for k, o in orphans.items()} == {
        unit.name: ("bytecode", users.bob, f"trees/{unit.name}")}


def test_verify_names_an_interrupted_publish(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """alice's publish killed after its rename leaves her tree without a manifest: verify names it, not its staging
    leftovers, and gc's hidden names are not orphans either."""
    whl = _wheel(workdir, "interrupted")
    key = _key(whl)
    _killed_after_rename(run, users.alice, group_store, whl, workdir / "markers")
    _plant(run, users.bob, f"mkdir {group_store}/trees/.gc-{key}-host-1-abcd")

    status, orphans = _orphans(run, users.bob, group_store)
    assert status == 0
    assert list(orphans) == [key]
    assert (orphans[key]["kind"], orphans[key]["owner"]) == ("tree", users.alice)
    assert "the next realize of its wheel adopts it or moves it aside" in str(orphans[key]["removed_by"])


def test_a_manifest_without_its_tree_is_reported_as_damage(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """The other half: a manifest whose tree is gone (root removed it by hand) fails verify, naming the tree."""
    whl = _wheel(workdir, "treeless")
    key = _key(whl)
    assert run(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl)).returncode == 0
    subprocess.run(["rm", "-rf", str(group_store / "trees" / key)], check=True)
    checked = run(users.alice, "--store", str(group_store), "verify", "--json")
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    assert [(d["key"], d["name"]) for d in report["damaged"]] == [(key, "treeless")]
    assert "has a manifest but no files" in report["damaged"][0]["detail"]
    assert report["orphans"] == []


def test_gc_removes_planted_names_after_its_grace(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob's planted pyc-unit directory and a symlink where a tree goes (which would block every publish of that
    wheel) are removed by gc once old enough; bob's names that no publish makes are left, as verify says."""
    whl = _wheel(workdir, "gcplanted")
    assert run(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl)).returncode == 0
    trees = group_store / "trees"
    unit, link, other = f"{_key(whl)}-cpython-311", "f" * 64, "notakey"
    _plant(run, users.bob, f"mkdir -p {trees}/{unit}/x", f"chmod -R a-w {trees}/{unit}",
           f"ln -s /etc {trees}/{link}", f"mkdir {trees}/{other}")
    _, orphans = _orphans(run, users.alice, group_store)
    assert "gc leaves names no publish makes" in str(orphans[other]["removed_by"])

    out = _wheelstore_python(run, users.bob, AGED_GC, str(group_store))
    removed = {u["key"]: u["kind"] for u in json.loads(out)["removed"]}
    assert removed == {unit: "orphan", link: "orphan"}, out
    assert sorted(p.name for p in trees.iterdir() if not p.name.startswith(".")) == sorted([_key(whl), other])
    assert Store.open(group_store).lookup(_key(whl)) is not None


def test_verify_quotes_the_command_that_removes_a_planted_name(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob's entry ``trees/x ~``: the removal verify suggests is quoted, not ``rm -rf .../trees/x ~`` (which would
    remove the home of whoever pastes it)."""
    trees = group_store / "trees"
    _plant(run, users.bob, f"mkdir '{trees}/x ~'")
    checked = run(users.alice, "--store", str(group_store), "verify")
    assert checked.returncode == 0, checked.stderr
    (line,) = [ln for ln in checked.stdout.splitlines() if ln.startswith("no manifest: ")]
    assert f"rm -rf '{trees}/x ~' (gc leaves names no publish makes)" in line, line


def test_gc_and_verify_survive_a_planted_name_too_long_for_a_manifest(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob's ``trees/<key>-<186 characters>`` has a pyc unit's shape, but its manifest's name would be 256 bytes:
    looking that up fails with ENAMETOOLONG, which must not crash every gc; verify names the entry."""
    name = "a" * 64 + "-" + "b" * 186
    _plant(run, users.bob, f"mkdir {group_store}/trees/{name}")
    swept = run(users.alice, "--store", str(group_store), "gc")
    assert swept.returncode == 0 and "Traceback" not in swept.stderr, swept.stderr
    _, orphans = _orphans(run, users.alice, group_store)
    assert orphans[name]["kind"] == "bytecode"


@pytest.fixture
def root_store(workdir: Path, run: Runner, users: Users) -> Path:
    """A group store root owns: alice and bob are both members, and neither is its owner."""
    path = workdir / "rootstore"
    done = run(None, "init", str(path), "--group", users.group)
    assert done.returncode == 0, done.stderr
    return path


def test_a_member_cannot_commit_anothers_interrupted_publish(
    run: Runner, users: Users, workdir: Path, root_store: Path
) -> None:
    """alice's publish is killed between its rename and its manifest. bob writes the manifest for her tree, valid and
    sealed like a real one, naming her as the tree's owner and himself as publisher: readers refuse it (the tree is
    neither his nor the store owner's or root's, the only orphans others adopt), installs fail in one line, and
    verify reports it."""
    whl = _wheel(workdir, "hijacked")
    key = _key(whl)
    _killed_after_rename(run, users.alice, root_store, whl, workdir / "markers")

    _wheelstore_python(run, users.bob, ADOPT_ANYONES, str(root_store), str(whl))
    manifest = root_store / "manifests" / f"{key}.json"
    st = manifest.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (users.uid(users.bob), 0o440)  # sealed, as the group store's are
    written = json.loads(manifest.read_text())
    assert (written["owner_uid"], written["publisher_uid"]) == (users.uid(users.alice), users.uid(users.bob))
    assert (root_store / "trees" / key).stat().st_uid == users.uid(users.alice)

    with pytest.raises(StoreError, match="wsbob published wsalice's tree"):
        Store.open(root_store).lookup(key)
    venv = workdir / "venv"
    assert run(users.alice, "--store", str(root_store), "venv", str(venv)).returncode == 0
    line = one_line_error(run(users.alice, "--store", str(root_store), "install", "--venv", str(venv), str(whl)))
    assert f"{manifest} is not trustworthy" in line and "owned by wsbob" in line, line
    assert not list((venv / "lib").glob("python*/site-packages/hijacked"))

    checked = run(users.alice, "--store", str(root_store), "verify", "--json")
    assert checked.returncode == 1
    (damage,) = json.loads(checked.stdout)["damaged"]
    assert (damage["key"], damage["problem"]) == (key, "untrusted")
    assert "wsbob published wsalice's tree" in damage["detail"]


def test_the_store_owners_adoption_still_passes(
    run: Runner, users: Users, workdir: Path, root_store: Path
) -> None:
    """The control: a publish root's own (the store's owner) killed the same way is adopted by bob, and the manifest
    he writes for root's tree is trusted; so the refusal above is about whose tree it is."""
    whl = _wheel(workdir, "adoptedok")
    key = _key(whl)
    markers = workdir / "markers"
    publisher = run.popen(None, "--store", str(root_store), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "renamed=pause"))
    _wait_for(markers, "renamed.*", publisher)
    os.kill(publisher.pid, signal.SIGKILL)
    publisher.wait(timeout=30)
    done = run(users.bob, "--store", str(root_store), "realize", "--json", str(whl))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["unpacked"] is False
    tree = Store.open(root_store).lookup(key)
    assert tree is not None
    assert (tree.manifest.owner_uid, tree.manifest.publisher_uid) == (0, users.uid(users.bob))
