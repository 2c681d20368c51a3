"""Where this process runs and where a path lives: the node's id, the filesystem type of a path, and whether that
filesystem is one other nodes of a cluster see too.

gc roots record these (:mod:`wheelstore.store.roots`), so that a gc on one node checks only the venvs it can see and
believes the others, instead of taking a venv on another node's local disk for deleted.
"""

from __future__ import annotations

import functools
import os
import re

from .mounts import NETWORK_FS, Mount, holding, read_table

#: overrides the node id (/etc/machine-id). Meant for tests and for containers that share one machine id while
#: being separate nodes; documented in the README's section on gc
ENV_NODE = "WHEELSTORE_NODE_ID"
#: what a node id may be: a machine id is 32 hex digits; an override or the fallback is any short plain name
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_MACHINE_ID = re.compile(r"[0-9a-f]{32}")
_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")



def node_id() -> str:
    """This node's id: ``$WHEELSTORE_NODE_ID`` if set (and sane), else the machine id systemd and D-Bus keep, else
    ``host-<hostname>`` (stable, though two machines may share one)."""
    override = os.environ.get(ENV_NODE, "")
    if override and NODE_ID.fullmatch(override):
        return override
    return _machine_id()


@functools.cache
def _machine_id() -> str:
    for path in _MACHINE_ID_FILES:
        try:
            with open(path, "rb") as f:
                text = f.read(64).decode("ascii", "replace").strip()
        except OSError:
            continue
        if _MACHINE_ID.fullmatch(text):
            return text
    host = re.sub(r"[^A-Za-z0-9._-]", "_", os.uname().nodename)[:58] or "unknown"
    return f"host-{host}"


@functools.cache
def unmapped_uid() -> int | None:
    """The uid that files of unmapped users show as (the kernel's overflow uid, 65534), when this process runs in a
    user namespace that does not map every uid (``unshare -U``, a rootless container); None where all are mapped.

    There, every other user's files look like that uid's, so whose an entry of ``roots/`` is cannot be told, and gc
    must not take it for nobody's (any user may make such a namespace where the kernel allows it)."""
    try:
        with open("/proc/self/uid_map", encoding="ascii") as f:
            whole = f.read().split() == ["0", "0", "4294967295"]
        if whole:
            return None
        with open("/proc/sys/kernel/overflowuid", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # no /proc: nothing to go by, as before
        return None


def host_name() -> str:
    """The node's host name, for people reading gc's report (the id is what gc goes by)."""
    return os.uname().nodename


def fs_type(path: str) -> str:
    """The type of the filesystem holding ``path`` ("ext4", "xfs", "btrfs", ...), or "unknown" (:class:`Mounts`)."""
    return Mounts.read().fs_type(path)


class Mounts:
    """This process's mount table, read once from /proc/self/mountinfo (:mod:`.mounts`): for asking about many
    paths."""

    def __init__(self, table: list[Mount]) -> None:
        self._table = table

    @classmethod
    def read(cls) -> Mounts:
        return cls(read_table())

    def is_mount_point(self, path: str) -> bool:
        """Whether a filesystem is mounted at ``path`` (a resolved path), as this process sees it; True for every
        path when the mount table cannot be read (nothing then tells a mount from a directory)."""
        return not self._table or any(mount.point == path for mount in self._table)

    def fs_type(self, path: str) -> str:
        """The type of the filesystem holding ``path``, as this process sees it (bind mounts and namespaces
        included), or "unknown"."""
        found = holding(self._table, os.path.realpath(path))
        return found.fstype if found is not None else "unknown"



def is_shared(kind: str) -> bool:
    """Whether a filesystem of type ``kind`` (:func:`fs_type`) is one many nodes mount."""
    return kind in NETWORK_FS


#: how many directories, from a venv up towards ``/``, a root records the identity of (:func:`anchor`)
ANCHOR_DEPTH = 32


def anchor(real: str) -> list[tuple[int, int]]:
    """The (device, inode) of ``real`` (a resolved path) and of each directory above it, up to ``/``: what the path
    led to when a root was written. A gc that finds the venv missing believes it deleted only when the nearest
    directory above it that it sees is the very one recorded: under a tmpfs, another mount or in another mount
    namespace (a service's ProtectHome or PrivateTmp), the path leads elsewhere."""
    found = []
    path = real
    for _ in range(ANCHOR_DEPTH):
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            break
        found.append((st.st_dev, st.st_ino))
        if path == "/":
            break
        path = os.path.dirname(path) or "/"
    return found


def anchor_from(value: object) -> tuple[tuple[int, int], ...]:
    """An :func:`anchor` as a root's JSON holds it, checked (its writer's word): empty if it is not one."""
    if not isinstance(value, list) or len(value) > ANCHOR_DEPTH:
        return ()
    found = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 64 for n in pair)):
            return ()
        found.append((pair[0], pair[1]))
    return tuple(found)
