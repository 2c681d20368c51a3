"""Attacks on issue 16's work, as another member of a group store and as a user whose venv another tool made: the
store as an index (by name, and for uv offline), the closure check reading another member's METADATA, the versions
a venv gives uv as preferences."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import Sources
from wheelstore.resolve.plan import Request, plan
from wheelstore.store.publish import realize
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error
from .test_attack_install import _plant, _realize
from .test_fetching import ISOLATED, _import, _venv
from .test_projects import _offline, _project, _value
from .test_projects import _venv as _projects_venv
from .wheelmaker import make_wheel


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


# -- the closure check, reading another member's METADATA through the CLI ---------------------------------------------


@pytest.mark.parametrize("metadata", ["unparseable", "not-utf8-requires", "huge-header"])
def test_bobs_odd_metadata_is_one_line_for_alices_install(
    run: Runner, users: Users, workdir: Path, group_store: Path, metadata: str
) -> None:
    """bob's tree (published, or its METADATA replaced by him afterwards) has a Requires-Dist that is not a
    requirement, a Requires-Dist that is not UTF-8, or a header block of 20 MiB with no end. Alice's pinned offline
    install of it checks its dependencies from that METADATA: one line naming it, no traceback, no hang, nothing
    linked."""
    whl = make_wheel(workdir, "odd", "1.0", files={"odd/__init__.py": b""}, requires=("lib",))
    key = _realize(run, users.bob, group_store, whl)
    target = group_store / "trees" / key / "odd-1.0.dist-info/METADATA"
    head = "Metadata-Version: 2.1\\nName: odd\\nVersion: 1.0\\n"
    code = {
        "unparseable": f"open(sys.argv[1], 'w').write('{head}Requires-Dist: lib (>=1.0\\n')",
        "not-utf8-requires": f"open(sys.argv[1], 'wb').write(b'{head}Requires-Dist: l\\xffb\\n')",
        "huge-header": f"f = open(sys.argv[1], 'w'); f.write('{head}'); f.write('X: ' + 'y' * (20 << 20))",
    }[metadata]
    _plant(run, users.bob, target, code)
    venv = _venv(run, users.alice, workdir / "venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--offline", "odd==1.0",
               env=ISOLATED, timeout=60)
    line = one_line_error(done)
    assert "odd" in line, line
    assert not list(_site(venv).glob("odd*")), "nothing of bob's tree is linked"


# -- the store index: what bob plants under a name -------------------------------------------------------------------


def test_a_tree_whose_wheel_name_carries_an_encoded_path_is_not_offered(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    """bob rewrites his own manifest so that its wheel file name's platform tag is ``x%2F%2E%2E%2F...`` (no ``/``,
    no ``..``, a valid wheel name to packaging), which a file: URL decodes to a path outside alice's private index.
    Alice's ``--offline evil`` must not read it: uv (0.13.9) refuses such a tag, so evil is simply not found."""
    whl = make_wheel(workdir, "evil", "1.0", files={"evil/__init__.py": b""})
    key = _realize(run, users.bob, group_store, whl)
    manifest = group_store / "manifests" / f"{key}.json"
    code = ("import json; p = sys.argv[1]; d = json.load(open(p)); "
            "d['wheel'] = 'evil-1.0-py3-none-any.x%2F%2E%2E%2F%2E%2E%2Foutside.whl'; "
            "os.chmod(p, 0o644); os.unlink(p); open(p, 'w').write(json.dumps(d)); os.chmod(p, 0o444)")
    done = run.python(users.bob, f"import os, sys; {code}", str(manifest))
    assert done.returncode == 0, done.stderr
    outside = workdir / "outside.whl"
    outside.write_bytes(b"not a wheel")
    venv = _venv(run, users.alice, workdir / "venv")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--offline", "evil",
               env={**ISOLATED, "UV_CACHE_DIR": str(workdir / "uvcache")})
    assert "evil" in one_line_error(done)
    assert not list(_site(venv).glob("evil*"))


