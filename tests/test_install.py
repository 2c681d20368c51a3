"""Installing from the store into ordinary venvs: pip's semantics, every link mode, isolation between users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import (
    SYSTEM_PYTHON,
    Filesystems,
    Runner,
    Users,
    make_venv,
    one_line_error,
    published,
    snapshot,
)
from .wheelmaker import make_wheel

LOCAL_MODES = ("copy", "symlink", "hardlink")  # what ext4 offers; reflink is covered on XFS/btrfs in test_link


def _demo_wheels(d: Path) -> list[Path]:
    """A namespace package split over two wheels, plus .data scripts, headers and data, and an entry point."""
    first = make_wheel(
        d,
        "nsa",
        "1.0",
        files={
            "nsdemo/a/__init__.py": b"WHO = 'a'\n",
            "nsa-1.0.data/scripts/nsa-tool": b"#!python\nimport nsdemo.a\nprint('tool', nsdemo.a.WHO)\n",
            "nsa-1.0.data/headers/nsa.h": b"#define NSA 1\n",
            "nsa-1.0.data/data/share/nsa/readme.txt": b"data file\n",
            "nsa-1.0.dist-info/entry_points.txt": b"[console_scripts]\nnsa-hello = nsdemo.a.cli:main\n",
            "nsdemo/a/cli.py": b"def main():\n    print('hello from nsa')\n    return 0\n",
        },
    )
    second = make_wheel(d, "nsb", "2.0", files={"nsdemo/b/__init__.py": b"WHO = 'b'\n"})
    for w in (first, second):
        os.chmod(w, 0o644)
    return [first, second]


def _venv(path: Path, user: str | None = None) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    if user:
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_install_semantics_and_pip_compatibility(run: Runner, users: Users, workdir: Path, mode: str,
                                                 pip_wheel: Path) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = make_venv(workdir / "venv", pip_wheel, users.alice)
    wheels = _demo_wheels(workdir)
    result = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", mode, "--json",
                 *map(str, wheels))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {i["name"] for i in report["installed"]} == {"nsa", "nsb"}
    assert {i["link_mode"] for i in report["installed"]} == {mode}

    py = str(venv / "bin" / "python")
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the namespace package merges; the modules import
    out = subprocess.run([py, "-c", "import nsdemo.a, nsdemo.b; print(nsdemo.a.WHO + nsdemo.b.WHO)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ab", out.stderr
    # .data/scripts: a real file with the shebang rewritten to the venv's python
    tool = venv / "bin" / "nsa-tool"
    assert not tool.is_symlink() and tool.read_bytes().startswith(f"#!{venv}/bin/python\n".encode())
    assert subprocess.run([str(tool)], capture_output=True, text=True).stdout == "tool a\n"
    # console_scripts launcher
    hello = subprocess.run([str(venv / "bin" / "nsa-hello")], capture_output=True, text=True)
    assert hello.stdout == "hello from nsa\n"
    # headers and data
    assert (venv / "include/site/python3.11/nsa/nsa.h").read_bytes() == b"#define NSA 1\n"
    assert (venv / "share/nsa/readme.txt").read_bytes() == b"data file\n"
    # installer metadata
    dist_info = site / "nsa-1.0.dist-info"
    assert (dist_info / "INSTALLER").read_text() == "wheelstore\n"
    assert (dist_info / "REQUESTED").exists()
    direct = json.loads((dist_info / "direct_url.json").read_text())
    assert direct["url"] == wheels[0].as_uri()
    for name in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
        assert not (dist_info / name).is_symlink()
    if mode == "symlink":
        assert (site / "nsdemo/a/__init__.py").is_symlink()
    if mode == "hardlink":
        assert (site / "nsdemo/a/__init__.py").stat().st_nlink >= 2

    # pip treats it as its own
    pip_list = subprocess.run([py, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    assert {"nsa", "nsb"} <= {p["name"] for p in json.loads(pip_list.stdout)}, pip_list.stderr
    assert subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True).returncode == 0
    listed = run(users.alice, "list", "--venv", str(venv), "--json")
    assert {d["name"]: d["installer"] for d in json.loads(listed.stdout)}["nsa"] == "wheelstore"

    # pip uninstall removes exactly what was installed, and never touches the store
    before = published(store)
    gone = subprocess.run([py, "-m", "pip", "uninstall", "-y", "nsa"], capture_output=True, text=True)
    assert gone.returncode == 0, gone.stderr
    assert not tool.exists() and not (venv / "bin" / "nsa-hello").exists()
    assert not (site / "nsdemo" / "a").exists() and (site / "nsdemo" / "b" / "__init__.py").exists()
    assert not dist_info.exists()
    assert published(store) == before


def test_wheelstore_uninstall_and_reinstall(run: Runner, users: Users, workdir: Path) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    wheels = _demo_wheels(workdir)
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), *map(str, wheels)).returncode == 0
    before = published(store)
    site_files = {p for p in venv.rglob("*")}
    removed = run(users.alice, "uninstall", "--venv", str(venv), "nsa", "nsb")
    assert removed.returncode == 0, removed.stderr
    left = {p for p in venv.rglob("*")}
    assert not any("nsdemo" in str(p) or "nsa" in p.name or "nsb" in p.name for p in left)
    assert published(store) == before
    again = run(users.alice, "--store", str(store), "install", "--venv", str(venv), *map(str, wheels))
    assert again.returncode == 0, again.stderr
    assert {p for p in venv.rglob("*")} >= site_files - {p for p in site_files if "__pycache__" in str(p)}


def test_upgrade_and_sync(run: Runner, users: Users, workdir: Path, pip_wheel: Path) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = make_venv(workdir / "venv", pip_wheel, users.alice)
    links = workdir / "links"
    links.mkdir()
    for version, body in (("1.0", b"V = 1\n"), ("2.0", b"V = 2\n")):
        make_wheel(links, "upme", version, files={"upme/__init__.py": body, f"upme/only{version[0]}.py": b""})
    make_wheel(links, "extra", "1.0")
    for w in links.iterdir():
        os.chmod(w, 0o644)
    base = ("--store", str(store), "install", "--venv", str(venv), "-f", str(links))
    assert run(users.alice, *base, "upme==1.0", "extra==1.0").returncode == 0
    py = str(venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import upme; print(upme.V)"], capture_output=True, text=True).stdout == "1\n"
    up = run(users.alice, *base, "upme==2.0")
    assert up.returncode == 0, up.stderr
    assert subprocess.run([py, "-c", "import upme; print(upme.V)"], capture_output=True, text=True).stdout == "2\n"
    site = next(venv.glob("lib/python*/site-packages"))
    assert not (site / "upme/only1.py").exists() and (site / "upme/only2.py").exists()
    req = workdir / "req.txt"
    req.write_text("upme==1.0\n")
    req.chmod(0o644)
    synced = run(users.alice, "--store", str(store), "sync", "--venv", str(venv), "-f", str(links), "-r", str(req),
                 "--json")
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert {r["name"] for r in report["removed"]} == {"extra", "upme"}
    listed = {d["name"] for d in json.loads(run(users.alice, "list", "--venv", str(venv), "--json").stdout)}
    assert "extra" not in listed and "upme" in listed and "pip" in listed


ISOLATION = r"""
import os, subprocess, sys
target = sys.argv[1]
try:
    with open(target, "a") as f:
        f.write("# appended by bob\n")
    appended = "yes"
