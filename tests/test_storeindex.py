"""The store as an index (issue 16, point 3): trees found by name and version, a local simple index uv resolves
against offline, and ``--offline NAME==V`` / ``--offline NAME`` installing from the store alone after one online
install, with the user's uv cache emptied and the index server stopped."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import Sources
from wheelstore.resolve.plan import Request, plan
from wheelstore.resolve.storeindex import scan, store_index, trees_named
from wheelstore.store.publish import realize
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error
from .pyindex import PyIndex
from .test_fetching import ISOLATED, _import, _venv, _wheel
from .wheelmaker import make_wheel

OFFLINE = Sources(index_urls=(), no_index=True, offline=True)


@pytest.fixture
def store(tmp_path: Path, cache_home: Path) -> Store:
    Store.init(tmp_path / "store")
    return Store.open(tmp_path / "store")


@pytest.fixture
def py(tmp_path: Path, cache_home: Path) -> Interpreter:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    return Interpreter.inspect(tmp_path / "venv" / "bin" / "python")


def _uv_env(cache: Path) -> dict[str, str]:
    return {**ISOLATED, "UV_CACHE_DIR": str(cache)}


def test_trees_named_finds_by_name_and_version_best_tags_first(store: Store, py: Interpreter, tmp_path: Path) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    generic = realize(store, make_wheel(wheels, "Demo_Pkg", "1.0")).tree
    tag = f"py{py.version[0]}{py.version[1]}-none-any"  # preferred to py3-none-any
    better = realize(store, make_wheel(wheels, "Demo_Pkg", "1.0", tag=tag)).tree
    realize(store, make_wheel(wheels, "Demo_Pkg", "2.0"))
    realize(store, make_wheel(wheels, "demo_pkg", "1.0", tag="py3-none-win_amd64"))  # another platform's
    found = trees_named(store, "demo.pkg", "1.0.0", py)
    assert [t.key for t in found] == [better.key, generic.key]
    assert trees_named(store, "demo-pkg", "3.0", py) == []
    assert trees_named(store, "other", "1.0", py) == []


def test_a_manifest_naming_another_distribution_is_not_mapped(store: Store, py: Interpreter, tmp_path: Path) -> None:
    """A manifest rewritten (by its publisher, a member) to call its tree ``victim`` while its wheel is ``evil``'s
    does not make ``victim`` map to it; nor does a METADATA that names another distribution enter the index."""
    wheels = tmp_path / "w"
    wheels.mkdir()
    tree = realize(store, make_wheel(wheels, "evil", "1.0")).tree
    path = store.root / "manifests" / f"{tree.key}.json"
    data = json.loads(path.read_bytes())
    data.update(name="victim", dist_info="victim-1.0.dist-info")
    path.chmod(0o644)
    path.write_text(json.dumps(data))
    path.chmod(0o444)
    assert "victim" not in scan(store, py) and "evil" not in scan(store, py)
    assert trees_named(store, "victim", "1.0", py) == []
    index = tmp_path / "index"
    index.mkdir()
    store_index(store, py, index)
    assert not (index / "victim").exists() and not (index / "evil").exists()


def test_a_tree_whose_metadata_was_changed_is_left_out_of_the_index(store: Store, py: Interpreter,
                                                                    tmp_path: Path) -> None:
    """The index's METADATA is the tree's file only while it has the bytes its manifest records: one rewritten to
    name another distribution, or to drop a dependency, is not shown to uv."""
    wheels = tmp_path / "w"
    wheels.mkdir()
    kept = realize(store, make_wheel(wheels, "kept", "1.0")).tree
    changed = realize(store, make_wheel(wheels, "changed", "1.0")).tree
    metadata = changed.path / changed.manifest.dist_info / "METADATA"
    os.chmod(metadata.parent, 0o755)
    os.chmod(metadata, 0o644)
    metadata.write_text("Metadata-Version: 2.1\nName: kept\nVersion: 1.0\n")
    index = tmp_path / "index"
    index.mkdir()
    store_index(store, py, index)
    assert sorted(p.name for p in index.iterdir() if p.is_dir()) == ["kept"]
    assert (index / "kept" / "kept-1.0-py3-none-any.whl.metadata").read_bytes() == (
        kept.path / kept.manifest.dist_info / "METADATA").read_bytes()


def test_uv_resolves_from_the_store_index_with_an_empty_cache(store: Store, py: Interpreter, tmp_path: Path) -> None:
    """uv 0.13.9, offline, with a fresh cache, resolves against the index alone and locks the tree keys."""
    wheels = tmp_path / "w"
    wheels.mkdir()
    app = realize(store, _wheel(wheels, "app", "2.0", requires=("lib>=1.0",))).tree
    lib = realize(store, _wheel(wheels, "lib", "1.0")).tree
    shutil.rmtree(wheels)
    index = tmp_path / "index"
    index.mkdir()
    url = store_index(store, py, index)
    assert (index / "app" / "app-2.0-py3-none-any.whl.metadata").read_bytes().endswith(b"Requires-Dist: lib>=1.0\n")
    assert f"#sha256={app.key}" in (index / "app" / "index.html").read_text()
    (tmp_path / "req.in").write_text("app\n")
    from wheelstore.fetch.uv import uv_binary

    done = subprocess.run(
        [uv_binary(), "pip", "compile", "--no-config", "--offline", "--format", "pylock.toml", "--generate-hashes",
         "--python", SYSTEM_PYTHON, "--index-url", url, str(tmp_path / "req.in"), "-o", str(tmp_path / "pylock.toml")],
        capture_output=True, text=True, env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "uvcache")}, timeout=120)
    assert done.returncode == 0, done.stderr
    locked = (tmp_path / "pylock.toml").read_text()
    assert app.key in locked and lib.key in locked, locked


def test_offline_plan_resolves_unpinned_from_the_store(store: Store, py: Interpreter, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    app = realize(store, _wheel(wheels, "app", "2.0", requires=("lib>=1.0",))).tree
    lib = realize(store, _wheel(wheels, "lib", "1.0")).tree
    shutil.rmtree(wheels)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uvcache"))
    chosen = plan(store, py, Request(items=["app"]), OFFLINE).candidates
    assert [(c.name, c.sha256, c.wheel) for c in chosen] == [("app", app.key, None), ("lib", lib.key, None)]
    (pinned,) = plan(store, py, Request(items=["lib==1.0"], no_deps=True), OFFLINE).candidates
    assert (pinned.sha256, pinned.wheel) == (lib.key, None)


def test_scan_and_index_cost_on_the_benchmark_set(store: Store, py: Interpreter, tmp_path: Path,
                                                  set36_wheels: Path) -> None:
    for wheel in sorted(set36_wheels.glob("*.whl")):
        realize(store, wheel)
    scan(store, py)  # the user's cache now holds every manifest's small fields
    start = time.perf_counter()
    scanned = scan(store, py)
    scan_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    index = tmp_path / "index"
    index.mkdir()
    store_index(store, py, index, scanned)
    index_ms = (time.perf_counter() - start) * 1000
    print(f"\n36 trees: scan {scan_ms:.1f} ms warm, index {index_ms:.1f} ms")
    assert sum(map(len, scanned.values())) == 36
    assert len(list(index.glob("*/*.metadata"))) == 36
    for trees in scanned.values():
        for tree in trees:
            digest = hashlib.sha256((index / tree.manifest.name / f"{tree.manifest.wheel}.metadata").read_bytes())
            assert digest.hexdigest() == tree.manifest.files[f"{tree.manifest.dist_info}/METADATA"].sha256


def test_offline_after_one_online_install(run: Runner, users: Users, workdir: Path, group_store: Path) -> None:
    """Acceptance 3: after one online install from an HTTP index, with the uv cache emptied and the server stopped,
    ``--offline app==2.0`` and ``--offline app`` install from the store alone."""
    wheels = workdir / "wheels"
    wheels.mkdir()
    cache = workdir / "uvcache"
    with PyIndex() as index:
        index.add(_wheel(wheels, "app", "2.0", requires=("lib>=1.0",)))
        index.add(_wheel(wheels, "lib", "1.0"))
        online = _venv(run, users.alice, workdir / "online")
        done = run(users.alice, "--store", str(group_store), "install", "--venv", str(online), "--index-url",
                   index.simple_url, "app", env=_uv_env(cache))
        assert done.returncode == 0, done.stderr
    shutil.rmtree(cache)
    shutil.rmtree(wheels)
    pinned = _venv(run, users.alice, workdir / "pinned")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(pinned), "--offline", "app==2.0",
               env=_uv_env(cache))
    assert done.returncode == 0, done.stderr
    # the pin's dependency too: its metadata, in the store, says it needs lib, which the store also holds
    assert _import(users.alice, pinned, "import app, lib; print(app.VALUE, lib.VALUE)") == "app lib"
    unpinned = _venv(run, users.alice, workdir / "unpinned")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(unpinned), "--offline", "app",
               env=_uv_env(cache))
    assert done.returncode == 0, done.stderr
    assert _import(users.alice, unpinned, "import app, lib; print(app.VALUE, lib.VALUE)") == "app lib"
    # what the store lacks is still refused offline, in one line that names it
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(unpinned), "--offline", "nothere",
               env=_uv_env(cache))
    assert done.returncode != 0 and "nothere" in one_line_error(done)
