"""Which mount holds a path, with its filesystem type, source and options, read from ``/proc/self/mountinfo``.

What a filesystem does with locks across machines depends on how it was mounted (NFS's ``local_lock=``, Lustre's
``flock``/``localflock``), and only the mount table says that; ``/proc/self/mountinfo`` is this process's view, bind
mounts and mount namespaces included.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass

from . import sizes
from .errors import NoSpace

MOUNTINFO = "/proc/self/mountinfo"

#: mountinfo types of network and cluster filesystems: many nodes may mount them (a venv there may be seen from every
#: node), and each metadata operation is a round trip to a server. Anything else counts as one node's own disk.
NETWORK_FS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "ceph", "fuse.ceph", "fuse.ceph-fuse", "cephfs", "glusterfs", "fuse.glusterfs",
    "fuse.sshfs", "beegfs", "cifs", "smb3", "afs", "panfs", "orangefs", "pvfs2", "ocfs2", "gfs2", "wekafs",
    "fuse.juicefs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone", "9p", "virtiofs",
})
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where it is mounted, its type (``nfs4``, ``fuse.sshfs``, ...), what it mounts, and
    its per-mount options followed by its superblock's (where ``local_lock=`` or Lustre's ``flock`` appear)."""

    point: str
    fstype: str
    source: str
    options: tuple[str, ...]
    device: str = ""  #: ``major:minor``, as st_dev gives them

    def option(self, name: str) -> str | None:
        """The value of ``name=value``, ``""`` for a bare ``name``, None if the mount does not list it (the last
        listing wins, as the superblock's options follow the mount's)."""
        found = None
        for item in self.options:
            key, sep, value = item.partition("=")
            if key == name:
                found = value if sep else ""
        return found


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    """Every well-formed line of a mountinfo text, in order; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        options = tuple(fields[5].split(",")) + (tuple(tail[2].split(",")) if len(tail) > 2 else ())
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), options, fields[2]))
    return mounts


def mount_of(path: str | os.PathLike[str], mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path``: the longest mount point containing its real path (the last listed when mounts
    are stacked); None if the table cannot be read. ``mountinfo`` gives the table's text instead of this process's."""
    target = os.path.realpath(path)
    if mountinfo is None:
        try:
            with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
                mountinfo = f.read()
        except OSError:
            return None
    return holding(parse(mountinfo), target)


def read_table() -> list[Mount]:
    """This process's mount table; empty when it cannot be read."""
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            return parse(f.read())
    except OSError:
        return []


def holding(table: list[Mount], target: str) -> Mount | None:
    """The mount of ``table`` holding the resolved path ``target``: the longest mount point containing it, the last
    listed when mounts are stacked."""
    best: Mount | None = None
    for mount in table:
        point = mount.point
        inside = point == "/" or target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.point)):
            best = mount
    return best


def of_device(table: list[Mount], dev: int) -> Mount | None:
    """The first mount of ``table`` whose device is ``dev`` (an st_dev): found by device, not by path."""
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    return next((m for m in table if m.device == wanted), None)


def no_space(e: OSError, path: str | os.PathLike[str], what: str, doing: str, fix: str) -> NoSpace | None:
    """``e`` as the one-line error it is when ``path``'s filesystem (``what``: "the store", "the venv") is full or
    the quota is used up, or None for any other error: a bare "No space left on device" names neither which of the
    filesystems a command writes to filled up nor what to free."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    mount = mount_of(path)
    try:
        st = os.statvfs(path)
        size = f", {sizes.binary(st.f_blocks * st.f_frsize)} in all"  # (what is free now: the failed write was undone)
    except OSError:
        size = ""
    where = f"{mount.fstype} at {mount.point}{size}" if mount is not None else f"{os.fspath(path)}{size}"
    full = "your disk quota is used up on" if e.errno == errno.EDQUOT else "no space left on"
    return NoSpace(f"{full} {what}'s filesystem ({where}) while {doing}", hint=fix)
