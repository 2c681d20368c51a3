"""A store's id: a random name recorded in the store, the same through every mount of it and on every node.

Two FUSE mounts of one GlusterFS volume give it two device numbers, and nodes mount a cluster filesystem wherever
they like, so neither a path nor a device number says whether a venv's origin file names *this* store. ``init``
records ``id`` in the ``[store]`` table of ``config.toml``. A store made before that gets a ``store-id`` file beside
it, made once (by ``link()``, never replacing one) by the first command its owner or root runs.

Only the store's owner and root may write the store directory, so nobody else can give a store an id. Which matters:
gc keeps a tree only while the venvs' origin files name the store (by its id, or by a path that leads to it), so a
store whose id could be changed (or chosen before its owner's) could be made to forget the venvs it sees through
other mounts. So an id is read only from a regular file owned by the
store's owner or root that nobody else may write, and only if it has the shape ``init`` gives it. Copying an id into
another store (it is no secret) only makes that store's gc keep more, and its stats count more venvs.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard

from ..base import fsio
from ..base.errors import StoreError
from ..base.logs import log
from .config import parse_toml
from .policy import Policy, Role

#: the file that records the id of a store made before ``config.toml`` did
ID_FILE = "store-id"
_ID = re.compile(r"[0-9a-f]{32}")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def new_id() -> str:
    """A fresh id: 128 random bits, so two stores never share one unless someone copies it."""
    return os.urandom(16).hex()


def is_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def _trusted(st: os.stat_result, owner_uid: int) -> bool:
    """Whether a file may name the store: a regular file of its owner's or root's that nobody else may write."""
    return stat.S_ISREG(st.st_mode) and st.st_uid in (0, owner_uid) and not st.st_mode & 0o022


def from_config(data: Mapping[str, object], st: os.stat_result, owner_uid: int) -> str | None:
    """The id ``config.toml`` records (``data``, read from a file with stat ``st``), or None."""
    table = data.get("store")
    value = table.get("id") if isinstance(table, dict) else None
    return value if is_id(value) and _trusted(st, owner_uid) else None


def recorded(root: Path, root_fd: int, owner_uid: int, policy: Policy) -> str | None:
    """The id in the ``store-id`` file of a store whose ``config.toml`` records none; made first when this process
    is the store's owner or root. None when there is none yet (or it cannot be read): callers then match venvs by
    the store's path, as before ids."""
    found = _read(root, root_fd, owner_uid)
    if found is not None or os.geteuid() not in (0, owner_uid):
        return found
    try:
        return _record(root, root_fd, owner_uid, policy)
    except OSError as e:  # a read-only mount, a full disk: the next command tries again
        log.debug("could not record an id for %s: %s", root, e)
        return None


def _read(root: Path, root_fd: int, owner_uid: int, warn: bool = True) -> str | None:
    """The id ``store-id`` records, or None. With ``warn`` (the store's own file) one that is not an id is said;
    never for a directory an origin file names, which anyone may have made, and where root must not be told to act."""
    try:
        fd = os.open(ID_FILE, _OPEN_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if warn:
            log.warning("%s/%s cannot be read (%s); venvs are matched by the store's path", root, ID_FILE, e.strerror)
        return None
    try:
        st = os.fstat(fd)
        data = fsio.read_all(fd, st.st_size, 64) if _trusted(st, owner_uid) and st.st_size <= 64 else b""
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace").strip()
    if not is_id(text):
        if not warn:
            return None
        log.warning("%s/%s is not a store id its owner made; it is ignored (its owner or root should remove it)",
                    root, ID_FILE)
        return None
    return text


def _record(root: Path, root_fd: int, owner_uid: int, policy: Policy) -> str | None:
    """Make ``store-id`` with a new id, complete before it appears, never replacing one made meanwhile (then that
    one is the id)."""
    ident = new_id()
    tmp = fsio.hidden_name(ID_FILE)
    fd = policy.create(tmp, dir_fd=root_fd)
    try:
        try:
            os.write(fd, f"{ident}\n".encode())
            policy.apply(fd, Role.CONFIG)
            if os.geteuid() != owner_uid:  # root: the file is the store owner's, as config.toml is
                os.fchown(fd, owner_uid, -1)
                policy.apply(fd, Role.CONFIG)  # a chown may clear mode bits
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, ID_FILE, src_dir_fd=root_fd, dst_dir_fd=root_fd, follow_symlinks=False)
        except FileExistsError:
            return _read(root, root_fd, owner_uid)
    finally:
        try:
            os.unlink(tmp, dir_fd=root_fd)
        except OSError:
            pass
    fsio.fsync_dir(root_fd)
    log.debug("recorded id %s for the store at %s", ident, root)
    return ident


class StoreMatch:
    """Whether a venv's origin file (``WHEELSTORE``, written into each dist-info it installed) names this store: by
    id when both have one; else by the store's path: the same directory (any spelling of it), or one holding a store
    of this id. The path is asked too when the ids differ: an id that changed (a ``config.toml`` its owner made
    untrusted, or replaced, then a ``store-id`` made anew) must not make gc take every venv for gone, and a match
    only makes gc check the venv's origin files against the trees its root claims."""

    def __init__(self, store_id: str | None, root: str | os.PathLike[str]) -> None:
        self.id = store_id
        self._root = os.fspath(root)
        self._ident: tuple[int, int] | None = None
        self._seen: dict[str, bool] = {}

    def __call__(self, found: Mapping[str, object]) -> bool:
        if self.id is not None and found.get("store_id") == self.id:
            return True
        return self.by_path(found.get("store"))

    def by_path(self, path: object) -> bool:
        """Whether ``path`` leads to this store: the same directory, or (through another mount, where it has another
        device number) a store with this store's id."""
        if not isinstance(path, str):
            return False
        if path == self._root:
            return True
        if path not in self._seen:
            try:
                if self._ident is None:
                    st = os.stat(self._root)
                    self._ident = (st.st_dev, st.st_ino)
                st = os.stat(path)
                self._seen[path] = (st.st_dev, st.st_ino) == self._ident or (
                    self.id is not None and os.path.isabs(path) and id_at(path) == self.id)
            except OSError:
                self._seen[path] = False
        return self._seen[path]


def id_at(path: str) -> str | None:
    """The id of the store at ``path`` (read, never made: by the rules :class:`Store` reads its own), or None."""
    try:
        root_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        owner = os.fstat(root_fd).st_uid
        cfd = os.open("config.toml", _OPEN_FLAGS, dir_fd=root_fd)
        with os.fdopen(cfd, "rb") as f:
            st = os.fstat(cfd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 1 << 20:
                return None
            found = from_config(parse_toml(f, Path(path) / "config.toml"), st, owner)
        return found if found is not None else _read(Path(path), root_fd, owner, warn=False)
    except (OSError, StoreError):
        return None
    finally:
        os.close(root_fd)
