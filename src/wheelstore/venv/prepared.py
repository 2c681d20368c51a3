"""What installing a tree derives from its manifest, worked out once and kept in the user's cache.

Linking a tree into a venv needs its files grouped by directory, its RECORD rows and, for folding, which directories it
fills (:func:`wheelstore.venv.fold.view`). All of that follows from the manifest and the venv's layout (where
site-packages lies under the prefix, and the Python's cache tag), not from the venv itself, and deriving it took a warm
install of the benchmark set more Python time than its system calls: several passes over 16,700 manifest rows. So it is
kept per user (:mod:`~wheelstore.base.usercache`: private, 0600), per store, tree and layout, with the identity of the
manifest file it came from (device, inode, size, mtime, ctime): a repaired tree's new manifest is a new file, so a stale
entry is never used. A missing, foreign or unreadable entry is derived again.

Venv paths are kept relative to the prefix (a NUL stands for it), so one entry serves every venv of that layout.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import marshal
import re
from typing import NamedTuple

from . import fold as folding
from ..base import usercache
from ..base.distinfo import INSTALLER_FILES
from ..base.interpreter import Interpreter
from ..store.store import Tree, cache_id

#: bumped whenever what is kept changes (2: only from manifests that passed :mod:`~wheelstore.store.manifest_check`;
#: 3: the fold view covers the data scheme and keeps namespace packages real)
FORMAT = 3
_PREFIX = "\0"
#: what makes csv quote a RECORD path
_SPECIAL = re.compile(r'[,"\r\n]')


class Prepared(NamedTuple):
    """One tree, for venvs of one layout."""

    #: the root part (what goes to site-packages, but for ``.data``): tree-relative directory ("" for the tree's
    #: root) -> its file names, leaving out what the installer writes itself and pycs compiled for another Python
    by_dir: dict[str, list[str]]
    #: RECORD's rows for those files (their RECORD paths are their tree paths)
    record: str
    #: the ``.data`` files, whose places depend on their scheme: (tree path, sha256, size)
    data: list[tuple[str, str, int]]
    #: the fold view (see :func:`wheelstore.venv.fold.view`)
    view: folding.TreeView


def of(tree: Tree, interpreter: Interpreter) -> Prepared:
    """``tree`` prepared for the venv of ``interpreter``: from this process's memo, the user's cache, or derived
    (and then kept)."""
    layout = _layout(interpreter)
    if layout is None or tree.stamp is None:  # site-packages outside the prefix, or a tree not looked up
        return derive(tree, interpreter.paths, interpreter.cache_tag)
    name = _name(tree, interpreter.cache_tag, layout)
    found = _MEMO.get((name, interpreter.prefix))
    if found is None or found[0] != tree.stamp:  # an install asks twice per tree: for its folds, then to link it
        prepared = _load(name, tree.stamp)
        if prepared is None:
            prepared = derive(tree, {k: _PREFIX + v for k, v in layout.items()}, interpreter.cache_tag)
            _save(name, tree.stamp, prepared)
        found = _MEMO[(name, interpreter.prefix)] = (tree.stamp, _placed(prepared, interpreter.prefix))
    return found[1]


def derive(tree: Tree, paths: dict[str, str], cache_tag: str | None) -> Prepared:
    """Work ``tree`` out for a venv whose purelib and platlib are ``paths`` and whose Python has ``cache_tag``. One
    pass of plain string tests over the files, then the fold view."""
    m = tree.manifest
    data_dir = m.dist_info.removesuffix(".dist-info") + ".data"
    data_prefix = data_dir + "/"
    own = {f"{m.dist_info}/{name}" for name in INSTALLER_FILES}
    other = f".{m.bytecode}.pyc" if m.bytecode and m.bytecode != cache_tag else None
    by_dir: dict[str, list[str]] = {}
    rels: list[str] = []
    hexes: list[str] = []
    sizes: list[int] = []
    data: list[tuple[str, str, int]] = []
    last, names = None, []
    for rel, entry in sorted(m.files.items()):
        if rel.startswith(data_prefix):
            data.append((rel, entry.sha256, entry.size))
            continue
        if rel in own or (other and rel.endswith(other) and "/__pycache__/" in "/" + rel):
            continue
        rels.append(rel)
        hexes.append(entry.sha256)
        sizes.append(entry.size)
        parent, _, name = rel.rpartition("/")
        if parent != last:
            names = by_dir.setdefault(parent, [])
            last = parent
        names.append(name)
    sites = {"": paths["purelib" if m.root_is_purelib else "platlib"]}
    for scheme in ("purelib", "platlib", "data"):
        sites[f"{data_prefix}{scheme}/"] = paths[scheme]
    return Prepared(by_dir, record_rows(rels, hexes, sizes), data, folding.view(tree, sites, data_dir, cache_tag))


def record_rows(rels: list[str], hexes: list[str], sizes: list[int]) -> str:
    """RECORD's rows for files whose RECORD paths are ``rels``: csv quotes none of them but for a rare name with a
    comma, quote or line break in it."""
    if not rels:
        return ""
    hashes = record_hashes(hexes)
    if not _SPECIAL.search("".join(rels)):
        return "".join([f"{rel},{digest},{size}\n" for rel, digest, size in zip(rels, hashes, sizes)])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(rels, hashes, sizes))
    return out.getvalue()


def record_hashes(hexdigests: list[str]) -> list[str]:
    """RECORD's form of many sha256 hex digests, in one base64 call: each digest padded to 33 bytes encodes to 44
    characters whose first 43 are that digest's unpadded base64 (a row per file of every tree made this a hot spot)."""
    if not hexdigests:
        return []
    encoded = base64.urlsafe_b64encode(bytes.fromhex("00".join(hexdigests) + "00")).decode()
    return ["sha256=" + encoded[i : i + 43] for i in range(0, len(encoded), 44)]


