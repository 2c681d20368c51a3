"""Fold mode: whole directories symlinked into the store where only one tree fills them, real where they must be."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from wheelstore.base.errors import LinkModeError
from wheelstore.store.elf import elf_rpaths
from wheelstore.store.store import Store, Tree
from wheelstore.venv.fold import view
from wheelstore.venv.link import LinkMode
from wheelstore.venv.linkmode import Probe, choose

from .conftest import SET36, SYSTEM_PYTHON, Runner, Users, make_venv, one_line_error
from .test_benchset import IMPORTS
from .wheelmaker import make_wheel

#: PYTHONDONTWRITEBYTECODE is set in these machines' shells; the pyc checks need writing on
BYTECODE_ON = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wheels(d: Path) -> dict[str, Path]:
    made = {
        "plain": make_wheel(d, "plain", files={
            "plain/__init__.py": b"VALUE = 1\n",
            "plain/sub/mod.py": b"X = 2\n",
            "plain/data/x.txt": b"hi\n",
        }),
        "nsa": make_wheel(d, "nsa", files={"nsdemo/a/__init__.py": b"WHO = 'a'\n", "nsdemo/a/deep/m.py": b"M = 1\n"}),
        "nsb": make_wheel(d, "nsb", files={"nsdemo/b/__init__.py": b"WHO = 'b'\n"}),
        # a regular package another distribution (nsb) later adds a subpackage to
        "nsr": make_wheel(d, "nsr", files={"nsdemo/__init__.py": b"", "nsdemo/a/__init__.py": b"WHO = 'a'\n",
                                           "nsdemo/a/deep/m.py": b"M = 1\n"}),
    }
    for w in made.values():
        w.chmod(0o644)
    return made


def _snap(path: Path) -> dict[str, tuple[object, ...]]:
    """Type, mode, owner, inode, mtime and content of everything under ``path``: byte- and inode-identical."""
    out: dict[str, tuple[object, ...]] = {}
    for p in [path, *sorted(path.rglob("*"))]:
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else None
        link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
        out[str(p.relative_to(path))] = (st.st_mode, st.st_uid, st.st_ino, st.st_mtime_ns, digest, link)
    return out


def _published(store: Path) -> dict[str, dict[str, tuple[object, ...]]]:
    """The store's published content (trees and manifests; gc roots and locks change with every install)."""
    return {area: _snap(store / area) for area in ("trees", "manifests")}


