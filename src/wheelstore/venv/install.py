"""Install: lay a published tree out in a venv exactly as pip would, linking files instead of copying them.

The wheel's install schemes (purelib/platlib, ``.data/scripts``, ``headers``, ``data``) map onto the target
interpreter's paths. What pip would write fresh is written fresh here too, as real files: scripts with a rewritten
``#!python`` shebang, console/gui launchers, and the installer's metadata (RECORD with the venv's paths, INSTALLER,
REQUESTED, direct_url.json). Everything else is linked from the store in the chosen mode. The resulting RECORD lets
``pip uninstall`` remove exactly what was installed, never touching the store.

In ``fold`` mode (:mod:`wheelstore.venv.fold` decides where) a whole directory may be one symlink into the store. RECORD
then lists the symlink itself first, as a row without hash, and the files it holds too (pycs included), so
``importlib.metadata`` sees every file. Current pip removes the symlink: it resolves only the
parent of each path, treats a symlink as a file, and refuses the rows below it, which resolve into the store,
outside the venv. uv and ``wheelstore uninstall`` go row by row, so the symlink row must come first: after it, the
rows below find nothing. When a later install must put files into a directory another distribution folded, that
distribution's RECORD is rewritten first (its row becomes rows for the new per-entry links), then the symlink is
swapped for a real directory: a RECORD row never names a real directory other distributions have files in.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import entrypoints
from ..base import fsio
from . import prepared
from . import fold as folding
from ..base.distinfo import INSTALLER_FILES, INSTALLER_NAME, ORIGIN_FILE, Distribution, installed, origin, record_hash
from ..base.errors import InstallError, printable
from ..base.interpreter import Interpreter
from .link import LinkMode, link_file
from ..base.logs import log
from ..store.manifest_check import show
from ..store.store import Tree
from ..store.treefiles import TreeDirs
from .venvdirs import VenvDirs

if TYPE_CHECKING:
    pass


class _Layout:
    """Where each file of one tree goes in one venv (plain strings: this runs once per file)."""

    def __init__(self, tree: Tree, interpreter: Interpreter) -> None:
        m = tree.manifest
        self.paths = dict(interpreter.paths)
        self.root = self.paths["purelib" if m.root_is_purelib else "platlib"]
        self.data_dir = m.dist_info.removesuffix(".dist-info") + ".data"
        self.data_prefix = self.data_dir + "/"
        headers = os.path.join(interpreter.prefix, "include", "site", f"python{interpreter.python_version}", m.name)
        self.schemes = {
            "purelib": self.paths["purelib"],
            "platlib": self.paths["platlib"],
            "scripts": self.paths["scripts"],
            "data": self.paths["data"],
            "headers": headers,
        }

    def target(self, rel: str) -> tuple[str, str | None]:
        """The destination of tree file ``rel``, and its .data scheme if it has one."""
        if rel.startswith(self.data_prefix):
            scheme, _, sub = rel[len(self.data_prefix) :].partition("/")
            return os.path.join(self.schemes[scheme], sub), scheme
        return f"{self.root}/{rel}", None  # runs once per file: a plain concatenation (tree paths are clean)


def install_tree(
    tree: Tree,
    interpreter: Interpreter,
    mode: LinkMode,
    *,
    requested: bool,
    direct_url: dict[str, object] | None = None,
    store_root: str | None = None,
    pycs: Tree | None = None,
    fold: dict[str, str] | None = None,
) -> Path:
    """Install one tree into the venv of ``interpreter``; return the new dist-info directory.

    ``fold`` (for LinkMode.FOLD, from :func:`plan_folds`) maps venv directories to the store directories they are
    to be symlinks to; every other file is linked one by one (fold: as a symlink). On failure, whatever this call
    created is removed again, so the venv is as it was.
    """
    m = tree.manifest
    layout = _Layout(tree, interpreter)
    created: list[str] = []
    root = layout.root
    dist_info = os.path.join(root, m.dist_info)
    tree_path = os.fspath(tree.path)
    dirs = VenvDirs.of(interpreter)
    readers: dict[str, TreeDirs] = {}
    try:
        prep = prepared.of(tree, interpreter)
        unit = prepared.of(pycs, interpreter) if pycs is not None else None
        _refuse_venv_own(m.wheel, [*prep.data, *(unit.data if unit is not None else ())], layout, interpreter)
        folded = _fold_links(fold, prep.by_dir, root, dirs, created) if fold else set()
        _link_dirs(_tree_dirs(tree_path, mode), prep.by_dir, folded, root, mode, dirs, created)
        data_files = [(tree_path, *f) for f in prep.data]
        unit_record = ""
        if pycs is not None and unit is not None:  # bytecode compiled in the store, beside the sources it came from
            _link_dirs(_tree_dirs(os.fspath(pycs.path), mode), unit.by_dir, set(), root, mode, dirs, created)
            data_files += [(os.fspath(pycs.path), *f) for f in unit.data]
            unit_record = unit.record
        record: list[tuple[str, str, int | str]] = []
        reads = mode not in (LinkMode.SYMLINK, LinkMode.FOLD)
        for source, rel, sha256, size in data_files:  # sorted by tree: one TreeDirs walks each tree's .data once
            dst, scheme = layout.target(rel)
            dir_fd, name = dirs.split(dst)
            if source not in readers:
                readers[source] = TreeDirs(source)  # scripts are read in every mode, to rewrite their shebang
            tree_dirs = readers[source]
            if scheme == "scripts":  # checked as launchers are: a tree published before the check, or forged
                what = f"{m.wheel}: script {rel!r}"
                entrypoints.check_not_venv_own(name, what)
                entrypoints.check_free(os.path.dirname(dst), name, what)
                data = _rewrite_shebang(tree_dirs.read(rel, size), interpreter.executable)
                _write_new(dir_fd, name, data, 0o755)
                record.append((dst, record_hash(data), len(data)))
            else:
                src_fd = tree_dirs.fd(rel.rpartition("/")[0]) if reads else None
                _link_replacing(f"{source}/{rel}", dir_fd, name, mode, src_fd)
                record.append((dst, sha256, size))
            created.append(dst)
        for script, data in _launchers(tree, interpreter, prep):
            _write_new(*dirs.split(os.fspath(script)), data, 0o755)
            created.append(os.fspath(script))
            record.append((os.fspath(script), record_hash(data), len(data)))
        extra = {"INSTALLER": f"{INSTALLER_NAME}\n".encode()}
        if requested:
            extra["REQUESTED"] = b""
        if direct_url is not None:
            extra["direct_url.json"] = json.dumps(direct_url, sort_keys=True).encode()
        origin = {"store": store_root, "key": tree.key, "link_mode": mode.value,
                  "pyc": pycs.key if pycs is not None else None}  # what gc roots then hold, without a look-up
        extra[ORIGIN_FILE] = json.dumps(origin, sort_keys=True).encode()
        dist_fd = dirs.open(dist_info)
        for name, data in extra.items():
            path = os.path.join(dist_info, name)
            _write_new(dist_fd, name, data, 0o644)
            created.append(path)
            record.append((path, record_hash(data), len(data)))
        record_path = os.path.join(dist_info, "RECORD")
        head = [(top, "", "") for top in sorted(folded)]  # first: see the module docstring
        text = _format_record(head, root) + prep.record + unit_record + _format_record(
            [*record, (record_path, "", "")], root)
        _write_new(dist_fd, "RECORD", text.encode(), 0o644)
        created.append(record_path)
    except BaseException:
        for path in reversed(created):
            dirs.unlink(path)
        for d in reversed(dirs.made):
            dirs.rmdir(d)
        raise
    finally:
        dirs.close()
        for tree_dirs in readers.values():
            tree_dirs.close()
    return Path(dist_info)


def _refuse_venv_own(wheel: str, data: list[tuple[str, str, int]], layout: _Layout, interpreter: Interpreter) -> None:
    """Refuse, before anything is created, a ``.data`` file that would replace one of the venv's own files (its
    interpreters, activation scripts, ``pyvenv.cfg``): the wheel was checked for them when published, but its tree
    and manifest are its publisher's to rewrite since."""
    scripts = interpreter.paths["scripts"].rstrip("/")
    cfg = os.path.join(interpreter.prefix, "pyvenv.cfg")
    for rel, _sha256, _size in data:
        dst, _scheme = layout.target(rel)
        parent, _, name = dst.rpartition("/")
        what = f"{wheel}: {show(rel)}"
        if parent == scripts:
            entrypoints.check_not_venv_own(name, what)
        elif dst == cfg:
            entrypoints.check_not_venv_own_data("pyvenv.cfg", what)


