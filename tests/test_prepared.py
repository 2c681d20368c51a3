"""What installing a tree derives from its manifest, kept in the user's cache: the same as deriving it afresh, for any
venv of the layout, and never used once the manifest it came from has changed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import platformdirs
import pytest

from wheelstore.base import usercache
from wheelstore.base.errors import StoreError
from wheelstore.base.interpreter import Interpreter
from wheelstore.store.publish import realize_wheel
from wheelstore.store.store import Store, Tree
from wheelstore.venv import prepared

from .conftest import SYSTEM_PYTHON
from .wheelmaker import make_wheel


@pytest.fixture(autouse=True)
def _private_cache(cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private cache per test, never root's own, and nothing remembered in this process from another test."""
    monkeypatch.setattr(prepared, "_MEMO", {})


def _trees(tmp_path: Path) -> tuple[Store, list[Tree]]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    made = [
        make_wheel(wheels, "plain", files={"plain/__init__.py": b"V = 1\n", "plain/sub/m.py": b"X = 2\n"}),
        make_wheel(wheels, "nsa", files={"nsdemo/a/__init__.py": b"A = 1\n"}),
        make_wheel(wheels, "datas", files={
            "datas/__init__.py": b"",
            "datas-1.0.data/scripts/tool": b"#!python\nprint('hi')\n",
            "datas-1.0.data/headers/datas.h": b"int x;\n",
            "datas-1.0.data/data/share/datas/x.txt": b"x\n",
            "datas-1.0.data/purelib/datas_extra/__init__.py": b"E = 1\n",
        }),
    ]
    store = Store.init(tmp_path / "store")
    trees = []
    for whl in made:
        tree = store.lookup(realize_wheel(store, whl).tree.key)
        assert tree is not None and tree.stamp is not None
        trees.append(tree)
    return store, trees


def _venv(path: Path) -> Interpreter:
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    return Interpreter.inspect(path / "bin" / "python")


def _same(a: prepared.Prepared, b: prepared.Prepared) -> None:
    assert (a.by_dir, a.record, a.data) == (b.by_dir, b.record, b.data)
    assert a.view == b.view


def test_kept_entries_are_what_deriving_gives_for_every_venv(tmp_path: Path, cache_home: Path) -> None:
    store, trees = _trees(tmp_path)
    with store:
        one, two = _venv(tmp_path / "one"), _venv(tmp_path / "deeper" / "two")
        for tree in trees:
            fresh = prepared.derive(tree, one.paths, one.cache_tag)
            _same(prepared.of(tree, one), fresh)  # derived now, and kept
        kept = sorted((cache_home / "wheelstore" / "prepared").rglob("*.*"))
        assert len(kept) == len(trees) and all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
        prepared._MEMO.clear()
        for tree in trees:  # read back, for a venv elsewhere
            _same(prepared.of(tree, two), prepared.derive(tree, two.paths, two.cache_tag))
        kept_plain = prepared.of(trees[0], two)
        assert kept_plain.by_dir["plain/sub"] == ["m.py"] and "plain/sub/m.py,sha256=" in kept_plain.record


@pytest.mark.parametrize("spoil", ["other-manifest", "corrupt", "writable-by-others"])
def test_a_stale_corrupt_or_foreign_entry_is_not_used(tmp_path: Path, cache_home: Path, spoil: str) -> None:
    store, trees = _trees(tmp_path)
    tree = trees[0]
    with store:
        venv = _venv(tmp_path / "venv")
        prepared.of(tree, venv)
        (entry,) = [p for p in (cache_home / "wheelstore" / "prepared").rglob(f"{tree.key}.*")]
        name = f"prepared/{entry.parent.name}/{entry.name}"
        liar = prepared.derive(trees[1], venv.paths, venv.cache_tag)  # another tree's data under this one's name
        assert tree.stamp is not None
        if spoil == "other-manifest":  # as if the manifest had been replaced (a repair): same name, another stamp
            prepared._save(name, (*tree.stamp[:-1], tree.stamp[-1] + 1), liar)
        elif spoil == "corrupt":
            entry.write_bytes(b"\x00not marshal")
        else:  # the right stamp, in a file others may write: not this user's own finding
            prepared._save(name, tree.stamp, liar)
            entry.chmod(0o622)
        prepared._MEMO.clear()
        _same(prepared.of(tree, venv), prepared.derive(tree, venv.paths, venv.cache_tag))


