"""The dependency-closure check (``pip check`` from metadata, before anything is linked): real trees published in a
real store, their METADATA read as the store's other readers read it, and one case against the real pip check."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.version import Version

from wheelstore.base import distinfo
from wheelstore.base.errors import BadMetadata
from wheelstore.base.interpreter import Interpreter
from wheelstore.base.names import canonical
from wheelstore.resolve import closure
from wheelstore.resolve.closure import Requires, Unmet, of_installed, of_tree, unmet, unmet_in_trees
from wheelstore.resolve.requirements import marker_environment
from wheelstore.store.publish import realize_wheel, realize_wheels
from wheelstore.store.store import Store, Tree

from .conftest import SYSTEM_PYTHON, Runner, Users
from .test_attack_install import _plant, _realize
from .wheelmaker import make_wheel

#: the running interpreter's marker values, with the target's version fixed so that markers on it are known
ENV = {**marker_environment(Interpreter.inspect(Path(sys.executable))), "python_version": "3.11",
       "python_full_version": "3.11.9"}


@pytest.fixture(autouse=True)
def _private_cache(cache_home: Path) -> None:
    """A private cache per test: a set one test found closed is not taken as closed by the next."""


def _trees(tmp_path: Path, *wheels: tuple[str, str, tuple[str, ...]]) -> list[Tree]:
    """``(name, version, requires)`` published as trees of one store."""
    d = tmp_path / "wheels"
    d.mkdir(exist_ok=True)
    store = Store.init(tmp_path / "store", exist_ok=True)
    found = []
    for name, version, requires in wheels:
        whl = make_wheel(d, name, version, {f"{name.lower()}/__init__.py": b""}, requires=requires)
        tree = store.lookup(realize_wheel(store, whl).tree.key)
        assert tree is not None
        found.append(tree)
    return found


def _said(trees: list[Tree], extras: dict[str, set[str]] | None = None, env: dict[str, str] = ENV) -> list[str]:
    dists = [of_tree(t, (extras or {}).get(t.manifest.name, ())) for t in trees]
    return [u.describe("in the set") for u in unmet(dists, env)]


def test_a_missing_dependency_is_named_in_pip_checks_words(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("app", "1.0", ("lib>=1", "other")), ("other", "2.0", ()))
    assert closure.requires_of_tree(trees[0]) == ["lib>=1", "other"]
    found = unmet([of_tree(t) for t in trees], ENV)
    assert found == [Unmet("app", Version("1.0"), "lib>=1", "lib", None)]  # type: ignore[arg-type]
    assert found[0].describe() == "app 1.0 requires lib, which is not installed"
    line = closure.unsatisfied(found).oneline()
    assert line == ("the input does not hold what its distributions require: app 1.0 requires lib, which is not in "
                    f"the set (fix: {closure.SYNC_HINT})")


def test_a_version_outside_the_specifier_is_unmet_and_a_pinned_prerelease_meets_it(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("app", "1.0", ("lib<2", "pre==3.0rc1", "pre2>=1")), ("lib", "2.0", ()),
                   ("pre", "3.0rc1", ()), ("pre2", "2.0b1", ()))
    assert _said(trees) == ["app 1.0 requires lib<2, but lib 2.0 is in the set"]


def test_requirements_whose_markers_leave_the_target_out_need_nothing(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("app", "1.0", ('old; python_version < "3"', 'win; sys_platform == "win32"',
                                             'new; python_version >= "3.8"')), ("new", "1.0", ()))
    assert _said(trees) == []
    assert _said(trees, env={**ENV, "python_version": "2.7"}) == ["app 1.0 requires old, which is not in the set"]


def test_an_extra_counts_only_when_asked_of_the_distribution_by_the_input_or_by_another(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("lib", "1.0", ('socks>=1; extra == "proxy"', "base")), ("base", "1.0", ()))
    assert _said(trees) == []
    assert _said(trees, {"lib": {"Proxy"}}) == ["lib 1.0 requires socks, which is not in the set"]
    asking = _trees(tmp_path, ("app", "1.0", ("lib[proxy]",)))
    assert _said(trees + asking) == ["lib 1.0 requires socks, which is not in the set"]
    not_asking = _trees(tmp_path, ("app2", "1.0", ("lib",)))
    assert _said(trees + not_asking) == []


def test_a_cycle_through_extras_ends_and_reports_what_it_needs(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("a", "1.0", ("b",)), ("b", "1.0", ("a[x]",)), ("e", "1.0", ('b; extra == "z"',)))
    assert _said(trees) == []
    looped = _trees(tmp_path, ("f", "1.0", ('g; extra == "x"', 'h; extra == "y"', "a")),
                    ("g", "1.0", ("f[x,y]",)))
    assert _said(looped) == ["f 1.0 requires a, which is not in the set", "f 1.0 requires h, which is not in the set"]
    itself = _trees(tmp_path, ("s", "1.0", ('s[x,y]; extra == "all"', 'sx; extra == "x"', 'sy>=2; extra == "y"')),
                    ("sy", "1.0", ()))
    assert _said(itself) == []
    assert _said(itself, {"s": {"all"}}) == ["s 1.0 requires sx, which is not in the set",
                                             "s 1.0 requires sy>=2, but sy 1.0 is in the set"]


def test_names_are_compared_normalized(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("Foo_Bar", "1.0", ()), ("app", "1.0", ("foo-bar>=1", "FOO.BAR[Extra_One]")))
    assert _said(trees) == []
    assert of_tree(trees[0]).name == "foo-bar"


def test_a_wheel_and_its_tree_give_the_same_requirements(tmp_path: Path) -> None:
    d = tmp_path / "w"
    d.mkdir()
    whl = make_wheel(d, "app", "1.0", requires=("lib>=1", 'x; extra == "y"'))
    store = Store.init(tmp_path / "store")
    tree = store.lookup(realize_wheel(store, whl).tree.key)
    assert tree is not None
    assert closure.requires_of_wheel(whl) == closure.requires_of_tree(tree) == ["lib>=1", 'x; extra == "y"']


def test_an_invalid_requires_dist_is_one_line_naming_the_distribution(tmp_path: Path) -> None:
    trees = _trees(tmp_path, ("app", "1.0", ("lib >= = 1",)))
    with pytest.raises(BadMetadata) as caught:
        unmet([of_tree(t) for t in trees], ENV)
    assert caught.value.oneline().startswith("app 1.0 declares Requires-Dist 'lib >= = 1', which is not a requirement")


def test_a_set_found_closed_is_remembered_and_one_that_is_not_is_checked_again(tmp_path: Path,
                                                                             cache_home: Path) -> None:
    trees = _trees(tmp_path, ("lib", "1.0", ('socks; extra == "proxy"',)))
    target = Interpreter.inspect(Path(SYSTEM_PYTHON))
    assert unmet_in_trees(trees, target) == []
    assert len(list((cache_home / "wheelstore" / "closed").iterdir())) == 1
    assert unmet_in_trees(trees, target) == []
    for _ in range(2):  # other extras are another set, and its answer is not remembered
        assert [u.required for u in unmet_in_trees(trees, target, {"LIB": ["proxy"]})] == ["socks"]
    assert len(list((cache_home / "wheelstore" / "closed").iterdir())) == 1
    again = subprocess.run([sys.executable, "-c", (
        "import json, sys\n"
        "from wheelstore.base.interpreter import Interpreter\n"
        "from wheelstore.resolve.closure import unmet_in_trees\n"
        "from wheelstore.store.store import Store\n"
        "store = Store.open(sys.argv[1])\n"
        "found = unmet_in_trees([store.lookup(sys.argv[2])], Interpreter.inspect(sys.argv[3]))\n"
        "print(json.dumps([found, sorted(m for m in sys.modules if m.startswith('packaging.'))]))"),
        str(tmp_path / "store"), trees[0].key, SYSTEM_PYTHON], capture_output=True, text=True, check=True)
    assert json.loads(again.stdout) == [[], ["packaging.version"]]  # a fresh process, neither parser nor markers


def test_a_metadata_rewritten_after_the_set_was_remembered_is_checked_again(tmp_path: Path,
                                                                          cache_home: Path) -> None:
    """What is remembered of a closed set holds only for the METADATA files it was read from: the tree's owner who
    rewrites one (to add or drop a requirement) moves its ctime, and the set is checked again."""
    (tree,) = _trees(tmp_path, ("app", "1.0", ()))
    target = Interpreter.inspect(Path(SYSTEM_PYTHON))
    assert unmet_in_trees([tree], target) == []
    metadata = tree.path / tree.manifest.dist_info / "METADATA"
    mode = metadata.stat().st_mode
    metadata.chmod(0o644)
    metadata.write_bytes(metadata.read_bytes().replace(b"Name: app", b"Requires-Dist: lib\nName: app"))
    metadata.chmod(mode)
    assert [u.required for u in unmet_in_trees([tree], target)] == ["lib"]


@pytest.mark.parametrize("planted", ["symlink", "fifo", "garbage"])
def test_a_metadata_planted_by_the_trees_owner_is_refused_not_followed(
    run: Runner, users: Users, workdir: Path, group_store: Path, planted: str
) -> None:
    """bob published a tree, then put a symlink to a file of his (which would add a requirement, or in root's
    process read what only root may), a FIFO (which would hang the reader) or a file that is no METADATA in place
    of its METADATA. Root's check refuses it in one line and neither follows nor blocks."""
    whl = make_wheel(workdir, "mdf", "1.0", requires=("lib",))
    key = _realize(run, users.bob, group_store, whl)
    decoy = workdir / "decoy"
    decoy.write_text("Metadata-Version: 2.1\nName: mdf\nVersion: 1.0\n")
    decoy.chmod(0o644)
    code = {"symlink": f"os.symlink({str(decoy)!r}, sys.argv[1])", "fifo": "os.mkfifo(sys.argv[1], 0o644)",
            "garbage": "open(sys.argv[1], 'w').write('just text, no fields\\n')"}[planted]
    _plant(run, users.bob, group_store / "trees" / key / "mdf-1.0.dist-info/METADATA", code)
    tree = Store.open(group_store).lookup(key)
    assert tree is not None
    with pytest.raises(BadMetadata) as caught:
        closure.requires_of_tree(tree)
    line = caught.value.oneline()
    assert f"{group_store}/trees/{key}/mdf-1.0.dist-info/METADATA (mdf-1.0-py3-none-any.whl)" in line
    assert ("has no Name field" if planted == "garbage" else "cannot be read" if planted == "symlink"
            else "is not a regular file") in line, line