except OSError as e:
    appended = type(e).__name__
subprocess.run(["sed", "-i", "s/WHO = 'a'/WHO = 'bob'/", target], check=True)
print(appended)
"""


@pytest.mark.parametrize("mode", ["copy", "symlink", "auto"])
def test_one_users_edit_never_reaches_another(run: Runner, users: Users, workdir: Path, group_store: Path,
                                             mode: str) -> None:
    wheels = _demo_wheels(workdir)
    venvs = {u: _venv(workdir / f"venv-{u}", u) for u in (users.alice, users.bob)}
    for user, venv in venvs.items():
        done = run(user, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", mode,
                   *map(str, wheels))
        assert done.returncode == 0, done.stderr
    before_store = published(group_store)
    alice_site = next(venvs[users.alice].glob("lib/python*/site-packages"))
    bob_site = next(venvs[users.bob].glob("lib/python*/site-packages"))
    alice_before = (alice_site / "nsdemo/a/__init__.py").read_bytes()

    edited = run.python(users.bob, ISOLATION, str(bob_site / "nsdemo/a/__init__.py"))
    assert edited.returncode == 0, edited.stderr
    # bob's own venv sees his edit
    out = subprocess.run([str(venvs[users.bob] / "bin/python"), "-c", "import nsdemo.a; print(nsdemo.a.WHO)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "bob", out.stderr
    # alice's venv and the store are byte-identical
    assert (alice_site / "nsdemo/a/__init__.py").read_bytes() == alice_before
    assert published(group_store) == before_store


def test_hardlink_into_another_users_tree_is_refused(run: Runner, users: Users, workdir: Path,
                                                     group_store: Path) -> None:
    wheels = _demo_wheels(workdir)
    assert run(users.alice, "--store", str(group_store), "realize", *map(str, wheels)).returncode == 0
    venv = _venv(workdir / "venv", users.bob)
    before = {p: p.lstat().st_mode for p in venv.rglob("*")}
    line = one_line_error(run(users.bob, "--store", str(group_store), "install", "--venv", str(venv),
                              "--link-mode", "hardlink", *map(str, wheels)))
    assert "hardlink" in line
    assert {p: p.lstat().st_mode for p in venv.rglob("*")} == before


def test_unpinned_requirement_that_cannot_resolve(run: Runner, users: Users, workdir: Path) -> None:
    """Unpinned requirements go to uv; with nowhere to look it fails in one line naming the requirement."""
    venv = _venv(workdir / "venv", users.alice)
    before = snapshot(venv)
    line = one_line_error(run(users.alice, "install", "--venv", str(venv), "--no-index", "nosuchpkg-xyz>=2",
                              env={"PIP_CONFIG_FILE": os.devnull}))
    assert line.startswith("error: cannot resolve nosuchpkg-xyz>=2: ") and "nosuchpkg-xyz" in line, line
    assert snapshot(venv) == before


def _sticky_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir()
    d.chmod(0o1777)
    return d


@pytest.mark.parametrize("kind", ["xfs", "btrfs"])
def test_reflink_on_real_filesystems_isolates_users(run: Runner, users: Users, filesystems: Filesystems,
                                                   kind: str) -> None:
    """Store and venvs on a loop-mounted XFS or btrfs: auto picks reflink, and bob's edits stay his."""
    area = _sticky_dir(filesystems.root(kind), f"reflink-{os.getpid()}-{len(list(filesystems.root(kind).iterdir()))}")
    store = area / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    wheels = _demo_wheels(area)
    venvs = {u: _venv(area / f"venv-{u}", u) for u in (users.alice, users.bob)}
    for user, venv in venvs.items():
        done = run(user, "--store", str(store), "install", "--venv", str(venv), "--json", *map(str, wheels),
                   env={"XDG_CACHE_HOME": str(area / f"cache-{user}")})
        assert done.returncode == 0, done.stderr
        assert {i["link_mode"] for i in json.loads(done.stdout)["installed"]} == {"reflink"}
        assert "warning" not in done.stderr, done.stderr  # no fallback note
    before = published(store)
    bob_file = next(venvs[users.bob].glob("lib/python*/site-packages")) / "nsdemo/a/__init__.py"
    alice_file = next(venvs[users.alice].glob("lib/python*/site-packages")) / "nsdemo/a/__init__.py"
    assert bob_file.stat().st_ino != alice_file.stat().st_ino
    edited = run.python(users.bob, ISOLATION, str(bob_file))
    assert edited.returncode == 0 and edited.stdout.strip() == "yes", edited.stderr  # a private, writable copy
    assert b"appended by bob" in bob_file.read_bytes()
    assert alice_file.read_bytes() == b"WHO = 'a'\n"
    assert published(store) == before