def _site(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def _venv(run: Runner, user: str | None, path: Path) -> Path:
    done = run(user, "venv", str(path), "--python", SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr
    return path


def _install(run: Runner, user: str | None, store: Path, venv: Path, *items: str) -> dict[str, object]:
    done = run(user, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "fold", "--json", *items)
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def _py(venv: Path, user: str | None, code: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(venv / "bin/python"), "-c", code]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=BYTECODE_ON, cwd="/")


def test_plain_package_folds_to_one_symlink_with_store_pycs(run: Runner, users: Users, workdir: Path) -> None:
    store, wheels = workdir / "store", _wheels(workdir)
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(run, users.alice, workdir / "venv")
    report = _install(run, users.alice, store, venv, str(wheels["plain"]))
    assert report["installed"] == [{"name": "plain", "version": "1.0", "link_mode": "fold"}]
    site = _site(venv)
    (tree,) = [t for t in (store / "trees").iterdir()]
    assert (site / "plain").is_symlink() and os.readlink(site / "plain") == str(tree / "plain")
    assert (tree / "plain/sub/__pycache__/mod.cpython-311.pyc").is_file()  # compiled into the tree, published with it
    manifest = json.loads((store / "manifests" / f"{tree.name}.json").read_text())
    assert manifest["bytecode"] == "cpython-311" and "plain/__pycache__/__init__.cpython-311.pyc" in manifest["files"]
    assert not [p for p in (store / "trees").iterdir() if p.name.endswith("-cpython-311")]  # no separate unit
    rows = [r.split(",")[0] for r in (site / "plain-1.0.dist-info/RECORD").read_text().splitlines()]
    assert rows.index("plain") < rows.index("plain/__init__.py")  # the link's row first: row-wise removers stop there
    assert "plain/sub/__pycache__/mod.cpython-311.pyc" in rows
    # one entry for the whole package: the venv holds the dist-info and one symlink, nothing else of plain's
    assert sorted(p.name for p in site.iterdir()) == ["plain", "plain-1.0.dist-info"]
    # the first import uses the store's pycs: nothing is written, neither into the store nor the venv
    before_store, before_venv = _published(store), _snap(venv)
    out = _py(venv, users.alice, "import plain, plain.sub.mod; print(plain.VALUE + plain.sub.mod.X)")
    assert out.stdout == "3\n", out.stderr
    assert _published(store) == before_store and _snap(venv) == before_venv


def test_a_store_filled_by_realize_folds(run: Runner, users: Users, workdir: Path) -> None:
    """``realize`` compiles bytecode into the trees as installs do (for the Python running wheelstore, unless told
    otherwise), so fold installs from a store filled by it fold whole packages; ``--no-compile`` leaves pycs out."""
    store, wheels = workdir / "store", _wheels(workdir)
    assert run(users.alice, "init", str(store)).returncode == 0
    done = run(users.alice, "--store", str(store), "realize", "--json", str(wheels["plain"]))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((store / "manifests" / f"{json.loads(done.stdout)[0]['key']}.json").read_text())
    assert manifest["bytecode"] == "cpython-311" and "plain/__pycache__/__init__.cpython-311.pyc" in manifest["files"]
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, store, venv, str(wheels["plain"]))
    assert (_site(venv) / "plain").is_symlink()
    bare = run(users.alice, "--store", str(store), "realize", "--no-compile", "--json", str(wheels["nsb"]))
    assert bare.returncode == 0, bare.stderr
    assert "bytecode" not in json.loads((store / "manifests" / f"{json.loads(bare.stdout)[0]['key']}.json").read_text())
    before = _published(store)
    wrong = run(users.alice, "--store", str(store), "realize", "--python", "/nonexistent/python", str(wheels["nsa"]))
    assert wrong.returncode != 0 and "/nonexistent/python" in one_line_error(wrong)
    assert _published(store) == before


def test_namespace_split_over_two_wheels_stays_real(run: Runner, users: Users, workdir: Path) -> None:
    store, wheels = workdir / "store", _wheels(workdir)
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, store, venv, str(wheels["nsa"]), str(wheels["nsb"]))
    site = _site(venv)
    ns = site / "nsdemo"
    assert ns.is_dir() and not ns.is_symlink()  # where two distributions meet, the directory is real
    # below a shared directory, each side is real too (pip would otherwise take a bare link with the other's
    # uninstall, see fold.py), and folds start one level down
    for side in ("a", "b"):
        assert (ns / side).is_dir() and not (ns / side).is_symlink()
        assert (ns / side / "__init__.py").is_symlink()
    assert (ns / "a/deep").is_symlink()
    out = _py(venv, users.alice, "import nsdemo.a, nsdemo.b, nsdemo.a.deep.m; print(nsdemo.a.WHO + nsdemo.b.WHO)")
    assert out.stdout == "ab\n", out.stderr


