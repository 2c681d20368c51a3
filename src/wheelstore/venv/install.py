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
swapped for a real directory (:mod:`wheelstore.venv.unfold`): a RECORD row never names a real directory other
distributions have files in.

Removing a distribution is :mod:`wheelstore.venv.uninstall`'s job, ``wheelstore edit`` :mod:`wheelstore.venv.edit`'s.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import cancel
from ..base.distinfo import INSTALLER_NAME, ORIGIN_FILE, record_hash
from ..base.errors import InstallError, printable
from ..base.interpreter import Interpreter
from ..store import entrypoints
from ..store.manifest_check import show
from ..store.store import Tree
from ..store.treefiles import TreeDirs
from . import fold as folding
from . import prepared
from .link import LinkMode, link_file
from .servicelink import ServiceLinks
from .venvdirs import VenvDirs

if TYPE_CHECKING:
    from ..service.client import ServiceClient


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


#: a RECORD row: path in the venv, hash (RECORD's form, a manifest's sha256 hex digest, or empty), size
_Row = tuple[str, str, int | str]


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
    store_id: str | None = None,
    service: ServiceClient | None = None,
) -> Path:
    """Install one tree into the venv of ``interpreter``; return the new dist-info directory.

    ``fold`` (for LinkMode.FOLD, from :func:`wheelstore.venv.unfold.plan_folds`) maps venv directories to the store
    directories they are to be symlinks to; every other file is linked one by one (fold: as a symlink; hardlink,
    with ``service``: by the store's service, :mod:`.servicelink`). On failure, whatever this call created is
    removed again, so the venv is as it was.
    """
    m = tree.manifest
    layout = _Layout(tree, interpreter)
    created: list[str] = []
    root = layout.root
    dist_info = os.path.join(root, m.dist_info)
    tree_path = os.fspath(tree.path)
    dirs = VenvDirs.of(interpreter)
    readers: dict[str, TreeDirs] = {}
    links = ServiceLinks(service, created, _replace_existing) if service and mode is LinkMode.HARDLINK else None
    try:
        prep = prepared.of(tree, interpreter)
        unit = prepared.of(pycs, interpreter) if pycs is not None else None
        _refuse_venv_own(m.wheel, [*prep.data, *(unit.data if unit is not None else ())], layout, interpreter)
        data_dirs = {os.path.dirname(layout.target(rel)[0]) for rel, _sha, _size in prep.data} if fold else set()
        folded = _fold_links(fold, prep.by_dir, data_dirs, root, dirs, created) if fold else set()
        _link_dirs(_tree_dirs(tree_path, mode, links), prep.by_dir, folded, root, mode, dirs, created, links)
        data_files = [(tree_path, *f) for f in prep.data]
        unit_record = ""
        if pycs is not None and unit is not None:  # bytecode compiled in the store, beside the sources it came from
            unit_dirs = _tree_dirs(os.fspath(pycs.path), mode, links)
            _link_dirs(unit_dirs, unit.by_dir, set(), root, mode, dirs, created, links)
            data_files += [(os.fspath(pycs.path), *f) for f in unit.data]
            unit_record = unit.record
        record = _place_data(data_files, layout, m.wheel, interpreter, mode, dirs, readers, created, folded, links)
        record += _write_markers(folded, prep.view.markers, layout.data_dir, dirs, created)
        record += _write_launchers(tree, interpreter, prep, dirs, created)
        extra = _installer_files(tree, mode, requested=requested, direct_url=direct_url, store=(store_root, store_id),
                                 pycs=pycs)
        _write_dist_info(dist_info, extra, folded, prep.record + unit_record, record, root, dirs, created)
    except BaseException:
        for path in reversed(created):
            dirs.unlink(path)
        for d in reversed(dirs.made):
            dirs.rmdir(d)
        raise
    finally:
        for opened in (*([links] if links is not None else ()), dirs, *readers.values()):
            opened.close()
    return Path(dist_info)