def test_store_and_venv_on_different_filesystems(run: Runner, users: Users, filesystems: Filesystems,
                                                 workdir: Path) -> None:
    area = _sticky_dir(filesystems.xfs, f"xdev-{os.getpid()}")
    store = area / "store"
    assert run(users.alice, "init", str(store), "--group", users.group).returncode == 0
    wheels = _demo_wheels(workdir)
    venv = _venv(workdir / "venv", users.bob)  # on ext4
    env = {"XDG_CACHE_HOME": str(workdir / "cache-bob")}
    before = {p: p.lstat().st_mode for p in venv.rglob("*")}
    line = one_line_error(run(users.bob, "--store", str(store), "install", "--venv", str(venv), "--link-mode",
                              "reflink", *map(str, wheels), env=env))
    assert "reflink cannot be used" in line and "different filesystems" in line
    assert {p: p.lstat().st_mode for p in venv.rglob("*")} == before
    done = run(users.bob, "--store", str(store), "install", "--venv", str(venv), "--json", *map(str, wheels), env=env)
    assert done.returncode == 0, done.stderr
    assert {i["link_mode"] for i in json.loads(done.stdout)["installed"]} == {"fold"}  # symlinks, folded
    assert "reflink unavailable" in done.stderr and "different filesystems" in done.stderr
    out = subprocess.run([str(venv / "bin/nsa-hello")], capture_output=True, text=True)
    assert out.stdout == "hello from nsa\n", out.stderr