def _fold_links(
    fold: dict[str, str], by_dir: dict[str, list[str]], root: str, dirs: VenvDirs, created: list[str]
) -> set[str]:
    """Make the folded directories of ``fold`` that hold any of the tree's files (``by_dir``); return them."""
    covered = folding.covering(fold)
    tops = {top for parent in by_dir if parent and (top := covered(f"{root}/{parent}")) is not None}
    for top in sorted(tops):
        dir_fd, name = dirs.split(top)
        os.symlink(fold[top], name, dir_fd=dir_fd)
        created.append(top)
    return tops


def _tree_dirs(source: str, mode: LinkMode) -> TreeDirs:
    """The tree at ``source`` as ``mode`` reads it: copies and hard links through its directories' fds."""
    return TreeDirs(source, reads=mode not in (LinkMode.SYMLINK, LinkMode.FOLD))


def _link_dirs(
    tree_dirs: TreeDirs,
    by_dir: dict[str, list[str]],
    folded: set[str],
    root: str,
    mode: LinkMode,
    dirs: VenvDirs,
    created: list[str],
) -> None:
    """Link the files of ``by_dir`` from the tree of ``tree_dirs`` that are not in a ``folded`` directory, a
    directory at a time, parents first, each through its directory's fd (and, but for symlinks, from its tree
    directory's fd)."""
    covered = folding.covering(dict.fromkeys(folded, "")) if folded else None
    source = tree_dirs.source
    with tree_dirs:
        for parent in sorted(by_dir):
            path = f"{root}/{parent}" if parent else root
            if covered is not None and covered(path) is not None:
                continue
            dir_fd = dirs.open(path)
            src_fd = tree_dirs.fd(parent)
            where = f"{source}/{parent}/" if parent else f"{source}/"
            for name in by_dir[parent]:
                _link_replacing(where + name, dir_fd, name, mode, src_fd)
                created.append(f"{path}/{name}")


