"""The store as an index: its trees found by distribution name and version, and shown to uv as a local simple index.

Trees are keyed by their wheel's sha256; nothing in the store maps a name to them. :func:`scan` reads every manifest
once (through :meth:`Store.lookup`, which checks each as any install does, and which the user's cache makes a
``stat`` and a small read per tree after the first time) and keeps only trees whose manifest agrees with its own wheel
file name: a member's planted manifest that calls its tree ``requests`` while its wheel is another's is left out,
not mapped. Scanning the 36 trees of the benchmark set costs about 2 ms warm (29 ms cold), 886 trees about 40-60 ms
warm (1 s cold); an index kept at publish time would have to be checked the same way, so it is not worth its upkeep
at this size.

uv 0.13.9 resolving against a ``file://`` simple index reads METADATA from the wheel file itself, never from the
PEP 658 ``.metadata`` file (without the wheel: ``failed to open file .../x.whl``; with a wheel whose METADATA
differs from the ``.metadata`` file, the wheel's wins). So :func:`store_index` writes, beside each ``.metadata``
file (kept for other clients), a stub wheel holding only the tree's dist-info ``METADATA``, ``WHEEL`` and an empty
``RECORD``. uv reads the stub and records the index's ``#sha256=``, the tree key, in the lock without hashing the
stub (a lock downloads nothing), so the plan finds the tree by hash. The stubs are never installed: :func:`is_stub`
tells the plan to drop them. The index lives in a directory the caller owns (a private temporary one per
resolution), so uv's cache never holds a stub that a later store's contents contradict. Writing it costs about
12 ms for 36 trees and 350 ms for 886 (1 s the first time, when every manifest's file list is parsed).
"""

from __future__ import annotations

import hashlib
import html
import os
import stat
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ..base import names
from ..base.distinfo import name_and_version
from ..base.errors import StoreError
from ..base.interpreter import Interpreter
from ..base.names import canonical
from ..fetch.sources import Sources
from ..store.store import Store, Tree

#: the largest METADATA put in the index (real ones are a few hundred KiB at most)
MAX_METADATA = 4 << 20
#: the file in the index's root that marks it as one (for :func:`is_stub`)
MARK = ".wheelstore-store-index"


def scan(store: Store, interpreter: Interpreter,
         lookup: Callable[[str], Tree | None] | None = None) -> dict[str, list[Tree]]:
    """Every tree of the store this interpreter can use, by canonical name, best tags first; untrustworthy trees and
    those whose manifest contradicts its wheel's file name are left out. Trees built from sdists count when a build
    record for this interpreter names them; a tree for a bare ``linux_*`` tag without one was built for another
    host (or another glibc) and is left out. ``lookup`` is :meth:`Store.lookup` (remembering), or a caller's that
    keeps what it found."""
    supported = interpreter.supported
    built = _built_here(store, interpreter)
    found: dict[str, list[tuple[int, str, Tree]]] = {}
    keys = store.keys() if store.upstream is None else store.keys() | store.upstream.keys()  # an overlay's site's too
    for key in sorted(keys):
        if len(key) != 64:
            continue  # a pyc unit or a build record
        try:
            tree = lookup(key) if lookup is not None else store.lookup(key, remember=True)
        except StoreError:
            continue  # verify's to report
        if tree is None or not _consistent(tree):
            continue
        tags = names.wheel_tags(tree.manifest.wheel)
        place = names.rank(supported, tags)
        if place is None or (key not in built and _local_build_tags(tags, supported)):
            continue
        found.setdefault(tree.manifest.name, []).append((place, key, tree))
    return {name: [t for _p, _k, t in sorted(trees, key=lambda e: e[:2])] for name, trees in sorted(found.items())}


def trees_named(store: Store, name: str, version: str, interpreter: Interpreter,
                scanned: dict[str, list[Tree]] | None = None) -> list[Tree]:
    """The store's trees of ``name`` at ``version`` (PEP 440 equality: ``1.0`` is ``1.0.0``) this interpreter can
    use, best tags first; ``scanned`` is a :func:`scan` already made, for several names."""
    from packaging.version import InvalidVersion, Version

    try:
        wanted = Version(version)
    except InvalidVersion:
        return []
    held = (scanned if scanned is not None else scan(store, interpreter)).get(canonical(name), [])
    return [t for t in held if Version(t.manifest.version) == wanted]


def store_index(store: Store, interpreter: Interpreter, into: Path,
                scanned: dict[str, list[Tree]] | None = None) -> str:
    """Write a PEP 503 simple index of the store's trees usable by ``interpreter`` into the empty directory ``into``
    (the caller's, private) and return its ``file://`` URL, for ``uv pip compile --index-url``. Each tree is listed
    as its wheel file name with ``#sha256=<tree key>`` and PEP 658/714 metadata (its dist-info's ``METADATA``, checked
    against the manifest's sha256 for it); a tree whose METADATA is missing, changed or names another distribution
    is left out, and so is a tree whose wheel file name an earlier one has (two builds of one project version): uv
    would lock one's key with the other's METADATA."""
    projects = []
    for name, trees in (scanned if scanned is not None else scan(store, interpreter)).items():
        links: list[str] = []
        written: set[str] = set()
        for tree in trees:
            if tree.manifest.wheel in written:
                continue  # one link per file name: its stub and .metadata are the first tree's, whose key uv locks
            metadata = _metadata(tree)
            if metadata is None:
                continue
            written.add(tree.manifest.wheel)
            if not links:
                (into / name).mkdir(mode=0o700)
            links.append(_write_entry(into / name, tree, metadata))
        if links:
            projects.append(name)
            _write_page(into / name / "index.html", links)
    _write_page(into / "index.html", [f'<a href="{n}/">{n}</a>' for n in projects])
    (into / MARK).write_bytes(b"")
    return into.as_uri()


