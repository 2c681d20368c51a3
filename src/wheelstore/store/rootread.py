"""Reading gc roots: the root files gc, stats and doctor trust, and what they say (written by :mod:`.roots`, or, in a
service store, by its service: :mod:`wheelstore.service.rootdoc`).

``roots/`` is shared, so its names are not to be trusted: a member could create ``roots/<victim>`` before the
victim's first install. A root is read only where the directory's name, the directory's owner and the file's owner
agree (:func:`claimed_uid`): ``roots/<uid>-<random>/`` (or, in the old layout, ``roots/<name>/``) owned by that uid,
its files too. An entry that does not is ignored, never written through.

A service store's users write nothing in it: its service writes each user's roots for them, in
``roots/<uid>-<random>/`` directories the service's account owns (:func:`claim`). There, and only there, a directory
named for one uid and owned by the store's owner (or root) is that uid's, its files owned by that same writer and
saying that uid. Nowhere else: in a group store any member could make such a directory, to speak for another.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from typing import NamedTuple

from ..base import node
from ..base.fsio import open_dir
from .identity import is_id
from .policy import user_name
from .store import Store

FORMAT = 1
#: a root or origin file larger than this was not written by wheelstore
MAX_SIZE = 16 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: a user's directory in ``roots/``: their uid and a random part, so that nobody can create it before them
USER_DIR = re.compile(r"^([0-9]{1,10})-[0-9a-f]{16}$")
#: a name the old layout may have used: a login name (permissively: directory services allow more than useradd) or a
#: uid; hidden names (temp files) never
_UNIT = re.compile(r"[0-9a-f]{64}(?:-[a-z]+-[0-9]{2,4})?")
_OLD_NAME = re.compile(r"[^.\s][^\s]{0,255}")


class RootDist(NamedTuple):
    """One distribution of a rooted venv: where its dist-info is (relative to the venv) and what it links."""

    name: str
    version: str
    dist_info: str
    key: str
    pyc: str | None  #: the pyc unit ``<key>-<cache tag>`` it links, if the store has one

    def keys(self) -> tuple[str, ...]:
        return (self.key, self.pyc) if self.pyc else (self.key,)


class Root(NamedTuple):
    """A venv's claim on trees, as read from ``roots/<user dir>/<name>``."""

    file: str  #: ``<user dir>/<name>``, relative to ``roots/``
    venv: str  #: the venv's real path when the root was written
    owner_uid: int  #: whose it is: the file's owner (not what the file says), or whom a service wrote it for
    updated_at: str
    dists: tuple[RootDist, ...]
    #: when it was written (seconds since the epoch): ``updated_at``, else the file's mtime; never in the future
    updated: float = 0.0
    store_id: str | None = None  #: the store it was written for; None in a root written before ids
    node: str | None = None  #: the node that wrote it; None in a root written before nodes were recorded
    host: str = ""  #: that node's host name, for people
    fs: str | None = None  #: ``shared`` or ``local``: the venv's filesystem, as its node saw it
    fs_type: str = ""
    #: (device, inode) of the venv and each directory above it, when the root was written
    anchor: tuple[tuple[int, int], ...] = ()
    #: who wrote it for ``owner_uid``: a service store's owner (or root); None for a root its user wrote
    writer_uid: int | None = None
    #: the pin of an install through a store's service: the keys it is about to link (see :mod:`.rootcheck`)
    linking: tuple[str, ...] = ()

    @property
    def user(self) -> str:
        return user_name(self.owner_uid)


def root_name(venv: str | os.PathLike[str], node_id: str | None = None) -> str:
    """The file name of a venv's root: a hash of its real path (and, for a venv on a node-local filesystem, of the
    node: the same path on two nodes is two venvs), so one venv has one root per user."""
    real = os.fsencode(os.path.realpath(venv))
    what = real if node_id is None else os.fsencode(node_id) + b"\0" + real
    return hashlib.sha256(what).hexdigest()[:32] + ".json"


class UserDir(NamedTuple):
    """A user's directory in ``roots/``, open: whose roots it holds, and who must own its files."""

    name: str
    uid: int  #: whose roots these are
    writer: int  #: who writes them: ``uid`` itself, or a service store's owner (or root)
    fd: int


class RootFile(NamedTuple):
    """A root file's identity, so gc can tell which roots changed between its unlocked and locked passes."""

    path: str  #: relative to ``roots/``
    signature: tuple[int, int, int, int]  #: (inode, size, mtime_ns, ctime_ns)