def _link_replacing(src: str, dir_fd: int, name: str, mode: LinkMode, src_dir_fd: int | None = None) -> None:
    """Link, trying first and looking only on a clash: most destinations are new, and lstat per file is not free."""
    try:
        link_file(src, name, mode, dst_dir_fd=dir_fd, src_dir_fd=src_dir_fd)
    except FileExistsError:
        _replace_existing(dir_fd, name)
        link_file(src, name, mode, dst_dir_fd=dir_fd, src_dir_fd=src_dir_fd)


def _replace_existing(dir_fd: int | None, name: str) -> None:
    """A file from another distribution (or a stale one) is replaced, as pip does."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        where = name if dir_fd is None else f"{VenvDirs.where(dir_fd)}/{name}"
        raise InstallError(f"{printable(where)} is a directory, but a file of the same name is to be installed there")
    os.unlink(name, dir_fd=dir_fd)


def _write_new(dir_fd: int | None, name: str, data: bytes, mode: int) -> None:
    """A real file in the venv (``name`` in ``dir_fd``, or a path). The venv is the user's own, so, as with pip,
    their umask applies."""
    _replace_existing(dir_fd, name)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _rmdir_quietly(path: str | Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _shebang(executable: str) -> bytes:
    """pip's rule: a plain shebang when the kernel can run it, else a /bin/sh trampoline."""
    if len(executable) <= 127 and " " not in executable:
        return f"#!{executable}\n".encode()
    return f"#!/bin/sh\n'''exec' '{executable}' \"$0\" \"$@\"\n' '''\n".encode()


def _rewrite_shebang(data: bytes, executable: str) -> bytes:
    """pip's rule: a first line starting with ``#!python`` is replaced whole by the venv interpreter's shebang."""
    if not data.startswith(b"#!python"):
        return data
    _first, nl, rest = data.partition(b"\n")
    return _shebang(executable) + (rest if nl else b"")


def _launchers(tree: Tree, interpreter: Interpreter, prep: prepared.Prepared) -> Iterator[tuple[Path, bytes]]:
    """console_scripts and gui_scripts launchers, as pip writes them on POSIX."""
    entry_points = tree.path / tree.manifest.dist_info / "entry_points.txt"
    if "entry_points.txt" not in prep.by_dir.get(tree.manifest.dist_info, ()):
        return
    scripts_dir = Path(interpreter.paths["scripts"])
    for name, module, attrs in entrypoints.read(entry_points, tree.manifest.wheel):  # checked: plain names and paths
        entrypoints.check_free(os.fspath(scripts_dir), name, f"{tree.manifest.wheel}: entry point {name!r}")
        target, call = attrs.split(".")[0], attrs
        body = (
            "import re\nimport sys\n"
            f"from {module} import {target}\n"
            "if __name__ == '__main__':\n"
            "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({call}())\n"
        )
        yield scripts_dir / name, _shebang(interpreter.executable) + b"# -*- coding: utf-8 -*-\n" + body.encode()


