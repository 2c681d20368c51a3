"""The resolve stage for local inputs: requirements files, pins, wheel paths and pylock files to wheel files."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet

from wheelstore.base.errors import InputError, NeedsResolution
from wheelstore.base.interpreter import Interpreter
from wheelstore.resolve import candidates, digests
from wheelstore.resolve import requirements as syntax
from wheelstore.resolve.candidates import gather_candidates
from wheelstore.resolve.requirements import parse_requirements_file

from .conftest import SET36, SYSTEM_PYTHON
from .wheelmaker import make_wheel

WINDOWS = "cp39-cp39-win_amd64"


@pytest.fixture(scope="module")
def py() -> Interpreter:
    return Interpreter.inspect(sys.executable)


pytestmark = pytest.mark.usefixtures("cache_home")  # the digests gather_candidates keeps: in a private cache per test


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def native_tag(py: Interpreter) -> str:
    """A platform tag this interpreter accepts: cp311-cp311-manylinux_2_17_x86_64 on CPython 3.11 x86_64."""
    tag = next((t for t in py.tags if t.platform.startswith("manylinux_2_17")), py.tags[0])
    return str(tag)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# -- parsing requirements files, no wheels needed -------------------------------------------------------------------


def test_requirements_file_format(tmp_path: Path, py: Interpreter) -> None:
    h1, h2, h3 = "a" * 64, "B" * 64, "c" * 64
    write(tmp_path / "sub" / "more.txt", "beta==2.0 --hash sha256:" + h3 + "\n-f ../wheels-b\n")
    req = write(tmp_path / "req.txt", f"""\
        # pip-compile output, more or less
        --index-url https://example.invalid/simple
        --extra-index-url=https://example.invalid/extra
        --no-index
        -f wheels-a

        alpha==1.0 \\
            --hash=sha256:{h1} \\
            --hash=sha256:{h2}
            # via beta
        Gamma_Two[extra]==3.0.post1 ; python_version >= "3"  # trailing comment
        never==9.9 ; python_version < "3"
        --requirement=sub/more.txt
        unpinned>=1
        """)
    got = parse_requirements_file(req, py)
    assert [(p.name, p.version and str(p.version), p.hashes, p.origin) for p in got.pins] == [
        ("alpha", "1.0", {h1, h2.lower()}, f"{req}:7"),
        ("gamma-two", "3.0.post1", frozenset(), f"{req}:11"),
        ("beta", "2.0", {h3}, f"{tmp_path / 'sub' / 'more.txt'}:1"),
        ("unpinned", None, frozenset(), f"{req}:14"),
    ]
    assert got.find_links == [tmp_path / "wheels-a", tmp_path / "sub" / ".." / "wheels-b"]
    assert not got.require_hashes
    assert (got.index_url, got.extra_index_urls, got.no_index) == (
        ("https://example.invalid/simple", f"{req}:2"), [("https://example.invalid/extra", f"{req}:3")], f"{req}:4")


def test_markers_use_the_target_interpreter(tmp_path: Path, py: Interpreter) -> None:
    old = py._replace(version=(3, 9, 1))
    req = write(tmp_path / "r.txt", """\
        new==1 ; python_version >= "3.10"
        old==1 ; python_full_version == "3.9.1"
        """)
    assert [p.name for p in parse_requirements_file(req, old).pins] == ["old"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--frobnicate\n", r"r\.txt:2: unknown option --frobnicate"),
        ("-e ./no-such-dir\n", r"r\.txt:2: no-such-dir: no such directory"),
        ("-c constraints.txt\n", r"r\.txt:2: constraint files are not supported yet"),
        ("x==1 --install-option=y\n", r"r\.txt:2: option --install-option is not supported after a requirement"),
        ("x==1 --hash=sha256:abc\n", r"r\.txt:2: --hash=sha256:abc is not a sha256 hex digest"),
        ("x==1 --hash=md5:abc\n", r"r\.txt:2: only md5 hashes given"),
        ("-r missing.txt\n", r"cannot read requirements file .*missing\.txt"),
        ("x[=1\n", r"r\.txt:2: 'x\[=1' is not a requirement"),
        # packaging before 26.4 reads an empty arbitrary-equality version, which is then refused; 26.4 refuses the line
        ("x===\n", r"r\.txt:2: (x===: '' is not a valid version|'x===' is not a requirement)"),
    ],
)
def test_requirements_file_errors_name_file_and_line(tmp_path: Path, py: Interpreter, line: str, message: str) -> None:
    req = write(tmp_path / "r.txt", "# first\n" + line)
    with pytest.raises(InputError, match=message):
        parse_requirements_file(req, py)


@pytest.mark.skipif(not SET36.exists(), reason="the shared benchmark set is not here")
def test_benchmark_set_parses(py: Interpreter) -> None:
    got = parse_requirements_file(SET36, py)
    assert len(got.pins) == 36
    assert all(p.version is not None and p.hashes for p in got.pins)
    assert len({p.name for p in got.pins}) == 36
    blinker = next(p for p in got.pins if p.name == "blinker")
    assert str(blinker.version) == "1.9.0" and len(blinker.hashes) == 2


# -- gather_candidates: pins against find-links directories ---------------------------------------------------------


def test_pins_with_and_without_hashes(tmp_path: Path, py: Interpreter) -> None:
    (tmp_path / "links").mkdir()
    (tmp_path / "more").mkdir()
    a = make_wheel(tmp_path / "links", "alpha", "1.0")
    b = make_wheel(tmp_path / "more", "beta", "2.0")
    write(tmp_path / "sub" / "more.txt", "-f ../more\nbeta==2.0\n")
    req = write(tmp_path / "req.txt", f"""\
        -f links
        alpha==1.0 \\
            --hash=sha256:{'0' * 64} \\
            --hash=sha256:{sha(a)}
        -r sub/more.txt
        gamma==9.9 ; python_version < "3"
        """)
    # as with pip, one --hash turns on hash-checking for all: beta, pinned without one, is refused
    with pytest.raises(InputError, match=r"more.txt:2: beta==2.0 has no --hash, and --require-hashes is on"):
        gather_candidates([], [req], [], py)
    write(tmp_path / "sub" / "more.txt", f"-f ../more\nbeta==2.0 --hash=sha256:{sha(b)}\n")
    alpha, beta = gather_candidates([], [req], [], py)
    assert (alpha.name, str(alpha.version), alpha.wheel, alpha.sha256) == ("alpha", "1.0", a, sha(a))
    assert alpha.hashes == {"0" * 64, sha(a)}
    assert (beta.name, beta.wheel, beta.sha256) == ("beta", b, sha(b))
    assert all(c.requested and c.direct_url is None for c in (alpha, beta))
    plain = write(tmp_path / "plain.txt", "-f links\nalpha==1.0\n")
    (unhashed,) = gather_candidates([], [plain], [], py)
    assert (unhashed.sha256, unhashed.hashes) == (sha(a), frozenset())  # read, to find its tree in the store


def test_a_wheel_read_before_is_not_read_again(tmp_path: Path, py: Interpreter,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """gather_candidates keeps the sha256 of each local wheel it read, by the file's identity: the next call for an
    unhashed or hashed pin takes it from the user's cache without opening the file, when the store holds its tree
    (``holds``); a file whose tree the store lacks is read, and so is a file changed since (its ctime moved); a hash
    that no longer matches is an error."""
    (tmp_path / "links").mkdir()
    wheel = make_wheel(tmp_path / "links", "memo", "1.0")
    plain = write(tmp_path / "plain.txt", "memo==1.0\n")
    hashed = write(tmp_path / "hashed.txt", f"memo==1.0 --hash=sha256:{sha(wheel)}\n")
    (first,) = gather_candidates([], [plain], [tmp_path / "links"], py)
    assert first.sha256 == sha(wheel)
    real = digests.file_sha256
    read: list[Path] = []

    def counted(path: Path, origin: str) -> tuple[str, tuple[int, ...]]:
        read.append(path)
        return real(path, origin)

    monkeypatch.setattr(candidates, "file_sha256", counted)
    def holds(hashes: set[str]) -> set[str]:  # a store with every tree
        return hashes

    for requirements in (plain, hashed):
        (again,) = gather_candidates([], [requirements], [tmp_path / "links"], py, holds=holds)
        assert again.sha256 == sha(wheel) and read == []
    (cold,) = gather_candidates([], [plain], [tmp_path / "links"], py, holds=lambda hashes: set())
    assert cold.sha256 == sha(wheel) and read == [wheel]
    make_wheel(tmp_path / "links", "memo", "1.0", files={"memo/__init__.py": b"CHANGED = 1\n"})
    (changed,) = gather_candidates([], [plain], [tmp_path / "links"], py, holds=holds)
    assert changed.sha256 == sha(wheel) != first.sha256 and read == [wheel, wheel]
    with pytest.raises(InputError, match="matches none of the hashes for memo"):
        gather_candidates([], [hashed], [tmp_path / "links"], py, holds=holds)
    # a wrong digest kept for the file as it is (a filesystem whose ctime ignores writes) finds no tree: it is read
    wrong = digests.Digests()
    wrong.add(wheel, digests.file_identity(os.stat(wheel)), "0" * 64)
    wrong.save()
    (fresh,) = gather_candidates([], [plain], [tmp_path / "links"], py, holds=lambda hashes: hashes - {"0" * 64})
    assert fresh.sha256 == sha(wheel) and read[-1] == wheel


def test_platform_wheel_beats_pure_wheel(tmp_path: Path, py: Interpreter) -> None:
    make_wheel(tmp_path, "plat", "1.0", tag="py3-none-any")
    native = make_wheel(tmp_path, "plat", "1.0", tag=native_tag(py))
    make_wheel(tmp_path, "plat", "1.0", tag=WINDOWS)
    (got,) = gather_candidates(["plat==1.0"], [], [tmp_path], py)
    assert got.wheel == native


def test_no_matching_wheel_says_what_is_there(tmp_path: Path, py: Interpreter) -> None:
    make_wheel(tmp_path, "winonly", "1.0", tag=WINDOWS)
    make_wheel(tmp_path, "winonly", "0.9")
    best = py.tags[0]
    with pytest.raises(InputError) as e:
        gather_candidates(["winonly==1.0"], [], [tmp_path, tmp_path / "nope"], py)
    assert str(e.value) == (
        f"no wheel for winonly==1.0 matches this interpreter ({best.interpreter}, {best.platform}) in: "
        f"{tmp_path}, {tmp_path / 'nope'} (missing); found only {WINDOWS}"
    )
    with pytest.raises(InputError) as e:
        gather_candidates(["winonly==2.0"], [], [tmp_path], py)
    assert str(e.value) == f"no version of winonly matches ==2.0 (available in {tmp_path}: 1.0, 0.9)"
    with pytest.raises(InputError) as e:
        gather_candidates(["winnoly==1.0"], [], [tmp_path], py)
    assert str(e.value) == f"no distribution named winnoly in {tmp_path}"
    with pytest.raises(InputError, match=r"in: no --find-links directory \(fix: pass --find-links DIR"):
        gather_candidates(["winonly==1.0"], [], [], py)


def test_unpinned_needs_resolution(tmp_path: Path, py: Interpreter) -> None:
    with pytest.raises(NeedsResolution) as e:
        gather_candidates(["requests>=2"], [], [tmp_path], py)
    assert str(e.value) == ("requests>=2 needs resolution (fix: pin it (requests==VERSION), give a wheel file or a "
                            "pylock.toml, or let uv resolve it)")
    assert not isinstance(e.value, InputError)
    make_wheel(tmp_path, "requests", "2.32.3")
    make_wheel(tmp_path, "requests", "3.0", tag=WINDOWS)
    req = write(tmp_path / "r.txt", "requests\n")
    with pytest.raises(NeedsResolution, match=r"r\.txt:1: requests needs resolution.*pin it \(requests==2\.32\.3\)"):
        gather_candidates([], [req], [tmp_path], py)
    with pytest.raises(NeedsResolution, match=r"^numpy==2\.\* needs resolution"):
        gather_candidates(["numpy==2.*"], [], [tmp_path], py)


def test_hash_mismatch(tmp_path: Path, py: Interpreter) -> None:
    wheel = make_wheel(tmp_path, "hashy", "1.0")
    req = write(tmp_path / "r.txt", f"hashy==1.0 --hash=sha256:{'1' * 64}\n")
    with pytest.raises(InputError, match=rf"^{wheel}: sha256 {sha(wheel)} matches none of the hashes for hashy in "
                                         rf"{req}:1"):
        gather_candidates([], [req], [tmp_path], py)


def test_require_hashes(tmp_path: Path, py: Interpreter) -> None:
    make_wheel(tmp_path, "bare", "1.0")
    req = write(tmp_path / "r.txt", "--require-hashes\nbare==1.0\n")
    with pytest.raises(InputError, match=r"r\.txt:2: bare==1\.0 has no --hash, and --require-hashes is on"):
        gather_candidates([], [req], [tmp_path], py)


def test_duplicates_collapse_and_conflicts_fail(tmp_path: Path, py: Interpreter) -> None:
    wheel = make_wheel(tmp_path, "dup", "1.0")
    make_wheel(tmp_path, "dup", "2.0")
    one = write(tmp_path / "one.txt", f"dup==1.0 --hash=sha256:{sha(wheel)} --hash=sha256:{'1' * 64}\n")
    two = write(tmp_path / "two.txt", f"DUP==1.0.0 --hash=sha256:{sha(wheel)} --hash=sha256:{'2' * 64}\n")
    (got,) = gather_candidates(["dup==1.0", "dup>=0.5"], [one, two], [tmp_path], py)
    assert (got.wheel, got.sha256, got.hashes) == (wheel, sha(wheel), frozenset({sha(wheel)}))
    with pytest.raises(InputError, match=r"^conflicting pins: dup==1\.0 \(command line\) and dup==2\.0 \(command line"):
        gather_candidates(["dup==1.0", "dup==2.0"], [], [tmp_path], py)
    with pytest.raises(InputError, match=rf"^conflicting pins: dup==1\.0 \({one}:1\) and dup<1 \(command line\)$"):
        gather_candidates(["dup<1"], [one], [tmp_path], py)
    three = write(tmp_path / "three.txt", f"dup==1.0 --hash=sha256:{'3' * 64}\n")
    with pytest.raises(InputError, match=r"matches none of the hashes for dup in .*three\.txt:1"):
        gather_candidates([], [one, three], [tmp_path], py)


# -- gather_candidates: wheel paths ---------------------------------------------------------------------------------


def test_wheel_path_is_a_direct_install(tmp_path: Path, py: Interpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    whl = make_wheel(tmp_path, "direct", "3.1")
    make_wheel(tmp_path, "sibling", "1.0")
    monkeypatch.chdir(tmp_path)
    direct, sibling = gather_candidates([whl.name, "sibling==1.0"], [], [], py)  # its directory is searched for pins
    digest = sha(whl)
    assert (direct.wheel, direct.sha256, direct.requested) == (whl, digest, True)
    assert direct.direct_url == {"url": whl.as_uri(), "archive_info": {"hashes": {"sha256": digest},
                                                                      "hash": f"sha256={digest}"}}
    assert sibling.direct_url is None
    (by_url,) = gather_candidates([f"direct @ {whl.as_uri()}"], [], [], py)
    assert by_url == direct


def test_wheel_path_must_fit_the_interpreter(tmp_path: Path, py: Interpreter) -> None:
    other = make_wheel(tmp_path, "direct", "3.1", tag=WINDOWS)
    with pytest.raises(InputError, match=rf"^{other.name} is not for this interpreter \(.*\): its tags are {WINDOWS}"):
        gather_candidates([str(other)], [], [], py)
    with pytest.raises(InputError, match=r"missing-1\.0-py3-none-any\.whl: no such file"):
        gather_candidates([str(tmp_path / "missing-1.0-py3-none-any.whl")], [], [], py)
    with pytest.raises(InputError, match=r"direct==3\.1 \(command line\) and direct==3\.2"):
        gather_candidates(["direct==3.1", str(make_wheel(tmp_path, "direct", "3.2"))], [], [], py)


# -- gather_candidates: pylock files --------------------------------------------------------------------------------


def lock_entry(name: str, version: str, wheels: list[str], marker: str | None = None) -> str:
    text = f'\n[[packages]]\nname = "{name}"\nversion = "{version}"\n'
    if marker:
        text += f"marker = {marker!r}\n"
    return text + "wheels = [\n" + "".join(f"  {w},\n" for w in wheels) + "]\n"


def by_path(wheel: Path, digest: str | None = None) -> str:
    return f'{{ path = "w/{wheel.name}", hashes = {{ sha256 = "{digest or sha(wheel)}" }} }}'


def test_pylock(tmp_path: Path, py: Interpreter) -> None:
    w = tmp_path / "w"
    w.mkdir()
    pure = make_wheel(w, "lockone", "1.0")
    native = make_wheel(w, "lockone", "1.0", tag=native_tag(py))
    windows = make_wheel(w, "lockone", "1.0", tag=WINDOWS)
    two = make_wheel(w, "locktwo", "2.0")
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\n'
                    + lock_entry("lockone", "1.0", [by_path(pure), by_path(native), by_path(windows)])
                    + lock_entry("locktwo", "2.0", [by_path(two)])
                    + lock_entry("excluded", "1.0", ['{ path = "w/excluded-1.0-py3-none-any.whl", hashes = '
                                                     f'{{ sha256 = "{"2" * 64}" }} }}'], "python_version < '3'"))
    one, locktwo = gather_candidates([str(lock)], [], [], py)
    assert (one.name, one.wheel, one.sha256, one.requested, one.direct_url) == ("lockone", native, sha(native),
                                                                               False, None)
    assert (locktwo.wheel, locktwo.requested) == (two, False)
    one, locktwo = gather_candidates([str(lock), "locktwo"], [], [], py)  # named on the command line: requested
    assert (one.requested, locktwo.requested) == (False, True)
    with pytest.raises(InputError, match=r"^conflicting pins: locktwo==3 \(command line\) and locktwo==2\.0 \("):
        gather_candidates([str(lock), "locktwo==3"], [], [], py)


def test_pylock_hashes_are_checked(tmp_path: Path, py: Interpreter) -> None:
    (tmp_path / "w").mkdir()
    wheel = make_wheel(tmp_path / "w", "locked", "1.0")
    lock = tmp_path / "pylock.dev.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\n'
                    + lock_entry("locked", "1.0", [by_path(wheel, "4" * 64)]))
    with pytest.raises(InputError, match=rf"{wheel}: sha256 {sha(wheel)} matches none of the hashes for locked in "
                                         rf"{lock}"):
        gather_candidates([str(lock)], [], [], py)


def test_pylock_entry_to_download(tmp_path: Path, py: Interpreter) -> None:
    lock = tmp_path / "pylock.toml"
    url = "https://files.example.invalid/remote-1.0-py3-none-any.whl"
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\n'
                    + lock_entry("remote", "1.0", [f'{{ url = "{url}", hashes = {{ sha256 = "{"3" * 64}" }} }}']))
    (far,) = gather_candidates([str(lock)], [], [], py)  # to download: the fetch stage checks the lock's hash
    assert far.wheel is None and far.remote is not None
    assert (far.remote.url, far.remote.sha256, far.requested) == (url, "3" * 64, False)
    (tmp_path / "links").mkdir()
    remote = make_wheel(tmp_path / "links", "remote", "1.0")
    lock.write_text(lock.read_text().replace("3" * 64, sha(remote)))
    (got,) = gather_candidates([str(lock)], [], [tmp_path / "links"], py)
    assert (got.wheel, got.sha256, got.requested) == (remote, sha(remote), False)


def test_pylock_sdists_and_bad_files(tmp_path: Path, py: Interpreter) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\n[[packages]]\nname = "src"\nversion = "1.0"\n'
                    f'sdist = {{ path = "src-1.0.tar.gz", hashes = {{ sha256 = "{"5" * 64}" }} }}\n')
    # an sdist is built by the fetch stage, from its file next to the lock
    (src,) = gather_candidates([str(lock)], [], [], py)
    assert src.wheel is None and src.remote is not None and not src.remote.is_wheel
    assert src.remote.url == (tmp_path / "src-1.0.tar.gz").as_uri() and src.remote.sha256 == "5" * 64
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\n[[packages]]\nname = "d"\nversion = "1.0"\n'
                    'directory = { path = "d" }\n')
    with pytest.raises(InputError, match=r"pylock\.toml: .*/d: no such directory"):  # a local project's entry
        gather_candidates([str(lock)], [], [], py)
    write(tmp_path / "d" / "pyproject.toml", '[project]\nname = "d"\n')
    with pytest.raises(InputError, match=r"d @ file:.* is a local project, which this command does not build"):
        gather_candidates([str(lock)], [], [], py)
    lock.write_text('lock-version = "1.0"\n[[packages]]\nname = "x"\n')
    with pytest.raises(InputError, match=r"pylock\.toml is not a valid pylock file"):
        gather_candidates([str(lock)], [], [], py)
    lock.write_text("lock-version = \n")
    with pytest.raises(InputError, match=r"pylock\.toml is not valid TOML"):
        gather_candidates([str(lock)], [], [], py)
    lock.write_text('lock-version = "1.0"\ncreated-by = "hand"\nrequires-python = "<3"\npackages = []\n')
    with pytest.raises(InputError, match=r"pylock\.toml: python_full_version .* does not satisfy"):
        gather_candidates([str(lock)], [], [], py)


@pytest.mark.parametrize(("arg", "fix"), [("requirements.txt", "-r requirements.txt"),
                                          ("lock.toml", "name it pylock.toml or pylock.NAME.toml")])
def test_files_that_look_like_names(py: Interpreter, arg: str, fix: str) -> None:
    with pytest.raises(InputError, match=rf"^{arg} is neither a wheel, a pylock file nor a requirement \(fix: {fix}\)"):
        gather_candidates([arg], [], [], py)


def test_tags_are_the_target_interpreters(tmp_path: Path) -> None:
    """A venv of another Python accepts its own interpreter's tags, not those of the Python running wheelstore."""
    other = Path("/root/.pyenv/versions/3.12.1/bin/python3")
    if not other.exists():
        pytest.skip("no Python 3.12 on this machine")
    target = Interpreter.inspect(other)
    wheel = make_wheel(tmp_path, "only312", "1.0", tag="cp312-none-any")
    (got,) = gather_candidates(["only312==1.0"], [], [tmp_path], target)
    assert got.wheel == wheel
    with pytest.raises(InputError, match="no wheel for only312==1.0"):
        gather_candidates(["only312==1.0"], [], [tmp_path], Interpreter.inspect(SYSTEM_PYTHON))


