"""Acceptance of the fetch stage through the real CLI: installs from a real HTTP index, bad bytes, sdists built once
and shared, ``--offline``, and the registry configured on this machine."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM_PYTHON, Runner, Users, flit_core_wheel, one_line_error, snapshot
from .pyindex import PyIndex
from .wheelmaker import make_sdist, make_wheel

#: no pip or uv configuration of this machine (its mirror, its find-links): only what a test names
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    with PyIndex(log_file=workdir / "access.log") as served:
        yield served


def _wheel(directory: Path, name: str, version: str = "1.0", requires: tuple[str, ...] = ()) -> Path:
    files = {f"{name}/__init__.py": f"VALUE = {name!r}\n".encode()}
    path = make_wheel(directory, name, version, files=files)
    if requires:  # add Requires-Dist to METADATA by rebuilding with the same helper's layout
        import zipfile

        from .wheelmaker import record_hash

        with zipfile.ZipFile(path) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        meta = f"{name}-{version}.dist-info/METADATA"
        members[meta] += "".join(f"Requires-Dist: {r}\n" for r in requires).encode()
        record = f"{name}-{version}.dist-info/RECORD"
        rows = [f"{p},{record_hash(d)},{len(d)}" for p, d in members.items() if p != record] + [f"{record},,"]
        members[record] = ("\n".join(rows) + "\n").encode()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for p, d in members.items():
                zf.writestr(zipfile.ZipInfo(p, date_time=(2020, 1, 1, 0, 0, 0)), d)
    path.chmod(0o644)
    return path


def _venv(run: Runner, user: str, path: Path) -> Path:
    made = run(user, "venv", str(path), "--python", SYSTEM_PYTHON)
    assert made.returncode == 0, made.stderr
    return path


def _import(user: str, venv: Path, code: str) -> str:
    done = subprocess.run(["runuser", "-u", user, "--", str(venv / "bin" / "python"), "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_unpinned_requirement_resolves_through_uv_and_downloads_from_the_index(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    files = workdir / "files"
    files.mkdir()
    index.add(_wheel(files, "toppkg", "1.0", requires=("leafpkg>=2",)))
    index.add(_wheel(files, "leafpkg", "1.0"))
    index.add(_wheel(files, "leafpkg", "2.0"))
    venv = _venv(run, users.alice, workdir / "v")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--index-url",
               index.simple_url, "toppkg", env=ISOLATED)
    assert done.returncode == 0, done.stderr
    # not a terminal: one plain line per download (a bar only on a TTY)
    assert "downloaded toppkg-1.0-py3-none-any.whl" in done.stderr and "\x1b[" not in done.stderr, done.stderr
    assert _import(users.alice, venv, "import toppkg, leafpkg; print(toppkg.VALUE, leafpkg.VALUE)") == "toppkg leafpkg"
    listed = run(users.alice, "list", "--venv", str(venv), "--json")
    assert {(d["name"], d["version"]) for d in __import__("json").loads(listed.stdout)} >= {
        ("toppkg", "1.0"), ("leafpkg", "2.0")}
    site = next((venv / "lib").glob("python*/site-packages"))
    # auto folds in a group store on ext4, and a downloaded tree carries its pycs, so the package is one link
    assert (site / "toppkg").is_symlink() and list((site / "toppkg" / "__pycache__").glob("*.pyc"))
    assert (site / "toppkg-1.0.dist-info" / "REQUESTED").exists()  # named by the user
    assert not (site / "leafpkg-2.0.dist-info" / "REQUESTED").exists()  # added by the resolver
    # every file came from the index once; a second venv of another user downloads nothing
    assert len(index.downloads("toppkg-1.0-py3-none-any.whl")) == 1
    before = len(index.downloads())
    venv2 = _venv(run, users.bob, workdir / "v2")
    again = run(users.bob, "--store", str(group_store), "install", "-q", "--venv", str(venv2), "--index-url",
                index.simple_url, "toppkg==1.0", "leafpkg==2.0", env=ISOLATED)
    assert again.returncode == 0 and again.stdout == again.stderr == "", again
    assert len(index.downloads()) == before


@pytest.mark.parametrize("fault", ["wrong_bytes", "cut"])
def test_bad_bytes_from_the_index_change_nothing(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex, fault: str
) -> None:
    files = workdir / "files"
    files.mkdir()
    index.add(_wheel(files, "goodpkg"))
    bad = _wheel(files, "badpkg")
    index.add(bad, **({"wrong_bytes": True} if fault == "wrong_bytes" else {"cut": -1}))
    venv = _venv(run, users.alice, workdir / "v")
    store_before, venv_before = snapshot(group_store), snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "install", "-q", "--venv", str(venv), "--index-url",
               index.simple_url, "badpkg==1.0", "goodpkg==1.0", env=ISOLATED)
    assert done.returncode == 1
    error = one_line_error(done)
    assert bad.name in error, error
    assert snapshot(venv) == venv_before
    after = snapshot(group_store)
    # goodpkg may have been published (complete, content-addressed) while badpkg failed; nothing of badpkg was, and
    # no staging or half-written entry is left behind
    assert not [p for p in after if "badpkg" in p or p.startswith("staging/")], sorted(after)
    assert {p for p in store_before} <= set(after)


def test_sdist_only_package_is_built_once_and_shared(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    markers = workdir / "markers"
    markers.mkdir()
    markers.chmod(0o1777)
    files = workdir / "files"
    files.mkdir()
    index.add(make_sdist(files, markers))
    index.add(flit_core_wheel())  # the build backend, from the same index
    venvs = [_venv(run, users.alice, workdir / "a1"), _venv(run, users.alice, workdir / "a2"),
             _venv(run, users.bob, workdir / "b1")]
    for user, venv in zip((users.alice, users.alice, users.bob), venvs, strict=True):
        done = run(user, "--store", str(group_store), "install", "--venv", str(venv), "--index-url",
                   index.simple_url, "tinypkg", env=ISOLATED, timeout=300)
        assert done.returncode == 0, done.stderr
        assert _import(user, venv, "import tinypkg; print(tinypkg.VALUE)") == "42"
    # (uv itself reads the sdist while resolving, from each user's own uv cache, so downloads are not counted here)
    assert len(list(markers.iterdir())) == 1, "the sdist was built more than once"


def test_offline_names_what_is_missing_and_installs_nothing(
    run: Runner, users: Users, workdir: Path, group_store: Path
) -> None:
    wheels = workdir / "wheels"
    wheels.mkdir()
    have = _wheel(wheels, "havepkg")
    venv = _venv(run, users.alice, workdir / "v")
    warm = run(users.alice, "--store", str(group_store), "realize", str(have))
    assert warm.returncode == 0, warm.stderr
    sha = __import__("hashlib").sha256(have.read_bytes()).hexdigest()
    req = workdir / "req.txt"
    req.write_text(f"havepkg==1.0 --hash=sha256:{sha}\nlostpkg==2.0 --hash=sha256:{'0' * 64}\n")
    req.chmod(0o644)
    before = snapshot(venv)
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--offline", "-r", str(req),
               env=ISOLATED)
    assert done.returncode == 1
    error = one_line_error(done)
    assert "lostpkg==2.0" in error and "havepkg" not in error and "--offline" in error, error
    assert snapshot(venv) == before
    # what the store has installs offline, from the store alone (no wheel file given)
    req.write_text(f"havepkg==1.0 --hash=sha256:{sha}\n")
    mine = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), "--offline", "-r", str(req),
               env=ISOLATED)
    assert mine.returncode == 0, mine.stderr
    assert _import(users.alice, venv, "import havepkg; print(havepkg.VALUE)") == "havepkg"


@pytest.mark.network
@pytest.mark.parametrize("requirement, module", [("requests", "requests"), ("pandas<3", "pandas")])
def test_install_from_the_configured_registry(
    run: Runner, users: Users, workdir: Path, group_store: Path, requirement: str, module: str
) -> None:
    venv = _venv(run, users.alice, workdir / "v")
    done = run(users.alice, "--store", str(group_store), "install", "--venv", str(venv), requirement, timeout=600)
    assert done.returncode == 0, done.stderr
    version = _import(users.alice, venv, f"import {module}; print({module}.__version__)")
    if module == "pandas":
        assert version.split(".")[0] in ("1", "2"), version