def _format_record(rows: Sequence[tuple[str, str, int | str]], root: str) -> str:
    """RECORD rows for files anywhere in the venv: paths relative to the directory holding the dist-info. A row's
    hash is in RECORD's form already (or empty), or a manifest's sha256 hex digest, converted here."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for path, digest, size in rows:
        if len(digest) == 64 and not digest.startswith("sha256="):
            digest = prepared.record_hashes([digest])[0]
        writer.writerow((os.path.relpath(path, root), digest, size))
    return out.getvalue()


# -- what is installed --------------------------------------------------------------------------------------------------


class Stash:
    """Files moved aside instead of deleted, inside the venv, so that a failed upgrade can put the old version back
    (pip stashes the same way). :meth:`discard` deletes them once the new version is in; :meth:`restore` undoes."""

    def __init__(self, prefix: str) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix=".wheelstore-stash-", dir=prefix))
        self.moved: list[tuple[Path, Path]] = []

    def take(self, path: Path) -> None:
        """Move ``path`` (a file, a link, or a dist-info directory) aside; deleted outright across filesystems."""
        target = self.dir / str(len(self.moved))
        try:
            os.rename(path, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            fsio.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            return
        self.moved.append((path, target))

    def restore(self) -> None:
        for path, target in reversed(self.moved):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, path)
        self.discard()

    def discard(self) -> None:
        fsio.rmtree(self.dir, ignore_errors=True)  # never follows a link: links into the store just go


def uninstall(dist: Distribution, interpreter: Interpreter, stash: Stash | None = None) -> list[Path]:
    """Remove exactly the files the distribution's RECORD lists (links, never their targets), and its empty dirs;
    with ``stash``, move them there instead, to be restored if what replaces them fails."""
    root = dist.dist_info.parent
    try:
        text = (dist.dist_info / "RECORD").read_text(encoding="utf-8")
    except OSError:
        raise InstallError(f"{dist.display_name} {dist.version} has no RECORD, so it cannot be removed safely") from None
    removed: list[Path] = []
    dirs: set[Path] = set()
    prefix = os.path.normpath(interpreter.prefix) + os.sep
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        path = Path(os.path.normpath(root / row[0]))
        if not str(path).startswith(prefix):  # as pip does: never remove anything outside the venv, but say so
            log.warning("could not remove %s (RECORD of %s): it is outside the venv", show(row[0]),
                        printable(dist.display_name))
            continue
        if _through_symlink(path.parent, prefix):
            continue  # in a folded directory, gone with its link (or another tree's): never a store file
        for victim in (path, *_pycs(path)):
            try:
                if stash is None:
                    victim.unlink()
                elif victim.is_dir() and not victim.is_symlink():
                    continue
                else:
                    stash.take(victim)
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                continue
            removed.append(victim)
            dirs.add(victim.parent)
    stop = {Path(p) for p in interpreter.paths.values()} | {Path(interpreter.prefix)}
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        _prune_empty(d, stop, prefix)
    if dist.dist_info.exists():
        if stash is None:
            fsio.rmtree(dist.dist_info, ignore_errors=True)
        else:
            stash.take(dist.dist_info)
    return removed


def _pycs(path: Path) -> Iterable[Path]:
    if path.suffix != ".py":
        return ()
    cache = path.parent / "__pycache__"
    try:
        return [cache / n for n in os.listdir(cache) if n.startswith(path.stem + ".") and n.endswith(".pyc")]
    except OSError:
        return ()


def _through_symlink(directory: Path, prefix: str) -> bool:
    """Whether a directory below the venv prefix is reached through a symlink (which could lead into the store)."""
    d = directory
    while str(d).startswith(prefix):
        if d.is_symlink():
            return True
        d = d.parent
    return False


def _prune_empty(d: Path, stop: set[Path], prefix: str) -> None:
    while d not in stop and d != d.parent and str(d).startswith(prefix):
        pycache = d / "__pycache__"
        if pycache.is_dir() and not any(pycache.iterdir()):
            _rmdir_quietly(pycache)
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def record_files(dist: Distribution) -> list[tuple[Path, str]]:
    """(absolute path, RECORD path) for every file the distribution's RECORD lists inside its venv (the directory
    holding ``pyvenv.cfg``, else site-packages' parent); a row outside is left alone and said."""
    try:
        text = (dist.dist_info / "RECORD").read_text(encoding="utf-8")
    except OSError:
        raise InstallError(f"{dist.display_name} {dist.version} has no RECORD") from None
    root = dist.dist_info.parent
    venv = next((p for p in root.parents if (p / "pyvenv.cfg").is_file()), root.parent)
    inside = os.fspath(venv).rstrip("/") + "/"
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        path = os.path.normpath(root / row[0])
        if path.startswith(inside):
            rows.append((Path(path), row[0]))
        else:
            log.warning("left %s (RECORD of %s) alone: it is outside the venv", show(row[0]),
                        printable(dist.display_name))
    return rows


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
        _rewrite_record(dist, drop=private)
    prefix = os.fspath(dist.dist_info.parent) + os.sep
    for path, src in _linked(dist, tree):
        if _through_symlink(path.parent, prefix):
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


