"""A tree's files as an install reads them: every directory from the tree's own down opened without following a
link, each file without blocking, and only a regular file.

A tree's owner may swap one of its directories for a link, or a file for a FIFO, after the check that every install
runs (or while it still runs, beside the linking). A copy, a hard link or a script rewritten into the venv must then
neither hang nor read what the installing user may read but the tree's owner may not (root's files, for a root
install): whatever it reads comes from the tree itself.
"""

from __future__ import annotations

import os
import stat
from types import TracebackType

from ..base import fsio
from ..base.errors import NotAFile, printable

_HINT = "run wheelstore verify; the tree's publisher or an admin can repair it"


class TreeDirs:
    """The directories of the tree at ``source``, opened as the module docstring says. Only those on the path to the
    last one asked for stay open (installs go parents first). With ``reads`` False (symlink modes: a symlink reads
    nothing now, and is followed later by whoever uses it) nothing is opened."""

    def __init__(self, source: str, *, reads: bool = True) -> None:
        self.source = source
        self.reads = reads
        self._fds: dict[str, int] = {}

    def __enter__(self) -> TreeDirs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def fd(self, rel_dir: str) -> int | None:
        """An fd of the tree's directory ``rel_dir`` ("" for the tree itself), or None when nothing is read."""
        if not self.reads:
            return None
        found = self._fds.get(rel_dir)
        if found is not None:
            return found
        for other in [p for p in self._fds if p and not (rel_dir + "/").startswith(p + "/")]:
            os.close(self._fds.pop(other))
        parent, _, name = rel_dir.rpartition("/")
        try:
            if rel_dir:
                parent_fd = self.fd(parent)
                assert parent_fd is not None
                fd = fsio.open_dir(name, dir_fd=parent_fd)
            else:
                fd = fsio.open_dir(self.source)
        except OSError as e:
            raise NotAFile(f"{printable(self.source)}/{printable(rel_dir)} in the store cannot be read as a directory "
                           f"of its tree ({e.strerror}), so nothing was installed from it", hint=_HINT) from None
        self._fds[rel_dir] = fd
        return fd

    def read(self, rel: str, size: int) -> bytes:
        """The bytes of the tree file ``rel``, which must be a regular file of the manifest's ``size``."""
        parent, _, name = rel.rpartition("/")
        dir_fd = self.fd(parent)
        assert dir_fd is not None, "a TreeDirs that reads nothing"
        data = None
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    data = fsio.read_all(fd, size, size + 1)
            finally:
                os.close(fd)
        except OSError as e:
            raise NotAFile(f"{printable(self.source)}/{printable(rel)} in the store cannot be read as a file of its "
                           f"tree ({e.strerror}), so it was not installed", hint=_HINT) from None
        if data is None or len(data) != size:
            raise NotAFile(f"{printable(self.source)}/{printable(rel)} in the store is not the regular file of {size} "
                           "bytes its manifest lists, so it was not installed", hint=_HINT)
        return data


def read_tree_file(source: str, rel: str, size: int) -> bytes:
    """The bytes of the tree file ``rel`` of the tree at ``source``, read as :class:`TreeDirs` reads."""
    with TreeDirs(source) as dirs:
        return dirs.read(rel, size)
