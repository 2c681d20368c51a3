"""Per-key advisory locks, so that work on one key happens once however many processes ask.

Locks are an optimisation: correctness comes from the atomic rename. A lock file lives in the store's sticky
``locks/`` area. Its holder removes it when done if it owns it, so lock files do not pile up; a waiter that then wins a
lock on the removed inode notices (the path no longer names its inode) and starts over.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from types import TracebackType

from .errors import StoreError
from .policy import Policy, Role


class KeyLock:
    """An exclusive ``flock`` on ``locks/<name>``, taken on entry and released on exit."""

    def __init__(self, dir_fd: int, name: str, policy: Policy) -> None:
        self._dir_fd = dir_fd
        self._name = name
        self._policy = policy
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    now = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    now = None
            except BaseException:
                os.close(fd)
                raise
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
                self._fd = fd
                return
            os.close(fd)  # the holder before us removed this lock file: take the current one

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        while True:
            try:
                fd = os.open(self._name, flags, dir_fd=self._dir_fd)
            except FileNotFoundError:
                self._create()  # by us or, if it lost the race, by someone else: open it again either way
                continue
            except PermissionError:  # flock needs no write access on local filesystems
                fd = os.open(self._name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise StoreError(f"lock file locks/{self._name} is a symlink; refusing to follow it") from None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StoreError(f"lock file locks/{self._name} is not a regular file")
            return fd

    def _create(self) -> None:
        """Make the lock file appear with its final mode: build it under a private name, then link it into place.

        Creating it in place would expose it, for an instant, with the creator's private mode, and a member opening
        it just then would be refused.
        """
        tmp = f".{self._name}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = self._policy.create(tmp, dir_fd=self._dir_fd)
        try:
            self._policy.apply(fd, Role.LOCK)
            os.link(tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd, follow_symlinks=False)
        except FileExistsError:
            pass  # someone else's appeared first; the caller opens that one
        finally:
            os.close(fd)
            os.unlink(tmp, dir_fd=self._dir_fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.fstat(fd).st_uid == os.geteuid():
                try:
                    os.unlink(self._name, dir_fd=self._dir_fd)
                except OSError:
                    pass
        finally:
            os.close(fd)  # releases the flock

    def __enter__(self) -> KeyLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
