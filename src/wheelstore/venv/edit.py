"""``wheelstore edit``: private, writable copies of one distribution's files in one venv, and linking them back.

For debugging a dependency with pdb or prints: :func:`make_private` gives the venv its own copies (reflinks where
possible), so edits land in this venv only; :func:`relink` discards them and links every file from the store again,
folding again in fold mode what only this distribution fills.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import fsio
from ..base.distinfo import INSTALLER_FILES, Distribution
from ..store.store import Tree
from . import fold as folding
from .link import LinkMode, link_file
from .servicelink import ServiceLinks
from .unfold import rewrite_record, sibling, swap
from .uninstall import record_files, through_symlink

if TYPE_CHECKING:
    from ..service.client import ServiceClient


def make_private(dist: Distribution, tree: Tree) -> list[Path]:
    """Replace every file linked from ``tree`` with a private, writable copy (a reflink where possible).

    For debugging a dependency with pdb or prints: the edits land in this venv only. The copies keep the store file's
    mtime, so nothing is recompiled until the user actually edits a file. A folded directory becomes a real one of
    such copies (its pycs included, still valid), and its RECORD row goes: it no longer is one entry.
    """
    changed: list[Path] = []
    tree_root = os.fspath(tree.path) + "/"
    private: set[str] = set()
    for path, rel in record_files(dist):
        if path.is_symlink() and os.readlink(path).startswith(tree_root) and path.is_dir():
            changed.extend(_private_dir(os.readlink(path), os.fspath(path)))
            private.add(rel)
    if private:
        rewrite_record(dist, drop=private)
    prefix = os.fspath(dist.dist_info.parent) + os.sep
    for path, src in _linked(dist, tree):
        if through_symlink(path.parent, prefix):
            continue  # in a directory another distribution folded: not this one's to copy
        if src is None:  # already a private file (``sed -i`` replaced the link): made writable, edits kept
            st = path.lstat()
            if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IWUSR:
                os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IWUSR, follow_symlinks=False)
                changed.append(path)
            continue
        tmp = path.with_name(f".{path.name}.wheelstore-edit")
        _unlink_quietly(os.fspath(tmp))  # left by an interrupted edit
        try:
            link_file(os.fspath(src), os.fspath(tmp), LinkMode.REFLINK)
        except OSError:
            link_file(os.fspath(src), os.fspath(tmp), LinkMode.COPY)
        os.replace(tmp, path)
        changed.append(path)
    return changed


def relink(dist: Distribution, tree: Tree, mode: LinkMode, cache_tag: str | None = None,
           service: ServiceClient | None = None) -> list[Path]:
    """Undo :func:`make_private`: every file of the tree is linked from the store again, edits discarded.

    In fold mode, directories that hold nothing but this distribution's files are folded again (as the plan would
    fold them for ``cache_tag``, the venv's); the rest is linked per file. Hard links with a ``service`` are the
    store service's (:mod:`.servicelink`), as the install made them: the user cannot hard-link its files.
    """
    if service is not None and mode is LinkMode.HARDLINK:
        return _service_relink(dist, tree, service)
    changed: list[Path] = []
    covered: Callable[[str], str | None] | None = None
    if mode is LinkMode.FOLD:
        refolded, newly = _refold(dist, tree, cache_tag)
        covered = folding.covering(refolded)
        for directory in newly:  # counted by file, as make_private counts what it copies out of a fold
            changed.extend(Path(directory, rel) for rel in _files_below(refolded[directory]))
    prefix = os.fspath(dist.dist_info.parent) + os.sep
    for path, src in _tree_files(dist, tree):
        if covered is not None and covered(os.fspath(path.parent)) is not None:
            continue
        if not os.path.lexists(path) or through_symlink(path.parent, prefix):
            continue  # never installed (pycs of another Python) or removed since; or in someone else's fold
        tmp = path.with_name(f".{path.name}.wheelstore-undo")
        _unlink_quietly(os.fspath(tmp))
        pyc = mode is LinkMode.FOLD and path.parent.name == "__pycache__" and path.suffix == ".pyc"
        link_file(os.fspath(src), os.fspath(tmp), LinkMode.COPY if pyc else mode)  # as install links it (pyc: copy)
        os.replace(tmp, path)
        changed.append(path)
    return changed


def _service_relink(dist: Distribution, tree: Tree, service: ServiceClient) -> list[Path]:
    """:func:`relink` by the store's service: each private file in the way is replaced (unlinked, then linked)."""
    prefix = os.fspath(dist.dist_info.parent) + os.sep
    changed: list[Path] = []
    links = ServiceLinks(service, [], _unlink_in)
    try:
        for path, src in _tree_files(dist, tree):
            if not os.path.lexists(path) or through_symlink(path.parent, prefix):
                continue
            st = path.lstat()
            if st.st_nlink > 1 and (st.st_ino, st.st_dev) == _ino(src):
                continue  # the store's own inode already
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                links.add(tree.key, os.fspath(path.parent), fd, path.name, os.fspath(src.relative_to(tree.path)))
            finally:
                os.close(fd)
            changed.append(path)
        links.flush()
    finally:
        links.close()
    return changed