def offline_sources(store: Store, interpreter: Interpreter, sources: Sources, into: Path,
                    scanned: dict[str, list[Tree]] | None = None) -> Sources:
    """``sources`` for an offline resolution: the store's index (written into the new directory ``into``) in place
    of the indexes, which cannot be reached, and the local find-links kept. What uv picks from them can be installed
    offline; what it would pick from its own cache of a remote index's pages might not be in the store."""
    into.mkdir(mode=0o700)
    local = tuple(f for f in sources.find_links if f.startswith("file:") or "://" not in f)
    return sources._replace(index_urls=(store_index(store, interpreter, into, scanned),), no_index=False,
                            find_links=local)


def is_stub(wheel: Path, index: Path) -> bool:
    """Whether a lock's local wheel is one of the stubs of the store index at ``index``: its tree is used, never it."""
    return wheel.parent.parent == index and (index / MARK).is_file()


def _consistent(tree: Tree) -> bool:
    """Whether the tree's manifest names the distribution and version of its own wheel file name (the manifest check
    already holds its dist-info directory to that name)."""
    try:
        name, version, _build, _tags = names.parse_wheel_name(tree.manifest.wheel)
    except ValueError:
        return False
    from packaging.version import InvalidVersion, Version

    try:
        return name == tree.manifest.name and version == Version(tree.manifest.version)
    except InvalidVersion:
        return False


def _local_build_tags(tags: Iterable[str], supported: dict[str, int]) -> bool:
    """Whether every usable tag is a bare ``linux_*`` one: a wheel only a build on some host makes."""
    usable = [t for t in tags if t in supported]
    return bool(usable) and all(t.rsplit("-", 1)[1].startswith("linux_") for t in usable)


def _built_here(store: Store, interpreter: Interpreter) -> set[str]:
    """The keys of the trees built from sdists for this interpreter, by the build records that name them."""
    from ..fetch.build import SUFFIX, lookup_built, record_name

    suffix = record_name("0" * 64, interpreter)[64:]
    built = set()
    for entry in os.listdir(store.area_fd("manifests")):
        if entry.endswith(SUFFIX) and entry.endswith(suffix) and len(entry) == 64 + len(suffix):
            try:
                tree = lookup_built(store, entry[:64], interpreter)
            except (StoreError, ValueError):
                continue
            if tree is not None:
                built.add(tree.key)
    return built


def _metadata(tree: Tree) -> bytes | None:
    """The tree's METADATA, if its bytes are those the manifest records and it names the tree's distribution."""
    rel = f"{tree.manifest.dist_info}/METADATA"
    entry = tree.manifest.files.get(rel)
    if entry is None or entry.size > MAX_METADATA:
        return None
    try:
        fd = os.open(tree.path / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_METADATA + 1)
    finally:
        os.close(fd)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        return None
    name, version = name_and_version(data.decode("utf-8", "replace"))
    if name is None or canonical(name) != tree.manifest.name or version is None:
        return None
    return data if _same_version(version, tree.manifest.version) else None


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def _write_entry(directory: Path, tree: Tree, metadata: bytes) -> str:
    """The tree's ``.metadata`` file and stub wheel in ``directory``; its link for the project page."""
    wheel = tree.manifest.wheel
    (directory / f"{wheel}.metadata").write_bytes(metadata)
    with zipfile.ZipFile(directory / wheel, "w") as stub:
        stub.writestr(f"{tree.manifest.dist_info}/METADATA", metadata)
        tags = "".join(f"Tag: {t}\n" for t in sorted(names.wheel_tags(wheel)))
        stub.writestr(f"{tree.manifest.dist_info}/WHEEL",
                      f"Wheel-Version: 1.0\nGenerator: wheelstore\nRoot-Is-Purelib: "
                      f"{str(tree.manifest.root_is_purelib).lower()}\n{tags}")
        stub.writestr(f"{tree.manifest.dist_info}/RECORD", "")
    digest = hashlib.sha256(metadata).hexdigest()
    href = html.escape(f"{wheel}#sha256={tree.key}")
    return (f'<a href="{href}" data-core-metadata="sha256={digest}" data-dist-info-metadata="sha256={digest}">'
            f"{html.escape(wheel)}</a>")


def _write_page(path: Path, links: list[str]) -> None:
    body = "<br/>\n".join(links)
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta name=\"pypi:repository-version\" content=\"1.0\"></head>"
                    f"<body>\n{body}\n</body></html>\n")
