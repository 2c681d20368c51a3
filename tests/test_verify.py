"""verify: the quick check, --full, --repair, the pre-link check of install, and the ctime rule for hard links."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from wheelstore.base.errors import TreeDamaged
from wheelstore.store import verify
from wheelstore.store.publish import realize_wheel
from wheelstore.store.store import Store
from wheelstore.venv import checks

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .wheelmaker import make_wheel

ORIGINAL = b"VALUE = 1\n" * 50
FILES = {"demo/__init__.py": ORIGINAL, "demo/sub/mod.py": b"X = 2\n", "demo/data.txt": b"hello\n"}
TARGET = "demo/__init__.py"


pytestmark = pytest.mark.usefixtures("cache_home")  # the marks of in-process checks: in a private cache per test


def _wheel(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    directory.chmod(0o755)
    whl = make_wheel(directory, "demo", files=FILES)
    whl.chmod(0o644)
    return whl


def _venv(path: Path, user: str | None = None) -> Path:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    if user:
        subprocess.run(["chown", "-R", user, str(path)], check=True)
    return path


def _site(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3*/site-packages")
    return site


def _realize(run: Runner, user: str, store: Path, whl: Path) -> Path:
    done = run(user, "--store", str(store), "realize", "--json", str(whl))
    assert done.returncode == 0, done.stderr
    return Path(json.loads(done.stdout)[0]["tree"])


def _tamper(run: Runner, user: str, path: Path, data: bytes, *, keep_mtime: bool = True) -> None:
    """As ``user``: make the file writable, rewrite it, put its mtime and mode back (what only ctime still shows)."""
    code = (
        "import os, sys\n"
        "p, data, keep = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3] == '1'\n"
        "st = os.stat(p)\n"
        "os.chmod(p, st.st_mode | 0o200)\n"
        "with open(p, 'wb') as f: f.write(data)\n"
        "if keep: os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
        "os.chmod(p, st.st_mode)\n"
    )
    done = run.python(user, code, str(path), data.hex(), "1" if keep_mtime else "0")
    assert done.returncode == 0, done.stderr


def _verify(run: Runner, user: str | None, store: Path, *args: str,
            env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    done = run(user, "--store", str(store), "verify", "--json", *args, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


# -- acceptance 2 -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repairer", ["wsalice", None], ids=["owner", "root"])
def test_owner_edit_is_caught_never_linked_and_repaired(run: Runner, users: Users, workdir: Path, group_store: Path,
                                                         repairer: str | None) -> None:
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, group_store, whl)
    assert run(users.bob, "--store", str(group_store), "verify").returncode == 0

    _tamper(run, users.alice, tree / TARGET, b"import os  # owned\n", keep_mtime=False)

    damaged = run(users.bob, "--store", str(group_store), "verify")
    assert damaged.returncode == 1
    assert "damaged: demo 1.0" in damaged.stdout and TARGET in damaged.stdout
    # one pipe for both streams, as in a CI log: the report first, then the fix
    both = subprocess.run([str(run.tool), "--store", str(group_store), "verify"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, env=run.env(users.bob),
                          **run.popen_kwargs(users.bob, 0o022))
    lines = both.stdout.splitlines()
    assert lines[-1].startswith("fix: ") and lines[0].startswith("damaged: demo 1.0"), lines

    # bob's install does not link the damaged copy: it fails in one line naming the distribution and the owner,
    # before his venv is touched
    venv = _venv(workdir / "bob-venv", users.bob)
    before = snapshot(venv)
    line = one_line_error(run(users.bob, "--store", str(group_store), "install", "--venv", str(venv), str(whl)))
    assert "demo 1.0" in line and "damaged" in line and users.alice in line and "verify --repair" in line
    assert snapshot(venv) == before

    # bob may not repair alice's tree, and is told who can
    code, report = _verify(run, users.bob, group_store, "--repair", "-f", str(whl.parent))
    assert code == 1 and not report["ok"] and not report["repaired"]
    unrepaired = report["unrepaired"]
    assert users.alice in unrepaired[0]["reason"]

    fixed = run(repairer, "--store", str(group_store), "verify", "--repair", "-f", str(whl.parent),
                env={"XDG_CACHE_HOME": str(workdir / "cache")})
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "repaired: demo 1.0" in fixed.stdout
    assert (tree / TARGET).read_bytes() == ORIGINAL
    # back as realize published it: with its pycs inside (what fold installs need)
    manifest = json.loads((group_store / "manifests" / f"{tree.name}.json").read_text())
    assert manifest["bytecode"] == "cpython-311" and (tree / "demo/__pycache__/__init__.cpython-311.pyc").is_file()
    assert run(users.bob, "--store", str(group_store), "verify").returncode == 0
    assert any(n.startswith("quarantine-") for n in os.listdir(group_store / "staging"))

    done = run(users.bob, "--store", str(group_store), "install", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr
    assert (_site(venv) / TARGET).read_bytes() == ORIGINAL


def test_the_owners_install_repairs_from_its_own_wheel(run: Runner, users: Users, workdir: Path,
                                                       group_store: Path) -> None:
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, group_store, whl)
    _tamper(run, users.alice, tree / TARGET, b"X" * len(ORIGINAL))  # same size, mtime restored: only ctime shows
    venv = _venv(workdir / "venv", users.alice)
    done = run(users.alice, "--store", str(group_store), "install", "--json", "--venv", str(venv), str(whl))
    assert done.returncode == 0, done.stderr
    assert any("repaired" in n and "demo 1.0" in n for n in json.loads(done.stdout)["notes"])
    assert (_site(venv) / TARGET).read_bytes() == ORIGINAL
    assert (tree / TARGET).read_bytes() == ORIGINAL
    assert run(users.bob, "--store", str(group_store), "verify", "--full").returncode == 0


def test_a_damaged_bytecode_unit_is_replaced_not_linked(run: Runner, users: Users, workdir: Path,
                                                         group_store: Path) -> None:
    whl = _wheel(workdir / "wheels")
    first = _venv(workdir / "first", users.alice)
    assert run(users.alice, "--store", str(group_store), "install", "--link-mode", "symlink", "--venv", str(first),
               str(whl)).returncode == 0  # per-file: the bytecode is a unit of its own
    (unit,) = [p for p in (group_store / "trees").iterdir() if "-" in p.name and not p.name.startswith(".")]
    (pyc,) = unit.glob("demo/__pycache__/__init__.*.pyc")
    _tamper(run, users.alice, pyc, b"not bytecode")

    code, report = _verify(run, users.bob, group_store)
    damaged = report["damaged"]
    assert code == 1 and isinstance(damaged, list) and [d["unit"] for d in damaged] == ["bytecode"]

    venv = _venv(workdir / "venv", users.alice)
    assert run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), str(whl)).returncode == 0
    (linked,) = (_site(venv) / "demo" / "__pycache__").glob("__init__.*.pyc")
    assert linked.read_bytes() != b"not bytecode"
    assert run(users.bob, "--store", str(group_store), "verify").returncode == 0


# -- what the quick check catches -------------------------------------------------------------------------------------


def _chmod(path: Path) -> None:
    path.chmod(0o644)


def _same_size_rewrite(path: Path) -> None:
    st = path.stat()
    path.write_bytes(b"#" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _remove(path: Path) -> None:
    path.unlink()


def _plant(path: Path) -> None:
    (path.parent / "planted.py").write_bytes(b"evil = 1\n")


def _plant_mtime_restored(path: Path) -> None:
    st = path.parent.stat()
    _plant(path)
    os.utime(path.parent, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the directory's ctime still shows it


def _symlink(path: Path) -> None:
    path.unlink()
    path.symlink_to("/etc/hostname")


CASES = {
    "chmod": (_chmod, TARGET, "mode"),
    "same-size-rewrite-mtime-restored": (_same_size_rewrite, TARGET, "content"),
    "missing": (_remove, TARGET, "missing"),
    "planted": (_plant, "demo/planted.py", "extra"),
    "planted-dir-mtime-restored": (_plant_mtime_restored, "demo/planted.py", "extra"),
    "symlink": (_symlink, TARGET, "type"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_quick_check_catches(workdir: Path, case: str) -> None:
    whl = _wheel(workdir / "wheels")
    with Store.init(workdir / "store") as store:
        tree = realize_wheel(store, whl).tree
        assert verify.check_tree(store, tree) == []
        change, path, problem = CASES[case]
        change(tree.path / TARGET)  # as root, who needs no write permission on the tree
        found = verify.check_tree(store, tree)
        assert [(d.path, d.problem) for d in found] == [(path, problem)]
        assert found[0].name == "demo" and found[0].version == "1.0" and found[0].key == tree.key
        report = verify.verify_store(store)
        assert not report.ok and report.still_damaged == [tree.key]
        if case == "same-size-rewrite-mtime-restored":
            assert report.rehashed == 1  # found only by re-hashing the one file whose ctime moved


@pytest.mark.parametrize("case", list(CASES))
def test_a_check_from_the_kept_table_catches(workdir: Path, case: str) -> None:
    """A check after the first reads the tree's table (its manifest by directory) from the user's cache: on an
    intact tree it never parses the manifest's file list, and it still finds each kind of damage."""
    whl = _wheel(workdir / "wheels")
    with Store.init(workdir / "store") as store:
        key = realize_wheel(store, whl).tree.key
        first = store.lookup(key, remember=True)
        time.sleep(2 * verify.RACY_NS / 1e9)  # so that the mark covers every ctime: later checks list nothing
        assert first is not None and verify.check_tree(store, first) == []  # builds the table and keeps it
        built = verify.table_of(store, first)
    with Store.open(workdir / "store") as store:
        tree = store.lookup(key, remember=True)
        assert tree is not None and tree.manifest._body is not None  # its file list not read yet
        kept = verify.table_of(store, tree)
        assert {d: (n, list(v), s) for d, (n, v, s) in kept.items()} == \
            {d: (n, list(v), s) for d, (n, v, s) in built.items()}
        assert verify.check_tree(store, tree) == [] and tree.manifest._body is not None
        change, path, problem = CASES[case]
        change(tree.path / TARGET)
        found = verify.check_tree(store, tree)
        assert [(d.path, d.problem) for d in found] == [(path, problem)]