def test_second_wheel_later_unfolds_the_first_and_pip_keeps_it(run: Runner, users: Users, workdir: Path,
                                                                 pip_wheel: Path) -> None:
    store, wheels = workdir / "store", _wheels(workdir)
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = make_venv(workdir / "venv", pip_wheel, users.alice)
    _install(run, users.alice, store, venv, str(wheels["nsr"]))
    site = _site(venv)
    assert (site / "nsdemo").is_symlink()  # alone, the (regular) package folds whole
    _install(run, users.alice, store, venv, str(wheels["nsb"]))
    assert not (site / "nsdemo").is_symlink() and (site / "nsdemo/__init__.py").is_symlink()
    assert (site / "nsdemo/a").is_symlink()  # unfolded only as far as needed (anchored by nsdemo/__init__.py)
    rows = [r.split(",")[0] for r in (site / "nsr-1.0.dist-info/RECORD").read_text().splitlines()]
    assert "nsdemo" not in rows and "nsdemo/a" in rows  # the owner's RECORD follows its links
    assert rows.index("nsdemo/a") < rows.index("nsdemo/a/deep/m.py")
    out = _py(venv, users.alice, "import nsdemo.a.deep.m, nsdemo.b; print('ok')")
    assert out.stdout == "ok\n", out.stderr
    # current pip removes nsr's links and files, never nsb's, and nothing in the store
    before = _published(store)
    done = subprocess.run(["runuser", "-u", users.alice, "--", str(venv / "bin/python"), "-m", "pip", "uninstall",
                           "-y", "nsr"], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    assert _published(store) == before
    assert not (site / "nsdemo/a").exists() and (site / "nsdemo/b/__init__.py").exists()
    out = _py(venv, users.alice, "import nsdemo.b; print(nsdemo.b.WHO)")
    assert out.stdout == "b\n", out.stderr


# -- ELF RPATHs ------------------------------------------------------------------------------------------------------


def _gcc(d: Path, name: str, source: str, *flags: str) -> bytes:
    (d / f"{name}.c").write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(d / f"lib{name}.so"), str(d / f"{name}.c"), *flags],
                   check=True, capture_output=True)
    return (d / f"lib{name}.so").read_bytes()