def relink(dist: Distribution, tree: Tree, mode: LinkMode, cache_tag: str | None = None) -> list[Path]:
    """Undo :func:`make_private`: every file of the tree is linked from the store again, edits discarded.

    In fold mode, directories that hold nothing but this distribution's files are folded again (as the plan would
    fold them for ``cache_tag``, the venv's); the rest is linked per file.
    """
    changed: list[Path] = []
    covered: Callable[[str], str | None] | None = None
    if mode is LinkMode.FOLD:
        refolded = _refold(dist, tree, cache_tag)
        covered = folding.covering(refolded)
        changed.extend(Path(p) for p in refolded)
    prefix = os.fspath(dist.dist_info.parent) + os.sep
    for path, src in _tree_files(dist, tree):
        if covered is not None and covered(os.fspath(path.parent)) is not None:
            continue
        if not os.path.lexists(path) or _through_symlink(path.parent, prefix):
            continue  # never installed (pycs of another Python) or removed since; or in someone else's fold
        tmp = path.with_name(f".{path.name}.wheelstore-undo")
        _unlink_quietly(os.fspath(tmp))
        link_file(os.fspath(src), os.fspath(tmp), mode)
        os.replace(tmp, path)
        changed.append(path)
    return changed


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


def bump_mtime(interpreter: Interpreter) -> None:
    """The import system caches directory listings by mtime: make new files visible to running interpreters."""
    for site in dict.fromkeys((interpreter.paths["purelib"], interpreter.paths["platlib"])):
        try:
            os.utime(site)
        except OSError:
            pass


# -- folding -----------------------------------------------------------------------------------------------------------

#: a folded directory's link target: STORE/trees/KEY/PATH
_FOLDED = re.compile(r"^(/.+)/trees/([0-9a-f]{64})/(.+)$")


def plan_folds(trees: Sequence[Tree], interpreter: Interpreter) -> dict[str, dict[str, str]]:
    """Which directories each tree (installed in fold mode) folds, decided for all of them together.

    Directories other installed distributions folded earlier are unfolded here when a tree needs to add to them (their
    RECORD first); folds whose distribution is gone (an uninstaller that would not remove a link out of the venv)
    are removed. Nothing else in the venv changes.
    """
    views = [prepared.of(tree, interpreter).view for tree in trees]
    owners: dict[tuple[str, str], Distribution] | None = None

    def state(path: str) -> str:
        nonlocal owners
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return folding.ABSENT
        if stat.S_ISDIR(st.st_mode):
            return folding.REAL
        if not stat.S_ISLNK(st.st_mode):
            raise InstallError(f"{path} is a file, but a directory of the same name is to be installed there")
        target = os.readlink(path)
        found = _FOLDED.match(target)
        if found is None:
            raise InstallError(f"{path} is a symlink to {target}; refusing to install through it")
        if owners is None:
            owners = _owners(interpreter)
        owner = owners.get((found.group(1), found.group(2)))
        if owner is None:
            os.unlink(path)
            return folding.ABSENT
        _unfold(path, target, owner)
        return folding.REAL

    return folding.plan(views, state)


