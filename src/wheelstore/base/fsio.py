"""Small filesystem primitives the stages share: durable writes, hidden temporary names, file hashes, the umask and
removal of read-only trees."""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from . import mounts

RENAME_NOREPLACE = 1
#: bytes read at a time when a file is hashed or copied
CHUNK = 1 << 20


@functools.cache
def _libc_function(name: str) -> Any:
    """A libc function, or None where it is missing. ``CDLL(None)`` is the process's own symbols, which include libc
    wherever Python links it; ``ctypes.util.find_library`` would start ``ldconfig`` in a subprocess on every run."""
    import ctypes  # here: only publishing calls into libc; a warm install never does

    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def syncfs(fd: int) -> None:
    """Flush everything written to the filesystem holding ``fd``.

    One ``syncfs`` makes a staged tree of thousands of files durable far faster than an fsync per file would.
    Where the call is missing (not Linux), fall back to a global ``sync``.
    """
    call = _libc_function("syncfs")
    if call is None:
        os.sync()
        return
    if call(fd) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def rename_noreplace(src: str, dst: str, *, dir_fd: int) -> None:
    """Rename ``src`` to ``dst`` in one directory, failing with EEXIST instead of replacing anything.

    A plain ``rename()`` of a directory silently replaces an empty directory at the target, so a planted empty
    directory could otherwise be swapped for ours unnoticed. Where ``renameat2`` is missing or the filesystem does not
    support the flag (some network filesystems), fall back to ``rename()``, which still refuses a non-empty target.
    """
    renameat2 = _libc_function("renameat2")
    if renameat2 is not None:
        if renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        import ctypes

        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    os.rename(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def exists(name: str, *, dir_fd: int) -> bool:
    """Whether ``name`` exists under ``dir_fd``, without following a symlink there."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def read_all(fd: int, size: int, limit: int = 1 << 62) -> bytes:
    """What ``fd`` holds from its offset to its end (or ``limit`` bytes), read with plain reads: ``size`` (its
    fstat size) is the first read's guess, one more read confirms the end. No buffered file object: made for every
    manifest and cache entry an install reads, those cost more than the reads."""
    chunks = []
    want = min(size + 1, limit)
    while want > 0 and (chunk := os.read(fd, want)):
        chunks.append(chunk)
        limit -= len(chunk)
        want = min(max(size, 1 << 16), limit)
    return b"".join(chunks)


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path`` with each directory made 0700, explicitly (``parents=True`` would leave the upper ones to
    the umask); the ones made, outermost first, for a caller to give them their final mode."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    made = []
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            continue
        made.append(p)
    return made


def fsync_dir(fd: int) -> None:
    """Make a rename or link in the directory ``fd`` durable."""
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on directories; the rename is still atomic
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise


def remove_tree(name: str, *, dir_fd: int) -> None:
    """Delete the directory ``name`` under ``dir_fd`` and everything in it, read-only or not.

    Walks by directory fd without following symlinks, so a planted link cannot redirect the deletion. Only works on
    trees this process may make writable: its own, or any as root.
    """
    try:
        fd = open_dir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if not st.st_mode & stat.S_IWUSR:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        with os.scandir(fd) as entries:
            names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
        for child, is_dir in names:
            if is_dir:
                remove_tree(child, dir_fd=fd)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def below_any(path: str, dirs: set[str]) -> bool:
    """Whether one of the ``/``-separated ``path``'s proper ancestors is in ``dirs``."""
    head = path.rpartition("/")[0]
    while head:
        if head in dirs:
            return True
        head = head.rpartition("/")[0]
    return False


def rmtree(path: str | os.PathLike[str], *, ignore_errors: bool = False) -> None:
    """:func:`shutil.rmtree` (which never follows a symlink), imported only by the few runs that remove a tree:
    shutil and what it loads are a few milliseconds of every command's start otherwise."""
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def open_dir(name: str, *, dir_fd: int | None = None) -> int:
    """Open a directory without following a symlink planted in its place."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def hidden_name(name: str) -> str:
    """A private temporary name for ``name``'s next version, in the same directory: hidden (a leading dot), and
    unique to this process and call, so concurrent writers never share one before the rename or link into place."""
    return f".{name}.{os.getpid()}.{os.urandom(4).hex()}"


def sha256_stream(f: BinaryIO) -> str:
    """The sha256 hex digest of what ``f`` holds from its offset to its end, read :data:`CHUNK` bytes at a time."""
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of the file at ``path``; OSError if it cannot be read."""
    with open(path, "rb", buffering=0) as f:
        return sha256_stream(f)


def umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux >= 4.7)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def network_fs(fd: int) -> str | None:
    """The mountinfo type of the filesystem holding the open file ``fd`` when it is a network one, else None.

    Found by the file's device number among /proc/self/mountinfo's (what this process sees, bind mounts and
    namespaces included), not by its path; a device mountinfo does not list (a btrfs subvolume's) counts as local."""
    try:
        return _network_fs_of(os.fstat(fd).st_dev)
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def _network_fs_of(dev: int) -> str | None:
    found = mounts.of_device(mounts.read_table(), dev)
    return found.fstype if found is not None and found.fstype in mounts.NETWORK_FS else None
