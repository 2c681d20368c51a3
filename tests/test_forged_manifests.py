"""Issue 14, acceptance 1: a member who rewrites their own manifest cannot make anyone's install write outside the
venv, and ``verify`` names the forgery instead of crashing.

bob (a member) publishes a tree into alice's group store, then replaces HIS OWN manifest (he may: manifests/ is
sticky, but the entry is his) with a forged one, sealed 0444 like the real one. alice's install and root's, in every
link mode, are refused with one line and change nothing, outside the venv or in it; ``verify`` and ``verify --full``
flag it in one entry and exit non-zero. Below that, install_tree itself, handed a forged manifest or a venv whose
middle directory is a symlink, refuses before it creates anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wheelstore.base.errors import WheelstoreError
from wheelstore.base.interpreter import Interpreter
from wheelstore.store.publish import realize_wheel
from wheelstore.store.store import Store, Tree
from wheelstore.venv.install import install_tree
from wheelstore.venv.link import LinkMode

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel

MODES = ("fold", "symlink", "hardlink", "reflink", "copy")
DATA = "fg-1.0.data"
FILES = {
    "fg/__init__.py": b"V = 1\n",
    f"{DATA}/headers/fg.h": b"#define FG 1\n",
    f"{DATA}/data/share/fg.txt": b"data\n",
}


def _files(canary: Path) -> dict[str, bytes]:
    """FILES, and a member that installs at ``<venv>/<canary's path>/.profile``: harmless, until a second manifest
    entry names the same tree file as ``.data/data//<canary's path>/.profile``."""
    return {**FILES, f"{DATA}/data/{str(canary).lstrip('/')}/.profile": b"evil\n"}

#: bob's part: replace his own manifest entry with the forged bytes, sealed read-only like the real one
REPLACE = r"""
import os, sys
path, forged = sys.argv[1], open(sys.argv[2], "rb").read()
os.unlink(path)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
os.write(fd, forged)
os.close(fd)
"""


def _climb(target: Path) -> str:
    """A relative path that climbs from anywhere in a venv up to the root and down to ``target``."""
    return "../" * 30 + str(target).lstrip("/")


def _name(doc: dict[str, Any], canary: Path) -> None:
    doc["name"] = _climb(canary)  # the headers scheme's directory is joined with the name


def _absolute_data_entry(doc: dict[str, Any], canary: Path) -> None:
    doc["files"][f"{DATA}/data/{canary}/.profile"] = doc["files"][f"{DATA}/data{canary}/.profile"]  # data//abs


def _climbing_headers_entry(doc: dict[str, Any], canary: Path) -> None:
    doc["files"][f"{DATA}/headers/{_climb(canary)}/.bashrc"] = doc["files"][f"{DATA}/headers/fg.h"]


def _outside_dirs(doc: dict[str, Any], canary: Path) -> None:
    doc["dirs"].remove(f"{DATA}/data/share")  # its file stays listed: a walk of dirs would never reach it


def _dist_info(doc: dict[str, Any], canary: Path) -> None:
    doc["dist_info"] = f"{_climb(canary)}/fg-1.0.dist-info"


def _version(doc: dict[str, Any], canary: Path) -> None:
    doc["version"] = "../.."


FORGERIES: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "name climbing out": _name,
    "data entry with an absolute path": _absolute_data_entry,
    "headers entry climbing out": _climbing_headers_entry,
    "entry outside dirs": _outside_dirs,
    "bad dist_info": _dist_info,
    "bad version": _version,
}


def _venv(path: Path, user: str | None) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    if user:
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


