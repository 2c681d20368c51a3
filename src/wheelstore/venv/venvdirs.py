"""The venv's directories as an install reaches them: by directory fds, below the venv's own roots, never through a
symlink.

Every path an install creates is built from a manifest (its publisher's input) and the venv's layout. The manifest is
checked when it is read (:mod:`wheelstore.store.manifest_check`); this is the second line. Each directory is reached
from one of the venv's roots (its prefix and the interpreter's install paths, opened as the interpreter names them) one
component at a time, with ``O_NOFOLLOW``: a component that is ``..``, ``.``, empty, or a symlink (a folded directory
into the store, or something planted) is refused, and a path under no root is refused, so no field however forged
reaches outside the venv. Each directory is opened once per install and its fd kept for the files created in it, which
then cost the kernel one lookup each instead of a walk of the whole path. """

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from ..base.errors import OutsideVenv
from ..base.fsio import open_dir
from ..store.manifest_check import show

if TYPE_CHECKING:
    from ..base.interpreter import Interpreter

#: directory fds kept open at most per install_tree call (a tree may have thousands of directories, four trees are
#: installed at once, and the fd limit is often 1,024)
_KEEP = 128


class VenvDirs:
    """The directories of one venv an install creates entries in, each opened once (see the module docstring).

    ``made`` lists the directories this created, parents first, so that a failed install can remove exactly those.
    """

    def __init__(self, roots: Iterable[str]) -> None:
        self._roots: dict[str, int] = {}
        self._fds: dict[str, int] = {}
        self.made: list[str] = []
        try:
            for root in {r.rstrip("/") or "/" for r in roots}:
                try:
                    self._roots[root] = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except FileNotFoundError:  # made below another root when needed (a new venv's bin/)
                    continue
        except BaseException:
            self.close()
            raise

    @classmethod
    def of(cls, interpreter: Interpreter) -> VenvDirs:
        """The venv of ``interpreter``: its prefix and its install paths (not the base interpreter's ``include``,
        which a venv's paths also name)."""
        return cls([interpreter.prefix, *(interpreter.paths[k] for k in ("purelib", "platlib", "scripts", "data"))])

    @staticmethod
    def where(dir_fd: int) -> str:
        """Where a directory fd leads, for a message."""
        try:
            return os.readlink(f"/proc/self/fd/{dir_fd}")
        except OSError:
            return "(a venv directory)"

    def __enter__(self) -> VenvDirs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in [*self._fds.values(), *self._roots.values()]:
            os.close(fd)
        self._fds.clear()
        self._roots.clear()

    def open(self, path: str, *, create: bool = True) -> int:
        """An fd for the venv directory ``path`` (absolute, under a root), made (``mkdir -p``) if missing and
        ``create``; valid until the next call. FileNotFoundError if missing and not ``create``."""
        fd = self._fds.get(path)
        if fd is not None:
            return fd
        fd = self._roots.get(path)
        if fd is not None:
            return fd
        parent, _, name = path.rpartition("/")
        if not self._under_root(parent):
            raise OutsideVenv(f"refusing to create {show(path)}: it is outside the venv's directories")
        if name in ("", ".", "..") or "\0" in name:
            raise OutsideVenv(f"refusing to create {show(path)}: {show(name)} is not a plain name")
        parent_fd = self.open(parent, create=create)
        try:
            fd = open_dir(name, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)  # the venv is the user's own: their umask applies, as pip's
            except FileExistsError:
                pass  # made meanwhile: opened below, with the same checks
            else:
                self.made.append(path)
            fd = self._open_made(parent_fd, name, path)
        except OSError as e:
            raise self._refusal(parent_fd, name, path, e) from None
        self._keep(path, fd)
        return fd

    def split(self, path: str) -> tuple[int, str]:
        """(fd of ``path``'s directory, made if missing; ``path``'s last component), to create ``path`` there."""
        parent, _, name = path.rpartition("/")
        if name in ("", ".", "..") or "\0" in name:
            raise OutsideVenv(f"refusing to create {show(path)}: {show(name)} is not a plain name")
        return self.open(parent), name

    def forget(self, path: str) -> None:
        """``path`` was removed: close its fd, and those below it."""
        for p in [p for p in self._fds if p == path or p.startswith(path + "/")]:
            os.close(self._fds.pop(p))

    def unlink(self, path: str) -> None:
        """Remove the file or link ``path`` if it is there, quietly: undoing a failed install."""
        self._quietly(os.unlink, path)

    def rmdir(self, path: str) -> None:
        """Remove the directory ``path`` if it is there and empty, quietly."""
        self.forget(path)
        self._quietly(os.rmdir, path)

    def _quietly(self, remove: Callable[..., None], path: str) -> None:
        parent, _, name = path.rpartition("/")
        try:
            remove(name, dir_fd=self.open(parent, create=False))
        except (OSError, OutsideVenv):
            pass

    def _under_root(self, path: str) -> bool:
        return any(path == root or path.startswith(root + "/") for root in self._roots)

    def _open_made(self, parent_fd: int, name: str, path: str) -> int:
        try:
            return open_dir(name, dir_fd=parent_fd)
        except OSError as e:
            raise self._refusal(parent_fd, name, path, e) from None

    def _refusal(self, parent_fd: int, name: str, path: str, e: OSError) -> OSError | OutsideVenv:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            return e
        try:
            symlink = stat.S_ISLNK(os.lstat(name, dir_fd=parent_fd).st_mode)
        except OSError:
            symlink = False
        if symlink:
            return OutsideVenv(f"{show(path)} is a symlink; refusing to install through it (it may lead into the "
                               "store, or out of the venv)")
        return OutsideVenv(file_in_the_way(show(path)))

    def _keep(self, path: str, fd: int) -> None:
        if len(self._fds) >= _KEEP:  # the oldest go: installs go parents first, so they are seldom asked again
            for old in list(self._fds)[: _KEEP // 4]:
                os.close(self._fds.pop(old))
        self._fds[path] = fd


def file_in_the_way(shown: str) -> str:
    """The one wording for a file where the install needs a directory: the directory walk and folding both meet it."""
    return f"{shown} is a file, but a directory of the same name is to be installed there"
