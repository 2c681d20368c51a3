"""Acceptance 1 and 2: real members and a non-member share a group store, whatever their umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from wheelstore.store.policy import Policy, Role
from wheelstore.store.store import Store

from .conftest import Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel

UMASKS = (0o022, 0o077, 0o002)


def _expected_mode(policy: Policy, rel: str, is_dir: bool, executable: set[str]) -> int:
    parts = rel.split("/")
    if parts == ["."]:
        return policy.mode(Role.STORE_ROOT)
    if rel == "config.toml":
        return policy.mode(Role.CONFIG)
    if len(parts) == 1:
        return policy.mode(Role.AREA)
    if is_dir:
        return policy.mode(Role.PUBLISHED_DIR)
    if parts[-1] in executable:
        return policy.mode(Role.PUBLISHED_EXEC)
    return policy.mode(Role.PUBLISHED_FILE)


def _check_store_modes(path: Path, users: Users, executable: set[str]) -> None:
    policy = Store.open(path).policy
    for rel, (kind, mode, _uid, gid, _digest) in snapshot(path).items():
        if rel.startswith("locks/") or rel.startswith("staging/"):
            continue
        want = _expected_mode(policy, rel, kind == stat.S_IFDIR, executable)
        assert stat.S_IMODE(mode) == want, f"{rel}: {oct(stat.S_IMODE(mode))} != {oct(want)}"
        assert gid == users.gid, f"{rel} has gid {gid}, not the store's group"


@pytest.mark.parametrize("umask", UMASKS, ids=lambda u: f"umask{u:03o}")
def test_members_realize_and_read_under_any_umask(run: Runner, users: Users, workdir: Path, umask: int) -> None:
    store = workdir / "store"
    made = run(users.alice, "init", str(store), "--group", users.group, umask=umask)
    assert made.returncode == 0, made.stderr

    alice_whl = make_wheel(workdir, "alpha", files={"alpha/__init__.py": b"A = 1\n", "alpha/tool": b"#!/bin/sh\n"},
                           executable=("alpha/tool",))
    bob_whl = make_wheel(workdir, "beta", files={"beta/__init__.py": b"B = 2\n"})
    for whl in (alice_whl, bob_whl):
        os.chmod(whl, 0o644)

    a = run(users.alice, "--store", str(store), "realize", "--json", str(alice_whl), umask=umask)
    assert a.returncode == 0, a.stderr
    b = run(users.bob, "--store", str(store), "realize", "--json", str(bob_whl), umask=umask)
    assert b.returncode == 0, b.stderr
    alpha_tree = Path(json.loads(a.stdout)[0]["tree"])
    beta_tree = Path(json.loads(b.stdout)[0]["tree"])

    # each member reads the other's published files
    read_by_bob = run.python(users.bob, "import sys; print(open(sys.argv[1]).read(), end='')",
                             str(alpha_tree / "alpha/__init__.py"), umask=umask)
    assert read_by_bob.stdout == "A = 1\n", read_by_bob.stderr
    read_by_alice = run.python(users.alice, "import sys; print(open(sys.argv[1]).read(), end='')",
                               str(beta_tree / "beta/__init__.py"), umask=umask)
    assert read_by_alice.stdout == "B = 2\n", read_by_alice.stderr

    # the modes are the policy's, not the umask's, and everything carries the store's group
    _check_store_modes(store, users, executable={"tool"})
    assert alpha_tree.stat().st_uid == users.uid(users.alice)
    assert beta_tree.stat().st_uid == users.uid(users.bob)


def test_modes_identical_across_umasks(run: Runner, users: Users, workdir: Path) -> None:
    """Three stores built under three umasks are mode-for-mode identical."""
    whl = make_wheel(workdir, "gamma", files={"gamma/__init__.py": b"", "gamma/data/x.txt": b"x"})
    os.chmod(whl, 0o644)
    shapes = []
    for umask in UMASKS:
        store = workdir / f"store{umask:03o}"
        assert run(users.alice, "init", str(store), "--group", users.group, umask=umask).returncode == 0
        assert run(users.bob, "--store", str(store), "realize", str(whl), umask=umask).returncode == 0
        shapes.append({k: (v[0], v[1], v[3]) for k, v in snapshot(store).items() if not k.startswith("locks/")})
    assert shapes[0] == shapes[1] == shapes[2]


def test_non_member_gets_clear_error(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    whl = make_wheel(workdir, "delta")
    os.chmod(whl, 0o644)
    before = snapshot(group_store)
    for args in (("realize", str(whl)), ("info",)):
        line = one_line_error(run(users.carol, "--store", str(group_store), *args))
        assert f"group '{users.group}'" in line and "not a member" in line, line
        assert f"usermod -aG {users.group} {users.carol}" in line
    assert snapshot(group_store) == before


def test_private_store_is_private(run: Runner, users: Users, workdir: Path) -> None:
    store = workdir / "private"
    assert run(users.alice, "init", str(store), umask=0o002).returncode == 0
    whl = make_wheel(workdir, "eps")
    os.chmod(whl, 0o644)
    assert run(users.alice, "--store", str(store), "realize", str(whl), umask=0o000).returncode == 0
    for rel, (_kind, mode, _uid, _gid, _d) in snapshot(store).items():
        assert stat.S_IMODE(mode) & 0o077 == 0, f"{rel} is {oct(mode)}"
    line = one_line_error(run(users.bob, "--store", str(store), "info"))
    assert f"private to {users.alice}" in line


def test_all_store_is_readable_by_everyone_writable_by_group(run: Runner, users: Users, workdir: Path) -> None:
    store = workdir / "all"
    assert run(users.alice, "init", str(store), "--group", users.group, "--shared", "all").returncode == 0
    whl = make_wheel(workdir, "zeta")
    os.chmod(whl, 0o644)
    published = run(users.bob, "--store", str(store), "realize", "--json", str(whl), umask=0o077)
    assert published.returncode == 0, published.stderr
    tree = Path(json.loads(published.stdout)[0]["tree"])
    read = run.python(users.carol, "import sys; print(open(sys.argv[1]).read(), end='')",
                      str(tree / "zeta/__init__.py"))
    assert read.stdout == "VALUE = 1\n", read.stderr
    other = make_wheel(workdir, "eta")
    os.chmod(other, 0o644)
    line = one_line_error(run(users.carol, "--store", str(store), "realize", str(other)))
    assert "may read but not publish" in line


# -- acceptance 2: published content is immutable to everyone but the trust model's owner ---------------------------

ATTACKS = r"""
import errno, json, os, sys
tree, manifest, trees, staging, mine = sys.argv[1:6]
f = os.path.join(tree, "theta/__init__.py")
def attempt(label, fn):
    try:
        fn()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "SUCCEEDED"