def _place_data(
    data_files: list[tuple[str, str, str, int]],
    layout: _Layout,
    wheel: str,
    interpreter: Interpreter,
    mode: LinkMode,
    dirs: VenvDirs,
    readers: dict[str, TreeDirs],
    created: list[str],
    folded: set[str],
    links: ServiceLinks | None = None,
) -> list[_Row]:
    """Put the ``.data`` files (source tree, tree path, sha256, size) where their schemes go: scripts written fresh
    with the venv's shebang, the rest linked (but for those in a ``folded`` directory, there already); return their
    RECORD rows. ``readers`` keeps one TreeDirs per tree, for the caller to close; ``links`` makes hard links by the
    store's service, all of them made when this returns."""
    record: list[_Row] = []
    reads = mode not in (LinkMode.SYMLINK, LinkMode.FOLD) and links is None
    covered = folding.covering(dict.fromkeys(folded, "")) if folded else None
    for source, rel, sha256, size in data_files:  # sorted by tree: one TreeDirs walks each tree's .data once
        dst, scheme = layout.target(rel)
        if covered is not None and scheme != "scripts" and covered(os.path.dirname(dst)) is not None:
            record.append((dst, sha256, size))
            continue
        dir_fd, name = dirs.split(dst)
        if source not in readers:
            readers[source] = TreeDirs(source)  # scripts are read in every mode, to rewrite their shebang
        tree_dirs = readers[source]
        if scheme == "scripts":  # checked as launchers are: a tree published before the check, or forged
            what = f"{wheel}: script {rel!r}"
            entrypoints.check_not_venv_own(name, what)
            entrypoints.check_free(os.path.dirname(dst), name, what)
            data = _rewrite_shebang(tree_dirs.read(rel, size), interpreter.executable)
            write_new(dir_fd, name, data, 0o755)
            record.append((dst, record_hash(data), len(data)))
        elif links is not None:  # created once the service linked it
            links.add(os.path.basename(source), os.path.dirname(dst), dir_fd, name, rel)
            record.append((dst, sha256, size))
            continue
        else:
            src_fd = tree_dirs.fd(rel.rpartition("/")[0]) if reads else None
            _link_replacing(f"{source}/{rel}", dir_fd, name, mode, src_fd)
            record.append((dst, sha256, size))
        created.append(dst)
    if links is not None:
        links.flush()
    return record


def _write_launchers(
    tree: Tree, interpreter: Interpreter, prep: prepared.Prepared, dirs: VenvDirs, created: list[str]
) -> list[_Row]:
    """Write the tree's console and gui launchers; return their RECORD rows."""
    record: list[_Row] = []
    for script, data in _launchers(tree, interpreter, prep):
        write_new(*dirs.split(os.fspath(script)), data, 0o755)
        created.append(os.fspath(script))
        record.append((os.fspath(script), record_hash(data), len(data)))
    return record


def _installer_files(
    tree: Tree,
    mode: LinkMode,
    *,
    requested: bool,
    direct_url: dict[str, object] | None,
    store: tuple[str | None, str | None],
    pycs: Tree | None,
) -> dict[str, bytes]:
    """The files the installer writes into the dist-info besides RECORD: name -> content. The origin file names the
    store by its id (the same through every mount, :mod:`~wheelstore.store.identity`) and, for people and for
    stores without one, its path."""
    extra = {"INSTALLER": f"{INSTALLER_NAME}\n".encode()}
    if requested:
        extra["REQUESTED"] = b""
    if direct_url is not None:
        extra["direct_url.json"] = json.dumps(direct_url, sort_keys=True).encode()
    origin = {"store": store[0], "key": tree.key, "link_mode": mode.value,
              "pyc": pycs.key if pycs is not None else None}  # what gc roots then hold, without a look-up
    if store[1] is not None:
        origin["store_id"] = store[1]
    extra[ORIGIN_FILE] = json.dumps(origin, sort_keys=True).encode()
    return extra


def _write_dist_info(
    dist_info: str,
    extra: dict[str, bytes],
    folded: set[str],
    tree_rows: str,
    record: list[_Row],
    root: str,
    dirs: VenvDirs,
    created: list[str],
) -> None:
    """Write ``extra`` into the dist-info, then RECORD: the ``folded`` directories first (see the module docstring),
    the trees' own rows (``tree_rows``, RECORD text already), then ``record``, ``extra`` and RECORD itself."""
    dist_fd = dirs.open(dist_info)
    for name, data in extra.items():
        path = os.path.join(dist_info, name)
        write_new(dist_fd, name, data, 0o644)
        created.append(path)
        record.append((path, record_hash(data), len(data)))
    record_path = os.path.join(dist_info, "RECORD")
    head: list[_Row] = [(top, "", "") for top in sorted(folded)]
    text = _format_record(head, root) + tree_rows + _format_record([*record, (record_path, "", "")], root)
    write_new(dist_fd, "RECORD", text.encode(), 0o644)
    created.append(record_path)


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
    fold: dict[str, str], by_dir: dict[str, list[str]], data_dirs: set[str], root: str, dirs: VenvDirs,
    created: list[str],
) -> set[str]:
    """Make the folded directories of ``fold`` that hold any of the tree's files (``by_dir``, and the venv
    directories of its ``.data`` files, ``data_dirs``); return them."""
    covered = folding.covering(fold)
    tops = {top for parent in by_dir if parent and (top := covered(f"{root}/{parent}")) is not None}
    tops.update(top for d in data_dirs if (top := covered(d)) is not None)
    for top in sorted(tops):
        dir_fd, name = dirs.split(top)
        os.symlink(fold[top], name, dir_fd=dir_fd)
        created.append(top)
    return tops