def test_unchanged_directories_are_looked_up_not_listed(workdir: Path) -> None:
    """The first check lists every directory and marks the tree; later ones look up the manifest's names in each
    directory whose ctime is older than that, and list only a directory that changed."""
    whl = _wheel(workdir / "wheels")
    with Store.init(workdir / "store") as store:
        tree = realize_wheel(store, whl).tree
        dirs = 1 + len(tree.manifest.dirs)
        marks = verify.VerifyMarks(store)
        time.sleep(2 * verify.RACY_NS / 1e9)  # a mark never covers ctimes within a clock tick of the walk's start
        first = verify._Walk(store, tree, False, marks).run()
        assert first.damage == [] and first.listed == dirs
        again = verify._Walk(store, tree, False, marks).run()
        assert again.damage == [] and again.listed == 0 and again.files == len(tree.manifest.files)
        (tree.path / "demo" / "sub" / "mod.py").unlink()
        changed = verify._Walk(store, tree, False, marks).run()
        assert [(d.path, d.problem) for d in changed.damage] == [("demo/sub/mod.py", "missing")]
        assert changed.listed == 1


def test_a_planted_symlink_directory_is_not_followed(workdir: Path) -> None:
    whl = _wheel(workdir / "wheels")
    outside = workdir / "outside"
    outside.mkdir()
    (outside / "mod.py").write_bytes(b"X = 2\n")
    with Store.init(workdir / "store") as store:
        tree = realize_wheel(store, whl).tree
        shutil.rmtree(tree.path / "demo" / "sub")
        (tree.path / "demo" / "sub").symlink_to(outside)
        found = [(d.path, d.problem) for d in verify.check_tree(store, tree)]
        assert found == [("demo/sub", "type")]  # and nothing under it: the link was not followed


