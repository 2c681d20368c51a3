"""The store: a directory of read-only unpacked wheels keyed by sha256, with its policy recorded inside.

Layout::

    STORE/config.toml        the policy (modes, group, trust), written last by ``init``
    STORE/trees/<key>/        a published tree, read-only for everyone
    STORE/manifests/<key>.json  its commit marker; a tree without one is never used
    STORE/staging/            downloads and records being made, trees moved aside; named after their maker's lease
    STORE/locks/              per-key lock files, and the leases of processes making staging entries (:mod:`.lease`)
    STORE/roots/              gc roots (used by later stages)

Every area is shared-writable with setgid and sticky bits in group stores, so members can add entries, and only an
entry's owner, the area's owner (the store's) and root can rename or delete it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

from ..base import cancel, fsio
from ..base.errors import StoreAccessDenied, StoreError, StoreNotFound
from ..base.fsio import open_dir
from ..base.logs import log
from . import gclock, identity, sitelink
from .config import parse_toml, select_store
from .keylock import NOTICE_AFTER, STORE_TIMEOUT, KeyLock, configured_timeout, holder
from .manifest import Manifest
from .manifestcache import cache_id as cache_id
from .manifestcache import known_manifest, remember_manifest
from .policy import (
    Policy,
    Role,
    SharedMode,
    current_user,
    group_name,
    in_group,
    user_name,
)
from .provenance import provenance_problem

if TYPE_CHECKING:
    from .serviceconf import ServiceSettings

AREAS = ("trees", "manifests", "staging", "locks", "roots")
#: a tree key: a wheel's sha256, or a pyc unit's ``<sha256>-<cache tag>``
_KEY = re.compile(r"[0-9a-f]{64}(-[a-z0-9_.-]+)?")
CONFIG = "config.toml"
#: how long an entry without its maker's word is kept: a tree without manifest, a staging entry named by a version
#: before leases (:mod:`~wheelstore.store.staging`)
STALE_AFTER = 24 * 3600
#: a manifest larger than this is not one we wrote (numpy's is well under 1 MiB)
MAX_MANIFEST = 64 << 20
#: :meth:`Store.holds` lists ``manifests/`` when it is no bigger than this per key asked about: about eight entries of
#: 80 bytes (ext4; btrfs and XFS take as much or more), where reading an entry costs a tenth of a stat
_LIST_BYTES_PER_KEY = 640


class Tree(NamedTuple):
    """A published, manifest-committed tree."""

    key: str
    path: Path
    manifest: Manifest
    #: the manifest file's identity when it was read (device, inode, size, mtime, ctime), for caches of what is
    #: derived from it (:mod:`~wheelstore.venv.prepared`); None for a tree made in this process
    stamp: tuple[int, int, int, int, int] | None = None


class Store:
    """An opened store. Create one with :meth:`init`, open one with :meth:`open` or :meth:`select`."""

    def __init__(self, root: Path, policy: Policy, root_fd: int, ident: str | None = None) -> None:
        self.root = root
        self.policy = policy
        self._root_fd = root_fd
        self.owner_uid = os.fstat(root_fd).st_uid
        self._id, self._id_known = ident, ident is not None
        self._area_fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._trees = root / "trees"
        self._lease: str | None = None
        self.upstream: Store | None = None  #: the site store an overlay reads first (:mod:`.upstream`)
        #: a service store's ``[service]`` table (:mod:`.serviceconf`): its owner's service alone writes it
        self.service: ServiceSettings | None = None

    # -- opening ---------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing store; every way this can fail is a one-line :class:`StoreError`."""
        root = Path(path).absolute()
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreNotFound(f"there is no store at {root}",
                                hint=f"create one with: wheelstore init {root}") from None
        except NotADirectoryError:
            raise StoreError(f"{root} is not a directory, so it is not a store") from None
        except PermissionError:
            raise _access_denied(root) from None
        try:
            data, st = cls._read_config(root, fd)
            store = cls(root, Policy.from_mapping(data), fd, identity.from_config(data, st, os.fstat(fd).st_uid))
            if "service" in data:  # a service store's settings: the module only then (a warm install's imports)
                from . import serviceconf

                store.service = serviceconf.from_config(data, str(root / CONFIG))
        except BaseException:
            os.close(fd)
            raise
        try:
            store.upstream = sitelink.open_site(cls.open, root, data)
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _read_config(root: Path, root_fd: int) -> tuple[dict[str, object], os.stat_result]:
        try:
            cfd = os.open(CONFIG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root_fd)
        except FileNotFoundError:
            raise StoreError(f"{root} is not a wheelstore store (it has no {CONFIG})",
                             hint=f"create one with: wheelstore init {root}") from None
        except PermissionError:
            raise _access_denied(root) from None
        except OSError as e:
            raise StoreError(f"{root / CONFIG} cannot be read: {e.strerror}") from None
        with os.fdopen(cfd, "rb") as f:
            st = os.fstat(cfd)
            if not stat.S_ISREG(st.st_mode):
                raise StoreError(f"{root / CONFIG} is not a regular file")
            return parse_toml(f, root / CONFIG), st

    def config(self) -> dict[str, object]:
        """The store's ``config.toml`` as it is now (its owner may have added settings since it was opened)."""
        return self._read_config(self.root, self._root_fd)[0]

    @property
    def id(self) -> str | None:
        """The store's id (:mod:`~wheelstore.store.identity`), what gc roots, venvs' origin files and stats name it
        by, through any mount on any node; None for a store made before ids until its owner or root gives it one."""
        if not self._id_known:
            self._id = identity.recorded(self.root, self._root_fd, self.owner_uid, self.policy)
            self._id_known = True  # looked for once per process: None stays None until the next command
        return self._id

    @classmethod
    def select(cls, cli_store: str | os.PathLike[str] | None = None) -> Store:
        """Open the store the user selected, creating the default private store on first use."""
        selection = select_store(cli_store)
        if selection.is_default and not (selection.path / CONFIG).exists():
            return cls.init(selection.path, exist_ok=True)
        return cls.open(selection.path)

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        *,
        shared: SharedMode | None = None,
        group: str | None = None,
        exist_ok: bool = False,
        site: Store | None = None,
        service: ServiceSettings | None = None,
    ) -> Store:
        """Create a store at ``path`` with the given policy, or finish one a crash interrupted.

        ``path`` may be missing or an empty directory the caller owns (an admin may pre-create it). The areas are made
        first and ``config.toml`` last, so an interrupted init leaves no directory that opens as a store. Concurrent
        inits of one path are serialised by a lock on the directory; with ``exist_ok`` the losers open the winner's.
        No store is made where anyone but root and the caller could move it away (:mod:`wheelstore.store.parents`).
        With ``site``, the store is an overlay of that site store (:mod:`~wheelstore.store.upstream`). With
        ``service``, a service store (:mod:`wheelstore.service`): its owner alone may write any of it.
        """
        from .parents import require_reached_safely, require_safe_parents

        policy = Policy.for_init(shared, group, service=service is not None)
        if service is not None and site is not None:
            raise StoreError("a service store cannot be an overlay", hint="give --service or --upstream, not both")
        extra = "" if site is None else sitelink.to_toml(site)
        extra += "" if service is None else "\n" + _service_toml(service)
        root = Path(path).absolute()
        require_safe_parents(root, os.geteuid())
        _make_parents(root.parent, private=policy.shared == "private")
        try:
            parent_fd = open_dir(str(root.parent))
        except PermissionError:
            raise StoreError(f"cannot create {root}: permission denied on {root.parent}") from None
        try:
            try:
                os.mkdir(root.name, 0o700, dir_fd=parent_fd)
                os.chmod(root.name, 0o700, dir_fd=parent_fd)  # whatever the umask took away
            except FileExistsError:
                pass
            except PermissionError:
                raise StoreError(f"cannot create {root}: permission denied on {root.parent}") from None
            try:
                root_fd = open_dir(root.name, dir_fd=parent_fd)
            except NotADirectoryError:
                raise StoreError(f"{root} exists and is not a directory") from None
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise StoreError(f"{root} is a symlink; give the real path to init") from None
                raise
        finally:
            os.close(parent_fd)
        try:
            require_reached_safely(root, root_fd, os.geteuid())  # a parent made by another since the check above
            _lock_for_init(root, root_fd)
            if not (exist_ok and fsio.exists(CONFIG, dir_fd=root_fd)):
                cls._init_in(root, root_fd, policy, extra)
        finally:
            os.close(root_fd)
        return cls.open(root)

    @staticmethod
    def _init_in(root: Path, root_fd: int, policy: Policy, extra: str = "") -> None:
        st = os.fstat(root_fd)
        existing = set(os.listdir(root_fd))
        if CONFIG in existing:
            raise StoreError(f"{root} is already a store", hint=f"use it with --store {root}")
        if st.st_uid != os.geteuid():
            # Root too: the store directory's owner owns the store (they may rename its areas away and put their own
            # in their place), so root making a store in a directory a member created first (in a sticky directory
            # such as /tmp, anyone may) would hand that member a store root believes is its own.
            owner = user_name(st.st_uid)
            raise StoreError(f"{root} belongs to {owner}, who would own a store made there; only its owner can make "
                             "it a store", hint=f"run init as {owner}, or remove {root} and run init again")
        tmp = f".{CONFIG}.tmp"
        if existing - set(AREAS) - {tmp}:
            raise StoreError(f"{root} is not empty; give a new or empty directory")
        if tmp in existing:  # left by an interrupted init (we hold the init lock, so it is not in use)
            os.unlink(tmp, dir_fd=root_fd)
        policy.apply(root_fd, Role.STORE_ROOT)
        for area in AREAS:  # one left by an interrupted init is given its mode again
            fd = open_dir(area, dir_fd=root_fd) if area in existing else policy.mkdir(area, Role.AREA, dir_fd=root_fd)
            policy.apply(fd, Role.AREA)
            if area == "locks":
                gclock.make(fd, policy)  # the store lock's file, the owner's (a member's could be made unusable)
            os.close(fd)
        policy.write_new(tmp, (policy.to_toml(identity.new_id()) + extra).encode(), Role.CONFIG, dir_fd=root_fd)
        try:
            os.link(tmp, CONFIG, src_dir_fd=root_fd, dst_dir_fd=root_fd, follow_symlinks=False)
        except FileExistsError:
            raise StoreError(f"{root} was made a store by someone else meanwhile") from None
        finally:
            os.unlink(tmp, dir_fd=root_fd)
        fsio.fsync_dir(root_fd)

    # -- areas -----------------------------------------------------------------------------------------------------

    def area_fd(self, area: str) -> int:
        """An fd for one of the store's areas, opened once, never through a symlink."""
        fd = self._area_fds.get(area)  # opened before: no lock needed to read it (asked ~100 times per install)
        if fd is not None:
            return fd
        with self._lock:
            fd = self._area_fds.get(area)
            if fd is None:
                try:
                    fd = open_dir(area, dir_fd=self._root_fd)
                except FileNotFoundError:
                    raise StoreError(f"{self.root} is damaged: {area}/ is missing") from None
                except PermissionError:
                    raise _access_denied(self.root) from None
                self._area_fds[area] = fd
            return fd

    def close(self) -> None:
        if self._lease is not None:
            from . import lease  # only a process that made staging entries has one

            if cancel.cancelled():  # interrupted: what a worker stuck past the cancel left goes with the lease
                self._remove_own_staging(self._lease)
            lease.release(self._lease)  # the work is done: unlinked by its holder
            self._lease = None
        for fd in self._area_fds.values():
            os.close(fd)
        self._area_fds.clear()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1
        if self.upstream is not None:
            self.upstream.close()

    def _remove_own_staging(self, lease_id: str) -> None:
        """Remove this process's staging entries (named after its lease, :meth:`staging_name`) before an interrupted
        command lets go of its lease: each worker removes its own as it stops, but one stuck in a system call past
        the cancel cannot, and gc could take them only once its grace period is over."""
        for area in ("trees", "staging"):
            fd = self.area_fd(area)
            for name in os.listdir(fd):
                if f"-{lease_id}-" not in name or (area == "trees") != name.startswith("."):
                    continue
                try:
                    if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        fsio.remove_tree(name, dir_fd=fd)
                    else:
                        os.unlink(name, dir_fd=fd)
                except OSError:  # gone meanwhile, or not removable: gc's, then
                    continue

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def require_publish_access(self) -> None:
        """Fail early, in one line, if this user may read the store but not publish into it."""
        if self.policy.shared == "private" and os.geteuid() != self.owner_uid:  # only root gets this far
            owner = user_name(self.owner_uid)
            raise StoreAccessDenied(
                f"{self.root} is {owner}'s private store: what root published there would be root's, which {owner} "
                "could not read, and linked into root's venvs as root's own",
                hint=f"use a store of your own (--store), or run the command as {owner}",
            )
        use_effective = os.access in os.supports_effective_ids
        for area in ("trees", "manifests", "staging", "locks"):
            if not os.access(area, os.W_OK | os.X_OK, dir_fd=self._root_fd, effective_ids=use_effective):
                raise StoreAccessDenied(
                    f"you may read but not publish into the store at {self.root}",
                    hint="ask its owner to add the wheel, or use a store you can write",
                )

    def lease_id(self, *, take: bool = True) -> str | None:
        """The id of this process's lease on the store (:mod:`.lease`), taken on first use and held until
        :meth:`close` or the process's exit; without ``take``, None if it has none."""
        if self._lease is None and take:
            locks_fd = self.area_fd("locks")
            with self._lock:
                if self._lease is None:
                    from . import lease  # a warm install makes no staging entry, and needs none

                    self._lease = lease.take(locks_fd, self.policy)
        return self._lease

    def staging_name(self, kind: str, key: str, suffix: str = "") -> str:
        """A staging entry's name: what it is for (``kind`` and the wheel's ``key``) and the lease of the process making
        it, which gc asks whether the work still runs (:mod:`.staging`)."""
        return f"{kind}-{key}-{self.lease_id()}-{os.urandom(4).hex()}{suffix}"

    def key_lock(self, key: str, what: str | None = None) -> KeyLock:
        """``locks/<key>.lock``; ``what`` names what it guards for a waiter's display (``numpy 2.1.0``)."""
        return KeyLock(self.area_fd("locks"), f"{key}.lock", self.policy, what=what)

    # -- reading ---------------------------------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        """Whether a manifest commits a tree for ``key``: one stat, for deciding what to read; :meth:`lookup` is the
        check that makes a tree usable."""
        return (self.upstream is not None and self.upstream.has(key)) or self._has_own(key)

    def _has_own(self, key: str) -> bool:
        if not _KEY.fullmatch(key):
            return False
        try:
            st = os.stat(f"{key}.json", dir_fd=self.area_fd("manifests"), follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)

    def keys(self) -> set[str]:
        """Every key a manifest in ``manifests/`` names (trees, pyc units, sdist builds), from one listing; what
        :meth:`lookup` makes of each is another matter."""
        return {n[:-5] for n in os.listdir(self.area_fd("manifests")) if n.endswith(".json") and not n.startswith(".")}

    def holds(self, keys: Collection[str]) -> set[str]:
        """Those of ``keys`` that :meth:`has`. One listing of ``manifests/`` when it holds about as many entries as
        there are keys (judged by the directory's size), else a stat per key: a hashed requirements file names the
        wheels of every platform, 1,020 hashes for the benchmark's 36 pins."""
        theirs = set() if self.upstream is None else self.upstream.holds(keys)
        keys = set(keys) - theirs
        fd = self.area_fd("manifests")
        if len(keys) < 64 or os.fstat(fd).st_size > len(keys) * _LIST_BYTES_PER_KEY:
            return theirs | {k for k in keys if self._has_own(k)}
        listed = self.keys()
        return theirs | {k for k in keys if k in listed and self._has_own(k)}

    def lookup(self, key: str, *, remember: bool = False) -> Tree | None:
        """The committed tree for ``key``, or None. A tree without a manifest is never returned.

        Both the manifest and the tree must look like the tool made them: a read-only regular file and a sealed
        directory, owned by a trusted publisher, as :mod:`wheelstore.store.provenance` says. Anything else in their
        place was planted or damaged, and using it would let one member feed others arbitrary files.

        A manifest file this user parsed before (same device, inode, size, mtime and ctime) is taken with the small
        fields the user's cache kept and its file list parsed only when asked for (:meth:`Manifest.deferred`);
        ``remember`` keeps them for the next time (installs do).
        """
        if not _KEY.fullmatch(key):  # a key from a venv's WHEELSTORE file or a lockfile: never a path to follow
            return None
        if self.upstream is not None and self.upstream.has(key):  # an overlay: the site store's first
            return self.upstream.lookup(key, remember=remember)
        path = f"manifests/{key}.json"
        try:
            fd = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.area_fd("manifests"))
        except FileNotFoundError:
            return None
        except PermissionError:
            raise _access_denied(self.root) from None
        except OSError as e:
            raise self._untrusted(path, e.strerror or "unreadable") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_MANIFEST:
            os.close(fd)
            raise self._untrusted(path, "not a regular file of sensible size", st.st_uid)
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        try:
            if st.st_mode & 0o222 or not self.policy.trusted_writer(st.st_uid, self.owner_uid):
                raise self._untrusted(path, "writable, or not written by a trusted publisher", st.st_uid)
            manifest = known_manifest(self.root, key, stamp, lambda: self._reread(key, stamp))
            data = fsio.read_all(fd, st.st_size, MAX_MANIFEST + 1) if manifest is None else b""
        finally:
            os.close(fd)
        if manifest is None:
            try:
                manifest = Manifest.from_json(data)
            except ValueError as e:
                raise self._untrusted(path, f"corrupt or forged: {e}", st.st_uid) from None
            if manifest.key != key:
                raise self._untrusted(path, f"it names another tree ({manifest.key})", st.st_uid)
            if remember:
                remember_manifest(self.root, key, stamp, manifest)
        try:
            tree_st = os.stat(key, dir_fd=self.area_fd("trees"), follow_symlinks=False)
        except FileNotFoundError:
            raise StoreError(f"tree {key} ({manifest.wheel}) has a manifest but no files") from None
        if (
            not stat.S_ISDIR(tree_st.st_mode)
            or stat.S_IMODE(tree_st.st_mode) != self.policy.mode(Role.PUBLISHED_DIR)
            or tree_st.st_uid != manifest.owner_uid
            or not self.policy.trusted_writer(tree_st.st_uid, self.owner_uid)
        ):
            raise self._untrusted(f"trees/{key}", f"does not match its manifest ({manifest.wheel})", tree_st.st_uid)
        if (why := provenance_problem(manifest, st.st_uid, tree_st.st_uid, self.owner_uid)) is not None:
            raise self._untrusted(path, f"{manifest.wheel}: {why}", st.st_uid)
        return Tree(key, self._trees / key, manifest, stamp)

    def home(self, tree: Tree) -> Store:
        """The store ``tree`` (from :meth:`lookup`) lives in: this one, or an overlay's site store."""
        return self.upstream if self.upstream is not None and tree.path.parent == self.upstream._trees else self

    def _reread(self, key: str, stamp: tuple[int, ...]) -> bytes:
        """The manifest of ``key`` again, for a deferred file list: exactly the file looked up, or an error."""
        fd = os.open(f"{key}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=self.area_fd("manifests"))
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != stamp:
                raise StoreError(f"{self.root}/manifests/{key}.json changed while in use",
                                 hint="run the command again; if it persists, wheelstore verify")
            return fsio.read_all(fd, st.st_size, MAX_MANIFEST + 1)
        finally:
            os.close(fd)

    def _untrusted(self, rel: str, why: str, owner: int | None = None) -> StoreError:
        who = f", owned by {user_name(owner)}" if owner is not None else ""
        return StoreError(f"{self.root / rel} is not trustworthy ({why}{who}); it is not used",
                          hint=f"its owner or an admin should remove it: rm -rf {self.root / rel}")

    def trees(self) -> Iterator[Tree]:
        """Every committed tree :meth:`lookup` accepts, in key order: one that it refuses (a forged or damaged
        manifest, a planted tree) is ``verify``'s to report, and must not stop a caller that wants the good ones."""
        for key in sorted(self.keys()):
            if len(key) == 64:
                try:
                    tree = self.lookup(key)
                except StoreError:
                    continue
                if tree is not None:
                    yield tree

    # -- writing ---------------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, object]:
        """The store's identity and policy, for ``wheelstore info``."""
        return {
            "store": str(self.root),
            "id": self.id,
            "upstream": None if self.upstream is None else {"store": str(self.upstream.root), "id": self.upstream.id},
            "shared": self.policy.shared,
            "group": self.policy.group,
            "owner": user_name(self.owner_uid),
            "trees": sum(1 for n in os.listdir(self.area_fd("manifests")) if n.endswith(".json")),
        }


def _access_denied(root: Path) -> StoreAccessDenied:
    """Explain a permission error on a store: it is someone's private store, or the user is not in its group."""
    try:
        st = os.stat(root)
    except OSError:
        st = None
    if st is not None and st.st_uid != os.geteuid():
        if not st.st_mode & 0o070:
            return StoreAccessDenied(
                f"the store at {root} is private to {user_name(st.st_uid)}",
                hint="ask them to create a shared one with 'wheelstore init --group GROUP', or use your own store",
            )
        if not in_group(st.st_gid):
            group = group_name(st.st_gid)
            return StoreAccessDenied(
                f"you cannot use the store at {root}: it belongs to group {group!r}, and you are not a member",
                hint=f"ask an admin: usermod -aG {group} {current_user()}, then log in again",
            )
    return StoreAccessDenied(f"cannot use the store at {root}: permission denied", hint=f"check: ls -ld {root}")


def _make_parents(path: Path, *, private: bool) -> None:
    """Create missing parents of a new store with an explicit mode, never the umask's."""
    try:
        made = fsio.make_dirs(path)
    except PermissionError as e:
        p = Path(e.filename)
        raise StoreError(f"cannot create {p}: permission denied on {p.parent}") from None
    for p in made:
        os.chmod(p, 0o700 if private else 0o755)


def _lock_for_init(root: Path, root_fd: int) -> None:
    """Serialise inits of one path by a flock on the store directory, waiting at most the store lock's timeout.

    Any member may open the directory and flock it, so the wait is bounded and says who holds the lock; then, as
    without flock (some network filesystems), init goes ahead unlocked: the final link() of config.toml decides.
    """
    deadline = time.monotonic() + configured_timeout(STORE_TIMEOUT)
    notice_at: float | None = time.monotonic() + NOTICE_AFTER
    while True:
        try:
            fcntl.flock(root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:  # no flock here: the final link() still decides
            return
        now = time.monotonic()
        if now >= deadline:
            log.warning("going ahead without the lock on %s: still held by %s", root, holder(root_fd))
            return
        if notice_at is not None and now >= notice_at:
            notice_at = None
            log.warning("waiting for the lock on %s, held by %s", root, holder(root_fd))
        time.sleep(0.05)


def _service_toml(service: ServiceSettings) -> str:
    """The ``[service]`` table ``init --service`` writes, checked (the module only then: a warm install's imports)."""
    from . import serviceconf

    return serviceconf.checked(service).to_toml()