def _owners(interpreter: Interpreter) -> dict[tuple[str, str], Distribution]:
    """Installed distributions by the (store, tree key) they were linked from."""
    result = {}
    for dist in installed(interpreter).values():
        found = origin(dist)
        if found is not None and found.get("store") and found.get("key"):
            result[(str(found["store"]), str(found["key"]))] = dist
    return result


def _sibling(path: str, what: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.wheelstore-{what}-{os.urandom(4).hex()}")


def _swap(path: str, new: str, what: str) -> str:
    """Put the entry ``new`` in the place of ``path`` (a directory and a symlink cannot be exchanged by one rename);
    return where the old entry went."""
    aside = _sibling(path, what)
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)
        raise
    return aside


def _unfold(path: str, target: str, owner: Distribution) -> None:
    """Replace the folded directory ``path`` (a symlink to ``target``) by a real one of per-entry symlinks.

    A subdirectory stays one symlink only where the owner also has a file beside it (see :mod:`wheelstore.venv.fold`
    for why pip needs that); otherwise it is made real the same way, and so is a ``__pycache__``, so that Python
    can still cache other modules there. The owner's RECORD is rewritten before the swap: a crash between leaves an
    unlisted link (removed as stale by the next install), never a listed real directory others have files in.
    """
    tmp = _sibling(path, "unfold")
    links: list[str] = []

    def build(src: str, dst: str) -> None:
        os.mkdir(dst, 0o777)  # the venv's own directory: the user's umask applies, as with pip
        with os.scandir(src) as it:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        anchored = any(not is_dir for _name, is_dir in entries)
        for name, is_dir in entries:
            s, d = os.path.join(src, name), os.path.join(dst, name)
            if is_dir and (name == "__pycache__" or not anchored):
                build(s, d)
            else:
                os.symlink(s, d)
                if is_dir:
                    links.append(path + d[len(tmp) :])

    try:
        build(target, tmp)
        root = owner.dist_info.parent
        _rewrite_record(owner, drop={os.path.relpath(path, root)}, add=[os.path.relpath(p, root) for p in links])
        os.unlink(_swap(path, tmp, "folded"))
    except BaseException:
        fsio.rmtree(tmp, ignore_errors=True)
        raise


def _rewrite_record(dist: Distribution, *, drop: Iterable[str] = (), add: Sequence[str] = ()) -> None:
    """Replace RECORD atomically without the rows ``drop``, with a hashless row for each directory in ``add``
    placed before the first row below it."""
    record = dist.dist_info / "RECORD"
    gone = set(drop)
    rows = [r for r in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))) if r and r[0] not in gone]
    for d in add:
        if any(r[0] == d for r in rows):
            continue
        at = next((i for i, r in enumerate(rows) if r[0].startswith(d + "/")), len(rows) - 1)
        rows.insert(at, [d, "", ""])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    tmp = record.with_name(f".RECORD.wheelstore-{os.urandom(4).hex()}")
    _write_new(None, os.fspath(tmp), out.getvalue().encode(), 0o644)
    os.replace(tmp, record)


def _private_dir(src: str, path: str) -> list[Path]:
    """Replace the folded directory ``path`` by private copies of ``src`` (reflinks where possible, mtimes kept)."""
    tmp = _sibling(path, "edit")
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
        os.unlink(_swap(path, tmp, "folded"))
    except BaseException:
        fsio.rmtree(tmp, ignore_errors=True)
        raise
    return copied


def _refold(dist: Distribution, tree: Tree, cache_tag: str | None) -> dict[str, str]:
    """Fold again the directories of the tree's root part that hold only this distribution's files (private
    copies, and pycs Python wrote): the edits are discarded. Return every folded directory of the tree."""
    root = os.fspath(dist.dist_info.parent)
    m = tree.manifest
    v = folding.view(tree, {"": root}, m.dist_info.removesuffix(".dist-info") + ".data", cache_tag)
    ours = {os.fspath(p) for p, _src in _tree_files(dist, tree)}
    folded: dict[str, str] = {}
    foreign: dict[str, str] = {}  # links that are not this tree's: nothing below them is touched
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
            link = _sibling(vdir, "undo")
            os.symlink(target, link)
            fsio.rmtree(_swap(vdir, link, "private"))
            folded[vdir] = target
    if folded:
        _rewrite_record(dist, add=[os.path.relpath(d, root) for d in sorted(folded)])
    return folded


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
