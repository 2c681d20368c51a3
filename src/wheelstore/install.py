"""Install: lay a published tree out in a venv exactly as pip would, linking files instead of copying them.

The wheel's install schemes (purelib/platlib, ``.data/scripts``, ``headers``, ``data``) map onto the target
interpreter's paths. What pip would write fresh is written fresh here too, as real files: scripts with a rewritten
``#!python`` shebang, console/gui launchers, and the installer's metadata (RECORD with the venv's paths, INSTALLER,
REQUESTED, direct_url.json). Everything else is linked from the store in the chosen mode. The resulting RECORD lets
``pip uninstall`` remove exactly what was installed, never touching the store.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import os
import shutil
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import NormalizedName, canonicalize_name

from .errors import WheelstoreError
from .link import LinkMode, link_file
from .store import Tree
from .venv import Interpreter

INSTALLER_NAME = "wheelstore"
#: files pip writes itself into a dist-info directory, never taken from the wheel
INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "WHEELSTORE"})
#: in each dist-info wheelstore installs: which store tree it came from and how it was linked (for edit --undo, gc)
ORIGIN_FILE = "WHEELSTORE"


class InstallError(WheelstoreError):
    """A distribution cannot be installed into or removed from the venv."""


@dataclass(frozen=True)
class Distribution:
    """A distribution installed in a venv, as its dist-info directory describes it."""

    name: NormalizedName
    display_name: str
    version: str
    dist_info: Path
    installer: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.display_name,
            "version": self.version,
            "installer": self.installer,
            "location": str(self.dist_info.parent),
        }


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _record_hash_hex(hexdigest: str) -> str:
    return "sha256=" + base64.urlsafe_b64encode(bytes.fromhex(hexdigest)).rstrip(b"=").decode()


class _Layout:
    """Where each file of one tree goes in one venv (plain strings: this runs once per file)."""

    def __init__(self, tree: Tree, interpreter: Interpreter) -> None:
        m = tree.manifest
        self.paths = dict(interpreter.paths)
        self.root = self.paths["purelib" if m.root_is_purelib else "platlib"]
        self.data_dir = m.dist_info.removesuffix(".dist-info") + ".data"
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
        if rel.startswith(self.data_dir + "/"):
            scheme, _, sub = rel[len(self.data_dir) + 1 :].partition("/")
            return os.path.join(self.schemes[scheme], sub), scheme
        return os.path.join(self.root, rel), None


def install_tree(
    tree: Tree,
    interpreter: Interpreter,
    mode: LinkMode,
    *,
    requested: bool,
    direct_url: dict[str, object] | None = None,
    store_root: str | None = None,
    pycs: Tree | None = None,
) -> Path:
    """Install one tree into the venv of ``interpreter``; return the new dist-info directory.

    On failure, whatever this call created is removed again, so the venv is as it was.
    """
    m = tree.manifest
    layout = _Layout(tree, interpreter)
    created: list[str] = []
    made_dirs: list[str] = []
    known_dirs: set[str] = set()
    record: list[tuple[str, str, int | str]] = []
    root = layout.root
    dist_info = os.path.join(root, m.dist_info)
    tree_path = os.fspath(tree.path)
    try:
        for rel in sorted(m.files):
            entry = m.files[rel]
            dst, scheme = layout.target(rel)
            parent, base = os.path.split(dst)
            if parent == dist_info and base in INSTALLER_FILES:
                continue
            if parent not in known_dirs:
                _makedirs(parent, made_dirs, known_dirs)
            src = os.path.join(tree_path, rel)
            if scheme == "scripts":
                with open(src, "rb") as f:
                    data = _rewrite_shebang(f.read(), interpreter.executable)
                _write_new(dst, data, 0o755)
                record.append((dst, _record_hash(data), len(data)))
            else:
                _link_replacing(src, dst, mode)
                record.append((dst, _record_hash_hex(entry.sha256), entry.size))
            created.append(dst)
        if pycs is not None:  # bytecode compiled in the store, beside the sources it was compiled from
            pyc_path = os.fspath(pycs.path)
            for rel, entry in sorted(pycs.manifest.files.items()):
                dst, _scheme = layout.target(rel)
                parent = os.path.dirname(dst)
                if parent not in known_dirs:
                    _makedirs(parent, made_dirs, known_dirs)
                _link_replacing(os.path.join(pyc_path, rel), dst, mode)
                created.append(dst)
                record.append((dst, _record_hash_hex(entry.sha256), entry.size))
        for script, data in _launchers(tree, interpreter):
            _makedirs(os.fspath(script.parent), made_dirs, known_dirs)
            _write_new(os.fspath(script), data, 0o755)
            created.append(os.fspath(script))
            record.append((os.fspath(script), _record_hash(data), len(data)))
        _makedirs(dist_info, made_dirs, known_dirs)
        extra = {"INSTALLER": f"{INSTALLER_NAME}\n".encode()}
        if requested:
            extra["REQUESTED"] = b""
        if direct_url is not None:
            extra["direct_url.json"] = json.dumps(direct_url, sort_keys=True).encode()
        origin = {"store": store_root, "key": tree.key, "link_mode": mode.value}
        extra[ORIGIN_FILE] = json.dumps(origin, sort_keys=True).encode()
        for name, data in extra.items():
            path = os.path.join(dist_info, name)
            _write_new(path, data, 0o644)
            created.append(path)
            record.append((path, _record_hash(data), len(data)))
        record_path = os.path.join(dist_info, "RECORD")
        _write_new(record_path, _format_record(record, record_path, root), 0o644)
        created.append(record_path)
    except BaseException:
        for path in reversed(created):
            _unlink_quietly(path)
        for d in reversed(made_dirs):
            _rmdir_quietly(d)
        raise
    return Path(dist_info)


def _makedirs(path: str, made: list[str], known: set[str]) -> None:
    """``mkdir -p`` that remembers what it created (so a failed install can remove exactly that) and what exists."""
    missing = []
    p = path
    while p not in known and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    if p not in known and os.path.islink(p):
        raise InstallError(f"{p} is a symlink to a directory; refusing to install through it (it may lead into the store)")
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            pass
        else:
            made.append(d)
    known.update(missing)
    known.add(p)
    known.add(path)


def _link_replacing(src: str, dst: str, mode: LinkMode) -> None:
    """Link, trying first and looking only on a clash: most destinations are new, and lstat per file is not free."""
    try:
        link_file(src, dst, mode)
    except FileExistsError:
        _replace_existing(dst)
        link_file(src, dst, mode)


def _replace_existing(dst: str) -> None:
    """A file from another distribution (or a stale one) is replaced, as pip does."""
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InstallError(f"{dst} is a directory, but a file of the same name is to be installed there")
    os.unlink(dst)


def _write_new(path: str, data: bytes, mode: int) -> None:
    """A real file in the venv. The venv is the user's own, so, as with pip, their umask applies."""
    _replace_existing(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
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


def _launchers(tree: Tree, interpreter: Interpreter) -> Iterator[tuple[Path, bytes]]:
    """console_scripts and gui_scripts launchers, as pip writes them on POSIX."""
    entry_points = tree.path / tree.manifest.dist_info / "entry_points.txt"
    if f"{tree.manifest.dist_info}/entry_points.txt" not in tree.manifest.files:
        return
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(entry_points.read_text(encoding="utf-8"))
    except (configparser.Error, UnicodeDecodeError) as e:
        raise InstallError(f"{tree.manifest.wheel}: entry_points.txt is malformed ({e})") from None
    scripts_dir = Path(interpreter.paths["scripts"])
    for section in ("console_scripts", "gui_scripts"):
        if not parser.has_section(section):
            continue
        for name, value in parser.items(section):
            module, _, attrs = value.partition(":")
            module, attrs = module.strip(), attrs.split("[")[0].strip()
            if not module or "/" in name or name in ("", ".", ".."):
                raise InstallError(f"{tree.manifest.wheel}: bad entry point {name} = {value}")
            if not attrs:  # pip refuses these too: a launcher needs something to call
                raise InstallError(f"{tree.manifest.wheel}: entry point {name} = {value} names no callable")
            target, call = attrs.split(".")[0], attrs
            body = (
                "import re\nimport sys\n"
                f"from {module} import {target}\n"
                "if __name__ == '__main__':\n"
                "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                f"    sys.exit({call}())\n"
            )
            yield scripts_dir / name, _shebang(interpreter.executable) + b"# -*- coding: utf-8 -*-\n" + body.encode()


def _format_record(rows: list[tuple[str, str, int | str]], record_path: str, root: str) -> bytes:
    """RECORD paths are relative to the directory holding the dist-info: cheap for files under it, relpath else."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    prefix = root + os.sep
    for path, digest, size in rows:
        rel = path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)
        writer.writerow((rel, digest, size))
    writer.writerow((os.path.relpath(record_path, root), "", ""))
    return out.getvalue().encode()


# -- what is installed --------------------------------------------------------------------------------------------------


def installed(interpreter: Interpreter) -> dict[NormalizedName, Distribution]:
    """Every distribution in the venv's site-packages, by canonical name."""
    found: dict[NormalizedName, Distribution] = {}
    for site in dict.fromkeys((interpreter.paths["purelib"], interpreter.paths["platlib"])):
        try:
            entries = sorted(os.listdir(site))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            dist_info = Path(site) / entry
            dist = _describe(dist_info)
            if dist is not None:
                found.setdefault(dist.name, dist)
    return found


def _describe(dist_info: Path) -> Distribution | None:
    try:
        headers = HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    try:
        installer = (dist_info / "INSTALLER").read_text(encoding="utf-8").strip()
    except OSError:
        installer = ""
    return Distribution(canonicalize_name(name), name, version, dist_info, installer)


def uninstall(dist: Distribution, interpreter: Interpreter) -> list[Path]:
    """Remove exactly the files the distribution's RECORD lists (links, never their targets), and its empty dirs."""
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
        if not str(path).startswith(prefix) or _through_symlink(path.parent, prefix):
            continue  # as pip does: never remove anything outside the venv (a store file, another tree)
        for victim in (path, *_pycs(path)):
            try:
                victim.unlink()
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
        shutil.rmtree(dist.dist_info, ignore_errors=True)
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


def origin(dist: Distribution) -> dict[str, str] | None:
    """Where a distribution installed by wheelstore came from, or None for anyone else's install."""
    try:
        data = json.loads((dist.dist_info / ORIGIN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def record_files(dist: Distribution) -> list[tuple[Path, str]]:
    """(absolute path, RECORD path) for every file the distribution's RECORD lists."""
    try:
        text = (dist.dist_info / "RECORD").read_text(encoding="utf-8")
    except OSError:
        raise InstallError(f"{dist.display_name} {dist.version} has no RECORD") from None
    root = dist.dist_info.parent
    return [(Path(os.path.normpath(root / row[0])), row[0]) for row in csv.reader(io.StringIO(text)) if row]


def make_private(dist: Distribution, tree: Tree) -> list[Path]:
    """Replace every file linked from ``tree`` with a private, writable copy (a reflink where possible).

    For debugging a dependency with pdb or prints: the edits land in this venv only. The copies keep the store file's
    mtime, so nothing is recompiled until the user actually edits a file.
    """
    changed = []
    for path, src in _linked(dist, tree):
        tmp = path.with_name(f".{path.name}.wheelstore-edit")
        _unlink_quietly(os.fspath(tmp))  # left by an interrupted edit
        try:
            link_file(os.fspath(src), os.fspath(tmp), LinkMode.REFLINK)
        except OSError:
            link_file(os.fspath(src), os.fspath(tmp), LinkMode.COPY)
        os.replace(tmp, path)
        changed.append(path)
    return changed


def relink(dist: Distribution, tree: Tree, mode: LinkMode) -> list[Path]:
    """Undo :func:`make_private`: every file of the tree is linked from the store again, edits discarded."""
    changed = []
    for path, src in _tree_files(dist, tree):
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


def _linked(dist: Distribution, tree: Tree) -> Iterator[tuple[Path, Path]]:
    """The tree's files that this venv shares with the store (a symlink into it, or the same inode)."""
    for path, src in _tree_files(dist, tree):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode) or (st.st_nlink > 1 and (st.st_ino, st.st_dev) == _ino(src)):
            yield path, src


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
