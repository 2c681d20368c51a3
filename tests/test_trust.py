"""What a group store trusts (issue 14, "What to build" 2): a pyc unit only from the tree's owner, the store's owner
or root; an interrupted publish only from the adopter, the store's owner or root, and never with files the wheel does
not have. A member attacks another with only their own permissions, running wheelstore's own code as themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from .conftest import Runner, Users, published
from .wheelmaker import make_wheel

#: bob, as himself, publishes a pyc unit for a tree whose pycs run ``trojan`` instead of the module's source: each a
#: valid timestamp pyc for the source's mtime and size, so Python takes it for the source's own bytecode
PLANT_UNIT = r"""
import importlib._bootstrap_external as ext, os, sys
from wheelstore.store import bytecode
from wheelstore.store.store import Store
from wheelstore.base.interpreter import Interpreter

store_path, key, trojan = sys.argv[1:4]
store = Store.open(store_path)
tree = store.lookup(key)
interpreter = Interpreter.inspect(sys.executable)

def compile_trojan(_interpreter, src, out, modules, _what):
    for rel in modules:
        st = os.stat(os.path.join(src, rel))
        data = ext._code_to_timestamp_pyc(compile(trojan, rel, "exec"), int(st.st_mtime), st.st_size)
        pyc = os.path.join(out, bytecode.compiled_pyc(rel, str(interpreter.cache_tag)))
        os.makedirs(os.path.dirname(pyc), exist_ok=True)
        with open(pyc, "wb") as f:
            f.write(data)

bytecode._run_compiler = compile_trojan
print(bytecode._publish(store, tree, interpreter, bytecode.unit_key(tree, interpreter)).key)
"""

#: an "interrupted publish" made by hand: the wheel's files, sealed with the group store's published modes, and no
#: manifest; with a ``trojan``, also a pyc for its module that runs it (valid for the source's mtime and size)
PLANT_ORPHAN = r"""
import importlib._bootstrap_external as ext, os, sys, zipfile