@pytest.mark.parametrize("mode", ["symlink", "hardlink"])
def test_edit_gives_private_copies_and_undo_restores_links(run: Runner, users: Users, workdir: Path,
                                                           mode: str) -> None:
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    wheels = _demo_wheels(workdir)
    venvs = [_venv(workdir / f"venv{i}", users.alice) for i in (1, 2)]
    for venv in venvs:
        done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", mode,
                   *map(str, wheels))
        assert done.returncode == 0, done.stderr
    before = published(store)
    target = next(venvs[0].glob("lib/python*/site-packages")) / "nsdemo/a/__init__.py"
    edited = run(users.alice, "--store", str(store), "edit", "--venv", str(venvs[0]), "nsa")
    assert edited.returncode == 0, edited.stderr
    assert "5 files are now private" in edited.stdout  # __init__.py, cli.py, METADATA, WHEEL, entry_points.txt
    assert not target.is_symlink() and target.stat().st_nlink == 1
    # a pdb-style edit: it takes effect in this venv on the next import, and nowhere else
    patch = run.python(users.alice, "import sys; open(sys.argv[1], 'a').write(\"print('debugging')\\n\")", str(target))
    assert patch.returncode == 0, patch.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for venv, expected in ((venvs[0], "debugging\n"), (venvs[1], "")):
        out = subprocess.run([str(venv / "bin/python"), "-c", "import nsdemo.a"], capture_output=True, text=True,
                             env=env)
        assert out.stdout == expected, out.stderr
    assert published(store) == before

    undone = run(users.alice, "--store", str(store), "edit", "--undo", "--venv", str(venvs[0]), "nsa")
    assert undone.returncode == 0, undone.stderr
    assert target.read_bytes() == b"WHO = 'a'\n"
    if mode == "symlink":
        assert target.is_symlink()
    else:
        assert target.stat().st_nlink > 1
    out = subprocess.run([str(venvs[0] / "bin/python"), "-c", "import nsdemo.a"], capture_output=True, text=True,
                         env=env)
    assert out.stdout == "", out.stderr
    assert published(store) == before


EXT_C = rb"""
#include <Python.h>
int helper_answer(void);
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(helper_answer()); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, methods};
PyMODINIT_FUNC PyInit__ext(void) { return PyModule_Create(&mod); }
"""