# -- hard links and ctime ---------------------------------------------------------------------------------------------


def test_hardlink_installs_and_deleted_venvs_do_not_cause_rehashing(run: Runner, users: Users,
                                                                     workdir: Path) -> None:
    cache = workdir / "alice-cache"
    cache.mkdir()
    shutil.chown(cache, users.alice)
    env = {"XDG_CACHE_HOME": str(cache)}
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0  # private: hardlinks are allowed for its owner
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, store, whl)
    nfiles = sum(1 for p in tree.rglob("*") if p.is_file())

    venvs = []
    for i in range(2):
        venv = _venv(workdir / f"venv{i}", users.alice)
        done = run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "hardlink",
                   "--no-compile", str(whl), env=env)
        assert done.returncode == 0, done.stderr
        assert (tree / TARGET).stat().st_nlink == 2 + i  # the link moved the store file's ctime
        venvs.append(venv)
        code, report = _verify(run, users.alice, store, env=env)
        assert code == 0 and report["checked"] == {"trees": 1, "files": nfiles, "rehashed": 0, "relinked": 0}

    shutil.rmtree(venvs[0])  # unlinks every file again: ctimes move, link counts drop
    code, report = _verify(run, users.alice, store, env=env)
    assert code == 0 and report["checked"]["rehashed"] == 0 and report["checked"]["relinked"] > 0

    # the marks are what spares the re-hash: without them every linked (ctime-moved) file is read again, once
    linked = sum(1 for p in tree.rglob("*") if p.is_file() and p.stat().st_nlink > 1)
    assert 0 < linked < nfiles  # the dist-info's RECORD is written, not linked
    shutil.rmtree(cache / "wheelstore")
    code, report = _verify(run, users.alice, store, env=env)
    assert code == 0 and report["checked"]["rehashed"] == linked
    code, report = _verify(run, users.alice, store, env=env)
    assert code == 0 and report["checked"]["rehashed"] == 0

    # and a rewrite with mtime and mode restored, without a link change, is still re-hashed and caught
    _tamper(run, users.alice, tree / TARGET, b"#" * len(ORIGINAL))
    code, report = _verify(run, users.alice, store, env=env)
    assert code == 1 and report["checked"]["rehashed"] == 1


