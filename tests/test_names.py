"""Names, wheel file names and tags read without packaging.tags (wheelstore/names.py), checked against packaging; the
tags an interpreter accepts, kept in the user's cache; and a store shared by several platforms, whose trees an
install chooses among by the interpreter's tags."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from packaging.tags import Tag, create_compatible_tags_selector
from packaging.utils import (
    InvalidWheelFilename,
    canonicalize_name,
    parse_wheel_filename,
)

from wheelstore.base import interpreter, names, usercache
from wheelstore.base.errors import Missing, StoreError
from wheelstore.base.interpreter import Interpreter
from wheelstore.fetch.sources import Sources
from wheelstore.resolve.candidates import Candidate
from wheelstore.resolve.plan import Request, plan
from wheelstore.store.publish import realize_wheel
from wheelstore.store.store import Store

from .conftest import SYSTEM_PYTHON
from .wheelmaker import make_wheel

NAMES = ["flask", "Flask", "scikit-learn", "scikit_learn", "zope.interface", "Zope__Interface", "a-_.-b", "A.B-C_D",
         "ruamel.yaml.clib", "typing_extensions", "PyYAML", "x", "X1", "ä-b", "name--with---runs", "_lead", "trail_"]

WHEELS = [
    # the forms PyPI serves, which the plain reading must take
    "numpy-2.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "six-1.17.0-py2.py3-none-any.whl",
    "typing_extensions-4.12.2-py3-none-any.whl",
    "cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl",
    "torch-2.5.1+cpu-cp311-cp311-linux_x86_64.whl",
    "ruamel.yaml.clib-0.2.12-cp311-cp311-manylinux_2_17_x86_64.whl",
    "pkg-1.0-1-py3-none-any.whl",
    "pkg-1.0-12abc-py3-none-any.whl",
    "pkg-1!2.0rc1.post3.dev4-py3-none-any.whl",
    "Pkg_Name-1.0-PY3-NONE-ANY.whl",
    "pkg-1.0_post1-py3-none-any.whl",
    "pkg-1.0RC1-py3-none-any.whl",
    "pkg-1.0-py3-none-macosx_11_0_arm64.macosx_10_9_x86_64.whl",
    # what only packaging reads (or refuses): odd names, build tags, tags, versions and part counts
    "pkg__name-1.0-py3-none-any.whl",
    "_pkg-1.0-py3-none-any.whl",
    "pkg.-1.0-py3-none-any.whl",
    "pkg-1.0-abc-py3-none-any.whl",
    "pkg-1.0-py3-none.whl",
    "pkg-1.0-1-2-py3-none-any.whl",
    "pkg-not.a.version-py3-none-any.whl",
    "pkg-1.0-3py-none-any.whl",
    "pkg-1.0-py3..py2-none-any.whl",
    "pkg-1.0-py3-none-.whl",
    "pkg-1.0-py3-none-any.zip",
    "ä-1.0-py3-none-any.whl",
    "pkg-1.0-py3-none-any-.whl",
]


def _packaging(filename: str) -> object:
    try:
        name, version, build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return "invalid"
    return name, version, build, frozenset(map(str, tags))


def _ours(filename: str) -> object:
    try:
        return names.parse_wheel_name(filename)
    except ValueError:
        return "invalid"


def test_names_and_wheel_file_names_read_as_packaging_reads_them() -> None:
    assert [names.canonical(n) for n in NAMES] == [canonicalize_name(n) for n in NAMES]
    for filename in WHEELS:
        assert _ours(filename) == _packaging(filename), filename
    # the plain reading (no packaging.utils) is taken for the forms PyPI serves, and only for names it reads alike
    plain = [f for f in WHEELS if names._PLAIN_WHEEL.fullmatch(f)]
    assert set(WHEELS[:13]) <= set(plain)
    assert _packaging("pkg-not.a.version-py3-none-any.whl") == "invalid"


def test_choosing_among_wheels_as_packagings_selector_does(py: Interpreter) -> None:
    """The same order and the same rejections as create_compatible_tags_selector, for this interpreter's tags."""
    best = py.tags[0]
    platform = best.platform
    files = [f"p-1.0-{best.interpreter}-{best.abi}-{platform}.whl", "p-1.0-py3-none-any.whl",
             "p-1.0-py2-none-any.whl", f"p-1.0-cp39-abi3-{platform}.whl", "p-1.0-cp311-cp311-win_amd64.whl",
             f"p-1.0-py2.py3-none-{platform}.any.whl", "p-1.0-py3-none-any.whl"]
    theirs = create_compatible_tags_selector(py.tags)
    expected = list(theirs((f, parse_wheel_filename(f)[3]) for f in files))
    assert list(names.select(py.supported, ((f, names.wheel_tags(f)) for f in files))) == expected
    assert files[2] not in expected and files[4] not in expected and expected[0] == files[0]
    assert py.supported == names.ranks(str(t) for t in py.tags)
    assert names.rank(py.supported, {str(Tag("py2", "none", "any"))}) is None


