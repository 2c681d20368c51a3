"""Errors for what no location has, through the real CLI against a real HTTP index and find-links directories: one
line naming what was asked, every location asked and what exists there; hashes only when a hash decided it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.index import RemoteFile, why_missing

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, snapshot
from .pyindex import PyIndex
from .wheelmaker import make_wheel

#: no pip or uv configuration of this machine (its mirror, its find-links): only what a test names
ISOLATED = {"PIP_CONFIG_FILE": os.devnull, "UV_NO_CONFIG": "1"}


@pytest.fixture
def index(workdir: Path) -> Iterator[PyIndex]:
    """foopkg 1.0, 2.0 and 2.1 for any platform, winonly 1.0 for Windows only."""
    files = workdir / "files"
    files.mkdir()
    with PyIndex() as served:
        for version in ("1.0", "2.0", "2.1"):
            served.add(_wheel(files, "foopkg", version))
        served.add(_wheel(files, "winonly", "1.0", tag="py3-none-win_amd64"))
        yield served


@pytest.fixture
def links(workdir: Path) -> Path:
    """A find-links directory with linkpkg 1.0 and foopkg 0.5."""
    directory = workdir / "links"
    directory.mkdir(mode=0o755)
    _wheel(directory, "linkpkg", "1.0")
    _wheel(directory, "foopkg", "0.5")
    return directory


def _wheel(directory: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    path = make_wheel(directory, name, version, files={f"{name}/__init__.py": b""}, tag=tag)
    path.chmod(0o644)
    return path


def _install(run: Runner, users: Users, workdir: Path, store: Path, *args: str) -> str:
    """The one-line error of an install that must fail and leave the venv as it was."""
    venv = workdir / "v"
    if not venv.exists():
        made = run(users.alice, "venv", str(venv), "--python", SYSTEM_PYTHON)
        assert made.returncode == 0, made.stderr
    before = snapshot(venv)
    done = run(users.alice, "--store", str(store), "install", "-q", "--venv", str(venv), *args, env=ISOLATED)
    assert done.returncode == 1, done
    assert snapshot(venv) == before
    return one_line_error(done)


def test_a_version_that_does_not_exist_names_the_versions_that_do(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex, links: Path
) -> None:
    error = _install(run, users, workdir, group_store, "--index-url", index.simple_url, "--find-links", str(links),
                     "foopkg==99.0")
    assert error == (f"error: no version of foopkg matches ==99.0 (available on {index.simple_url}, {links}: "
                     "2.1, 2.0, 1.0, 0.5)"), error


def test_a_name_that_does_not_exist_names_every_location_asked(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex, links: Path
) -> None:
    error = _install(run, users, workdir, group_store, "--index-url", index.simple_url, "--find-links", str(links),
                     "--find-links", index.flat_url, "fopkg==2.0")
    assert error == f"error: no distribution named fopkg on {index.simple_url}, {index.flat_url}, {links}", error


def test_a_version_with_only_other_platforms_wheels_names_their_tags(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    error = _install(run, users, workdir, group_store, "--index-url", index.simple_url, "winonly==1.0")
    best = Interpreter.inspect(Path(SYSTEM_PYTHON)).tags[0]
    assert error.startswith(f"error: no file of winonly==1.0 on {index.simple_url} suits this interpreter "
                            f"({best.interpreter}, {best.platform}): found only py3-none-win_amd64"), error
    assert "hash" not in error, error


def test_a_hash_that_matches_no_file_is_the_reason_given(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    real = index.files["foopkg-2.0-py3-none-any.whl"].sha256
    req = workdir / "req.txt"
    req.write_text(f"foopkg==2.0 --hash=sha256:{'0' * 64}\n")
    req.chmod(0o644)
    error = _install(run, users, workdir, group_store, "--index-url", index.simple_url, "-r", str(req))
    assert error == (f"error: no file of foopkg==2.0 on {index.simple_url} has the required hash: "
                     f"foopkg-2.0-py3-none-any.whl has sha256 {real}"), error


def test_find_links_alone_are_named_and_never_an_empty_location(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex, links: Path
) -> None:
    """Once printed as "... on : foopkg==99.0" (only the index URLs were named, and --no-index has none)."""
    remote = _install(run, users, workdir, group_store, "--no-index", "--find-links", index.flat_url, "foopkg==99.0")
    assert remote.startswith(f"error: no version of foopkg matches ==99.0 (available on {index.flat_url}: "
                             "2.1, 2.0, 1.0)"), remote
    local = _install(run, users, workdir, group_store, "--no-index", "--find-links", str(links), "linkpkg==2.0")
    assert local == (f"error: no version of linkpkg matches ==2.0 (available on {links}: 1.0) "
                     "(fix: give the wheel with --find-links DIR, or drop --no-index)"), local


def test_an_unpinned_name_that_does_not_exist_keeps_uvs_reason_and_the_index(
    run: Runner, users: Users, workdir: Path, group_store: Path, index: PyIndex
) -> None:
    error = _install(run, users, workdir, group_store, "--index-url", index.simple_url, "fopkg")
    assert "fopkg was not found in the package registry" in error and index.simple_url in error, error
    assert "hash" not in error, error


def _remote(filename: str, sha256: str = "", requires_python: str | None = None) -> RemoteFile:
    return RemoteFile(filename, f"http://x/{filename}", {"sha256": sha256} if sha256 else {}, requires_python)


def test_long_version_lists_are_cut_to_the_newest_and_python_limits_are_said() -> None:
    interpreter = Interpreter.inspect(Path(SYSTEM_PYTHON))
    many = [_remote(f"big-1.{minor}-py3-none-any.whl") for minor in range(12)]
    said = why_missing(many, "big", Version("9"), interpreter, frozenset(), "http://x/simple")
    assert said == "no version of big matches ==9 (available on http://x/simple: 1.11, 1.10, 1.9, 1.8, 1.7 and 7 older)"
    future = [_remote("new-1.0-py3-none-any.whl", requires_python=">=4")]
    said = why_missing(future, "new", Version("1.0"), interpreter, frozenset(), "D")
    python = ".".join(map(str, interpreter.version))
    assert said == f"no file of new==1.0 on D is for Python {python}: requires-python >=4", said
