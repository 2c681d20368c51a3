"""The resolve stage for local inputs: requirements files, pins, wheel paths and pylock files to wheel files."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from wheelstore.inputs import InputError, NeedsResolution, collect
from wheelstore.venv import Interpreter

from .conftest import SYSTEM_PYTHON
from .wheelmaker import make_wheel

SET36 = Path(__file__).resolve().parents[2] / "shared" / "bench" / "set36.txt"


@pytest.fixture(scope="module")
def py() -> Interpreter:
    return Interpreter.inspect(SYSTEM_PYTHON)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_pins_with_hashes_nested_files_and_markers(tmp_path: Path, py: Interpreter) -> None:
    links = tmp_path / "links"
    links.mkdir()
    a = make_wheel(links, "alpha", "1.0")
    b = make_wheel(links, "beta", "2.0")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.txt").write_text(f"beta==2.0 --hash=sha256:{_sha(b)}\n")
    req = tmp_path / "req.txt"
    req.write_text(textwrap.dedent(f"""\
        # a comment
        --index-url https://example.invalid/simple
        -f links
        alpha==1.0 \\
            --hash=sha256:{'0' * 64} \\
            --hash=sha256:{_sha(a)}
        -r sub/more.txt
        gamma==9.9 ; python_version < "3"
        """))
    got = collect([], [req], [], py)
    assert [(c.name, str(c.version), c.wheel.name, c.sha256) for c in got] == [
        ("alpha", "1.0", a.name, _sha(a)),
        ("beta", "2.0", b.name, _sha(b)),
    ]
    assert all(c.requested and c.direct_url is None for c in got)


def test_platform_wheel_preferred_and_incompatible_reported(tmp_path: Path, py: Interpreter) -> None:
    make_wheel(tmp_path, "plat", "1.0", tag="py3-none-any")
    native = make_wheel(tmp_path, "plat", "1.0", tag="cp311-cp311-manylinux_2_17_x86_64")
    (got,) = collect(["plat==1.0"], [], [tmp_path], py)
    assert got.wheel == native
    make_wheel(tmp_path, "winonly", "1.0", tag="cp39-cp39-win_amd64")
    with pytest.raises(InputError, match=r"no wheel for winonly==1.0 matches this interpreter .* cp39-cp39-win_amd64"):
        collect(["winonly==1.0"], [], [tmp_path], py)


def test_unpinned_needs_resolution(tmp_path: Path, py: Interpreter) -> None:
    with pytest.raises(NeedsResolution, match="requests>=2 needs resolution"):
        collect(["requests>=2"], [], [tmp_path], py)
    req = tmp_path / "r.txt"
    req.write_text("numpy\n")
    with pytest.raises(NeedsResolution, match=r"r.txt:1: numpy needs resolution"):
        collect([], [req], [tmp_path], py)


def test_hash_mismatch_and_conflicts(tmp_path: Path, py: Interpreter) -> None:
    make_wheel(tmp_path, "hashy", "1.0")
    req = tmp_path / "r.txt"
    req.write_text(f"hashy==1.0 --hash=sha256:{'1' * 64}\n")
    with pytest.raises(InputError, match="matches none of the hashes"):
        collect([], [req], [tmp_path], py)
    make_wheel(tmp_path, "hashy", "2.0")
    with pytest.raises(InputError, match="conflicting pins"):
        collect(["hashy==1.0", "hashy==2.0"], [], [tmp_path], py)
    bad = tmp_path / "bad.txt"
    bad.write_text("--frobnicate\n")
    with pytest.raises(InputError, match=r"bad.txt:1: unknown option --frobnicate"):
        collect([], [bad], [tmp_path], py)


def test_direct_wheel(tmp_path: Path, py: Interpreter) -> None:
    whl = make_wheel(tmp_path, "direct", "3.1")
    (got,) = collect([str(whl)], [], [], py)
    assert got.requested and got.sha256 == _sha(whl)
    assert got.direct_url == {"url": whl.as_uri(), "archive_info": {"hashes": {"sha256": _sha(whl)},
                                                                    "hash": f"sha256={_sha(whl)}"}}
    other = make_wheel(tmp_path, "direct", "3.1", tag="cp39-cp39-win_amd64")
    with pytest.raises(InputError, match="is not for this interpreter"):
        collect([str(other)], [], [], py)


def test_pylock(tmp_path: Path, py: Interpreter) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    one = make_wheel(wheels, "lockone", "1.0")
    make_wheel(wheels, "locktwo", "2.0")
    lock = tmp_path / "pylock.toml"
    lock.write_text(textwrap.dedent(f"""\
        lock-version = "1.0"
        created-by = "hand"

        [[packages]]
        name = "lockone"
        version = "1.0"
        wheels = [{{ name = "{one.name}", path = "w/{one.name}", hashes = {{ sha256 = "{_sha(one)}" }} }}]

        [[packages]]
        name = "locktwo"
        version = "2.0"
        marker = "python_version < '3'"
        wheels = [{{ name = "locktwo-2.0-py3-none-any.whl", path = "w/x.whl", hashes = {{ sha256 = "{'2' * 64}" }} }}]

        [[packages]]
        name = "remote"
        version = "1.0"
        wheels = [{{ url = "https://files.example.invalid/remote-1.0-py3-none-any.whl", hashes = {{ sha256 = "{'3' * 64}" }} }}]
        """))
    with pytest.raises(InputError, match="remote-1.0-py3-none-any.whl needs downloading"):
        collect([str(lock)], [], [], py)
    remote = make_wheel(wheels, "remote", "1.0")
    lock.write_text(lock.read_text().replace("3" * 64, _sha(remote)))
    got = collect([str(lock)], [], [wheels], py)
    assert [(c.name, c.wheel.name, c.requested) for c in got] == [
        ("lockone", one.name, False),
        ("remote", remote.name, False),
    ]


@pytest.mark.skipif(not SET36.exists(), reason="the shared benchmark set is not here")
def test_benchmark_requirements_parse(tmp_path: Path, py: Interpreter) -> None:
    """The benchmark file (36 pins, many hashes each, continuation lines) parses; with no wheels, it says which."""
    with pytest.raises(InputError, match=r"no wheel for blinker==1.9.0"):
        collect([], [SET36], [tmp_path], py)