def _canary(workdir: Path, users: Users) -> Path:
    """A stand-in for alice's home: what a forgery aims at."""
    home = workdir / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# alice's\n")
    (home / ".profile").write_text("# alice's\n")
    subprocess.run(["chown", "-R", users.alice, str(home)], check=True)
    return home


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_manifest_is_refused_by_every_install_and_flagged_by_verify(
    run: Runner, users: Users, workdir: Path, group_store: Path, forgery: str
) -> None:
    canary = _canary(workdir, users)
    earlier = _venv(workdir / "earlier", users.alice)
    wheels = workdir / "wheels"
    whl = wheels / "fg-1.0-py3-none-any.whl"
    # alice installs the real tree first, so her cache knows the manifest (and what she derived from it)
    wheels.mkdir(mode=0o755)
    real = make_wheel(wheels, "fg", files=_files(canary))
    real.chmod(0o644)
    assert run(users.bob, "--store", str(group_store), "realize", str(real)).returncode == 0
    first = run(users.alice, "--store", str(group_store), "install", "--venv", str(earlier), str(real))
    assert first.returncode == 0, first.stderr
    key = hashlib.sha256(real.read_bytes()).hexdigest()
    manifest = group_store / "manifests" / f"{key}.json"
    doc = json.loads(manifest.read_bytes())
    FORGERIES[forgery](doc, canary)
    forged = workdir / "forged.json"
    forged.write_text(json.dumps(doc))
    forged.chmod(0o644)
    done = run.python(users.bob, REPLACE, str(manifest), str(forged))
    assert done.returncode == 0, done.stderr
    assert manifest.stat().st_uid == users.uid(users.bob) and manifest.stat().st_mode & 0o777 == 0o444

    venvs = {users.alice: _venv(workdir / "venv-alice", users.alice), None: _venv(workdir / "venv-root", None)}
    before = {"canary": snapshot(canary), **{str(u): snapshot(v) for u, v in venvs.items()}}
    for user, venv in venvs.items():
        for mode in MODES:
            line = one_line_error(run(user, "--store", str(group_store), "install", "--venv", str(venv),
                                      "--link-mode", mode, str(whl)))
            assert f"manifests/{key}.json is not trustworthy" in line and "forged" in line, (user, mode, line)
        by_pin = run(user, "--store", str(group_store), "install", "--venv", str(venv), "--no-index", "-f",
                     str(wheels), "fg==1.0")
        assert f"manifests/{key}.json is not trustworthy" in one_line_error(by_pin), (user, by_pin.stderr)
    after = {"canary": snapshot(canary), **{str(u): snapshot(v) for u, v in venvs.items()}}
    assert after == before

    for full in ((), ("--full",)):
        checked = run(users.alice, "--store", str(group_store), "verify", *full)
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "Traceback" not in checked.stdout + checked.stderr
        lines = checked.stdout.splitlines()
        assert f"damaged: fg 1.0, tree {key}" in lines, checked.stdout
        (flag,) = [line for line in lines if "not trustworthy" in line]
        assert f"manifests/{key}.json" in flag and "forged" in flag, flag
        report = json.loads(run(users.alice, "--store", str(group_store), "verify", "--json", *full).stdout)
        assert [(d["name"], d["version"], d["key"], d["problem"]) for d in report["damaged"]] == \
            [("fg", "1.0", key, "untrusted")]
    # what alice installed before the forgery still uninstalls cleanly
    removed = run(users.alice, "uninstall", "--venv", str(earlier), "fg")
    assert removed.returncode == 0 and not removed.stderr, removed.stderr
    assert snapshot(canary) == before["canary"]


# -- install_tree itself -----------------------------------------------------------------------------------------------


@pytest.fixture
def small_store(tmp_path: Path) -> tuple[Store, Tree]:
    """A private store of root's with the fg tree in it (aimed at ``tmp_path/canary``)."""
    store = Store.init(tmp_path / "store")
    whl = make_wheel(tmp_path, "fg", files={**_files(tmp_path / "canary"), "fg/sub/mod.py": b"M = 1\n"})
    tree = realize_wheel(store, whl).tree
    return store, tree


def _tree_with(tree: Tree, **changes: Any) -> Tree:
    """The tree with a manifest that never went through from_json: what install_tree does if a check is missed."""
    return Tree(tree.key, tree.path, tree.manifest._replace(**changes))


@pytest.mark.parametrize("mode", ["symlink", "copy", "hardlink"])
def test_install_tree_never_writes_through_a_symlinked_middle_directory(
    small_store: tuple[Store, Tree], tmp_path: Path, mode: str
) -> None:
    """site-packages/fg is a symlink (into the store, or anywhere): fg/sub/mod.py must not land at its target, even
    where fg/sub exists there."""
    _store, tree = small_store
    venv = _venv(tmp_path / "venv", None)
    interpreter = Interpreter.inspect(venv / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    site = Path(interpreter.paths["purelib"])
    (site / "fg").symlink_to(elsewhere)
    only_sub = Tree(tree.key, tree.path, tree.manifest._replace(
        files={r: e for r, e in tree.manifest.files.items() if not r.startswith("fg/") or r.startswith("fg/sub/")}))
    before = snapshot(elsewhere), snapshot(venv)
    with pytest.raises(WheelstoreError, match="is a symlink; refusing to install through it"):
        install_tree(only_sub, interpreter, LinkMode(mode), requested=True)
    assert (snapshot(elsewhere), snapshot(venv)) == before


@pytest.mark.parametrize("forgery", ["name", "absolute data entry", "climbing headers entry"])
def test_install_tree_refuses_a_forged_manifest_that_skipped_the_check(
    small_store: tuple[Store, Tree], tmp_path: Path, forgery: str
) -> None:
    """Defence in depth: a manifest made without :meth:`Manifest.from_json` still reaches nothing outside the venv."""
    _store, tree = small_store
    venv = _venv(tmp_path / "venv", None)
    interpreter = Interpreter.inspect(venv / "bin" / "python")
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / ".profile").write_text("mine\n")
    files = dict(tree.manifest.files)
    if forgery == "name":
        forged = _tree_with(tree, name=_climb(canary))
    elif forgery == "absolute data entry":
        files[f"{DATA}/data/{canary}/.profile"] = files[f"{DATA}/data{canary}/.profile"]
        forged = _tree_with(tree, files=files)
    else:
        files[f"{DATA}/headers/{_climb(canary)}/.profile"] = files[f"{DATA}/headers/fg.h"]
        forged = _tree_with(tree, files=files)
    before = snapshot(canary), snapshot(venv)
    with pytest.raises(WheelstoreError, match="refusing to create"):
        install_tree(forged, interpreter, LinkMode.COPY, requested=True)
    assert (snapshot(canary), snapshot(venv)) == before