# -- the venv's versions as uv's preferences -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0-SNAPSHOT-r1", "1.0\x7f", '1.0"\nmalicious = "x'])
def test_a_venv_distribution_with_a_version_uv_cannot_read_does_not_break_resolving(
    run: Runner, users: Users, workdir: Path, group_store: Path, version: str
) -> None:
    """Another tool left a distribution in alice's venv whose METADATA Version is not PEP 440 (a legacy version,
    a DEL, a quote and a newline). An unpinned install resolves with the venv's versions as preferences: such a
    version must neither reach uv's TOML (which rejects the whole file: 'TOML parse error at line 6') nor inject
    into it; the install works and the odd distribution is left alone."""
    wheels = workdir / "wheels"
    wheels.mkdir(mode=0o755)
    make_wheel(wheels, "app", "1.0", files={"app/__init__.py": b"VALUE = 'app'\n"}).chmod(0o644)
    venv = _venv(run, users.alice, workdir / "venv")
    code = ("import os, sys; d = os.path.join(sys.argv[1], 'odd-1.0.dist-info'); os.mkdir(d); "
            "open(os.path.join(d, 'METADATA'), 'w').write('Metadata-Version: 2.1\\nName: odd\\nVersion: ' "
            "+ sys.argv[2] + '\\n'); open(os.path.join(d, 'RECORD'), 'w').write('odd-1.0.dist-info/METADATA,,\\n'); "
            "open(os.path.join(d, 'INSTALLER'), 'w').write('pip\\n')")
    made = run.python(users.alice, code, str(_site(venv)), version)
    assert made.returncode == 0, made.stderr
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--no-index", "-f",
               str(wheels), "app", env={**ISOLATED, "UV_CACHE_DIR": str(workdir / "uvcache")})
    assert done.returncode == 0, done.stderr
    assert _import(users.alice, venv, "import app; print(app.VALUE)") == "app"
    assert (_site(venv) / "odd-1.0.dist-info" / "METADATA").is_file()
    assert not any(p.name.startswith("malicious") for p in os.scandir(_site(venv)))


# -- two trees of one wheel file name in the offline index ----------------------------------------------------------


def test_offline_two_builds_of_one_version_lock_the_tree_whose_metadata_uv_read(tmp_path: Path,
                                                                                cache_home: Path) -> None:
    """Two trees with one wheel file name (``install ./proj`` publishes a new tree per source change, all
    ``proj-0.1-py3-none-any.whl``): the first (by key) requires ``lib``, the other nothing. The offline index wrote
    both links but one stub and one ``.metadata`` file (the last tree's), so uv locked the first tree's key with
    the second's METADATA: ``--offline proj`` installed a proj that requires lib, without lib."""
    Store.init(tmp_path / "store")
    store = Store.open(tmp_path / "store")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    py = Interpreter.inspect(tmp_path / "venv" / "bin" / "python")

    def build(i: int, requires: tuple[str, ...]) -> Path:
        d = tmp_path / f"w{i}-{len(requires)}"
        d.mkdir()
        return make_wheel(d, "proj", "0.1", files={"proj/__init__.py": f"V = {i}\n".encode()}, requires=requires)

    for i in range(100):  # the tree that requires lib must sort first
        needs, alone = build(i, ("lib",)), build(i, ())
        if hashlib.sha256(needs.read_bytes()).hexdigest() < hashlib.sha256(alone.read_bytes()).hexdigest():
            break
    first, _second = realize(store, needs).tree, realize(store, alone).tree
    libs = tmp_path / "lib"
    libs.mkdir()
    lib = realize(store, make_wheel(libs, "lib", "1.0")).tree
    offline = Sources(index_urls=(), no_index=True, offline=True)
    os.environ["UV_CACHE_DIR"] = str(tmp_path / "uvcache")
    try:
        chosen = plan(store, py, Request(items=["proj"]), offline).candidates
    finally:
        del os.environ["UV_CACHE_DIR"]
    keys: dict[str, str | None] = {c.name: c.sha256 for c in chosen}
    assert keys.get("proj") != first.key or keys.get("lib") == lib.key, keys


# -- editables: a failed build changes nothing ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["install", "sync"])
def test_a_failed_editable_build_keeps_the_linked_version(run: Runner, workdir: Path, kit: tuple[Path, Path, Sources],
                                                          command: str) -> None:
    links = Path(kit[2].find_links[0])  # flit_core, as tests/test_projects.py's links
    store, venv = workdir / "store", _projects_venv(workdir / "venv")
    proj = _project(workdir / "proj")
    assert run(None, "init", str(store)).returncode == 0
    linked = make_wheel(workdir, "myproj", "0.1", files={"myproj/__init__.py": b"VALUE = 'linked'\n"})
    done = run(None, "--store", str(store), "install", "--venv", str(venv), str(linked))
    assert done.returncode == 0, done.stderr
    shutil.rmtree(proj / "myproj")  # flit_core cannot build it now
    extra = ["--no-deps"] if command == "install" else []
    done = run(None, "--store", str(store), command, "--venv", str(venv), *extra, "-e", str(proj), *_offline(links))
    assert "editable" in one_line_error(done)
    assert _value(venv) == "linked"


