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
random part nobody can guess when there is none. Reading roots, and which entries gc trusts, is
:mod:`~wheelstore.store.rootread`'s; its names are importable from here too.

A root is a claim, not proof: gc checks it against the venv where it can (:mod:`~wheelstore.store.rootcheck`). Each
gc also leaves, in its user's directory, ``<node>.confirmed``: the roots it found alive, so that other nodes' gcs,
which cannot see a venv on this node's local disk, know it was alive then.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from ..base import node
from ..base.distinfo import Distribution, installed, origin
from ..base.errors import RootNotRegistered, WheelstoreError
from ..base.fsio import hidden_name
from ..base.hooks import checkpoint
from ..base.interpreter import Interpreter
from ..base.logs import log
from .bytecode import distrust
from .identity import StoreMatch
from .policy import Role, user_name
from .rootread import (
    FORMAT,
    MAX_SIZE,
    USER_DIR,
    Root,
    RootDist,
    RootFile,
    claimed_uid,
    list_roots,
    names,
    open_owned_dir,
    read_root,
    read_roots,
    read_small,
    root_name,
    user_dirs,
)
from .store import Store

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

__all__ = [
    "FORMAT", "MAX_SIZE", "Place", "Root", "RootDist", "RootFile", "claimed_uid", "list_roots", "read_root",
    "read_roots", "read_small", "register", "root_name", "user_dir", "user_dirs", "venv_dists", "write_atomically",
]


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
    mine = [n for n in names(roots_fd) if n == old or ((m := USER_DIR.match(n)) is not None and int(m[1]) == euid)]
    for name in sorted(mine, key=lambda n: n != old):  # the old layout's directory first: its roots stay in place
        fd = open_owned_dir(name, roots_fd, euid)
        if fd is not None:
            return fd, name
    return None


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


def _is_key(key: str) -> bool:
    return len(key) == 64 and all(c in "0123456789abcdef" for c in key)