@pytest.fixture
def elf_wheels(workdir: Path) -> dict[str, Path]:
    """``userpkg``'s library needs ``other``'s through ``$ORIGIN/../../other/lib`` (another wheel);
    ``selfpkg``'s needs ``selfpkg.libs`` through ``$ORIGIN/../../selfpkg.libs`` (its own tree, like numpy)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    build = workdir / "build"
    build.mkdir()
    other = _gcc(build, "other", "int other(void) { return 42; }\n")
    user = _gcc(build, "user", "int other(void);\nint user(void) { return other() + 1; }\n",
                f"-L{build}", "-lother", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../../other/lib")
    dep = _gcc(build, "dep", "int dep(void) { return 7; }\n")
    own = _gcc(build, "own", "int dep(void);\nint own(void) { return dep() + 1; }\n",
               f"-L{build}", "-ldep", "-Wl,--disable-new-dtags,-rpath,$ORIGIN/../../selfpkg.libs")
    made = {
        "other": make_wheel(workdir, "other", files={"other/__init__.py": b"", "other/lib/libother.so": other}),
        "userpkg": make_wheel(workdir, "userpkg", files={"userpkg/__init__.py": b"",
                                                         "userpkg/lib/libuser.so": user,
                                                         "userpkg/data/x.txt": b"x\n"}),
        "selfpkg": make_wheel(workdir, "selfpkg", files={"selfpkg/__init__.py": b"",
                                                         "selfpkg/core/__init__.py": b"",
                                                         "selfpkg/core/libown.so": own,
                                                         "selfpkg.libs/libdep.so": dep}),
    }
    for w in made.values():
        w.chmod(0o644)
    return made


def test_elf_rpaths_are_read_like_readelf(elf_wheels: dict[str, Path], workdir: Path) -> None:
    for lib, dtag in (("user", "RUNPATH"), ("own", "RPATH"), ("other", None)):
        path = workdir / "build" / f"lib{lib}.so"
        shown = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
        expected = re.findall(r"Library (?:rpath|runpath): \[(.*)\]", shown)
        assert (dtag is None) == (not expected)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert elf_rpaths(fd) == [e for x in expected for e in x.split(":")]
        finally:
            os.close(fd)
    fd = os.open(workdir / "build" / "user.c", os.O_RDONLY)
    try:
        assert elf_rpaths(fd) is None
    finally:
        os.close(fd)


def test_elf_reaching_into_another_wheel_is_not_folded_along_its_path(run: Runner, users: Users, workdir: Path,
                                                                      elf_wheels: dict[str, Path]) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(run, users.alice, workdir / "venv")
    _install(run, users.alice, store, venv, *map(str, elf_wheels.values()))
    site = _site(venv)
    for real in ("userpkg", "userpkg/lib"):
        assert (site / real).is_dir() and not (site / real).is_symlink(), real
    assert (site / "userpkg/lib/libuser.so").is_symlink()  # a file link in a real directory is fine
    assert (site / "userpkg/data").is_symlink()  # off the library's path, folding goes on
    for folded in ("other", "selfpkg", "selfpkg.libs"):  # the RPATH inside its own tree resolves in the store
        assert (site / folded).is_symlink(), folded
    code = ("import ctypes, os, sys, userpkg, selfpkg; d = os.path.dirname; "
            "print(ctypes.CDLL(d(userpkg.__file__) + '/lib/libuser.so').user(), "
            "ctypes.CDLL(d(selfpkg.__file__) + '/core/libown.so').own())")
    out = _py(venv, users.alice, code)
    assert out.stdout == "43 8\n", out.stderr
    # the RPATHs were recorded when the trees were published, and folding from them plans what reading the
    # libraries plans (what it does for trees whose manifests predate the record)
    opened = Store.open(store)
    keys = {name: hashlib.sha256(w.read_bytes()).hexdigest() for name, w in elf_wheels.items()}
    trees = {name: opened.lookup(key) for name, key in keys.items()}
    assert {name: t.manifest.rpaths for name, t in trees.items() if t} == {
        "other": {}, "userpkg": {"userpkg/lib/libuser.so": ["$ORIGIN/../../other/lib"]},
        "selfpkg": {"selfpkg/core/libown.so": ["$ORIGIN/../../selfpkg.libs"]}}
    sites = {"": str(site)}
    for tree in trees.values():
        assert tree is not None
        old = Tree(tree.key, tree.path, tree.manifest._replace(rpaths=None))
        assert view(tree, sites, "x.data", "cpython-311") == view(old, sites, "x.data", "cpython-311")
    user = trees["userpkg"]
    assert user is not None
    unaware = Tree(user.key, user.path, user.manifest._replace(rpaths={}))
    assert (view(user, sites, "x.data", None).blocked - view(unaware, sites, "x.data", None).blocked
            == {f"{site}/userpkg", f"{site}/userpkg/lib"})
    # the trap this avoids: with userpkg folded, $ORIGIN/../.. climbs inside the store and libother is not found
    trap = workdir / "trap"
    trap.mkdir()
    for name in ("userpkg", "other"):
        (trap / name).symlink_to(os.readlink(site / "other") if name == "other" else
                                 os.readlink(site / "userpkg/lib/libuser.so").rsplit("/lib/", 1)[0])
    out = subprocess.run([SYSTEM_PYTHON, "-c", f"import ctypes; ctypes.CDLL('{trap}/userpkg/lib/libuser.so')"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "libother.so" in out.stderr


# -- other users, pip, uninstall, edit ---------------------------------------------------------------------------------


def test_bob_cannot_write_through_folds_and_every_removal_leaves_the_store(
        run: Runner, users: Users, workdir: Path, group_store: Path, pip_wheel: Path) -> None:
    wheels = _wheels(workdir)
    items = [str(wheels["plain"]), str(wheels["nsr"])]
    alice_venv = _venv(run, users.alice, workdir / "alice")
    _install(run, users.alice, group_store, alice_venv, *items)  # alice publishes the trees, pycs inside
    bob_venv = make_venv(workdir / "bob", pip_wheel, users.bob)
    _install(run, users.bob, group_store, bob_venv, *items)
    site = _site(bob_venv)
    assert (site / "plain").is_symlink() and (site / "nsdemo").is_symlink()
    store_before, alice_before = _published(group_store), _snap(alice_venv)

    attempts = {
        "append": f"open({str(site / 'plain/__init__.py')!r}, 'a').write('VALUE = 666\\n')",
        "create": f"open({str(site / 'plain/new.py')!r}, 'x').write('x')",
        "pyc": f"open({str(site / 'plain/__pycache__/evil.cpython-311.pyc')!r}, 'x').write('x')",
    }
    for what, code in attempts.items():
        tried = run.python(users.bob, code)
        assert tried.returncode != 0 and "PermissionError" in tried.stderr, what
    out = _py(bob_venv, users.bob, "import plain.sub.mod, nsdemo.a.deep.m; print(plain.VALUE)")
    assert out.stdout == "1\n", out.stderr
    assert _published(group_store) == store_before and _snap(alice_venv) == alice_before

    def pip_uninstall(name: str) -> None:
        done = subprocess.run(["runuser", "-u", users.bob, "--", str(bob_venv / "bin/python"), "-m", "pip",
                               "uninstall", "-y", name], capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, done.stderr

    pip_uninstall("plain")  # current pip removes the link, not the store's files
    assert not os.path.lexists(site / "plain") and not (site / "plain-1.0.dist-info").exists()
    _install(run, users.bob, group_store, bob_venv, str(wheels["plain"]))
    assert run(users.bob, "uninstall", "--venv", str(bob_venv), "plain", "nsr").returncode == 0
    assert not os.path.lexists(site / "plain") and not os.path.lexists(site / "nsdemo")
    assert _published(group_store) == store_before and _snap(alice_venv) == alice_before

    # edit: private, writable copies (pycs still valid) where the fold was; --undo folds it again
    _install(run, users.bob, group_store, bob_venv, str(wheels["plain"]))
    assert run(users.bob, "--store", str(group_store), "edit", "--venv", str(bob_venv), "plain").returncode == 0
    assert (site / "plain").is_dir() and not (site / "plain").is_symlink()
    rows = [r.split(",")[0] for r in (site / "plain-1.0.dist-info/RECORD").read_text().splitlines()]
    assert "plain" not in rows and "plain/__pycache__/__init__.cpython-311.pyc" in rows  # no longer one entry
    edited = run.python(users.bob, f"open({str(site / 'plain/__init__.py')!r}, 'a').write('VALUE = 2\\n')")
    assert edited.returncode == 0, edited.stderr
    assert _py(bob_venv, users.bob, "import plain; print(plain.VALUE)").stdout == "2\n"
    assert _py(alice_venv, users.alice, "import plain; print(plain.VALUE)").stdout == "1\n"
    assert _published(group_store) == store_before
    done = run(users.bob, "--store", str(group_store), "edit", "--undo", "--venv", str(bob_venv), "plain")
    assert done.returncode == 0, done.stderr
    assert os.readlink(site / "plain") == os.readlink(_site(alice_venv) / "plain")
    rows = [r.split(",")[0] for r in (site / "plain-1.0.dist-info/RECORD").read_text().splitlines()]
    assert rows.index("plain") < rows.index("plain/__init__.py")
    assert _py(bob_venv, users.bob, "import plain; print(plain.VALUE)").stdout == "1\n"
    pip_uninstall("plain")
    assert _published(group_store) == store_before and _snap(alice_venv) == alice_before


def test_root_folds_only_from_its_own_private_store(run: Runner, users: Users, workdir: Path, group_store: Path,
                                                    pip_wheel: Path) -> None:
    wheels = _wheels(workdir)
    assert run(users.alice, "--store", str(group_store), "realize", str(wheels["plain"])).returncode == 0
    venv = make_venv(workdir / "venv", pip_wheel)
    line = one_line_error(run(None, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode",
                              "fold", str(wheels["plain"])))
    assert "root ignores the store's read-only modes" in line and "--link-mode" in line
    assert not (_site(venv) / "plain").exists()
    # its own private store: root's pip uninstall removes the link and leaves the store as it was
    store = workdir / "rootstore"
    assert run(None, "init", str(store)).returncode == 0
    _install(run, None, store, venv, str(wheels["plain"]), str(wheels["nsr"]))
    before = _published(store)
    done = subprocess.run([str(venv / "bin/python"), "-m", "pip", "uninstall", "-y", "plain", "nsr"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _published(store) == before
    assert not os.path.lexists(_site(venv) / "plain") and not os.path.lexists(_site(venv) / "nsdemo")


def test_auto_folds_only_where_fold_is_allowed_and_root_only_its_own_private_trees() -> None:
    if os.geteuid() != 0:
        pytest.skip("the root rule needs root")
    probe = Probe(reflink=False, hardlink=True, same_device=True, reasons={"reflink": "not supported"})
    assert choose(None, probe, tree_owner_uid=0, shared=False)[0] is LinkMode.FOLD
    assert choose(None, probe, tree_owner_uid=0, shared=True)[0] is LinkMode.COPY  # root links none of these
    assert choose(None, probe, tree_owner_uid=1001, shared=False)[0] is LinkMode.COPY
    assert choose(LinkMode.FOLD, probe, tree_owner_uid=0, shared=False) == (LinkMode.FOLD, None)
    for owner, shared in ((1001, False), (0, True)):
        with pytest.raises(LinkModeError, match="root ignores"):
            choose(LinkMode.FOLD, probe, tree_owner_uid=owner, shared=shared)
    no_symlinks = Probe(False, False, True, {"reflink": "x", "hardlink": "y", "symlink": "symlinks fail here"})
    with pytest.raises(LinkModeError, match="symlinks fail here"):
        choose(LinkMode.FOLD, no_symlinks, tree_owner_uid=0, shared=False)


# -- the benchmark set ------------------------------------------------------------------------------------------------


@pytest.mark.network
def test_benchmark_set_folds_imports_and_costs_few_inodes(run: Runner, users: Users, workdir: Path,
                                                           set36_wheels: Path) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    req = workdir / "set36.txt"
    req.write_text(SET36.read_text())
    req.chmod(0o644)
    venvs = {mode: _venv(run, users.alice, workdir / mode) for mode in ("fold", "symlink")}
    for mode, venv in venvs.items():  # fold first: it publishes the trees, with their pycs inside
        done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", mode, "-r",
                   str(req), "-f", str(set36_wheels), timeout=900)
        assert done.returncode == 0, done.stderr
    before_store, before_venv = _published(store), _snap(venvs["fold"])
    out = subprocess.run(["runuser", "-u", users.alice, "--", str(venvs["fold"] / "bin/python"), "-c", IMPORTS],
                         capture_output=True, text=True, timeout=300, cwd="/",
                         env={**BYTECODE_ON, "MPLBACKEND": "Agg", "HOME": f"/home/{users.alice}"})
    assert out.stdout.strip() == "ok", out.stderr
    assert _published(store) == before_store and _snap(venvs["fold"]) == before_venv  # the store's pycs served
    flask = subprocess.run([str(venvs["fold"] / "bin/flask"), "--version"], capture_output=True, text=True)
    assert flask.returncode == 0 and "Flask" in flask.stdout, flask.stderr
    inodes = {mode: sum(1 for _ in venv.rglob("*")) for mode, venv in venvs.items()}
    assert inodes["fold"] * 20 < inodes["symlink"], inodes  # measured: about 500 against about 17,000


def test_manifest_keeps_rpaths_and_refuses_malformed_ones() -> None:
    from wheelstore.store.manifest import FileEntry, Manifest

    m = Manifest("a" * 64, "w-1-py3-none-any.whl", "w", "1", "w-1.dist-info", True, 0, "root", 0, "now",
                 files={"w/lib.so": FileEntry(1, "0" * 64, 0o444, 1, 2)}, dirs=["w"],
                 rpaths={"w/lib.so": ["$ORIGIN/../x"]})
    again = Manifest.from_json(m.to_json())
    assert again == m and again.rpaths == {"w/lib.so": ["$ORIGIN/../x"]}
    old = json.loads(m.to_json())
    del old["rpaths"]
    assert Manifest.from_json(json.dumps(old).encode()).rpaths is None  # written before rpaths were recorded
    for bad in ({"w/lib.so": "$ORIGIN"}, ["x"], {"w/lib.so": [1]}):
        with pytest.raises(ValueError):
            Manifest.from_json(json.dumps({**old, "rpaths": bad}).encode())