def test_a_pin_the_store_holds_is_not_read(tmp_path: Path, py: Interpreter) -> None:
    """With ``held`` (the store has the tree of that hash, here for the same wheel file name), a hashed pin's local
    file is never opened: the warm install of a hashed requirements file reads no wheel. Without it, the file is hashed
    and must match."""
    wheel = make_wheel(tmp_path, "warm", "1.0")
    digest = sha(wheel)
    req = write(tmp_path / "r.txt", f"warm==1.0 --hash=sha256:{digest}\n")
    wheel.write_bytes(b"not the wheel any more")  # were it read, the hash would not match
    (got,) = gather_candidates([], [req], [tmp_path], py, elsewhere=True,
                               held=lambda hs: {digest: wheel.name} if digest in hs else {})
    assert (got.wheel, got.sha256) == (wheel, digest)
    with pytest.raises(InputError, match="matches none of the hashes for warm"):
        gather_candidates([], [req], [tmp_path], py, elsewhere=True, held=lambda hs: {})


def test_environment_variables_in_requirements_files(tmp_path: Path, py: Interpreter,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """pip's ``${NAME}`` expansion: a find-links directory and a version from the environment; other forms stay."""
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links, "envpkg", "1.2")
    monkeypatch.setenv("WHEELS_DIR", str(links))
    monkeypatch.setenv("ENVPKG_VERSION", "1.2")
    req = write(tmp_path / "r.txt", "-f ${WHEELS_DIR}\nenvpkg==${ENVPKG_VERSION}\n")
    (got,) = gather_candidates([], [req], [], py)
    assert (got.name, str(got.version), got.wheel) == ("envpkg", "1.2", links / "envpkg-1.2-py3-none-any.whl")
    unset = write(tmp_path / "u.txt", "envpkg==${NOT_SET_ANYWHERE}\n")
    with pytest.raises(InputError, match=r"NOT_SET_ANYWHERE"):
        gather_candidates([], [unset], [links], py)


