"""Hashed requirements against locations whose links list no sha256 (issue 16, point 5): a plain directory listing as
``python -m http.server`` serves it, used as --find-links or as an index, through the real CLI. The file is downloaded
and its sha256 checked against the requirement's before anything is published, as pip does."""

from __future__ import annotations

import functools
import hashlib
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from packaging.version import Version

from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.index import RemoteFile, why_missing
from wheelstore.fetch.pinned import choose_pinned

from .conftest import SYSTEM_PYTHON, Runner, Users, one_line_error, published, snapshot
from .pyindex import PyIndex
from .test_missing import ISOLATED
from .wheelmaker import make_wheel


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


@pytest.fixture
def served(workdir: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1 by the standard library's file server (directory listings, links
    without hashes), and its URL."""
    root = workdir / "www"
    root.mkdir(mode=0o755)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _wheel(directory: Path, value: str = "served plainly") -> tuple[Path, str]:
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    path = make_wheel(directory, "plainpkg", "1.0", files={"plainpkg/__init__.py": f"VALUE = {value!r}\n".encode()})
    path.chmod(0o644)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _requirements(workdir: Path, line: str) -> Path:
    req = workdir / "req.txt"
    req.write_text(line + "\n")
    req.chmod(0o644)
    return req


def _venv(run: Runner, users: Users, workdir: Path) -> Path:
    venv = workdir / "v"
    made = run(users.alice, "venv", str(venv), "--python", SYSTEM_PYTHON)
    assert made.returncode == 0, made.stderr
    return venv


def _imports(run: Runner, users: Users, venv: Path) -> str:
    done = subprocess.run([str(venv / "bin" / "python"), "-c", "import plainpkg; print(plainpkg.VALUE)"],
                          capture_output=True, text=True, env=run.env(users.alice), cwd="/", timeout=60,
                          **run.popen_kwargs(users.alice, 0o022))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _install(
    run: Runner, users: Users, store: Path, venv: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(users.alice, "--store", str(store), "install", "-q", "--venv", str(venv), *args,
               env={**ISOLATED, **(env or {})})


def _located(where: str, root: Path, url: str) -> tuple[str, list[str], dict[str, str], str]:
    """The wheel's sha256, the options and environment that name its location, and the file's URL: served as a
    find-links listing, as an index (``<url>/simple/plainpkg/`` is that directory's listing: a PEP 503 page without
    hashes), or in a local find-links directory the user's uv configuration names (not the command line's, which the
    pins are matched against first)."""
    if where == "find-links":
        _path, sha = _wheel(root)
        return sha, ["--no-index", "--find-links", url], {}, url + "plainpkg-1.0-py3-none-any.whl"
    if where == "index":
        _path, sha = _wheel(root / "simple" / "plainpkg")
        return sha, ["--index-url", url + "simple"], {}, url + "simple/plainpkg/plainpkg-1.0-py3-none-any.whl"
    path, sha = _wheel(root / "local")
    return sha, ["--no-index"], {"UV_FIND_LINKS": str(root / "local")}, path.as_uri()


PLACES = ["find-links", "index", "configured-dir"]


@pytest.mark.parametrize("where", PLACES)
def test_a_hashed_requirement_installs_from_a_plain_directory_listing(
    run: Runner, users: Users, workdir: Path, group_store: Path, served: tuple[Path, str], where: str
) -> None:
    sha, located, env, _url = _located(where, *served)
    req = _requirements(workdir, f"plainpkg==1.0 --hash=sha256:{'0' * 64} --hash=sha256:{sha}")
    venv = _venv(run, users, workdir)
    done = _install(run, users, group_store, venv, "-r", str(req), *located, env=env)
    assert done.returncode == 0, done.stderr
    assert _imports(run, users, venv) == "served plainly"
    assert any(p.startswith("trees/") for p in published(group_store)), sorted(published(group_store))
    assert not [p for p in snapshot(group_store) if p.startswith("staging/")]


@pytest.mark.parametrize("where", PLACES)
def test_a_wrong_hash_fails_in_one_line_and_leaves_everything_as_it_was(
    run: Runner, users: Users, workdir: Path, group_store: Path, served: tuple[Path, str], where: str
) -> None:
    sha, located, env, file_url = _located(where, *served)
    wrong = hashlib.sha256(b"other bytes").hexdigest()
    req = _requirements(workdir, f"plainpkg==1.0 --hash=sha256:{wrong}")
    venv = _venv(run, users, workdir)
    venv_before, store_before = snapshot(venv), published(group_store)
    done = _install(run, users, group_store, venv, "-r", str(req), *located, env=env)
    error = one_line_error(done)
    assert error.startswith(f"error: plainpkg-1.0-py3-none-any.whl from {file_url} has sha256 {sha}, "
                            f"not the required {wrong}; nothing was published"), error
    assert snapshot(venv) == venv_before
    assert published(group_store) == store_before
    assert not [p for p in snapshot(group_store) if p.startswith("staging/")]


def test_a_file_another_location_lists_with_the_required_hash_is_taken_without_downloading_the_unlisted_one(
    run: Runner, users: Users, workdir: Path, group_store: Path, served: tuple[Path, str]
) -> None:
    """The same file name on an index without hashes (asked first) and on a find-links page listing its sha256: the
    listed one is used, so other bytes behind the unlisted link cannot fail the install."""
    root, url = served
    _wheel(root / "simple" / "plainpkg", value="other bytes")
    right, sha = _wheel(workdir / "right")
    req = _requirements(workdir, f"plainpkg==1.0 --hash=sha256:{sha}")
    venv = _venv(run, users, workdir)
    with PyIndex() as index:
        index.add(right)
        done = _install(run, users, group_store, venv, "-r", str(req), "--index-url", url + "simple",
                        "--find-links", index.flat_url)
        assert done.returncode == 0, done.stderr
        assert len(index.downloads(right.name)) == 1
    assert _imports(run, users, venv) == "served plainly"


def _remote(filename: str, sha256: str | None = None) -> RemoteFile:
    return RemoteFile(filename, f"http://x/{filename}", {"sha256": sha256} if sha256 else {})


def test_a_link_listing_a_required_hash_is_chosen_before_unlisted_ones_and_a_wrong_listed_one_never() -> None:
    interpreter = Interpreter.inspect(Path(SYSTEM_PYTHON))
    best = interpreter.tags[0]
    right, other = "a" * 64, "b" * 64
    native = _remote(f"p-1.0-{best.interpreter}-{best.abi}-{best.platform}.whl")  # the better tags, no hash listed
    listed = _remote("p-1.0-py3-none-any.whl", right)
    # pip's order: a file whose link lists an allowed hash first (no download needed to trust it)
    assert choose_pinned([native, listed], "p", Version("1.0"), frozenset({right}), interpreter) == listed
    unlisted = choose_pinned([native, _remote("p-1.0-py3-none-any.whl", other)], "p", Version("1.0"),
                             frozenset({right}), interpreter)
    assert unlisted is not None and unlisted.filename == native.filename and unlisted.accepted == {right}
    # a link that lists another hash is never a candidate
    assert choose_pinned([_remote("p-1.0-py3-none-any.whl", other)], "p", Version("1.0"), frozenset({right}),
                         interpreter) is None
    # without hashes: the best tags, nothing to check
    plain = choose_pinned([native, listed], "p", Version("1.0"), frozenset(), interpreter)
    assert plain == native and plain is not None and not plain.accepted


def test_a_listing_without_hashes_is_never_the_reason_a_hashed_pin_is_missing() -> None:
    interpreter = Interpreter.inspect(Path(SYSTEM_PYTHON))
    windows = [_remote("plain-1.0-py3-none-win_amd64.whl")]
    said = why_missing(windows, "plain", Version("1.0"), interpreter, frozenset({"a" * 64}), "D")
    assert said.startswith("no file of plain==1.0 on D suits this interpreter") and "hash" not in said, said