def _extension_wheel(d: Path) -> Path:
    """A compiled extension whose library sits in a bundled ``.libs`` directory, found through $ORIGIN, the way
    auditwheel lays wheels out."""
    build = d / "build"
    (build / "cext.libs").mkdir(parents=True)
    (build / "helper.c").write_text("int helper_answer(void) { return 42; }\n")
    (build / "ext.c").write_bytes(EXT_C)
    lib = build / "cext.libs" / "libhelper-1a2b3c.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(build / "helper.c")], check=True)
    include = subprocess.run([SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_paths()['include'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    suffix = subprocess.run([SYSTEM_PYTHON, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    ext = build / f"_ext{suffix}"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{include}", "-o", str(ext), str(build / "ext.c"), str(lib),
                    "-Wl,-rpath,$ORIGIN/../cext.libs"], check=True)
    whl = make_wheel(d, "cext", "1.0", tag="cp311-cp311-linux_x86_64", files={
        "cext/__init__.py": b"from ._ext import answer\n",
        f"cext/_ext{suffix}": ext.read_bytes(),
        f"cext.libs/{lib.name}": lib.read_bytes(),
    }, executable=(f"cext/_ext{suffix}", f"cext.libs/{lib.name}"))
    whl.chmod(0o644)
    return whl


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_compiled_extension_with_bundled_libs(run: Runner, users: Users, workdir: Path, mode: str) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    whl = _extension_wheel(workdir)
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", mode, str(whl))
    assert done.returncode == 0, done.stderr
    out = subprocess.run(["runuser", "-u", users.alice, "--", str(venv / "bin/python"), "-c",
                          "import cext; print(cext.answer())"], capture_output=True, text=True)
    assert out.stdout == "42\n", out.stderr


def test_uv_pip_list_sees_the_venv(run: Runner, users: Users, workdir: Path) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed (pip install -e '.[test]' brings it)")
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), *map(str, _demo_wheels(workdir)),
               "--link-mode", "symlink").returncode == 0
    listed = subprocess.run([uv, "pip", "list", "--format", "json", "--python", str(venv / "bin/python")],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert {"nsa", "nsb"} <= {p["name"] for p in json.loads(listed.stdout)}


def test_uninstall_never_leaves_the_venv(run: Runner, users: Users, workdir: Path) -> None:
    """A RECORD pointing outside the venv (at the store, or anywhere) removes nothing there, as with pip."""
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    outside = workdir / "outside" / "deep"
    outside.mkdir(parents=True)
    victim = outside / "victim.txt"
    victim.write_text("keep")
    site = next(venv.glob("lib/python*/site-packages"))
    dist_info = site / "evil-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (dist_info / "RECORD").write_text(f"{os.path.relpath(victim, site)},,\n{store / 'config.toml'},,\n"
                                      "evil-1.0.dist-info/METADATA,,\nevil-1.0.dist-info/RECORD,,\n")
    subprocess.run(["chown", "-R", users.alice, str(venv), str(workdir / "outside")], check=True)
    before = published(store)
    done = run(users.alice, "uninstall", "--venv", str(venv), "evil")
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "keep" and not dist_info.exists()
    assert published(store) == before


def test_script_shebangs_are_replaced_whole(run: Runner, users: Users, workdir: Path) -> None:
    whl = make_wheel(workdir, "shb", "1.0", files={
        "shb/__init__.py": b"",
        "shb-1.0.data/scripts/shb-three": b"#!python3 -u\nprint('three')\n",
        "shb-1.0.data/scripts/shb-sh": b"#!/bin/sh\necho shell\n",
    })
    whl.chmod(0o644)
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), str(whl)).returncode == 0
    three = venv / "bin" / "shb-three"
    assert three.read_bytes() == f"#!{venv}/bin/python\nprint('three')\n".encode()
    assert subprocess.run([str(three)], capture_output=True, text=True).stdout == "three\n"
    assert (venv / "bin" / "shb-sh").read_bytes() == b"#!/bin/sh\necho shell\n"