# -- the plain-pin shortcut past packaging's requirement parser ---------------------------------------------------

#: lines the shortcut may take, and lines close to them that it must leave to packaging (or that packaging refuses)
PIN_LINES = [
    # plain pins, as pip-compile and uv write them
    "a==1", "A==1.0", "foo-bar==2.0.1", "foo_bar==1.0", "foo.bar==1.0", "Foo.Bar-baz_9==0.0.1", "9==1", "a..b==1",
    "a-_-b==1", "x==0", "x==01.02", "x==1!2.0", "x==1.0a1", "x==1.0b2", "x==1.0rc3", "x==1.0.post1", "x==1.0.dev4",
    "x==1.0a1.post2.dev3", "x==1.0+local", "x==1.0+abc.5", "x==1.0+ubuntu.1", "x==2026.10.19.post1",
    "foo.whl==1.0", "x==1.0+abc.whl", "x==1.0+whl",
    # other operators, wildcards, several specifiers
    "x===1.0", "x==1.*", "x==1.0.*", "x==1.0,<2", "x==1.0,!=1.0", "x>=1.0", "x~=1.0", "x!=1.0", "x<=1.0", "x", "x>1",
    # spaces, extras, markers, URLs, paths
    "x == 1.0", "x ==1.0", "x== 1.0", " x==1.0", "x==1.0 ", "x==1.0\t", "x[extra]==1.0", "x[a,b]==1.0",
    "x==1.0; python_version>'3'", "x==1.0;python_version>'3'", "x==1.0 ; sys_platform == 'win32'",
    "x==1.0; python_version < '2'", "x==1.0; nonsense_marker == '1'", "x==1.0; python_version >= 'abc'",
    "x @ file:///tmp/x-1.0-py3-none-any.whl", "x@https://example.invalid/x-1.0.tar.gz",
    "x-1.0-py3-none-any.whl", "dir/x-1.0-py3-none-any.whl", "x-1.0.tar.gz", "x==1.0#frag", "(x==1.0)", "x(==1.0)",
    "x (==1.0)", "x(==1.0",
    # versions packaging normalizes, or refuses
    "x==1.0RC1", "x==1.0-1", "x==1.0_1", "x==v1.0", "x==1.0+", "x==1.0+-a", "x==+1", "x==1.0a", "x==1..0", "x==1.0.",
    "x==1!", "x==1.0+ABC", "x==1.0+a_b", "x==1e3", "x==1.0.post", "x==1.0-post1", "x==1.0c1", "x==1.0pre1",
    "x==1.0alpha1", "x==1.0.a1", "x==1.0-dev", "x==0x10", "x==١.٠", "x==1.0\u00a0",
    # names packaging refuses, or reads differently
    "x==", "==1.0", "-x==1.0", "x-==1.0", "x.==1.0", "_x==1.0", "x_==1.0", ".x==1.0", "ｘ==1.0", "x/y==1.0", "x==1==2",
    "x=1.0", "x=1.0.0", "x==1.0==", "x====1", "x==1,", "x,y==1", "x==1.0\\", "",
]


