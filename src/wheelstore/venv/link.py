"""Linking one store file into a venv: the five link modes, and :func:`link_file`, which makes one file appear in
a venv in one of them (a copy reading the store file through an fd that never follows a planted link or FIFO).

The safety rule behind the modes: a write by a user to a file in their own venv must never change the store or
anyone else's venv. Reflinks give private inodes (safe everywhere), symlinks point at read-only files (writes fail,
editors that rename replace the link), copies are private, and hard links share the store's inode, so they are only
for a user linking a tree they own in a store nobody else uses (docs/sharing.md, "Link modes and
fs.protected_hardlinks"), or for links a service store's service makes as root into inodes the user can never change
(:mod:`wheelstore.venv.servicelink`). Which mode a tree gets is :mod:`wheelstore.venv.linkmode`'s to decide.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import stat

from ..base.errors import NotAFile

#: ``ioctl(dst_fd, FICLONE, src_fd)``; Python 3.11 has no ``fcntl.FICLONE``
FICLONE = 0x40049409
#: errnos meaning "reflink is not supported here" rather than "something went wrong"
REFLINK_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV})
#: errnos after which a copy falls back from ``copy_file_range`` to ``sendfile`` to plain read/write
_NO_FAST_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTTY})
_CHUNK = 1 << 30


class LinkMode(enum.Enum):
    """How a store file appears in a venv."""

    REFLINK = "reflink"  #: a private inode sharing the store file's blocks (XFS, btrfs)
    HARDLINK = "hardlink"  #: the store file's own inode
    SYMLINK = "symlink"  #: a symbolic link to the store file
    COPY = "copy"  #: a private copy of the bytes
    #: whole directories symlinked into the store where only one tree fills them, the rest per-file symlinks
    #: (:mod:`wheelstore.venv.fold`); what ``auto`` picks where reflinks fail and symlinks work and are safe
    #: (see :func:`wheelstore.venv.linkmode.choose`)
    FOLD = "fold"


def link_file(
    src: str, dst: str, mode: LinkMode, *, dst_mode: int | None = None, dst_dir_fd: int | None = None,
    src_dir_fd: int | None = None,
) -> None:
    """Materialize the store file ``src`` at ``dst``, which must not exist yet (else FileExistsError); with
    ``dst_dir_fd``, ``dst`` is a name in that directory (never followed if it is a symlink). With ``src_dir_fd``
    (an fd of ``src``'s directory), the file is read or hard-linked as its last component there, so that no
    directory of its path is followed anew; a symlink still points at the path ``src``.

    REFLINK and COPY make a private inode with the source's mtime (timestamp pycs compiled in the store stay valid)
    and the mode ``dst_mode``, or the source's permission bits plus u+w: a private copy is the user's own to edit.
    On failure they remove ``dst`` again and raise the OSError; for REFLINK an errno in REFLINK_UNSUPPORTED means
    "not supported here". HARDLINK and SYMLINK leave the store's inode alone, so ``dst_mode`` does not apply.
    """
    if mode is LinkMode.HARDLINK:
        os.link(src if src_dir_fd is None else os.path.basename(src), dst, src_dir_fd=src_dir_fd,
                dst_dir_fd=dst_dir_fd, follow_symlinks=False)
    elif mode is LinkMode.SYMLINK or mode is LinkMode.FOLD:  # fold links single files as symlinks
        os.symlink(src, dst, dir_fd=dst_dir_fd)
    else:
        _private_copy(src, dst, dst_mode, clone=mode is LinkMode.REFLINK, dir_fd=dst_dir_fd, src_dir_fd=src_dir_fd)


def _open_store_file(src: str, dir_fd: int | None = None) -> tuple[int, os.stat_result]:
    """An fd for the store file ``src`` (with ``dir_fd``, its last component in that directory), and its stat;
    :class:`NotAFile` unless it is a regular file. Never through a symlink, and O_NONBLOCK: opening a FIFO someone
    planted in a tree must not hang until a writer comes."""
    fd = os.open(src if dir_fd is None else os.path.basename(src),
                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFile(f"{src} in the store is not a regular file, so it was not read",
                           hint="run wheelstore verify; the tree's publisher or an admin can repair it")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _private_copy(src: str, dst: str, dst_mode: int | None, *, clone: bool, dir_fd: int | None = None,
                  src_dir_fd: int | None = None) -> None:
    src_fd, st = _open_store_file(src, src_dir_fd)
    try:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            if clone:
                try:
                    fcntl.ioctl(fd, FICLONE, src_fd)
                except OSError as e:
                    raise OSError(e.errno, e.strerror, src, None, dst) from None
            else:
                _copy_data(src_fd, fd)
            # set-id bits never come along: the source's are dropped, only an explicit dst_mode may set any
            os.fchmod(fd, dst_mode if dst_mode is not None else (stat.S_IMODE(st.st_mode) & 0o777) | stat.S_IWUSR)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except BaseException:
            os.close(fd)
            try:
                os.unlink(dst, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        os.close(fd)
    finally:
        os.close(src_fd)


def _copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy all bytes from the current offsets: in-kernel where the kernel can, else through a buffer.

    All three methods advance both file offsets, so a fallback in the middle continues where the last one stopped.
    """
    try:
        while os.copy_file_range(src_fd, dst_fd, _CHUNK):
            pass
        return
    except OSError as e:
        if e.errno not in _NO_FAST_COPY:
            raise
    try:
        while os.sendfile(dst_fd, src_fd, None, _CHUNK):
            pass
        return
    except OSError as e:
        if e.errno not in _NO_FAST_COPY:
            raise
    while data := os.read(src_fd, 1 << 20):
        view = memoryview(data)
        while view:
            view = view[os.write(dst_fd, view) :]