@pytest.fixture
def py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Interpreter:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    return Interpreter.inspect(tmp_path / "venv" / "bin" / "python")


def test_an_interpreters_tags_come_from_the_users_cache(py: Interpreter) -> None:
    """Worked out by packaging once, then read back: a kept list that differs from packaging's is what comes back
    (so it was read, not worked out again), until the key (here, packaging's version) changes."""
    key = (py.implementation, (py.version[0], py.version[1]), py.abiflags)
    first = interpreter._supported.__wrapped__(*key)
    assert first == names.ranks(str(t) for t in py.tags)
    kept = usercache.read_json("tags.json")
    (entry,) = kept["tags"]
    kept["tags"][entry] = ["py3-none-any", "py3-none-kept"]
    usercache.write_json("tags.json", kept)
    assert interpreter._supported.__wrapped__(*key) == {"py3-none-any": 0, "py3-none-kept": 1}
    kept["tags"] = {entry.replace(json.loads(entry)[3], "0.0-other"): kept["tags"][entry]}
    usercache.write_json("tags.json", kept)
    assert interpreter._supported.__wrapped__(*key) == first


# -- a store shared by several platforms -----------------------------------------------------------------------------


def _two_builds(directory: Path, py: Interpreter, other: str) -> tuple[Path, Path]:
    """A wheel for this interpreter and one of the same version for ``other`` platform, the foreign one's sha256
    sorting first (so that taking the first hash the store holds would take it)."""
    best = py.tags[0]
    for n in range(100):
        mine = make_wheel(directory, "dual", files={"dual/__init__.py": f"WHERE = 'here' # {n}\n".encode()},
                          tag=f"{best.interpreter}-{best.abi}-{best.platform}")
        theirs = make_wheel(directory, "dual", files={"dual/__init__.py": f"WHERE = 'there' # {n}\n".encode()},
                            tag=other)
        if _sha(theirs) < _sha(mine):
            return mine, theirs
    raise AssertionError("no pair of hashes in the wanted order")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: the store and local files only
OFFLINE = Sources(index_urls=(), no_index=True, offline=True)


def _shared(tmp_path: Path, py: Interpreter, other: str, *, pin_mine: bool = True) -> tuple[Path, Path, Path, Store]:
    """Both builds of dual 1.0 in ``built/`` (see :func:`_two_builds`), empty ``links/`` and ``empty/`` directories,
    a requirements file pinning dual with the hash of the other build and (``pin_mine``) of this platform's, and an
    empty store."""
    for d in ("built", "links", "empty"):
        (tmp_path / d).mkdir()
    mine, theirs = _two_builds(tmp_path / "built", py, other)
    requirements = tmp_path / "requirements.txt"
    pinned = [mine, theirs] if pin_mine else [theirs]
    requirements.write_text("dual==1.0" + "".join(f" --hash=sha256:{_sha(w)}" for w in pinned) + "\n")
    return mine, theirs, requirements, Store.init(tmp_path / "store")


def _plan(store: Store, py: Interpreter, requirements: Path, links: Path, sources: Sources) -> list[Candidate]:
    request = Request(requirement_files=[requirements], find_links=[links], no_deps=True)
    return plan(store, py, request, sources).candidates


def test_a_tree_for_another_platform_is_passed_over(tmp_path: Path, py: Interpreter) -> None:
    """A store shared by x86_64 and arm64 machines holds trees of both wheels of one pinned version: an install
    takes the one its interpreter can use, from the store or from find-links, and never the other."""
    mine, theirs, requirements, store = _shared(tmp_path, py, "cp311-cp311-macosx_11_0_arm64")
    links, empty, offline = tmp_path / "links", tmp_path / "empty", OFFLINE
    realize_wheel(store, theirs)  # only the other platform's tree: not used, and not taken for a match
    with pytest.raises(Missing, match="dual==1.0"):
        _plan(store, py, requirements, empty, offline)
    (links / mine.name).write_bytes(mine.read_bytes())
    (chosen,) = _plan(store, py, requirements, links, offline)
    assert (chosen.wheel, chosen.sha256) == (links / mine.name, _sha(mine))

    realize_wheel(store, mine)  # both trees: this platform's, with or without its file
    for where in (links, empty):
        (chosen,) = _plan(store, py, requirements, where, offline)
        assert chosen.sha256 == _sha(mine), where


