"""The ``link`` op: hard links from a published tree into the peer's own venv directories, made by a service that
runs as root.

Only root may hard-link files it does not own (``fs.protected_hardlinks``) and write entries into directories it
may not write; the user then shares inodes with the read-only, root-owned store and can change none of them (an
append fails; ``sed -i`` or an editor's save replaces their own directory entry only). So the service touches no
path by name outside the store: the client passes open descriptors of its own directories (``SCM_RIGHTS``), and
each must be a directory the peer owns that nobody else may write, on the store's filesystem. Every source is a
regular file the tree's manifest lists, reached one component at a time without following a link, and linked with
``linkat`` relative to those descriptors only (a name that exists, a symlink included, is never followed: EEXIST).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import stat
from typing import TYPE_CHECKING, Any

from ..base.errors import ServiceError
from ..store.store import Store
from .protocol import FD_MARK

if TYPE_CHECKING:
    from .peer import Peer

#: descriptors one request may carry (the kernel's SCM_MAX_FD is 253)
MAX_FDS = 250
#: entries one request may name
MAX_ENTRIES = 4096
_SET_ID = stat.S_ISUID | stat.S_ISGID
_FD_LIMIT_RAISED = False


def available() -> bool:
    """Whether this service can make the links: only as root (see the module docstring)."""
    return os.geteuid() == 0


def link(store: Store, request: dict[str, Any], conn: socket.socket, peer: Peer) -> dict[str, Any]:
    """Receive the request's descriptors, check them and its entries, and link; ``results`` has one item per entry:
    None (linked) or ``{"error", "errno"}``. A refusal of the whole request closes the connection."""
    count = request.get("fds")
    if type(count) is not int or not 1 <= count <= MAX_FDS:
        raise ServiceError(f"a link request carries 1 to {MAX_FDS} directory descriptors")
    _raise_fd_limit()
    fds = _receive(conn, count)
    try:
        if not available():
            raise ServiceError("this store service does not run as root, so it cannot hard-link into your venv",
                               hint="use another --link-mode (copy, or auto)")
        entries = _entries(request.get("entries"), count)
        key = request.get("key")
        tree = store.lookup(key) if isinstance(key, str) else None
        if tree is None:
            raise ServiceError(f"the store has no published tree {str(key)[:80]!r}", hint="publish its wheel first")
        trees_fd = store.home(tree).area_fd("trees")
        for i, fd in enumerate(fds):
            _check_dir(fd, i, peer, os.fstat(trees_fd).st_dev)
        with _TreeDirs(trees_fd, tree.key) as dirs:
            results = [_link_one(dirs, tree.manifest.files, fds[index], name, rel, tree.manifest.owner_uid)
                       for index, name, rel in entries]
    finally:
        for fd in fds:
            os.close(fd)
    done = sum(1 for r in results if r is None)
    return {"ok": True, "results": results, "outcome": f"linked {done} of {len(results)} files of {tree.key} into "
            f"{count} directories"}


def _raise_fd_limit() -> None:
    """Room for many requests' descriptors at once: the soft limit (often 1,024) raised to the hard one, once."""
    global _FD_LIMIT_RAISED
    if _FD_LIMIT_RAISED:
        return
    _FD_LIMIT_RAISED = True
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 1 << 20), hard))


def _receive(conn: socket.socket, count: int) -> list[int]:
    """The descriptors riding on the byte after the frame: exactly ``count``, else all closed and refused."""
    try:
        data, fds, flags, _addr = socket.recv_fds(conn, 1, count, socket.MSG_CMSG_CLOEXEC)
    except (TimeoutError, OSError) as e:
        raise ServiceError(f"no descriptors came with the link request ({e})") from None
    if data != FD_MARK or len(fds) != count or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise ServiceError(f"a link request must be followed by one byte carrying its {count} descriptors")
    return list(fds)


def _entries(value: object, count: int) -> list[tuple[int, str, str]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ENTRIES:
        raise ServiceError(f"a link request names 1 to {MAX_ENTRIES} entries")
    entries = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int and 0 <= entry[0] < count
                and isinstance(entry[1], str) and isinstance(entry[2], str)):
            raise ServiceError("a link entry is [descriptor index, name, path in the tree]")
        entries.append((entry[0], entry[1], entry[2]))
    return entries


def _check_dir(fd: int, index: int, peer: Peer, store_dev: int) -> None:
    """A venv directory of the peer's own that nobody else may write, on the store's filesystem; else refused."""
    st = os.fstat(fd)
    what = f"descriptor {index}"
    if not stat.S_ISDIR(st.st_mode):
        raise ServiceError(f"{what} is not a directory")
    if st.st_uid != peer.uid:
        raise ServiceError(f"{what} is a directory of uid {st.st_uid}, not yours ({peer.user}); the service links "
                           "only into your own directories")
    if st.st_mode & 0o022:
        raise ServiceError(f"{what} is a directory its group or others may write; the service links only into "
                           "directories nobody but you may write", hint="chmod go-w it")
    if st.st_dev != store_dev:
        raise ServiceError(f"{what} is a directory on another filesystem than the store; a hard link cannot cross",
                           hint="use another --link-mode (copy, or auto)")


def _plain(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name and \
        len(name.encode("utf-8", "surrogateescape")) <= 255


def _link_one(dirs: _TreeDirs, files: dict[str, Any], dst_fd: int, name: str, rel: str, owner: int
              ) -> dict[str, Any] | None:
    """One entry: None when linked, else why not (with the errno, for the client to act on EEXIST)."""
    if not _plain(name):
        return {"error": "a name must be one plain path component", "errno": errno.EINVAL}
    if rel not in files:
        return {"error": "the tree's manifest lists no such file", "errno": errno.ENOENT}
    parent, _, base = rel.rpartition("/")
    try:
        src_fd = dirs.open(parent)
        st = os.stat(base, dir_fd=src_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & (_SET_ID | 0o022) or st.st_uid != owner:
            return {"error": "the store's file is not a read-only regular file of its publisher's", "errno": None}
        os.link(base, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
    except ValueError as e:
        return {"error": str(e), "errno": None}
    except OSError as e:
        return {"error": e.strerror or str(e), "errno": e.errno}
    return None


class _TreeDirs:
    """A tree's directories, one component at a time, never through a symlink; a few kept open (the service serves
    many requests at once, each holding its peer's descriptors too)."""

    KEEP = 32

    def __init__(self, trees_fd: int, key: str) -> None:
        self._trees_fd, self._key = trees_fd, key
        self._fds: dict[str, int] = {}

    def __enter__(self) -> _TreeDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def open(self, rel_dir: str) -> int:
        """An fd for the tree's directory ``rel_dir``, valid until the next call."""
        fd = self._fds.get(rel_dir)
        if fd is not None:
            return fd
        if rel_dir:
            parent, _, name = rel_dir.rpartition("/")
            if not _plain(name):
                raise ValueError(f"{rel_dir!r} is not a plain path in a tree")
            at = self.open(parent)
        else:
            name, at = self._key, self._trees_fd
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
        if len(self._fds) >= self.KEEP:  # after ``at`` was used: it may go too
            for old in list(self._fds)[: self.KEEP // 2]:
                os.close(self._fds.pop(old))
        self._fds[rel_dir] = fd
        return fd