def test_the_same_answers_as_pip_check_in_a_real_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
    d = tmp_path / "w"
    d.mkdir()
    wheels = [make_wheel(d, "app", "1.0", requires=("lib", "dep<2", 'gone; extra == "x"', 'win; sys_platform == "x"')),
              make_wheel(d, "dep", "2.0"), make_wheel(d, "Other_Name", "1.0", requires=("app>=1",))]
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels)],
                   check=True, capture_output=True)
    pip = subprocess.run([venv / "bin/python", "-m", "pip", "check"], capture_output=True, text=True)
    assert pip.returncode == 1
    interpreter = Interpreter.inspect(venv / "bin/python")
    dists = [of_installed(dist) for name, dist in distinfo.installed(interpreter).items()
             if name in ("app", "dep", "other-name")]
    found = unmet(dists, marker_environment(interpreter))
    assert sorted(pip.stdout.splitlines()) == [
        "app 1.0 has requirement dep<2, but you have dep 2.0.",  # (our words for this one are the brief's)
        found[1].describe() + ".",
    ]
    assert found[0].describe() == "app 1.0 requires dep<2, but dep 2.0 is installed"


def test_the_benchmark_set_is_closed_and_checked_in_a_few_milliseconds(tmp_path: Path, set36_wheels: Path) -> None:
    store = Store.init(tmp_path / "store")
    made = realize_wheels(store, [(w, None) for w in sorted(set36_wheels.glob("*.whl"))])
    trees = [store.lookup(r.tree.key) for r in made if not isinstance(r, Exception)]
    assert len(trees) == 36 and all(t is not None for t in trees)
    interpreter = Interpreter.inspect(Path(SYSTEM_PYTHON))
    target = marker_environment(interpreter)
    unmet([Requires(canonical("warm"), Version("1"), ("idna; extra == 'x'",))], target)  # (imports packaging's)
    start = time.perf_counter()
    dists = [of_tree(t) for t in trees if t is not None]
    read = time.perf_counter()
    assert unmet(dists, target) == []
    checked = time.perf_counter()
    assert unmet_in_trees([t for t in trees if t is not None], interpreter) == []
    first = time.perf_counter()
    assert unmet_in_trees([t for t in trees if t is not None], interpreter) == []
    again = time.perf_counter()
    print(f"\n36 trees, {sum(len(d.requires) for d in dists)} Requires-Dist: read {1000 * (read - start):.2f} ms, "
          f"checked {1000 * (checked - read):.2f} ms; unmet_in_trees first {1000 * (first - checked):.2f} ms, "
          f"remembered {1000 * (again - first):.2f} ms")
    assert again - first < 0.005


def test_only_the_header_block_is_read_as_text() -> None:
    """The reader stops after the header block, so what it has of the description may end mid-character; the
    description's own ``Requires-Dist:`` lines are prose; CRLF files and folded lines read as pip reads them."""
    head = b"Metadata-Version: 2.1\r\nName: x\r\nRequires-Dist: a>=1;\r\n  extra == 'y'\r\nRequires-Dist: b\r\n\r\n"
    assert closure.requires_dist(head + b"Requires-Dist: prose\n" + "\u00e9".encode()[:1], "m") == [
        "a>=1; extra == 'y'", "b"]
    with pytest.raises(BadMetadata):
        closure.requires_dist(b"Name: \xff\n\n", "m")