def test_edit_undo_uses_the_store_it_came_from(run: Runner, users: Users, workdir: Path) -> None:
    stores = [workdir / "mine", workdir / "other"]
    assert run(users.alice, "init", str(stores[0])).returncode == 0
    assert run(users.alice, "init", str(stores[1]), "--group", users.group, "--shared", "all").returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    wheels = _demo_wheels(workdir)
    assert run(users.alice, "--store", str(stores[0]), "install", "--venv", str(venv), "--link-mode", "hardlink",
               *map(str, wheels)).returncode == 0
    assert run(users.alice, "--store", str(stores[1]), "realize", *map(str, wheels)).returncode == 0
    assert run(users.alice, "--store", str(stores[0]), "edit", "--venv", str(venv), "nsa").returncode == 0
    line = one_line_error(run(users.alice, "--store", str(stores[1]), "edit", "--undo", "--venv", str(venv), "nsa"))
    assert f"came from the store at {stores[0]}" in line and f"--store {stores[0]}" in line


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_bytecode_compiled_once_per_store_and_used(run: Runner, users: Users, workdir: Path,
                                                  group_store: Path, mode: str) -> None:
    wheels = _demo_wheels(workdir)
    venvs = {u: _venv(workdir / f"venv-{u}", u) for u in (users.alice, users.bob)}
    for user, venv in venvs.items():
        done = run(user, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode", mode,
                   *map(str, wheels))
        assert done.returncode == 0, done.stderr
    units = sorted(p.name for p in (group_store / "trees").iterdir() if p.name.endswith("-cpython-311"))
    assert len(units) == 2  # one per tree, compiled by the first installer, reused by the second
    assert all((group_store / "trees" / u).stat().st_uid == users.uid(users.alice) for u in units)
    site = next(venvs[users.bob].glob("lib/python*/site-packages"))
    pyc = site / "nsdemo/a/__pycache__/__init__.cpython-311.pyc"
    assert pyc.exists() and (pyc.is_symlink() if mode == "symlink" else pyc.stat().st_nlink == 1)
    record = (site / "nsa-1.0.dist-info/RECORD").read_text()
    assert "nsdemo/a/__pycache__/__init__.cpython-311.pyc,sha256=" in record
    # importing with bytecode writing on finds the store's pycs valid: nothing new is written into the venv
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    before = {p: p.lstat().st_mtime_ns for p in site.rglob("*.pyc")}
    out = subprocess.run(["runuser", "-u", users.bob, "--", str(venvs[users.bob] / "bin/python"), "-c",
                          "import nsdemo.a, nsdemo.b, nsdemo.a.cli; print('ok')"], capture_output=True, text=True,
                         env=env)
    assert out.stdout == "ok\n", out.stderr
    assert {p: p.lstat().st_mtime_ns for p in site.rglob("*.pyc")} == before
    # and pip uninstall takes the pycs with it
    assert run(users.bob, "uninstall", "--venv", str(venvs[users.bob]), "nsa").returncode == 0
    assert not (site / "nsdemo/a").exists()


def test_failed_upgrade_puts_the_old_version_back(run: Runner, users: Users, workdir: Path) -> None:
    """The old version's files are stashed, not deleted, until the new version is in: an upgrade that fails half-way
    leaves the venv exactly as it was."""
    wheels = workdir / "wheels"
    wheels.mkdir(mode=0o755)
    old = make_wheel(wheels, "updemo", "1.0", files={"updemo/__init__.py": b"V = '1.0'\n"})
    new = make_wheel(wheels, "updemo", "2.0", files={"updemo/__init__.py": b"V = '2.0'\n",
                                                      "updemo/extra.py": b"X = 1\n"})
    for w in (old, new):
        w.chmod(0o644)
    store, venv = workdir / "store", _venv(workdir / "venv", users.alice)
    assert run(users.alice, "init", str(store)).returncode == 0
    # hardlink: per-file links, so a real updemo/ directory the blocker can go into (auto would fold it)
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "hardlink",
               str(old)).returncode == 0
    (site,) = venv.glob("lib/python3*/site-packages")
    blocker = site / "updemo" / "extra.py"  # a directory where 2.0 puts a file: its install fails half-way
    made = run.python(users.alice, "import os, sys; os.makedirs(sys.argv[1]); open(sys.argv[1] + '/keep', 'w')",
                      str(blocker))
    assert made.returncode == 0, made.stderr
    before = snapshot(venv)
    failed = run(users.alice, "--store", str(store), "install", "--venv", str(venv), str(new))
    assert failed.returncode == 1 and "extra.py is a directory" in failed.stderr, failed.stderr
    assert snapshot(venv) == before  # 1.0's files, RECORD and pycs are back, and no stash is left
    done = subprocess.run(["runuser", "-u", users.alice, "--", str(venv / "bin/python"), "-c",
                           "import updemo; print(updemo.V)"], capture_output=True, text=True)
    assert done.stdout.strip() == "1.0", done.stderr
    run.python(users.alice, "import shutil, sys; shutil.rmtree(sys.argv[1])", str(blocker))
    upgraded = run(users.alice, "--store", str(store), "install", "--venv", str(venv), str(new))
    assert upgraded.returncode == 0, upgraded.stderr
    assert not list(venv.glob(".wheelstore-stash-*"))