def write():
    with open(f, "a") as h:
        h.write("poison")
def create():
    with open(os.path.join(tree, "theta/new.py"), "w") as h:
        h.write("x")
results = {
    "append to file": attempt(0, write),
    "create file in tree": attempt(0, create),
    "chmod file": attempt(0, lambda: os.chmod(f, 0o666)),
    "chmod tree": attempt(0, lambda: os.chmod(tree, 0o777)),
    "unlink file": attempt(0, lambda: os.unlink(f)),
    "rename tree in trees/": attempt(0, lambda: os.rename(tree, tree + ".moved")),
    "rename tree to staging/": attempt(0, lambda: os.rename(tree, os.path.join(staging, "stolen"))),
    "rmdir tree": attempt(0, lambda: os.rmdir(tree)),
    "write manifest": attempt(0, lambda: open(manifest, "a")),
    "chmod manifest": attempt(0, lambda: os.chmod(manifest, 0o666)),
    "unlink manifest": attempt(0, lambda: os.unlink(manifest)),
    "rename manifest": attempt(0, lambda: os.rename(manifest, manifest + ".old")),
    "replace manifest": attempt(0, lambda: os.rename(mine, manifest)),
}
print(json.dumps(results))
"""


def test_published_content_is_read_only_and_protected(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whl = make_wheel(workdir, "theta")
    os.chmod(whl, 0o644)
    published = run(users.alice, "--store", str(group_store), "realize", "--json", str(whl))
    assert published.returncode == 0, published.stderr
    key = json.loads(published.stdout)[0]["key"]
    tree = group_store / "trees" / key
    manifest = group_store / "manifests" / f"{key}.json"

    # no write bit anywhere in published content, for anyone, the publisher included
    for p in [tree, *tree.rglob("*"), manifest]:
        assert stat.S_IMODE(p.lstat().st_mode) & 0o222 == 0, p

    before = snapshot(group_store)
    # bob (a member) tries everything; he plants his own file in manifests/ to rename over alice's manifest
    planted = group_store / "manifests" / "bob-planted"
    plant = run.python(users.bob, "import sys; open(sys.argv[1], 'w').write('{}')", str(planted))
    assert plant.returncode == 0, plant.stderr
    attacked = run.python(users.bob, ATTACKS, str(tree), str(manifest), str(group_store / "trees"),
                          str(group_store / "staging"), str(planted))
    assert attacked.returncode == 0, attacked.stderr
    results = json.loads(attacked.stdout)
    assert all(v in ("EACCES", "EPERM") for v in results.values()), results

    # alice, the publisher, cannot write by accident either (mode bits), though she owns the inodes
    own = run.python(users.alice, "import sys; open(sys.argv[1], 'a')", str(tree / "theta/__init__.py"))
    assert own.returncode != 0 and "PermissionError" in own.stderr

    planted.unlink()
    assert snapshot(group_store) == before