def test_a_repaired_tree_is_derived_again(tmp_path: Path) -> None:
    """verify --repair publishes the tree again under a new manifest file: its stamp differs, so what was kept for
    the old one is not taken for it."""
    from wheelstore.store import repair

    store, trees = _trees(tmp_path)
    with store:
        venv = _venv(tmp_path / "venv")
        prepared.of(trees[0], venv)
        target = trees[0].path / "plain" / "__init__.py"
        target.chmod(0o644)
        target.write_bytes(b"V = 2\n")
        wheel = next((tmp_path / "wheels").glob("plain-*.whl"))
        repair.repair_tree(store, trees[0].key, lambda _name, _sha: wheel)
        again = store.lookup(trees[0].key)
        assert again is not None and again.stamp != trees[0].stamp
        prepared._MEMO.clear()
        _same(prepared.of(again, venv), prepared.derive(again, venv.paths, venv.cache_tag))


def test_record_rows_quote_only_what_csv_quotes() -> None:
    import csv
    import hashlib
    import io

    from wheelstore.base.distinfo import record_hash

    datas = [b"a", b"b", b"c"]
    rels = ["pkg/plain.py", "pkg/a,b.txt", 'pkg/say "hi".txt']
    out = io.StringIO()
    rows = ((r, record_hash(d), len(d)) for r, d in zip(rels, datas, strict=True))
    csv.writer(out, lineterminator="\n").writerows(rows)
    hexes = [hashlib.sha256(d).hexdigest() for d in datas]
    assert prepared.record_rows(rels, hexes, [len(d) for d in datas]) == out.getvalue()
    assert prepared.record_rows(rels[:1], hexes[:1], [1]) == f"pkg/plain.py,{record_hash(b'a')},1\n"


def test_a_manifest_read_before_is_parsed_only_when_its_files_are_asked_for(tmp_path: Path) -> None:
    store, trees = _trees(tmp_path)
    with store:
        first = store.lookup(trees[0].key, remember=True)  # parsed, and its small fields kept
        again = store.lookup(trees[0].key)
        assert first is not None and again is not None and again.stamp == first.stamp
        assert again.manifest._body is not None  # not parsed yet
        assert (again.manifest.count, again.manifest.first, again.manifest.name) == (
            first.manifest.count, first.manifest.first, first.manifest.name)
        assert again.manifest.files == first.manifest.files and again.manifest._body is None
        assert again.manifest == first.manifest
        other = store.lookup(trees[1].key)  # never remembered: parsed at once
        assert other is not None and other.manifest._body is None
        late = store.lookup(trees[0].key)
        assert late is not None and late.manifest._body is not None
        manifest = store.root / "manifests" / f"{trees[0].key}.json"
        copy = manifest.with_name("copy")
        copy.write_bytes(manifest.read_bytes())
        copy.rename(manifest)  # the same bytes in another file: not the one looked up
        with pytest.raises(StoreError, match="changed while in use"):
            _ = late.manifest.files  # reading the property is what must fail


def test_a_config_parsed_before_comes_from_the_cache_until_the_file_changes(tmp_path: Path) -> None:
    import marshal

    from wheelstore.base import usercache
    from wheelstore.store.config import parse_toml

    config = tmp_path / "config.toml"
    config.write_text('shared = "private"\n')
    with open(config, "rb") as f:
        assert parse_toml(f, config) == {"shared": "private"}
    (kept,) = (Path(usercache.path("toml"))).iterdir()
    stamp, _data = marshal.loads(kept.read_bytes())
    kept.write_bytes(marshal.dumps((stamp, {"shared": "from the cache"})))
    with open(config, "rb") as f:
        assert parse_toml(f, config) == {"shared": "from the cache"}  # the same file: not parsed again
    config.write_text('shared = "all"\n')  # a new file identity (size, mtime, ctime)
    with open(config, "rb") as f:
        assert parse_toml(f, config) == {"shared": "all"}