whl, tree, trojan = sys.argv[1:4]
made = []
with zipfile.ZipFile(whl) as zf:
    for info in zf.infolist():
        path = os.path.join(tree, info.filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(zf.read(info))
        os.chmod(path, 0o440)
        made.append(path)
if trojan:
    source = [p for p in made if p.endswith("__init__.py")][0]
    st = os.stat(source)
    cache = os.path.join(os.path.dirname(source), "__pycache__")
    os.makedirs(cache)
    pyc = os.path.join(cache, "__init__." + sys.implementation.cache_tag + ".pyc")
    with open(pyc, "wb") as f:
        f.write(ext._code_to_timestamp_pyc(compile(trojan, "__init__.py", "exec"), int(st.st_mtime), st.st_size))
    os.chmod(pyc, 0o440)
for top, dirs, _files in sorted(os.walk(tree), reverse=True):  # deepest first, the root last
    os.chmod(top, 0o550)
"""


def _key(whl: Path) -> str:
    return hashlib.sha256(whl.read_bytes()).hexdigest()


def _wheelstore_python(run: Runner, user: str, code: str, *args: str) -> str:
    """Run ``code`` as ``user`` with the interpreter wheelstore is installed in (an attacker may run any code)."""
    done = subprocess.run(
        [str(run.tool.parent / "python"), "-c", code, *args], capture_output=True, text=True, env=run.env(user),
        cwd="/", timeout=120, **run.popen_kwargs(user, 0o022))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _wheel(workdir: Path, name: str) -> Path:
    """A wheel whose module says, when imported, that its source ran."""
    whl = make_wheel(workdir, name, files={f"{name}/__init__.py": b'print("the source ran")\n'})
    os.chmod(whl, 0o644)
    return whl


def _rooted_pycs(store: Path, uid: int) -> list[str | None]:
    """The pyc units the roots of ``uid``'s venvs hold, one per distribution."""
    return [d["pyc"] for f in (store / "roots").glob(f"{uid}-*/*.json") for d in json.loads(f.read_text())["dists"]]


def _install(run: Runner, user: str, store: Path, venv: Path, whl: Path, name: str) -> str:
    """Install ``name`` with per-file symlinks, the mode that links a tree's pyc unit beside its sources; return
    what importing it prints."""
    made = run(user, "--store", str(store), "venv", str(venv))
    assert made.returncode == 0, made.stderr
    done = run(user, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "symlink", "--no-index",
               "-f", str(whl.parent), name)
    assert done.returncode == 0, done.stderr
    imported = subprocess.run(
        [str(venv / "bin" / "python"), "-c", f"import {name}"], capture_output=True, text=True, env=run.env(user),
        cwd="/", timeout=60, **run.popen_kwargs(user, 0o022))
    assert imported.returncode == 0, imported.stderr
    return imported.stdout + done.stderr


def test_a_members_pyc_unit_for_anothers_tree_is_ignored_and_reported(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    whl = _wheel(workdir, "unitvictim")
    key = _key(whl)
    realized = run(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl))
    assert realized.returncode == 0, realized.stderr
    unit = _wheelstore_python(run, users.bob, PLANT_UNIT, str(group_store), key, 'print("bob\'s trojan ran")')
    assert (group_store / "manifests" / f"{unit}.json").stat().st_uid == users.uid(users.bob)

    out = _install(run, users.alice, group_store, workdir / "alice-venv", whl, "unitvictim")
    assert "the source ran" in out and "bob's trojan ran" not in out, out
    assert f"ignoring the bytecode of unitvictim 1.0 in trees/{unit}" in out and "published by wsbob" in out
    assert not any(os.path.realpath(p).startswith(str(group_store)) for p in
                   (workdir / "alice-venv").rglob("unitvictim/__pycache__/*")), "a pyc links into the store"

    assert _rooted_pycs(group_store, users.uid(users.alice)) == [None], "an ignored unit is kept from gc"

    checked = run(users.alice, "--store", str(group_store), "verify", "--json")
    assert checked.returncode == 1, checked.stderr
    (damage,) = json.loads(checked.stdout)["damaged"]
    assert (damage["key"], damage["unit"], damage["problem"]) == (unit, "bytecode", "untrusted")
    assert "published by wsbob, not by wsalice, who owns the tree and the store" in damage["detail"]


def test_the_tree_owners_own_unit_is_used(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """The control for the test above: the same unit, made the same way by the tree's owner, is used, since the
    owner could rewrite the tree itself anyway. So the plant is a working one, and only its publisher differs."""
    whl = _wheel(workdir, "unitown")
    realized = run(users.bob, "--store", str(group_store), "realize", "--no-compile", str(whl))
    assert realized.returncode == 0, realized.stderr
    unit = _wheelstore_python(run, users.bob, PLANT_UNIT, str(group_store), _key(whl), 'print("bob\'s own pyc ran")')
    out = _install(run, users.alice, group_store, workdir / "alice-venv", whl, "unitown")
    assert "bob's own pyc ran" in out and "the source ran" not in out and "ignoring" not in out, out
    assert _rooted_pycs(group_store, users.uid(users.alice)) == [unit]


def test_no_unit_is_published_for_anothers_tree(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """bob installs alice's tree: he would be trusted by nobody else, and his unit would take the key from alice,
    so he publishes none and his venv compiles its own pycs; alice's install then publishes the one everyone uses."""
    whl = _wheel(workdir, "unitnone")
    key = _key(whl)
    realized = run(users.alice, "--store", str(group_store), "realize", "--no-compile", str(whl))
    assert realized.returncode == 0, realized.stderr
    assert "the source ran" in _install(run, users.bob, group_store, workdir / "bob-venv", whl, "unitnone")
    assert [p.name for p in (group_store / "trees").iterdir() if p.name.startswith(key + "-")] == []
    assert "the source ran" in _install(run, users.alice, group_store, workdir / "alice-venv", whl, "unitnone")
    (unit,) = [p for p in (group_store / "trees").iterdir() if p.name.startswith(key + "-")]
    assert unit.stat().st_uid == users.uid(users.alice)


def test_a_members_interrupted_publish_is_not_adopted(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob plants the wheel's exact files, sealed, plus a trojan pyc, as if his publish had been killed before its
    manifest: alice's publish adopts none of it, and says whose it is and who may remove it."""
    whl = _wheel(workdir, "orphanvictim")
    orphan = group_store / "trees" / _key(whl)
    _wheelstore_python(run, users.bob, PLANT_ORPHAN, str(whl), str(orphan), 'print("bob\'s trojan ran")')
    before = published(group_store)
    done = run(users.alice, "--store", str(group_store), "realize", str(whl))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    *waits, line = done.stderr.strip().splitlines()  # it is recent: first its manifest is waited for, saying so
    assert [w for w in waits if not w.startswith("warning: waiting up to 10s for the manifest of trees/")] == []
    assert line.startswith("error: ") and "left unfinished by wsbob and is not adopted (it belongs to wsbob" in line
    assert f"rm -rf {orphan}" in line
    assert published(group_store) == before
    assert not (group_store / "manifests" / f"{_key(whl)}.json").exists()


def test_pycs_beside_an_orphan_are_never_adopted(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """Even in alice's own interrupted publish, a pyc she did not get from the wheel is not adopted: the orphan is
    moved aside and the wheel published afresh, without it."""
    whl = _wheel(workdir, "orphanown")
    orphan = group_store / "trees" / _key(whl)
    _wheelstore_python(run, users.alice, PLANT_ORPHAN, str(whl), str(orphan), 'print("a stale pyc ran")')
    done = run(users.alice, "--store", str(group_store), "realize", "--no-compile", "--json", str(whl))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["unpacked"] is True
    assert not (orphan / "orphanown" / "__pycache__").exists()
    assert list((group_store / "staging").glob(f"orphan-{_key(whl)}-*"))
    out = _install(run, users.alice, group_store, workdir / "alice-venv", whl, "orphanown")
    assert "the source ran" in out and "stale pyc" not in out, out


def test_the_store_owners_interrupted_publish_is_adopted(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """alice owns the store: her orphan of exactly the wheel's files is adopted by bob, and stays hers."""
    whl = _wheel(workdir, "orphanowner")
    key = _key(whl)
    _wheelstore_python(run, users.alice, PLANT_ORPHAN, str(whl), str(group_store / "trees" / key), "")
    done = run(users.bob, "--store", str(group_store), "realize", "--json", str(whl))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["unpacked"] is False
    manifest = json.loads((group_store / "manifests" / f"{key}.json").read_text())
    assert (manifest["owner_uid"], manifest["publisher_uid"]) == (users.uid(users.alice), users.uid(users.bob))