def _unlink_in(dir_fd: int, name: str) -> None:
    os.unlink(name, dir_fd=dir_fd)


def _tree_files(dist: Distribution, tree: Tree) -> Iterator[tuple[Path, Path]]:
    """(venv path, store path) for each file of the tree outside .data and installer metadata, from the manifest."""
    root = dist.dist_info.parent
    data_dir = tree.manifest.dist_info.removesuffix(".dist-info") + ".data"
    for rel in sorted(tree.manifest.files):
        parent, _, base = rel.rpartition("/")
        if rel.startswith(data_dir + "/") or (parent == tree.manifest.dist_info and base in INSTALLER_FILES):
            continue
        yield root / rel, tree.path / rel


def _linked(dist: Distribution, tree: Tree) -> Iterator[tuple[Path, Path | None]]:
    """The tree's files in this venv: those it shares with the store (a symlink into it, or the same inode) with
    their store file, and its own regular files with None."""
    for path, src in _tree_files(dist, tree):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or (st.st_nlink > 1 and (st.st_ino, st.st_dev) == _ino(src)):
            yield path, src
        elif stat.S_ISREG(st.st_mode):
            yield path, None


def _ino(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_dev


def _private_dir(src: str, path: str) -> list[Path]:
    """Replace the folded directory ``path`` by private copies of ``src`` (reflinks where possible, mtimes kept)."""
    tmp = sibling(path, "edit")
    copied: list[Path] = []

    def copy(from_dir: str, to_dir: str) -> None:
        os.mkdir(to_dir, 0o777)
        with os.scandir(from_dir) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in entries:
            if is_dir:
                copy(os.path.join(from_dir, name), os.path.join(to_dir, name))
                continue
            dst = os.path.join(to_dir, name)
            try:
                link_file(os.path.join(from_dir, name), dst, LinkMode.REFLINK)
            except OSError:
                link_file(os.path.join(from_dir, name), dst, LinkMode.COPY)
            copied.append(Path(path, os.path.relpath(dst, tmp)))

    try:
        copy(src, tmp)
        os.unlink(swap(path, tmp, "folded"))
    except BaseException:
        fsio.rmtree(tmp, ignore_errors=True)
        raise
    return copied


def _files_below(directory: str) -> Iterator[str]:
    """Every file below ``directory`` (a tree's), relative to it."""
    for head, _dirs, files in os.walk(directory):
        for name in files:
            yield os.path.relpath(os.path.join(head, name), directory)


def _refold(dist: Distribution, tree: Tree, cache_tag: str | None) -> tuple[dict[str, str], list[str]]:
    """Fold again the directories of the tree's root part that hold only this distribution's files (private
    copies, and pycs Python wrote): the edits are discarded. Return every folded directory of the tree, and those
    folded now."""
    root = os.fspath(dist.dist_info.parent)
    m = tree.manifest
    v = folding.view(tree, {"": root}, m.dist_info.removesuffix(".dist-info") + ".data", cache_tag)
    ours = {os.fspath(p) for p, _src in _tree_files(dist, tree)}
    folded: dict[str, str] = {}
    foreign: dict[str, str] = {}  # links that are not this tree's: nothing below them is touched
    newly: list[str] = []
    for vdir in sorted(v.dirs):
        if folding.covering(folded)(vdir) is not None or folding.covering(foreign)(vdir) is not None:
            continue
        target = v.dirs[vdir]
        if os.path.islink(vdir):
            (folded if os.readlink(vdir) == target else foreign)[vdir] = target
            continue
        if vdir in v.blocked or vdir.rpartition("/")[0] not in v.anchors:
            continue
        if os.path.isdir(vdir) and _only(vdir, ours):
            link = sibling(vdir, "undo")
            os.symlink(target, link)
            fsio.rmtree(swap(vdir, link, "private"))
            folded[vdir] = target
            newly.append(vdir)
    if folded:
        rewrite_record(dist, add=[os.path.relpath(d, root) for d in sorted(folded)])
    return folded, newly


def _only(directory: str, ours: set[str]) -> bool:
    """Whether everything below ``directory`` is one of the files ``ours``, or a pyc Python wrote."""
    for head, dirs, files in os.walk(directory):
        if any(os.path.islink(os.path.join(head, d)) for d in dirs):
            return False
        for name in files:
            path = os.path.join(head, name)
            if path not in ours and not (head.endswith("/__pycache__") and name.endswith(".pyc")):
                return False
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