def test_a_better_file_wins_over_a_held_tree_it_suits_less(tmp_path: Path, py: Interpreter) -> None:
    """The store holds the pure-Python wheel of a version; find-links has its build for this platform, which pip
    would choose: that file is used (and hashed), not the tree."""
    mine, pure, requirements, store = _shared(tmp_path, py, "py3-none-any")
    built, offline = tmp_path / "built", OFFLINE
    realize_wheel(store, pure)
    (chosen,) = _plan(store, py, requirements, built, offline)
    assert (chosen.wheel, chosen.sha256) == (built / mine.name, _sha(mine))
    (built / mine.name).unlink()  # without the file, the pure tree serves
    (chosen,) = _plan(store, py, requirements, built, offline)
    assert chosen.sha256 == _sha(pure)


def test_which_hashes_the_store_holds_by_listing_or_by_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Store.holds`` lists manifests/ for many keys in a small store, and stats each key otherwise: the same
    answer both ways, a planted directory in a manifest's place included (has() says no to it)."""
    import os

    from wheelstore.store import store as storemod

    store = Store.init(tmp_path / "store")
    made = [make_wheel(tmp_path, f"h{i}", files={f"h{i}/__init__.py": b""}) for i in range(3)]
    keys = {realize_wheel(store, w).tree.key for w in made}
    planted = "f" * 64
    (tmp_path / "store" / "manifests" / f"{planted}.json").mkdir()
    asked = keys | {planted} | {f"{n:064x}" for n in range(100)}
    listed: list[int] = []
    real_listdir = os.listdir

    def counted(fd: int) -> list[str]:
        listed.append(1)
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", counted)  # the os module store.py uses
    assert store.holds(asked) == keys and listed == [1]
    monkeypatch.setattr(storemod, "_LIST_BYTES_PER_KEY", 0)
    assert store.holds(asked) == keys and listed == [1]
    assert store.holds(set(list(keys)[:1])) == set(list(keys)[:1]) and listed == [1]


def test_a_better_file_the_hashes_do_not_allow_leaves_the_held_tree_in_use(tmp_path: Path, py: Interpreter) -> None:
    """find-links has a locally built platform wheel of the pinned version, but the pin's hash is the pure wheel's,
    whose tree the store holds: the tree is used (pip would pass over a file no hash allows), not an error."""
    mine, pure, requirements, store = _shared(tmp_path, py, "py3-none-any", pin_mine=False)
    links = tmp_path / "links"
    (links / mine.name).write_bytes(mine.read_bytes())
    realize_wheel(store, pure)
    (chosen,) = _plan(store, py, requirements, links, OFFLINE)
    assert (chosen.wheel, chosen.sha256) == (None, _sha(pure))


def test_an_untrustworthy_tree_for_another_platform_does_not_stop_the_install(tmp_path: Path, py: Interpreter) -> None:
    """The other platform's tree has a manifest anyone may write (so it is not used); this platform's tree still
    is. When the untrustworthy tree is all the store has, that is the error, not "missing"."""
    mine, theirs, requirements, store = _shared(tmp_path, py, "cp311-cp311-macosx_11_0_arm64")
    built, empty, offline = tmp_path / "built", tmp_path / "empty", OFFLINE
    realize_wheel(store, theirs)
    (tmp_path / "store" / "manifests" / f"{_sha(theirs)}.json").chmod(0o666)
    with pytest.raises(StoreError, match="not trustworthy"):
        _plan(store, py, requirements, empty, offline)
    realize_wheel(store, mine)
    for where in (built, empty):
        (chosen,) = _plan(store, py, requirements, where, offline)
        assert chosen.sha256 == _sha(mine), where


def test_without_glibc_the_tags_are_asked_of_packaging_each_time(py: Interpreter,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """musl has CS_GNU_LIBC_VERSION but fails it (OSError): no key names its C library, so nothing is kept, and the
    tags are packaging's."""
    import os

    def fails(name: str) -> str:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "confstr", fails)  # the os module interpreter.py uses
    key = (py.implementation, (py.version[0], py.version[1]), py.abiflags)
    assert interpreter._supported.__wrapped__(*key) == names.ranks(str(t) for t in py.tags)
    assert usercache.read_json("tags.json") is None
