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

from wheelstore import Store
from wheelstore.errors import StoreError

from .conftest import Runner, Users, one_line_error
from .test_concurrency import _hook, _wait_for
from .test_trust import _key, _wheel, _wheelstore_python

#: a member's gc with no grace at all (gc's own floor for orphans, ``STALE_AFTER``, is a day): what it does a day later
AGED_GC = r"""
import json, sys
from wheelstore import gc
from wheelstore.store import Store

gc.STALE_AFTER = 0
report = gc.collect(Store.open(sys.argv[1]), grace=0)
print(json.dumps(report.to_json()))
"""

#: bob commits the orphan tree of another member as its adopter, with wheelstore's own code, as if realize adopted
#: everyone's orphans: the manifest is derived from the tree (each file's size, sha256, mode and times), names the
#: tree's owner as ``owner_uid`` and bob as publisher, and is sealed read-only like every real one
ADOPT_ANYONES = r"""
import sys
from wheelstore import realize
from wheelstore.errors import StoreError
from wheelstore.store import Store

realize.adopters = lambda store: frozenset(range(65536))
try:
    Store.open(sys.argv[1]).realize(sys.argv[2])
except StoreError as e:  # the commit's own read-back refuses it, once the fix is in: the manifest is written anyway
    print(e.oneline())
"""


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
    markers = workdir / "markers"
    publisher = run.popen(users.alice, "--store", str(root_store), "realize", "--no-compile", str(whl),
                          env=_hook(markers, "renamed=pause"))
    _wait_for(markers, "renamed.*", publisher)
    os.kill(publisher.pid, signal.SIGKILL)
    publisher.wait(timeout=30)

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
