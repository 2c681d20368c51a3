"""The permission policy: the one place that decides modes, groups and trust.

Every writer in wheelstore creates files and directories through this module. Modes are always set explicitly on the
new inode (never left to the umask), and the group is set explicitly in group stores, so that every client produces
the same store whatever its umask, ACLs or config. The policy itself is recorded in the store (``config.toml``), the
way git records ``core.sharedRepository`` in the repository.
"""

from __future__ import annotations

import enum
import functools
import grp
import os
import pwd
import stat
from typing import Literal, cast

from ..base.errors import PolicyError
from ..base.fsio import open_dir

SharedMode = Literal["private", "group", "all"]
SHARED_MODES: tuple[SharedMode, ...] = ("private", "group", "all")


class Role(enum.Enum):
    """What a created inode is for; the policy maps each role to a mode."""

    STORE_ROOT = "store-root"  #: the store directory: only its owner adds top-level entries
    CONFIG = "config"  #: the recorded policy: readable by the store's users, writable by nobody
    AREA = "area"  #: trees/, manifests/, staging/, locks/, roots/: shared writable, setgid + sticky
    LOCK = "lock"  #: a lock file: members must be able to open it
    LEASE = "lease"  #: a lease (:mod:`.lease`): only its holder may open it, so that nobody else can hold it
    STAGING_DIR = "staging-dir"  #: a directory being built: private to its builder until published
    PUBLISHED_DIR = "published-dir"  #: a directory of a published tree: read-only for everyone
    PUBLISHED_FILE = "published-file"  #: a file of a published tree or a manifest: read-only for everyone
    PUBLISHED_EXEC = "published-exec"  #: an executable file of a published tree
    ROOTS_DIR = "roots-dir"  #: a user's directory in roots/: readable as published content, writable by its owner