#: (entry name, venv prefix) -> (manifest stamp, prepared and placed)
_MEMO: dict[tuple[str, str], tuple[tuple[int, ...], Prepared]] = {}


def _layout(interpreter: Interpreter) -> dict[str, str] | None:
    """purelib and platlib relative to the prefix ("/lib/..."), and data (the prefix: ""), or None when any lies
    elsewhere."""
    prefix = interpreter.prefix.rstrip("/")
    rel = {k: interpreter.paths[k][len(prefix) :] for k in ("purelib", "platlib")
           if interpreter.paths[k].startswith(prefix + "/")}
    if interpreter.paths["data"].rstrip("/") != prefix:  # the data scheme is the prefix in every venv
        return None
    rel["data"] = ""
    return rel if len(rel) == 3 else None


def _name(tree: Tree, cache_tag: str | None, layout: dict[str, str]) -> str:
    store = cache_id(tree.path.parent.parent)
    how = hashlib.sha256(f"{FORMAT}\0{cache_tag}\0{layout['purelib']}\0{layout['platlib']}".encode()).hexdigest()
    return f"prepared/{store}/{tree.key}.{how[:16]}"


def _placed(prepared: Prepared, prefix: str) -> Prepared:
    """``prepared`` with its venv paths (its fold view's) under ``prefix``."""
    v, here = prepared.view, prefix.rstrip("/")
    view = folding.TreeView(v.key, {here + a[1:] for a in v.anchors})
    view.dirs = {here + d[1:]: src for d, src in v.dirs.items()}
    view.blocked = {here + b[1:] for b in v.blocked}
    view.markers = {here + b[1:] for b in v.markers}
    return prepared._replace(view=view)


def _load(name: str, stamp: tuple[int, ...]) -> Prepared | None:
    data = usercache.read_bytes(name)
    if data is None:
        return None
    try:
        fmt, kept, by_dir, record, files, key, dirs, blocked, anchors, markers = marshal.loads(data)
        if fmt != FORMAT or kept != stamp:
            return None
        view = folding.TreeView(key, set(anchors))
        view.dirs, view.blocked, view.markers = dirs, set(blocked), set(markers)
        return Prepared(by_dir, record, files, view)
    except (EOFError, ValueError, TypeError):
        return None


def _save(name: str, stamp: tuple[int, ...], p: Prepared) -> None:
    v = p.view
    usercache.write_bytes(name, marshal.dumps((FORMAT, stamp, p.by_dir, p.record, p.data, v.key, v.dirs,
                                               sorted(v.blocked), sorted(v.anchors), sorted(v.markers))))