def test_full_catches_a_rewrite_hidden_behind_a_link_change(run: Runner, users: Users, workdir: Path) -> None:
    """The one change the quick check cannot see: mtime and mode restored, and a link count change with it."""
    cache = workdir / "alice-cache"
    cache.mkdir()
    shutil.chown(cache, users.alice)
    env = {"XDG_CACHE_HOME": str(cache)}
    store = workdir / "store"
    assert run(users.alice, "init", str(store)).returncode == 0
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, store, whl)
    venv = _venv(workdir / "venv", users.alice)
    assert run(users.alice, "--store", str(store), "install", "--venv", str(venv), "--link-mode", "hardlink",
               "--no-compile", str(whl), env=env).returncode == 0
    _tamper(run, users.alice, tree / TARGET, b"#" * len(ORIGINAL))
    shutil.rmtree(venv)

    code, report = _verify(run, users.alice, store, env=env)
    assert code == 0, report  # taken for an unlink: the documented limit of the quick check
    code, report = _verify(run, users.alice, store, "--full", env=env)
    assert code == 1
    damaged = report["damaged"]
    assert isinstance(damaged, list) and [(d["path"], d["problem"]) for d in damaged] == [(TARGET, "content")]


# -- the JSON report --------------------------------------------------------------------------------------------------


def test_json_report_matches_the_documented_schema(run: Runner, users: Users, workdir: Path,
                                                   group_store: Path) -> None:
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, group_store, whl)
    _tamper(run, users.alice, tree / TARGET, b"changed\n", keep_mtime=False)
    code, report = _verify(run, users.alice, group_store, "--repair", "-f", str(whl.parent))
    assert code == 0
    assert set(report) == {"store", "full", "ok", "checked", "damaged", "repaired", "unrepaired", "orphans"}
    assert report["store"] == str(group_store) and report["full"] is False and report["ok"] is True
    assert set(report["checked"]) == {"trees", "files", "rehashed", "relinked"}
    (damage,) = report["damaged"]
    assert set(damage) == {"name", "version", "key", "unit", "path", "problem", "detail"}
    assert (damage["name"], damage["version"], damage["unit"], damage["path"], damage["problem"]) == (
        "demo", "1.0", "tree", TARGET, "content")
    assert damage["key"] == tree.name and isinstance(damage["detail"], str) and "\n" not in damage["detail"]
    (repaired,) = report["repaired"]
    assert set(repaired) == {"name", "version", "key", "unit", "wheel", "quarantined"}
    assert repaired["wheel"] == whl.name and repaired["unit"] == "tree"
    for rel in repaired["quarantined"]:
        assert (group_store / rel).exists() and rel.startswith("staging/quarantine-")
    assert report["unrepaired"] == [] and report["orphans"] == []


def test_repair_without_the_wheel_moves_nothing(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, group_store, whl)
    _tamper(run, users.alice, tree / TARGET, b"changed\n", keep_mtime=False)
    empty = workdir / "empty"
    empty.mkdir()
    before = snapshot(group_store)
    code, report = _verify(run, users.alice, group_store, "--repair", "-f", str(empty))
    assert code == 1 and report["repaired"] == []
    (unrepaired,) = report["unrepaired"]
    assert whl.name in unrepaired["reason"] and "-f DIR" in unrepaired["reason"]
    assert snapshot(group_store) == before


def test_repair_downloads_the_wheel_from_an_index(run: Runner, users: Users, workdir: Path,
                                                  group_store: Path) -> None:
    """``--repair`` without the wheel at hand downloads the exact bytes (by file name and sha256) from the index."""
    from .pyindex import PyIndex

    whl = _wheel(workdir / "wheels")
    tree = _realize(run, users.alice, group_store, whl)
    _tamper(run, users.alice, tree / TARGET, b"import os  # owned\n", keep_mtime=False)
    isolated = {"PIP_CONFIG_FILE": os.devnull}
    with PyIndex() as index:
        index.add(whl)
        status, report = _verify(run, users.alice, group_store, "--repair", "--index-url", index.simple_url,
                                 env=isolated)
        assert len(index.downloads(whl.name)) == 1
    assert status == 0 and report["repaired"] and report["repaired"][0]["name"] == "demo", report
    assert (tree / TARGET).read_bytes() == ORIGINAL
    assert _verify(run, users.bob, group_store)[0] == 0
    assert not list((group_store / "staging").glob("download-*")), "the downloaded wheel was left behind"


