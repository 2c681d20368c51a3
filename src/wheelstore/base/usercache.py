"""The user's private cache (``~/.cache/wheelstore``): answers worth remembering between runs, never shared.

Each user trusts only what they found themselves, so everything here is read only when the file is this user's own
and nobody else may write it, and is written atomically with mode 0600. A lost or unreadable file only costs
finding the answer again, so nothing here ever fails.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import fsio
from .fsio import open_dir

#: the largest cache file read; anything bigger is not ours
MAX_BYTES = 64 << 20


def path(name: str) -> Path:
    return Path(root(), name)


def named_by(area: str, what: str) -> str:
    """The name of ``area``'s entry for a file or directory path ``what``: a hash of the path, so any path fits."""
    import hashlib

    return f"{area}/{hashlib.sha256(os.fsencode(what)).hexdigest()[:32]}"


def root() -> str:
    """``$XDG_CACHE_HOME/wheelstore``, else ``~/.cache/wheelstore`` on Linux (platformdirs' answer there, without
    its import: 6 ms, tempfile and more, on every run); platformdirs decides elsewhere and in odd cases (a relative
    or missing home). Worked out once per process for each value of the two variables."""
    env = (os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
    found = _ROOTS.get(env)
    if found is None:
        found = _ROOTS[env] = _locate(*env)
    return found


_ROOTS: dict[tuple[str | None, str | None], str] = {}


def _locate(xdg: str | None, home: str | None) -> str:
    if sys.platform == "linux":
        if xdg and os.path.isabs(xdg):
            return os.path.join(xdg, "wheelstore")
        if home and os.path.isabs(home):
            return os.path.join(home.rstrip("/") or "/", ".cache", "wheelstore")
    import platformdirs

    return str(platformdirs.user_cache_path("wheelstore"))


def read_json(name: str) -> Any:
    """The parsed JSON of cache file ``name``, or None when it is missing, unreadable, foreign or not JSON."""
    data = read_bytes(name)
    try:
        return None if data is None else json.loads(data)
    except ValueError:
        return None


def read_bytes(name: str) -> bytes | None:
    """The content of cache file ``name``, or None when it is missing, unreadable or foreign."""
    try:
        fd = os.open(f"{root()}/{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:  # not ours alone: ignore it
            return None
        return fsio.read_all(fd, st.st_size, MAX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)


K = TypeVar("K")
V = TypeVar("V")


def merge_changes(on_disk: dict[K, V], mine: Mapping[K, V], changed: Iterable[K], when: Callable[[V], float]) -> None:
    """Merge this process's ``changed`` entries of a cache file into what the file holds now (``on_disk``, read
    again just before writing), as another process may have written it meanwhile: an entry this process dropped
    goes, and of two entries for one key the later (by ``when``) wins."""
    for key in changed:
        own = mine.get(key)
        if own is None:
            on_disk.pop(key, None)
        elif key not in on_disk or when(on_disk[key]) <= when(own):
            on_disk[key] = own


def write_json(name: str, data: Any, *, compact: bool = False) -> bool:
    """Replace cache file ``name`` with ``data`` as JSON; False if that failed."""
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=1)
    return write_bytes(name, text.encode())


def write_bytes(name: str, data: bytes) -> bool:
    """Replace cache file ``name`` with ``data`` (temp file, then rename, mode 0600); False if that failed.

    Written through directory fds opened without following a symlink, each the user's own and writable by nobody
    else (:func:`_own_dirs`): a link planted in a shared ``$XDG_CACHE_HOME`` cannot send the user's entries (tree
    keys, venv and store paths) into someone else's directory."""
    directory, _, base = name.rpartition("/")
    tmp = fsio.hidden_name(base)
    try:
        dir_fd = _own_dirs(directory)
    except OSError:
        return False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, base, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        return False
    finally:
        os.close(dir_fd)
    return True


def _own_dirs(directory: str) -> int:
    """An fd for ``directory`` below the cache root, made (0700) where missing: the root's parents as the user's
    own setup has them (``~/.cache`` may well be a link), then every level from the root down opened without
    following a symlink and required to be the user's, writable by nobody else."""
    top = root()
    fsio.make_dirs(Path(top).parent)
    fd = _own_dir_made(top, None)
    for part in directory.split("/") if directory else ():
        try:
            nxt = _own_dir_made(part, fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _own_dir_made(name: str, dir_fd: int | None) -> int:
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass
    return _own_dir(name, dir_fd)


#: the cache's directories of per-tree entries, one subdirectory per store (``<area>/<store id>/<key>[.<suffix>]``)
TREE_AREAS = ("manifests", "prepared", "checks")


def prune(store_id: str, keep: Callable[[str], bool]) -> int:
    """Remove this user's per-tree entries for one store whose tree ``keep`` no longer wants (gc removed it); how
    many went. Only this user's own cache is touched: every directory below its root is opened without following a
    symlink and must be this user's and nobody else's to write, and entries are unlinked through it, so a link
    planted anywhere in the cache (say by whoever could write a shared ``$XDG_CACHE_HOME``) removes nothing else."""
    removed = 0
    try:
        top = _own_dir(root(), None)
    except OSError:
        return 0
    try:
        for area in TREE_AREAS:
            try:
                area_fd = _own_dir(area, top)
            except OSError:
                continue
            try:
                fd = _own_dir(store_id, area_fd)
            except OSError:
                os.close(area_fd)
                continue
            try:
                for name in os.listdir(fd):  # prepared entries end in ".<layout>"; the others are the key alone
                    if not name.startswith(".") and not keep(name.rpartition(".")[0] if area == "prepared" else name):
                        try:
                            os.unlink(name, dir_fd=fd)
                            removed += 1
                        except OSError:
                            pass
            finally:
                os.close(fd)
                os.close(area_fd)
    finally:
        os.close(top)
    return removed


def _own_dir(name: str, dir_fd: int | None) -> int:
    """An fd for directory ``name`` (not a symlink), if it is this user's and nobody else may write it."""
    fd = open_dir(name, dir_fd=dir_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise PermissionError(f"{name} is not this user's own directory")
    return fd