def test_name_and_version_come_from_the_header_block_only() -> None:
    from email.parser import HeaderParser

    from wheelstore.base.distinfo import name_and_version

    metadata = ("Metadata-Version: 2.4\nname: Foo_Bar\nSummary: a summary\n  continued: Version: 9\n"
                "VERSION:  1.2.post3 \nDescription-Content-Type: text/markdown\n\nName: not-this\nVersion: 0\n")
    assert name_and_version(metadata) == ("Foo_Bar", "1.2.post3")
    email = HeaderParser().parsestr(metadata)
    assert (email["Name"], email["Version"].strip()) == name_and_version(metadata)
    assert name_and_version("Metadata-Version: 2.1\nSummary: x\n\nName: body\nVersion: 1\n") == (None, None)


def test_record_hashes_in_one_batch_match_one_by_one() -> None:
    import hashlib

    from wheelstore.base.distinfo import record_hash
    from wheelstore.venv.prepared import record_hashes

    datas = [os.urandom(n) for n in range(0, 300, 7)]
    assert record_hashes([hashlib.sha256(d).hexdigest() for d in datas]) == [record_hash(d) for d in datas]
    assert record_hashes([]) == []


def test_edit_after_sed_keeps_the_edit_and_makes_it_writable(run: Runner, users: Users, workdir: Path) -> None:
    """``sed -i`` on a symlinked file leaves a private file with the store file's read-only mode: ``edit`` makes it
    writable too (it is this venv's already) and keeps what sed wrote."""
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    venv = _venv(workdir / "venv", users.alice)
    done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "symlink",
               *map(str, _demo_wheels(workdir)))
    assert done.returncode == 0, done.stderr
    target = next(venv.glob("lib/python*/site-packages")) / "nsdemo/a/__init__.py"
    sed = subprocess.run(["runuser", "-u", users.alice, "--", "sed", "-i", "$a X = 1", str(target)],
                         capture_output=True, text=True)
    assert sed.returncode == 0 and not target.is_symlink() and not target.stat().st_mode & 0o200, sed.stderr
    edited = run(users.alice, "--store", str(store), "edit", "--venv", str(venv), "nsa")
    assert edited.returncode == 0, edited.stderr
    assert target.stat().st_mode & 0o200 and target.read_bytes() == b"WHO = 'a'\nX = 1\n"
    append = run.python(users.alice, "import sys; open(sys.argv[1], 'a').write('Y = 2\\n')", str(target))
    assert append.returncode == 0, append.stderr


def test_name_and_version_are_found_past_a_long_metadata_head(tmp_path: Path) -> None:
    """METADATA is read by its head first; headers that start only after it, or a Version line the head cuts in
    two, are still read whole."""
    from wheelstore.base.distinfo import _METADATA_HEAD, describe

    for filler in (b"X-Long: " + b"x" * (_METADATA_HEAD + 10) + b"\n",
                   b"X-Pad: " + b"x" * (_METADATA_HEAD - 20) + b"\n"):
        dist_info = tmp_path / f"d{len(filler)}" / "demo-1.2.3.dist-info"
        dist_info.mkdir(parents=True)
        (dist_info / "METADATA").write_bytes(b"Metadata-Version: 2.1\n" + filler
                                             + b"Name: Demo\nVersion: 1.2.3\n\nbody\n")
        found = describe(dist_info)
        assert found is not None and (found.display_name, found.version) == ("Demo", "1.2.3")