# -- the pre-link check, split with a child process ---------------------------------------------------------------


def _many(run: Runner, user: str, store: Path, directory: Path, count: int) -> list[Path]:
    """``count`` distinct wheels (enough for an install to split its check), realized by ``user``; their trees."""
    directory.mkdir()
    directory.chmod(0o755)
    trees = []
    for i in range(count):
        whl = make_wheel(directory, f"many{i:02d}", files={f"many{i:02d}/__init__.py": f"N = {i}\n".encode() * 40})
        whl.chmod(0o644)
        trees.append(_realize(run, user, store, whl))
    return trees


@pytest.mark.parametrize("victim", [0, 11], ids=["first", "last"])
def test_split_check_catches_damage_in_either_half(run: Runner, users: Users, workdir: Path, group_store: Path,
                                                   victim: int) -> None:
    """With enough trees the install checks half of them in a forked child (the first half, in install order): a tree
    alice changed is refused wherever it falls, in one line naming it, and bob's venv stays as it was."""
    count = 12
    assert count >= checks.FORK_AT
    trees = _many(run, users.alice, group_store, workdir / "wheels", count)
    _tamper(run, users.alice, trees[victim] / f"many{victim:02d}/__init__.py", b"N = -1\n" * 40)
    venv = _venv(workdir / "venv", users.bob)
    before = snapshot(venv)
    line = one_line_error(run(users.bob, "--store", str(group_store), "install", "--venv", str(venv),
                              *map(str, sorted((workdir / "wheels").glob("*.whl")))))
    assert f"many{victim:02d} 1.0" in line and "damaged" in line and users.alice in line
    assert snapshot(venv) == before


def test_damage_found_while_linking_takes_the_whole_install_back(run: Runner, users: Users, workdir: Path,
                                                                 group_store: Path) -> None:
    """Trees bob links by symlink are checked while they are linked. A damaged one (its mtime and mode put back,
    so only a re-hash shows it) turns the install back: the other trees are unlinked again and the older version
    it was upgrading comes back, exactly; then the refusal names the damage in one line."""
    trees = _many(run, users.alice, group_store, workdir / "wheels", 10)
    (workdir / "old").mkdir()
    old = make_wheel(workdir / "old", "many03", "0.9", files={"many03/__init__.py": b"N = 'old'\n"})
    old.parent.chmod(0o755)
    old.chmod(0o644)
    venv = _venv(workdir / "venv", users.bob)
    done = run(users.bob, "--store", str(group_store), "install", "-q", "--venv", str(venv), str(old))
    assert done.returncode == 0, done.stderr
    _tamper(run, users.alice, trees[3] / "many03/__init__.py", b"N = -1\n" * 40)
    before = snapshot(venv)
    line = one_line_error(run(users.bob, "--store", str(group_store), "install", "--venv", str(venv), "--link-mode",
                              "symlink", *map(str, sorted((workdir / "wheels").glob("*.whl")))))
    assert "many03 1.0" in line and "damaged" in line, line
    assert snapshot(venv) == before
    assert (_site(venv) / "many03" / "__init__.py").read_bytes() == b"N = 'old'\n"


def test_a_failing_child_vouches_for_nothing(run: Runner, users: Users, workdir: Path, group_store: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """If the child cannot check (here it raises), its trees are checked in the parent: damage is still found."""
    trees = _many(run, users.alice, group_store, workdir / "wheels", 10)
    _tamper(run, users.alice, trees[0] / "many00/__init__.py", b"N = -1\n" * 40, keep_mtime=False)

    def broken(*_args: object) -> bool:
        raise RuntimeError("the child fails")

    monkeypatch.setattr(checks, "_intact", broken)
    with Store.open(group_store) as store:
        found = [t for p in trees if (t := store.lookup(p.name)) is not None]
        notes: list[str] = []
        with pytest.raises(TreeDamaged, match="many00 1.0"):
            checks.intact_trees(store, found, [None] * len(found), notes)
        assert checks.intact_trees(store, found[1:], [None] * (len(found) - 1), notes) == found[1:]