class Policy:
    """A store's sharing policy, checked when made and not changed after.

    ``shared`` names who may read: the owner (``private``), the members of ``group`` (``group``), or everyone
    (``all``). Whoever may read a group store may also publish into it; an ``all`` store without a group has a single
    writer, its owner.
    """

    __slots__ = ("shared", "group", "gid", "service")
    shared: SharedMode
    group: str | None
    gid: int | None
    #: a service store (:mod:`wheelstore.service`): its owner alone writes, the group only reads
    service: bool

    def __init__(self, shared: SharedMode, group: str | None = None, gid: int | None = None, *,
                 service: bool = False) -> None:
        if shared not in SHARED_MODES:
            raise PolicyError(f"unknown sharing mode {shared!r}", hint="use one of: private, group, all")
        if shared == "group" and gid is None:
            raise PolicyError("a group store needs a group", hint="pass --group GROUP")
        if shared == "private" and gid is not None:
            raise PolicyError("a private store has no group", hint="use --shared group or --shared all with --group")
        if service and shared == "private":
            raise PolicyError("a service store is for other users: it cannot be private",
                              hint="use --shared all, or --group GROUP for a group's")
        for name, value in (("shared", shared), ("group", group), ("gid", gid), ("service", service)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Policy is not changed once made (tried to set {name})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Policy) and (self.shared, self.group, self.gid, self.service) == (
            other.shared, other.group, other.gid, other.service)

    def __hash__(self) -> int:
        return hash((self.shared, self.group, self.gid, self.service))

    def __repr__(self) -> str:
        service = ", service=True" if self.service else ""
        return f"Policy(shared={self.shared!r}, group={self.group!r}, gid={self.gid!r}{service})"

    # -- modes ---------------------------------------------------------------------------------------------------

    @property
    def _read_mask(self) -> int:
        """The permission classes that may read: owner, plus group and/or other as the policy says."""
        mask = 0o700
        if self.gid is not None:
            mask |= 0o070
        if self.shared == "all":
            mask |= 0o007
        return mask

    @property
    def _write_mask(self) -> int:
        """The permission classes that may add entries to shared areas: the owner, and the group if there is one
        (in a service store, the owner alone: the group only reads)."""
        return 0o700 | (0o070 if self.gid is not None and not self.service else 0)

    def mode(self, role: Role) -> int:
        """The exact mode an inode of this role gets in this store."""
        read, write = self._read_mask, self._write_mask
        shared_dir = stat.S_ISGID if self.gid is not None else 0
        if role is Role.STORE_ROOT:
            return (0o755 & read) | (0o700 & write) | shared_dir
        if role is Role.CONFIG:
            return 0o444 & read
        if role is Role.AREA:
            sticky = stat.S_ISVTX if self._write_mask & 0o070 else 0
            return ((0o555 & read) | (0o777 & write)) | shared_dir | sticky
        if role is Role.LOCK:  # only those who may publish may lock: a reader could otherwise hold a lock forever
            return 0o666 & write
        if role is Role.STAGING_DIR:
            return 0o700
        if role is Role.LEASE:
            return 0o600
        if role is Role.PUBLISHED_DIR:
            return 0o555 & read
        if role is Role.PUBLISHED_FILE:
            return 0o444 & read
        if role is Role.PUBLISHED_EXEC:
            return 0o555 & read
        if role is Role.ROOTS_DIR:
            return (0o555 & read) | stat.S_IWUSR
        raise AssertionError(role)

    # -- applying it -----------------------------------------------------------------------------------------------

    def apply(self, fd: int, role: Role) -> os.stat_result:
        """Give the open inode ``fd`` its group and mode for ``role``; return its final stat.

        The group is set first: chown can clear set-id bits, and the mode must be the last word.
        """
        st = os.fstat(fd)
        if self.gid is not None and st.st_gid != self.gid:
            os.fchown(fd, -1, self.gid)
        want = self.mode(role)
        if stat.S_IMODE(st.st_mode) != want or (self.gid is not None and st.st_gid != self.gid):
            os.fchmod(fd, want)
            st = os.fstat(fd)
        return st

    def mkdir(self, name: str, role: Role, *, dir_fd: int) -> int:
        """Create directory ``name`` under ``dir_fd`` with this role's group and mode; return an fd for it."""
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        # A umask like 0577 would leave even the owner unable to open the new directory: fix that first. The entry
        # is safe to address by name: it sits in a private or sticky directory, where nobody else can replace it.
        os.chmod(name, 0o700, dir_fd=dir_fd)
        fd = open_dir(name, dir_fd=dir_fd)
        try:
            self.apply(fd, role)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def create(self, name: str, *, dir_fd: int) -> int:
        """Create a new regular file ``name`` for writing, private until :meth:`apply` seals it.

        ``O_EXCL | O_NOFOLLOW`` means a planted file or symlink makes this fail instead of being written through.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
        return fd

    def write_new(self, name: str, data: bytes, role: Role, *, dir_fd: int, sync: bool = True) -> None:
        """Create ``name`` holding ``data``, sealed with ``role``'s group and mode and (with ``sync``) fsynced:
        complete before it is linked or renamed into view."""
        fd = self.create(name, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self.apply(fd, role)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- trust -----------------------------------------------------------------------------------------------------

    def trusted_writer(self, uid: int, store_owner: int) -> bool:
        """Whether content owned by ``uid`` may be trusted: root, the store's owner, or a member of its group (not in a
        service store, whose members only read)."""
        if uid in (0, store_owner):
            return True
        return self.gid is not None and not self.service and _is_member(uid, self.gid)

    # -- the recorded form -----------------------------------------------------------------------------------------

    def to_toml(self, store_id: str | None = None) -> str:
        """The recorded form, with the store's id (:mod:`~wheelstore.store.identity`) when given."""
        lines = [
            "# wheelstore store policy. Every client applies these modes, whatever its umask or config.",
            "# Change it only with wheelstore; the modes of existing content depend on it.",
            "[store]",
            "format = 1",
            f'shared = "{self.shared}"',
        ]
        if store_id is not None:
            lines.append(f'id = "{store_id}"')
        if self.gid is not None:
            lines += [f'group = "{self.group}"', f"gid = {self.gid}"]
        lines += [
            "",
            "[trust]",
            f'publishers = "{"service" if self.service else "group" if self.gid is not None else "owner"}"',
            "",
        ]
        return "\n".join(lines)

    @classmethod
    def from_mapping(cls, data: dict[str, object]) -> Policy:
        store = data.get("store")
        if not isinstance(store, dict) or store.get("format") != 1:
            raise PolicyError("the store's config.toml is not a wheelstore format 1 policy")
        shared = store.get("shared")
        gid = store.get("gid")
        group = store.get("group")
        if shared not in SHARED_MODES or not (gid is None or isinstance(gid, int)):
            raise PolicyError("the store's config.toml has an invalid [store] table")
        trust = data.get("trust")
        service = "service" in data or (isinstance(trust, dict) and trust.get("publishers") == "service")
        return cls(cast(SharedMode, shared), group if isinstance(group, str) else None, gid, service=service)

    @classmethod
    def for_init(cls, shared: SharedMode | None, group: str | None, *, service: bool = False) -> Policy:
        """The policy ``wheelstore init`` creates, after checking the caller may apply it without root."""
        if shared is None:
            shared = "group" if group else "all" if service else "private"
        if group is None:
            return cls(shared, service=service)
        gid = resolve_group(group)
        require_membership(group, gid)
        return cls(shared, group, gid, service=service)


@functools.lru_cache(maxsize=256)
def _is_member(uid: int, gid: int) -> bool:
    try:
        user = pwd.getpwuid(uid)
        return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def resolve_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise PolicyError(
            f"there is no group {name!r} on this machine", hint=f"ask an admin to create it: groupadd {name}"
        ) from None


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def in_group(gid: int) -> bool:
    """Whether this process may use ``gid``: it is one of its groups, or it is root."""
    return os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups()


def require_membership(group: str, gid: int) -> None:
    if not in_group(gid):
        raise PolicyError(
            f"you are not a member of group {group!r}",
            hint=f"ask an admin: usermod -aG {group} {current_user()}, then log in again",
        )


def user_name(uid: int) -> str:
    """A uid's login name for messages, or the number if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def current_user() -> str:
    return user_name(os.getuid())