# -- what a careful uv user expects -----------------------------------------------------------------------------------


def test_an_unpinned_request_the_venv_satisfies_needs_no_index(run: Runner, workdir: Path) -> None:
    store, venv = workdir / "store", _projects_venv(workdir / "venv")
    assert run(None, "init", str(store)).returncode == 0
    app = make_wheel(workdir, "app", "1.0", files={"app/__init__.py": b"VALUE = 'app'\n"})
    assert run(None, "--store", str(store), "install", "--venv", str(venv), str(app)).returncode == 0
    done = run(None, "--store", str(store), "install", "--venv", str(venv), "--index-url", "http://127.0.0.1:9/simple",
               "app", env=ISOLATED)
    assert done.returncode == 0, done.stderr


def test_offline_a_dependency_the_store_lacks_is_named_as_not_in_the_store(run: Runner, workdir: Path) -> None:
    store, venv = workdir / "store", _projects_venv(workdir / "venv")
    assert run(None, "init", str(store)).returncode == 0
    app = make_wheel(workdir, "app", "1.0", files={"app/__init__.py": b""}, requires=("lib",))
    done = run(None, "--store", str(store), "install", "--venv", str(venv), "--no-deps", str(app))
    assert done.returncode == 0, done.stderr
    done = run(None, "--store", str(store), "install", "--venv", str(venv), "--offline", "app",
               env={**ISOLATED, "UV_CACHE_DIR": str(workdir / "uvcache")})
    line = one_line_error(done)
    assert "lib" in line and "store" in line and "cache" not in line, line


def _needs_python(directory: Path, spec: str) -> Path:
    """A wheel ``newpy 1.0`` whose METADATA says ``Requires-Python: {spec}`` (its RECORD made again)."""
    import zipfile

    from .wheelmaker import record_hash

    path = make_wheel(directory, "newpy", "1.0", files={"newpy/__init__.py": b""})
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["newpy-1.0.dist-info/METADATA"] += f"Requires-Python: {spec}\n".encode()
    rows = [f"{k},{record_hash(v)},{len(v)}" for k, v in members.items() if not k.endswith("/RECORD")]
    members["newpy-1.0.dist-info/RECORD"] = ("\n".join([*rows, "newpy-1.0.dist-info/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("given", ["wheel", "find-links pin"])
def test_a_wheel_that_requires_another_python_is_refused(run: Runner, workdir: Path, given: str) -> None:
    store, venv = workdir / "store", _projects_venv(workdir / "venv")
    assert run(None, "init", str(store)).returncode == 0
    wheels = workdir / "wheels"
    wheels.mkdir()
    whl = _needs_python(wheels, ">=3.99")
    args = [str(whl)] if given == "wheel" else ["--no-index", "-f", str(wheels), "newpy==1.0"]
    done = run(None, "--store", str(store), "install", "--venv", str(venv), *args, env=ISOLATED)
    assert "3.99" in one_line_error(done)
    assert not list(_site(venv).glob("newpy*"))


#: setuptools and what it builds with, for a setup.py project (whose name no file states statically)
SETUPTOOLS = [Path("/opt/pypi/files") / f for f in ("setuptools-84.0.0-py3-none-any.whl",
                                                    "packaging-26.3-py3-none-any.whl", "wheel-0.48.0-py3-none-any.whl")]


def test_sync_keeps_an_editable_setup_py_project_named_unlike_its_directory(run: Runner, workdir: Path) -> None:
    if not all(p.is_file() for p in SETUPTOOLS):
        pytest.skip("setuptools wheels are not in /opt/pypi/files")
    links = workdir / "links"
    links.mkdir()
    for wheel in SETUPTOOLS:
        shutil.copy(wheel, links)
    proj = workdir / "checkout"
    (proj / "mylib").mkdir(parents=True)
    (proj / "setup.py").write_text("from setuptools import setup\nsetup(name='mylib', version='0.1', "
                                   "packages=['mylib'])\n")
    (proj / "mylib" / "__init__.py").write_text("VALUE = 'editable'\n")
    store, venv = workdir / "store", _projects_venv(workdir / "venv")
    assert run(None, "init", str(store)).returncode == 0
    args = ["--store", str(store), "sync", "--venv", str(venv), "-e", str(proj), "--no-index", "-f", str(links)]
    first = run(None, *args, env=ISOLATED, timeout=300)
    assert first.returncode == 0, first.stderr
    again = run(None, *args, env=ISOLATED, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "- mylib" not in again.stdout, again.stdout
