"""gc roots: which venvs use which trees, kept in the store per user, the way Nix keeps ``gcroots/auto``.

Every install, sync, uninstall and edit rewrites the venv's root ``roots/<uid>-<random>/<name>.json`` (a directory the
user owns, readable by the store's readers so anyone's gc can mark from it). A root records the venv path and, per
distribution, its dist-info path, tree key and pyc unit; and where the venv lives: the store's id, the node that
wrote the root (:func:`~wheelstore.base.node.node_id`), whether the venv's filesystem is shared between nodes or
node-local, and the identity of the venv's directory and those above it (:func:`~wheelstore.base.node.anchor`).
A root's name is a hash of the venv's real path, and, on a node-local filesystem, of the node too: two nodes' venvs
at one local path are two venvs.

``roots/`` is shared, so its names are not to be trusted: a member could create ``roots/<victim>`` (the layout before
the random part, still read) before the victim's first install. A user's directory is therefore found by listing
``roots/`` for directories named by their uid (or, in the old layout, their name) that they own, and made with a
random part nobody can guess when there is none; and gc reads a root only where the directory's name, the directory's
owner and the file's owner agree (:func:`claimed_uid`). An entry that does not is ignored, never written through.

A root is a claim, not proof: gc checks it against the venv where it can (:mod:`~wheelstore.store.rootcheck`). Each
gc also leaves, in its user's directory, ``<node>.confirmed``: the roots it found alive, so that other nodes' gcs,
which cannot see a venv on this node's local disk, know it was alive then.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import stat
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..base import node
from ..base.distinfo import Distribution, installed, origin
from ..base.errors import RootNotRegistered, WheelstoreError
from ..base.fsio import hidden_name, open_dir
from ..base.hooks import checkpoint
from ..base.interpreter import Interpreter
from ..base.logs import log
from .bytecode import distrust
from .identity import StoreMatch, is_id
from .policy import Role, user_name
from .store import Store

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

FORMAT = 1
#: a root or origin file larger than this was not written by wheelstore
MAX_SIZE = 16 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: a user's directory in ``roots/``: their uid and a random part, so that nobody can create it before them
_USER_DIR = re.compile(r"^([0-9]{1,10})-[0-9a-f]{16}$")
#: a name the old layout may have used: a login name (permissively: directory services allow more than useradd) or a
#: uid; hidden names (temp files) never
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
    owner_uid: int  #: who wrote it (the file's owner, not what the file says)
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

    @property
    def user(self) -> str:
        return user_name(self.owner_uid)


def root_name(venv: str | os.PathLike[str], node_id: str | None = None) -> str:
    """The file name of a venv's root: a hash of its real path (and, for a venv on a node-local filesystem, of the
    node: the same path on two nodes is two venvs), so one venv has one root per user."""
    real = os.fsencode(os.path.realpath(venv))
    what = real if node_id is None else os.fsencode(node_id) + b"\0" + real
    return hashlib.sha256(what).hexdigest()[:32] + ".json"


class Place(NamedTuple):
    """Where a venv lives, as this node sees it now: what its root records besides the trees."""

    node: str
    fs: str  #: shared or local
    fs_type: str
    anchor: list[tuple[int, int]]

    @classmethod
    def of(cls, real: str) -> Place:
        kind = node.fs_type(real)
        return cls(node.node_id(), "shared" if node.is_shared(kind) else "local", kind, node.anchor(real))

    def root_name(self, real: str) -> str:
        return root_name(real, None if self.fs == "shared" else self.node)


# -- writing -----------------------------------------------------------------------------------------------------------


def register(store: Store, venv: str | os.PathLike[str], interpreter: Interpreter,
             dists: Mapping[NormalizedName, Distribution] | None = None) -> Root | None:
    """Write or refresh the root of ``venv`` in ``store`` from what the venv holds now (``dists``, when the caller
    has just read or made them); remove it when the venv no longer links anything from the store.

    Returns None when nothing is rooted. Raises :class:`RootNotRegistered` when a publisher's root cannot be written
    (``roots/`` made unwritable, a full disk): the venv is filled, but gc does not know it uses its trees, which its
    user must hear as an error (after one more try, if it was refused). A reader of the store (who may not publish)
    never may write ``roots/``: that is a warning, or every install of theirs would fail.
    """
    real = os.path.realpath(venv)
    if store.policy.shared == "private" and os.geteuid() != store.owner_uid:  # root, in someone's private store
        # a root directory of root's there would be unreadable to the store's owner, whose gc would then never
        # remove anything; root links their trees only by copy or reflink, which gc cannot take away
        try:
            linked = next(venv_dists(store, real, interpreter, dists), None) is not None
        except OSError:
            linked = True
        if linked:
            owner = user_name(store.owner_uid)
            log.warning("%s is not registered in %s, %s's private store: root's entries there would keep %s's gc "
                        "from removing anything", real, store.root, owner, owner)
        return None
    try:
        rooted = tuple(venv_dists(store, real, interpreter, dists))
    except OSError as e:  # reading the venv, not writing roots/
        raise _unprotected(store, real, f"the venv cannot be read: {e.strerror or e}") from None
    for last in (False, True):
        try:
            return _write_root(store, real, rooted)
        except PermissionError:
            if not store.policy.trusted_writer(os.geteuid(), store.owner_uid):
                # a reader never may: that is the store's design, not a failure, so every install of theirs must not
                # fail
                log.warning("%s is not protected from gc: readers of %s cannot register venvs in roots/ (ask %s, its "
                            "owner, before their gc, or use a store you can write)", real, store.root,
                            user_name(store.owner_uid))
                return None
            if last:
                raise _unprotected(store, real, "you may not write there") from None
            # once more: a wheelstore from before issue 18 (on another node, say) may be making my directory right
            # now, read-only for an instant; finding it again sets its mode right
        except OSError as e:
            raise _unprotected(store, real, e.strerror or str(e)) from None
    raise AssertionError("not reached")


def _unprotected(store: Store, real: str, reason: str) -> RootNotRegistered:
    """The error, with its fix, for a filled venv whose root cannot be written."""
    return RootNotRegistered(
        f"{real} is filled, but not protected from gc: its root cannot be written in {store.root}/roots/ ({reason}), "
        "so 'wheelstore gc' may remove the trees it uses",
        hint=f"see 'wheelstore doctor --store {store.root}', then run the command again to register the venv")


def _write_root(store: Store, real: str, dists: tuple[RootDist, ...]) -> Root | None:
    """Write (or, with no ``dists``, remove) the root of the venv at ``real`` in the user's directory."""
    place = Place.of(real)
    name = place.root_name(real)
    if not dists:  # nothing to protect: remove the root, if I have a directory (none is made for that)
        found = _find_user_dir(store.area_fd("roots"))
        if found is not None:
            try:
                _unlink(name, found[0])
                _drop_older_name(real, name, place.node, found[0])
            finally:
                os.close(found[0])
        return None
    user_fd, user = user_dir(store)
    try:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now))  # ISO 8601, UTC (datetime: 1 ms)
        doc = {
            "format": FORMAT,
            "venv": real,
            "uid": os.geteuid(),
            "user": user_name(os.geteuid()),
            "updated_at": stamp,
            "node": place.node,
            "host": node.host_name(),
            "fs": place.fs,
            "fs_type": place.fs_type,
            "anchor": place.anchor,
            "dists": [
                {"name": d.name, "version": d.version, "dist_info": d.dist_info, "key": d.key, "pyc": d.pyc}
                for d in dists
            ],
        }
        if store.id is not None:
            doc["store_id"] = store.id
        write_atomically(store, user_fd, name, json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        _drop_older_name(real, name, place.node, user_fd)
        return Root(f"{user}/{name}", real, os.geteuid(), stamp, dists, now, store.id, place.node, node.host_name(),
                    place.fs, place.fs_type, tuple(place.anchor))
    finally:
        os.close(user_fd)


def _drop_older_name(real: str, name: str, node_id: str, user_fd: int) -> None:
    """Remove this venv's root under the name of a root written before names held the node (a hash of the path
    alone), unless another node wrote it (for a venv of its own, at the same path on a filesystem it shares): one
    venv, one root, or the older one would hold the venv's old trees after it is gone. One failed open when there is
    none."""
    older = root_name(real)
    if older == name:
        return
    try:
        data, _st = read_small(older, user_fd, MAX_SIZE)
        doc = json.loads(data)
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and doc.get("node") in (None, node_id):
        _unlink(older, user_fd)


def _unlink(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def venv_dists(store: Store, real: str, interpreter: Interpreter,
                dists: Mapping[NormalizedName, Distribution] | None = None) -> Iterator[RootDist]:
    """The venv's distributions (``dists``, else read now) whose origin file names this store."""
    same = StoreMatch(store.id, store.root)
    prefix = real + os.sep
    sites: dict[str, str] = {}  # each site directory's real path, resolved once rather than per dist-info
    for dist in (dists if dists is not None else installed(interpreter)).values():
        found = origin(dist)
        if found is None or not same(found):
            continue
        key = found.get("key")
        if not isinstance(key, str) or not _is_key(key):
            continue
        site = os.fspath(dist.dist_info.parent)
        if site not in sites:
            sites[site] = os.path.realpath(site)
        dist_info = (os.path.realpath(dist.dist_info) if os.path.islink(dist.dist_info)
                     else os.path.join(sites[site], dist.dist_info.name))
        if not dist_info.startswith(prefix):
            log.warning("%s is outside its venv %s; it is not rooted", dist_info, real)
            continue
        pyc = f"{key}-{interpreter.cache_tag}" if interpreter.cache_tag else None
        if "pyc" in found:  # what the install linked (this user's own file, in their venv): no store look-ups
            pyc = pyc if found["pyc"] == pyc else None
        elif pyc is not None and not _used_unit(store, key, pyc):  # installed before the origin file said
            pyc = None
        yield RootDist(dist.display_name, dist.version, dist_info[len(prefix):], key, pyc)


def _used_unit(store: Store, key: str, pyc: str) -> bool:
    """Whether installs link the pyc unit ``pyc`` of tree ``key``: it is there and trusted (:func:`distrust`). One
    they ignore (a member's, for another's tree) is rooted by no venv, so gc may take it and free its key."""
    if not store.has(pyc):
        return False
    try:
        unit = store.lookup(pyc, remember=True)
        tree = store.lookup(key, remember=True)
    except WheelstoreError:
        return False
    return unit is not None and distrust(store, unit, tree) is None


def user_dir(store: Store) -> tuple[int, str]:
    """An fd for my directory in ``roots/``, writable only by me, made if I have none, and its name.

    Found, not named: the first of ``roots/<my name>`` (the old layout) and ``roots/<my uid>-<random>`` that is a
    directory I own. A squatted one (another member's entry under such a name) is skipped, never written through, and
    a new one gets a random part no one can create first. Two first installs at once may each make one: both then
    use the first by name, and gc reads both.
    """
    roots_fd = store.area_fd("roots")
    found = _find_user_dir(roots_fd)
    if found is None:
        name = _make_user_dir(store, roots_fd)
        found = _find_user_dir(roots_fd)
        if found is None:  # it was ours a moment ago, in a sticky directory
            raise FileNotFoundError(0, f"roots/{name} vanished")
    fd, name = found
    try:
        want = store.policy.mode(Role.ROOTS_DIR)
        if stat.S_IMODE(os.fstat(fd).st_mode) != want:  # made read-only, then chmod-ed (before issue 18)
            os.fchmod(fd, want)
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def _make_user_dir(store: Store, roots_fd: int) -> str:
    """Make ``roots/<my uid>-<random>`` as it stays: built under a hidden name with its final mode, then renamed into
    view. Made in place and chmod-ed after, another of my installs could find it read-only in between and not write
    its root (issue 18: on GlusterFS, six first installs at once lost a registration in some of ten rounds)."""
    name = f"{os.geteuid()}-{os.urandom(8).hex()}"
    tmp = hidden_name(name)
    os.close(store.policy.mkdir(tmp, Role.ROOTS_DIR, dir_fd=roots_fd))
    try:
        checkpoint("roots-dir-made")
        os.rename(tmp, name, src_dir_fd=roots_fd, dst_dir_fd=roots_fd)  # a new random name: nothing to replace
    except BaseException:
        try:
            os.rmdir(tmp, dir_fd=roots_fd)
        except OSError:
            pass
        raise
    return name


def _find_user_dir(roots_fd: int) -> tuple[int, str] | None:
    """An fd for the first directory in ``roots/`` named for me and owned by me, and its name; or None."""
    euid = os.geteuid()
    old = user_name(euid)
    # by name alone (no user database lookups on the install path): mine, if I own them
    mine = [n for n in _names(roots_fd) if n == old or ((m := _USER_DIR.match(n)) is not None and int(m[1]) == euid)]
    for name in sorted(mine, key=lambda n: n != old):  # the old layout's directory first: its roots stay in place
        fd = _open_owned_dir(name, roots_fd, euid)
        if fd is not None:
            return fd, name
    return None


def _names(dir_fd: int) -> list[str]:
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
    m = _USER_DIR.match(name)
    if m is not None:
        return owner if int(m.group(1)) == owner else None
    if not _OLD_NAME.fullmatch(name):
        return None
    return owner if name == _name_of(owner) else None


@functools.lru_cache(maxsize=64)
def _name_of(uid: int) -> str:
    """What the old layout named a user's directory: their login name, or their uid if they have none."""
    return user_name(uid)


def _claim(name: str, roots_fd: int) -> int | None:
    """The uid whose directory ``roots/<name>`` is (:func:`claimed_uid`): judged by its name's shape first, then by
    its type and owner, without following a symlink; None if it is nobody's."""
    if not (_USER_DIR.match(name) or _OLD_NAME.fullmatch(name)):
        return None
    try:
        st = os.stat(name, dir_fd=roots_fd, follow_symlinks=False)
    except OSError:
        return None
    return claimed_uid(name, st.st_uid) if stat.S_ISDIR(st.st_mode) else None


def _owner(name: str, dir_fd: int) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid
    except OSError:
        return None


def _open_owned_dir(name: str, roots_fd: int, uid: int) -> int | None:
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


def write_atomically(store: Store, dir_fd: int, name: str, data: bytes) -> None:
    """Readers see the old root or the new one, never half of one: a private temp file renamed over it. Not fsynced
    (that was 3 ms of every install): a root is meant to be as durable as the venv it describes, whose files are not
    synced either, by wheelstore, pip or uv."""
    tmp = hidden_name(name)
    try:
        store.policy.write_new(tmp, data, Role.PUBLISHED_FILE, dir_fd=dir_fd, sync=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


# -- reading -----------------------------------------------------------------------------------------------------------


class RootFile(NamedTuple):
    """A root file's identity, so gc can tell which roots changed between its unlocked and locked passes."""

    path: str  #: relative to ``roots/``
    signature: tuple[int, int, int, int]  #: (inode, size, mtime_ns, ctime_ns)


def list_roots(store: Store, unreadable: list[str] | None = None) -> dict[str, RootFile]:
    """Every root file in the store, by path relative to ``roots/`` (temp files and stray entries skipped).

    Only root files owned by the uid their directory is named for, in a directory that uid owns
    (:func:`claimed_uid`): a member's file or directory under someone else's name is not theirs to speak for.
    Directories this process may not read are added to ``unreadable``: gc must not sweep what they might hold.
    """
    found: dict[str, RootFile] = {}
    for user, uid, ufd in user_dirs(store, unreadable):
        for name in listed(user, ufd, unreadable):
            if name.startswith(".") or not name.endswith(".json"):
                continue
            try:
                st = os.stat(name, dir_fd=ufd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_uid == uid:
                path = f"{user}/{name}"
                found[path] = RootFile(path, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found


def user_dirs(store: Store, unreadable: list[str] | None) -> Iterator[tuple[str, int, int]]:
    """Each user's directory in ``roots/`` (:func:`claimed_uid`): its name, its uid and an fd, closed after the
    caller's turn. Those this process may not read are added to ``unreadable``, as are, in a user namespace, entries
    whose owner it does not map (:func:`~wheelstore.base.node.unmapped_uid`)."""
    roots_fd = store.area_fd("roots")
    unmapped = node.unmapped_uid()
    for user in _names(roots_fd):
        uid = _claim(user, roots_fd)
        if uid is None:
            if unmapped is not None and unreadable is not None and _owner(user, roots_fd) == unmapped:
                unreadable.append(f"roots/{user} (its owner is not mapped in this user namespace)")
            continue
        try:
            ufd = _open_owned_dir(user, roots_fd, uid)
        except PermissionError:
            if unreadable is not None:
                unreadable.append(f"roots/{user}")
            continue
        if ufd is None:  # squatted, or not a directory: nothing its namesake wrote
            continue
        try:
            yield user, uid, ufd
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
    """Parse one root; None if it vanished, is not a root wheelstore wrote, or is not owned by the uid its directory
    is named for. PermissionError if it may not be read.
    """
    user, _, name = path.partition("/")
    uid = _claim(user, store.area_fd("roots"))
    if uid is None:
        return None
    ufd = _open_owned_dir(user, store.area_fd("roots"), uid)
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
    if st.st_uid != uid:
        return None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("venv"), str):
            return None
        dists = tuple(
            RootDist(str(d["name"]), str(d["version"]), str(d["dist_info"]), str(d["key"]),
                     str(d["pyc"]) if d.get("pyc") else None)
            for d in doc.get("dists", [])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    stamp = str(doc.get("updated_at", ""))
    return Root(path, doc["venv"], st.st_uid, stamp, dists, _when(stamp, st.st_mtime), *_where(doc))


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


def _is_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)