@pytest.mark.parametrize("script", ["python", "activate"])
def test_install_tree_refuses_a_data_script_named_as_the_venvs_own(
    small_store: tuple[Store, Tree], tmp_path: Path, script: str
) -> None:
    """Publishing refuses such a script; a tree published before that check (or forged) is refused at install too,
    as a launcher of that name is, and the venv's own file stays."""
    _store, tree = small_store
    venv = _venv(tmp_path / "venv", None)
    interpreter = Interpreter.inspect(venv / "bin" / "python")
    files = dict(tree.manifest.files)
    files[f"{DATA}/scripts/{script}"] = files[f"{DATA}/headers/fg.h"]
    forged = _tree_with(tree, files=files, dirs=[*tree.manifest.dirs, f"{DATA}/scripts"])
    before = snapshot(venv)
    with pytest.raises(WheelstoreError, match=f"would replace the venv's own {script}"):
        install_tree(forged, interpreter, LinkMode.COPY, requested=True)
    assert snapshot(venv) == before


def test_store_trees_passes_over_a_forged_manifest(small_store: tuple[Store, Tree], tmp_path: Path) -> None:
    """doctor probes with any tree it gets from trees(): one forged manifest must not fail that for everyone."""
    store, tree = small_store
    (tmp_path / "other").mkdir()
    good = realize_wheel(store, make_wheel(tmp_path / "other", "good")).tree
    path = store.root / "manifests" / f"{tree.key}.json"
    doc = json.loads(path.read_bytes())
    _version(doc, tmp_path)
    path.chmod(0o644)
    path.write_text(json.dumps(doc))
    path.chmod(0o444)
    with pytest.raises(WheelstoreError, match="forged"):
        store.lookup(tree.key)
    assert [t.key for t in store.trees()] == [good.key]


def test_uninstall_says_what_it_leaves_outside_the_venv(small_store: tuple[Store, Tree], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A RECORD row that climbs out of the venv (left by an install before manifests were checked, or edited) is
    never removed, and said."""
    import logging

    from wheelstore.base import logs
    from wheelstore.base.distinfo import installed
    from wheelstore.venv.uninstall import uninstall

    _store, tree = small_store
    venv = _venv(tmp_path / "venv", None)
    interpreter = Interpreter.inspect(venv / "bin" / "python")
    install_tree(tree, interpreter, LinkMode.COPY, requested=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep\n")
    (dist,) = installed(interpreter).values()
    record = dist.dist_info / "RECORD"
    climb = os.path.relpath(outside, dist.dist_info.parent)
    record.write_text(record.read_text() + f"{climb},,\n{outside},,\n")
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logger, handler, saved = logging.getLogger("wheelstore"), Keep(), (logs.threshold, logs.setup)
    logs.threshold, logs.setup = None, None  # whatever an in-process CLI run before set up
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.WARNING
    try:
        removed = uninstall(dist, interpreter)
    finally:
        logger.removeHandler(handler)
        logger.level = level
        logs.threshold, logs.setup = saved
    assert outside.read_text() == "keep\n"
    assert removed and not dist.dist_info.exists()
    assert [w for w in warnings if "outside the venv" in w] == [
        f"could not remove '{climb}' (RECORD of fg): it is outside the venv",
        f"could not remove '{outside}' (RECORD of fg): it is outside the venv",
    ], warnings
    assert not list(Path(interpreter.paths["purelib"]).glob("fg*"))