def list_roots(store: Store, unreadable: list[str] | None = None) -> dict[str, RootFile]:
    """Every root file in the store, by path relative to ``roots/`` (temp files and stray entries skipped).

    Only root files owned by the writer of their directory (:func:`claim`): a member's file or directory under
    someone else's name is not theirs to speak for. Directories this process may not read are added to
    ``unreadable``: gc must not sweep what they might hold.
    """
    found: dict[str, RootFile] = {}
    for user, _uid, writer, ufd in user_dirs(store, unreadable):
        for name in listed(user, ufd, unreadable):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                st = os.stat(name, dir_fd=ufd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == writer:
                path = f"{user}/{name}"
                found[path] = RootFile(path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found


def user_dirs(store: Store, unreadable: list[str] | None) -> Iterator[UserDir]:
    """Each user's directory in ``roots/`` (:func:`claim`), with an fd closed after the caller's turn. Those this
    process may not read are added to ``unreadable``, as are, in a user namespace, entries whose owner it does not
    map (:func:`~wheelstore.base.node.unmapped_uid`)."""
    roots_fd = store.area_fd("roots")
    unmapped = node.unmapped_uid()
    for user in names(roots_fd):
        claimed = claim(store, user, roots_fd)
        if claimed is None:
            if unmapped is not None and unreadable is not None and _owner(user, roots_fd) == unmapped:
                unreadable.append(f"roots/{user} (its owner is not mapped in this user namespace)")
            continue
        uid, writer = claimed
        try:
            ufd = open_owned_dir(user, roots_fd, writer)
        except PermissionError:
            if unreadable is not None:
                unreadable.append(f"roots/{user}")
            continue
        if ufd is None:  # squatted, or not a directory: nothing its namesake wrote
            continue
        try:
            yield UserDir(user, uid, writer, ufd)
        finally:
            os.close(ufd)


def listed(user: str, ufd: int, unreadable: list[str] | None) -> list[str]:
    try:
        return sorted(os.listdir(ufd))
    except PermissionError:
        if unreadable is not None:
            unreadable.append(f"roots/{user}")
    except OSError:
        pass
    return []


def read_root(store: Store, path: str) -> Root | None:
    """Parse one root; None if it vanished, is not a root wheelstore wrote, or is not its directory's (:func:`claim`:
    owned by the directory's writer, and, written by a service, saying the uid the directory is named for).
    PermissionError if it may not be read.
    """
    user, _, name = path.partition("/")
    claimed = claim(store, user, store.area_fd("roots"))
    if claimed is None:
        return None
    uid, writer = claimed
    ufd = open_owned_dir(user, store.area_fd("roots"), writer)
    if ufd is None:
        return None
    try:
        data, st = read_small(name, ufd, MAX_SIZE)
    except PermissionError:
        raise
    except OSError:
        return None
    finally:
        os.close(ufd)
    if st.st_uid != writer:
        return None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("venv"), str):
            return None
        if writer != uid and doc.get("uid") != uid:  # a service's root for someone else than its directory's
            return None
        dists = tuple(
            RootDist(str(d["name"]), str(d["version"]), str(d["dist_info"]), str(d["key"]),
                     str(d["pyc"]) if d.get("pyc") else None)
            for d in doc.get("dists", [])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    stamp = str(doc.get("updated_at", ""))
    linking = doc.get("linking")
    return Root(path, doc["venv"], uid, stamp, dists, _when(stamp, st.st_mtime), *_where(doc),
                writer_uid=None if writer == uid else writer,
                linking=tuple(k for k in linking if isinstance(k, str) and _is_unit(k))
                if isinstance(linking, list) else ())


def _when(stamp: str, mtime: float) -> float:
    """When a root was written: what it says, else its file's mtime; never later than now (a root claiming the
    future would never expire)."""
    import calendar

    try:
        when = float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S+00:00")))
    except (ValueError, OverflowError):
        when = mtime
    return min(when, time.time())


def _where(doc: dict[str, object]) -> tuple[str | None, str | None, str, str | None, str, tuple[tuple[int, int], ...]]:
    """A root's store id, node, host, filesystem kind and type, and anchor, each checked (they are its writer's
    word): a field of the wrong shape reads as absent, as in a root written before it was recorded."""
    named = doc.get("store_id")
    store_id = named if is_id(named) else None
    where = doc.get("node")
    node_id = where if isinstance(where, str) and node.NODE_ID.fullmatch(where) else None
    host = doc.get("host")
    fs = doc.get("fs")
    kind = doc.get("fs_type")
    return (store_id, node_id, _short(host), fs if fs in ("shared", "local") else None, _short(kind),
            node.anchor_from(doc.get("anchor")))


def _short(value: object) -> str:
    return value if isinstance(value, str) and len(value) <= 255 and value.isprintable() else ""


def read_roots(store: Store, unreadable: list[str] | None = None) -> list[Root]:
    """Every root this process can read; the paths of those it may not read go to ``unreadable``."""
    unreadable = [] if unreadable is None else unreadable
    found = []
    for path in list_roots(store, unreadable):
        try:
            root = read_root(store, path)
        except PermissionError:
            unreadable.append(f"roots/{path}")
            continue
        if root is not None:
            found.append(root)
    return found


def read_small(name: str, dir_fd: int, limit: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes (at most ``limit``) and stat, never through a symlink, never blocking on a FIFO."""
    fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise OSError(0, "not a regular file of sensible size")
        return f.read(limit + 1), st




# -- which directories are whose -----------------------------------------------------------------------------------


def names(dir_fd: int) -> list[str]:
    """A directory's entries, sorted, read through an open file description of their own.

    btrfs lists through a description only the entries that existed when it was last rewound, and listing ends with
    a rewind: so a second listing of the same fd missed a user directory made just before it, and gc's locked pass
    would have missed the roots installs wrote after its first pass.
    """
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def claimed_uid(name: str, owner: int) -> int | None:
    """``owner`` if an entry of ``roots/`` owned by ``owner`` is named for them: ``<uid>-<random>``, or, in the old
    layout, their name (or their uid, for a user without a name); None for any other name or owner.

    By the entry's owner, never by its name: a name is looked up in the user database only as the owner's own (once
    per owner), so a ``roots/`` flooded with names costs a stat each, not a user lookup each (66 us for a name that
    is no user's: a minute for a million entries, in every gc).
    """
    m = USER_DIR.match(name)
    if m is not None:
        return owner if int(m.group(1)) == owner else None
    if not _OLD_NAME.fullmatch(name):
        return None
    return owner if name == _name_of(owner) else None


@functools.lru_cache(maxsize=64)
def _name_of(uid: int) -> str:
    """What the old layout named a user's directory: their login name, or their uid if they have none."""
    return user_name(uid)


def claim(store: Store, name: str, roots_fd: int) -> tuple[int, int] | None:
    """Whose directory ``roots/<name>`` is, and who must own its files: judged by its name's shape first, then by its
    type and owner, without following a symlink; None if it is nobody's.

    Its owner's (:func:`claimed_uid`), with its files; or, in a service store only, ``roots/<uid>-<random>`` owned
    by the store's owner or root is ``uid``'s, its files written by that owner (:func:`service_claim`).
    """
    if not (USER_DIR.match(name) or _OLD_NAME.fullmatch(name)):
        return None
    try:
        st = os.stat(name, dir_fd=roots_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    uid = claimed_uid(name, st.st_uid)
    if uid is not None:
        return uid, uid
    return service_claim(store, name, st.st_uid)


def service_claim(store: Store, name: str, owner: int) -> tuple[int, int] | None:
    """``(uid, owner)`` for ``roots/<uid>-<random>`` owned by ``owner`` in a service store, when ``owner`` is the
    store's owner or root: the service writes its users' roots (:mod:`wheelstore.service.rootdoc`), and nobody else
    may write there. None anywhere else: in a group store every member may make such a directory, so a name there
    speaks for its owner alone."""
    m = USER_DIR.match(name)
    if m is None or not store.policy.service or owner not in (store.owner_uid, 0):
        return None
    return int(m.group(1)), owner


def _owner(name: str, dir_fd: int) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid
    except OSError:
        return None


def open_owned_dir(name: str, roots_fd: int, uid: int) -> int | None:
    """An fd for ``roots/<name>`` if it is a directory owned by ``uid`` (checked on the fd, so nothing can be swapped
    in between); None if it is anything else. PermissionError if it is ``uid``'s but may not be read."""
    try:
        st = os.stat(name, dir_fd=roots_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        return None
    try:
        fd = open_dir(name, dir_fd=roots_fd)
    except PermissionError:
        raise
    except OSError:
        return None
    if os.fstat(fd).st_uid != uid:
        os.close(fd)
        return None
    return fd


def _is_unit(key: str) -> bool:
    """A tree's key, or a pyc unit's name (``<key>-<cache tag>``)."""
    return _UNIT.fullmatch(key) is not None
