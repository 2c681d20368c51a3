"""Checking gc roots: which trees each root really holds, judged from where this process runs.

A root is its writer's claim (:mod:`~wheelstore.store.roots`). gc checks it against the venv wherever it can:

- on the node that wrote it, when the directories above the venv are still the ones the root recorded
  (:func:`~wheelstore.base.node.anchor`): each listed dist-info's origin file must still name this store (by its id)
  and that tree. A venv that is gone from there holds nothing. (Where only device numbers changed, as btrfs's may
  from one mount to the next, the venv directory is recognised by its inode, and checked while it is there.)
- a venv on a shared filesystem, from another node or through another view of this one: checked the same way when
  its path leads, here, to a venv on a shared filesystem whose origin files name this store.
- anything else (a venv on another node's local disk; one hidden here by a tmpfs, an unmounted filesystem or another
  mount namespace, such as a service's ProtectHome) cannot be checked, and is believed as written, until no node has
  confirmed it for the expiry period: then it holds nothing. An install into the venv confirms its root (it is
  rewritten), and so does a gc that checks it (``<node>.confirmed``, :func:`record_confirmations`).

What this process may not read (another user's private home) is believed too: a gc run by one member must not break
another's venv, and a root only ever claims its own list.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Collection, Iterable
from typing import NamedTuple

from ..base import node
from ..base.distinfo import ORIGIN_FILE
from ..base.fsio import open_dir
from ..base.logs import log
from .identity import StoreMatch
from .policy import user_name
from .rootread import FORMAT, MAX_SIZE, Root, RootFile, list_roots, listed, read_root, read_small, user_dirs
from .roots import user_dir, write_atomically
from .store import Store

#: a root that no node confirmed for this long, and that this gc cannot check, holds nothing
DEFAULT_EXPIRY = 30 * 86400.0
#: how long gc keeps what an install through a store's service pinned before it links (the ``linking`` of its root,
#: which the install's final root drops): an install that was killed meanwhile holds its pin no longer
PIN_EXPIRY = 6 * 3600.0
#: what a gc leaves in its user's directory of ``roots/``: the roots it found alive
CONFIRMED = ".confirmed"
_ORIGIN_MAX = 64 << 10

CHECKED = "checked"  #: checked against the venv here
GONE = "gone"  #: the venv is gone (or is not the one the root was written for)
BELIEVED = "believed"  #: not visible from here: held as written
UNREADABLE = "unreadable"  #: this process may not read it: held as written
EXPIRED = "expired"  #: not visible from here, and confirmed by no node for too long


class Held(NamedTuple):
    """What a root holds, as judged from here (:func:`judge`), and how that was found."""

    keys: frozenset[str]
    state: str


class Vantage(NamedTuple):
    """Where a gc stands when it judges roots: this store, this node, now, and what other gcs confirmed."""

    match: StoreMatch
    node: str
    now: float
    expiry: float
    #: root path -> when a gc last found it alive, and whose gc (the owner of that ``<node>.confirmed``)
    confirmed: dict[str, tuple[float, int]]
    mounts: node.Mounts

    @classmethod
    def of(cls, store: Store, expiry: float = DEFAULT_EXPIRY) -> Vantage:
        return cls(StoreMatch(store.id, store.root), node.node_id(), time.time(), expiry, read_confirmations(store),
                   node.Mounts.read())

    def last_confirmed(self, root: Root) -> float:
        return max(root.updated, self.confirmed.get(root.file, (0.0, -1))[0])

    def confirmed_by(self, root: Root) -> str | None:
        """Whose gc last confirmed ``root``, if that is later than its writer wrote it (any member's may)."""
        when, uid = self.confirmed.get(root.file, (0.0, -1))
        return user_name(uid) if when > root.updated else None


def judge(root: Root, here: Vantage) -> Held:
    """The keys ``root`` holds, judged from ``here`` (see the module's docstring); and, for :data:`PIN_EXPIRY` after
    it was written, what it pins: an install through a store's service, which takes no gc lock, about to link them.

    Every step goes by directory fd without following a symlink, so a root cannot make gc read elsewhere.
    """
    held = _judge(root, here)
    if root.linking and here.now - root.updated < PIN_EXPIRY:
        return Held(held.keys | frozenset(root.linking), held.state)
    return held


def _judge(root: Root, here: Vantage) -> Held:
    claimed = frozenset(k for d in root.dists for k in d.keys())
    if not os.path.isabs(root.venv):
        return Held(frozenset(), GONE)
    if root.node == here.node and root.anchor:
        # a root of another host under this node's id is not known to be of this disk: nodes cloned with their
        # machine id (whose image's directories have the same numbers) are not one node; a renamed host still finds
        # its venvs by their inodes
        try:
            if root.host in ("", node.host_name()) and _same_view(root.venv, root.anchor, here.mounts):
                return _check(root, here.match, claimed)
        except PermissionError:  # a directory above the venv this process may not search
            return Held(claimed, UNREADABLE)
        if root.fs == "local":  # the very venv directory, under another device number (btrfs numbers at mount)?
            return _check_if_seen(root, here, claimed, inode=root.anchor[0][1])
    if root.fs == "local" and root.node is not None:  # on another node's disk, or hidden from this process
        return _believe(root, here, claimed)
    return _check_if_seen(root, here, claimed)


def _same_view(venv: str, anchor: tuple[tuple[int, int], ...], mounts: node.Mounts) -> bool:
    """Whether ``venv``'s path leads, here, where it led when the root was written: a directory at or above it that
    exists here is the very one recorded, with no mount point between (where there is none, the directories below it
    were made again: a venv made again at the same path counts, by its parent; one removed with its directory is
    gone). A mount point that is not the recorded directory (a tmpfs, a namespace's bind mount, a filesystem whose
    device number changed) leads elsewhere. PermissionError when one of them may not be looked at."""
    path = venv
    for ident in anchor:
        try:
            st = os.stat(path, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            if (st.st_dev, st.st_ino) == ident:
                return True
            if mounts.is_mount_point(path):
                return False
        if path == "/":
            break
        path = os.path.dirname(path)
    return False


def _check(root: Root, match: StoreMatch, claimed: frozenset[str]) -> Held:
    """Check the root against the venv at its path, known to be the place it was written for."""
    venv = root.venv
    if os.path.realpath(venv) != venv:
        return Held(frozenset(), GONE)  # moved, or replaced by a symlink: not the venv the root was written for
    try:
        venv_fd = _open_venv(venv)
    except PermissionError:
        return Held(claimed, UNREADABLE)
    except OSError:
        return Held(frozenset(), GONE)
    try:
        live, unreadable = _live(root, venv_fd, match)
    finally:
        os.close(venv_fd)
    return Held(frozenset(live), UNREADABLE if unreadable else CHECKED)


def _check_if_seen(root: Root, here: Vantage, claimed: frozenset[str], inode: int | None = None) -> Held:
    """A root whose venv may be seen from here on a shared filesystem (or written before roots said where): checked
    if its path leads here to a venv of the root's writer (or root's) whose origin files name this store, else
    believed: another user's venv at that path (in a sticky directory of another filesystem mounted there on this
    node) is not the one recorded. With ``inode``, only the venv directory with that inode number counts: a root of
    this node whose directories' device numbers changed (a reboot), not another venv at its path (a service's
    PrivateTmp)."""
    venv = root.venv
    if root.fs == "shared" and not node.is_shared(here.mounts.fs_type(venv)):
        return _believe(root, here, claimed)  # the path leads, here, to another (local) filesystem
    if os.path.realpath(venv) != venv:
        return _believe(root, here, claimed)
    try:
        venv_fd = _open_venv(venv)
    except PermissionError:
        return Held(claimed, UNREADABLE)
    except OSError:
        return _believe(root, here, claimed)
    st = os.fstat(venv_fd)
    if (inode is not None and st.st_ino != inode) or st.st_uid not in (root.owner_uid, 0):
        os.close(venv_fd)  # another venv at its path: here, the path leads to another filesystem or directory
        return _believe(root, here, claimed)
    seen: list[str] = []
    try:
        live, unreadable = _live(root, venv_fd, here.match, seen)
    finally:
        os.close(venv_fd)
    if not seen:  # no origin file here names this store: not a venv of its (from here), or not the one recorded
        return Held(claimed, UNREADABLE) if unreadable else _believe(root, here, claimed)
    return Held(frozenset(live), UNREADABLE if unreadable else CHECKED)


def _believe(root: Root, here: Vantage, claimed: frozenset[str]) -> Held:
    if here.now - here.last_confirmed(root) > here.expiry:
        return Held(frozenset(), EXPIRED)
    return Held(claimed, BELIEVED)


def _open_venv(venv: str) -> int:
    """An fd for the venv directory, which must hold a regular ``pyvenv.cfg``: OSError (FileNotFoundError for
    anything else there), PermissionError where it may not be read."""
    fd = os.open(venv, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.stat("pyvenv.cfg", dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(0, "not a venv")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _live(root: Root, venv_fd: int, match: StoreMatch, seen: list[str] | None = None) -> tuple[set[str], bool]:
    """The keys of the root's distributions whose origin files name this store and their tree; whether some could
    not be read (those are believed). ``seen`` gets the keys of those that name this store, whatever their tree."""
    live: set[str] = set()
    unreadable = False
    for dist in root.dists:
        try:
            found = _origin_at(venv_fd, dist.dist_info)
        except PermissionError:
            live.update(dist.keys())
            unreadable = True
            continue
        if found is None or not match(found):
            continue
        if seen is not None:
            seen.append(dist.key)
        if found.get("key") == dist.key:
            live.update(dist.keys())
    return live, unreadable


def _origin_at(venv_fd: int, rel: str) -> dict[str, object] | None:
    parts = rel.split("/")
    if not parts or any(p in ("", ".", "..") for p in parts):
        return None
    fd = venv_fd
    try:
        for part in parts:
            nxt = open_dir(part, dir_fd=fd)
            if fd != venv_fd:
                os.close(fd)
            fd = nxt
        data, _st = read_small(ORIGIN_FILE, fd, _ORIGIN_MAX)
        doc = json.loads(data)
    except PermissionError:
        raise
    except (OSError, ValueError):
        return None
    finally:
        if fd != venv_fd:
            os.close(fd)
    return doc if isinstance(doc, dict) else None


# -- the live set ------------------------------------------------------------------------------------------------------


class Marks:
    """The live set, built from the roots as judged from here, and what each root file looked like when read."""

    def __init__(self, store: Store, expiry: float = DEFAULT_EXPIRY, overlays: Iterable[Store] = ()) -> None:
        self.store = store
        #: a site store's overlays (:mod:`~wheelstore.store.upstream`): their roots only read, what they hold kept
        self.overlays = [Marks(o, expiry) for o in overlays]
        self.here = Vantage.of(store, expiry)
        self.live: set[str] = set()
        self.seen: dict[str, RootFile] = {}
        self.judged: dict[str, tuple[Root, Held]] = {}  #: by root path
        self.unreadable: list[str] = []  #: roots this process may not read: nothing may be swept

    def update(self) -> None:
        """Read every root that is new or changed since the last call. Roots that vanished keep what they held:
        this only errs towards keeping."""
        self.unreadable = []
        for path, rf in list_roots(self.store, self.unreadable).items():
            if self.seen.get(path) == rf:
                continue
            self.seen[path] = rf
            try:
                root = read_root(self.store, path)
            except PermissionError:
                self.unreadable.append(f"roots/{path}")
                continue
            if root is None:
                self.judged.pop(path, None)
                continue
            held = judge(root, self.here)
            self.live |= held.keys
            self.judged[path] = (root, held)
        for sub in self.overlays:
            sub.update()
            self.live |= sub.live
            self.unreadable += [f"{sub.store.root}/{path}" for path in sub.unreadable]

    def stale(self) -> dict[str, Root]:
        """The roots that hold nothing: their venvs are gone, or they expired."""
        return {path: root for path, (root, held) in self.judged.items() if not held.keys}

    def in_state(self, *states: str) -> list[Root]:
        return [root for root, held in self.judged.values() if held.state in states]

    def confirmed(self) -> list[str]:
        """The roots checked here and found holding something: what this gc confirms."""
        return [path for path, (_root, held) in self.judged.items() if held.state == CHECKED and held.keys]

    def blocker(self) -> str | None:
        """Why no tree may be swept now, if there is a reason."""
        if self.unreadable:
            return (f"cannot read {', '.join(sorted(self.unreadable))}; no tree was removed (run gc as root, or as "
                    "the owner of those roots)")
        return None

    def by_node(self) -> list[dict[str, object]]:
        """Every root, by the node that wrote it (this node's first) and then by age: for ``gc --dry-run``."""
        nodes: dict[str | None, list[tuple[Root, Held]]] = {}
        for root, held in self.judged.values():
            nodes.setdefault(root.node, []).append((root, held))
        out: list[dict[str, object]] = []
        for node_id, entries in sorted(nodes.items(), key=lambda n: (n[0] != self.here.node, n[0] or "")):
            hosts = sorted({r.host for r, _h in entries if r.host})
            out.append({"node": node_id, "hosts": hosts, "this_node": node_id == self.here.node,
                        "roots": [self._entry(r, h) for r, h in sorted(entries, key=self._age)]})
        return out

    def _age(self, judged: tuple[Root, Held]) -> float:
        """Since a node last confirmed the root: this gc, if it checked it and found it alive."""
        root, held = judged
        if held.state == CHECKED and held.keys:
            return 0.0
        return max(0.0, self.here.now - self.here.last_confirmed(root))

    def _entry(self, root: Root, held: Held) -> dict[str, object]:
        now = held.state == CHECKED and bool(held.keys)  # confirmed by this gc
        return {"venv": root.venv, "user": root.user, "fs": root.fs, "fs_type": root.fs_type, "state": held.state,
                "units": len(held.keys), "age_seconds": round(self._age((root, held))),
                "confirmed_by": None if now else self.here.confirmed_by(root)}


# -- confirmations -----------------------------------------------------------------------------------------------------


def read_confirmations(store: Store) -> dict[str, tuple[float, int]]:
    """When a gc last found each root alive, and whose, by its path: the newest ``<node>.confirmed`` naming it, in
    any user's directory, read by the rules roots are read by. Its time is the file's mtime (never in the future). A
    member's file can only make roots last longer, which their own venvs could do anyway; ``gc --dry-run`` names
    whose it was."""
    found: dict[str, tuple[float, int]] = {}
    now = time.time()
    for user, uid, _writer, ufd in user_dirs(store, None):
        for name in listed(user, ufd, None):
            if name.startswith(".") or not name.endswith(CONFIRMED):
                continue
            try:
                data, st = read_small(name, ufd, MAX_SIZE)
                doc = json.loads(data)
            except (OSError, ValueError):
                continue
            paths = doc.get("roots") if isinstance(doc, dict) and st.st_uid == uid else None
            _newest(found, paths if isinstance(paths, list) else (), (min(st.st_mtime, now), uid))
    return found


def _newest(found: dict[str, tuple[float, int]], paths: Iterable[object], when: tuple[float, int]) -> None:
    for path in paths:
        if isinstance(path, str) and found.get(path, (0.0, -1))[0] < when[0]:
            found[path] = when


def record_confirmations(store: Store, paths: Collection[str]) -> None:
    """Leave ``<node>.confirmed`` in my directory: this node's gc found the roots ``paths`` alive now. Skipped where
    I may not write ``roots/`` (a reader of an ``all`` store; root in someone's private store, where a directory of
    root's would stop its owner's gc): then only installs keep those roots from expiring."""
    if not paths or (store.policy.shared == "private" and os.geteuid() != store.owner_uid):
        return
    doc = {"format": FORMAT, "node": node.node_id(), "host": node.host_name(), "roots": sorted(paths),
           "confirmed_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}
    try:
        user_fd, _user = user_dir(store)
    except OSError as e:
        log.debug("cannot record which roots are alive: %s", e)
        return
    try:
        write_atomically(store, user_fd, f"{node.node_id()}{CONFIRMED}", json.dumps(doc, indent=0).encode())
    except OSError as e:
        log.debug("cannot record which roots are alive: %s", e)
    finally:
        os.close(user_fd)