def test_cache_directories_are_private_at_every_level(tmp_path: Path, cache_home: Path) -> None:
    from wheelstore.base import usercache

    assert usercache.write_bytes("prepared/some-store/some-tree.layout", b"x")
    made = [cache_home / "wheelstore", cache_home / "wheelstore" / "prepared",
            cache_home / "wheelstore" / "prepared" / "some-store"]
    assert [d.stat().st_mode & 0o777 for d in made] == [0o700] * 3


@pytest.mark.parametrize("xdg, home", [(None, "/home/u"), ("/x/cache", "/home/u"), ("relative", "/home/u"),
                                       ("", "/home/u/"), (None, "/")])
def test_the_user_cache_is_where_platformdirs_puts_it(xdg: str | None, home: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in (("XDG_CACHE_HOME", xdg), ("HOME", home)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    assert usercache.root() == str(platformdirs.user_cache_path("wheelstore"))


def test_read_all_reads_to_the_end_or_the_limit(tmp_path: Path) -> None:
    """fsio.read_all, which reads manifests and cache entries without a file object: the whole file whatever the
    size guess (a file that grew since its fstat, an empty one), and no more than the limit."""
    from wheelstore.base import fsio

    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "e").write_bytes(b"")
    for guess, limit, expected in ((len(data), 1 << 62, data), (10, 1 << 62, data), (0, 1 << 62, data),
                                   (len(data), 1000, data[:1000]), (10, 70_000, data[:70_000])):
        fd = os.open(tmp_path / "f", os.O_RDONLY)
        try:
            assert fsio.read_all(fd, guess, limit) == expected, (guess, limit)
        finally:
            os.close(fd)
    fd = os.open(tmp_path / "e", os.O_RDONLY)
    try:
        assert fsio.read_all(fd, 0) == b""
    finally:
        os.close(fd)


def test_pruning_the_cache_follows_no_planted_link(tmp_path: Path, cache_home: Path) -> None:
    """usercache.prune removes entries only through directories that are the user's own: a store's directory
    replaced by a symlink (to files of the user's that are no cache entries), or one others may write, is left
    alone; a real one is pruned, and what ``keep`` wants stays."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work\n")
    for area in ("manifests", "checks"):
        (cache_home / "wheelstore" / area / "s1").mkdir(parents=True)
        (cache_home / "wheelstore" / area / "s1" / ("a" * 64)).write_text("old")
        (cache_home / "wheelstore" / area / "s1" / ("b" * 64)).write_text("live")
    (cache_home / "wheelstore" / "checks" / "s1").chmod(0o777)  # others may write it: not ours alone
    (cache_home / "wheelstore" / "prepared").mkdir()
    (cache_home / "wheelstore" / "prepared" / "s1").symlink_to(victim)
    assert usercache.prune("s1", lambda key: key == "b" * 64) == 1
    assert [p.name for p in (cache_home / "wheelstore" / "manifests" / "s1").iterdir()] == ["b" * 64]
    assert len(list((cache_home / "wheelstore" / "checks" / "s1").iterdir())) == 2
    assert (victim / "thesis.tex").read_text() == "years of work\n"


def test_cache_writes_follow_no_planted_link(tmp_path: Path, cache_home: Path) -> None:
    """A directory of the cache replaced by a symlink (to a directory another user could read), or one others may
    write, gets no entry: the write fails quietly, as a cache write may, and writes elsewhere still work."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (cache_home / "wheelstore").mkdir(parents=True)
    (cache_home / "wheelstore" / "prepared").symlink_to(elsewhere)
    assert not usercache.write_bytes("prepared/store/tree.layout", b"tree keys and paths")
    assert list(elsewhere.iterdir()) == []
    (cache_home / "wheelstore" / "shared").mkdir(mode=0o777)
    (cache_home / "wheelstore" / "shared").chmod(0o777)
    assert not usercache.write_bytes("shared/entry", b"x")
    assert list((cache_home / "wheelstore" / "shared").iterdir()) == []
    assert usercache.write_bytes("checks/store/tree", b"kept") and usercache.read_bytes("checks/store/tree") == b"kept"