def _pin_or_error(text: str, py: Interpreter) -> object:
    try:
        return syntax.parse_requirement(text, "r.txt:1", lambda: syntax.marker_environment(py), frozenset({"a" * 64}))
    except InputError as e:
        return ("error", e.oneline())


def test_plain_pins_read_as_packaging_reads_them(py: Interpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line the shortcut takes gives what packaging's Requirement gives (name, specifier, no URL, marker or
    extras), and parse_requirement's pin (or error) is the same with the shortcut and without it."""
    pinned = [line.split()[0] for line in SET36.read_text().splitlines()
              if line and not line[0].isspace() and not line.startswith("#")] if SET36.exists() else []
    lines = PIN_LINES + pinned
    taken = [line for line in lines if syntax.plain_requirement(line) is not None]
    for line in taken:
        name, specifier = syntax.plain_requirement(line) or ("", None)
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            pytest.fail(f"the shortcut takes {line!r}, which packaging refuses: {e}")
        assert (name, SpecifierSet(specifier or "")) == (req.name, req.specifier), line
        assert (req.url, req.marker, req.extras) == (None, None, set()), line
    with_shortcut = [_pin_or_error(line, py) for line in lines]
    monkeypatch.setattr(syntax, "plain_requirement", lambda text: None)
    assert with_shortcut == [_pin_or_error(line, py) for line in lines]
    # the shortcut is taken for the common forms, and only for them
    assert {"a==1", "x==1!2.0", "x==1.0a1.post2.dev3", "x==1.0+abc.5", "x==2026.10.19.post1"} <= set(taken)
    assert not {"x == 1.0", "x==1.0.*", "x===1.0", "x[extra]==1.0", "x==1.0+abc.whl", "x==1.0RC1"} & set(taken)