def _write_markers(folded: set[str], markers: set[str], data_dir: str, dirs: VenvDirs, created: list[str]
                   ) -> list[_Row]:
    """The marker files that anchor ``folded`` directories placed where the tree has no file of its own (see
    :mod:`wheelstore.venv.fold`); return their RECORD rows."""
    record: list[_Row] = []
    name = folding.MARKER.format(data_dir.removesuffix(".data"))
    for parent in sorted({top.rpartition("/")[0] for top in folded} & markers):
        path = f"{parent}/{name}"
        write_new(dirs.open(parent), name, folding.MARKER_TEXT, 0o644)
        created.append(path)
        record.append((path, record_hash(folding.MARKER_TEXT), len(folding.MARKER_TEXT)))
    return record


def _tree_dirs(source: str, mode: LinkMode, links: ServiceLinks | None = None) -> TreeDirs:
    """The tree at ``source`` as ``mode`` reads it: copies and hard links through its directories' fds (but for the
    store service's hard links: the service reads the tree)."""
    return TreeDirs(source, reads=mode not in (LinkMode.SYMLINK, LinkMode.FOLD) and links is None)


def _link_dirs(
    tree_dirs: TreeDirs,
    by_dir: dict[str, list[str]],
    folded: set[str],
    root: str,
    mode: LinkMode,
    dirs: VenvDirs,
    created: list[str],
    links: ServiceLinks | None = None,
) -> None:
    """Link the files of ``by_dir`` from the tree of ``tree_dirs`` that are not in a ``folded`` directory, a
    directory at a time, parents first, each through its directory's fd (and, but for symlinks, from its tree
    directory's fd; with ``links``, by the store's service)."""
    covered = folding.covering(dict.fromkeys(folded, "")) if folded else None
    source = tree_dirs.source
    key = os.path.basename(source)
    pyc_reader = TreeDirs(source, reads=mode is LinkMode.FOLD)
    with tree_dirs, pyc_reader:
        for parent in sorted(by_dir):
            cancel.check()  # Ctrl-C: install_tree removes what it created
            path = f"{root}/{parent}" if parent else root
            if covered is not None and covered(path) is not None:
                continue
            dir_fd = dirs.open(path)
            src_fd = tree_dirs.fd(parent)
            where = f"{source}/{parent}/" if parent else f"{source}/"
            # fold copies the few pycs outside folded directories: compileall -f refuses a symlinked pyc
            copy_pycs = pyc_reader.reads and (parent == "__pycache__" or parent.endswith("/__pycache__"))
            for name in by_dir[parent]:
                if links is not None:  # created once the service linked it
                    links.add(key, path, dir_fd, name, f"{parent}/{name}" if parent else name)
                    continue
                if copy_pycs and name.endswith(".pyc"):
                    _link_replacing(where + name, dir_fd, name, LinkMode.COPY, pyc_reader.fd(parent))
                else:
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


def write_new(dir_fd: int | None, name: str, data: bytes, mode: int) -> None:
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


def _format_record(rows: Sequence[_Row], root: str) -> str:
    """RECORD rows for files anywhere in the venv: paths relative to the directory holding the dist-info. A row's
    hash is in RECORD's form already (or empty), or a manifest's sha256 hex digest, converted here."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for path, digest, size in rows:
        if len(digest) == 64 and not digest.startswith("sha256="):
            digest = prepared.record_hashes([digest])[0]
        writer.writerow((os.path.relpath(path, root), digest, size))
    return out.getvalue()


def bump_mtime(interpreter: Interpreter) -> None:
    """The import system caches directory listings by mtime: make new files visible to running interpreters."""
    for site in dict.fromkeys((interpreter.paths["purelib"], interpreter.paths["platlib"])):
        try:
            os.utime(site)
        except OSError:
            pass
