"""Hard links made by a service store's service, running as root, into this user's venv (the ``link`` op of
:mod:`wheelstore.service.protocol`).

The user cannot hard-link the store's files (``fs.protected_hardlinks``: they are root's), and would not be safe to
if they could write them. Root's service can, and the user then shares inodes they can never change: an append
fails, ``sed -i`` or an editor's save replaces their own directory entry only. The install makes the venv's
directories itself (its own) and passes their open descriptors; the service links into those only, never by path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..base import fsio
from ..base.errors import InstallError, ServiceError
from ..service.client import ServiceClient, service_socket
from .linkmode import ServiceHardlink

if TYPE_CHECKING:
    from ..store.store import Store

#: directories per request: the client's descriptors stay few (four trees link at once, each with its VenvDirs)
MAX_FDS = 64
#: files per request
MAX_ENTRIES = 2048


def availability(store: Store, site: str) -> ServiceHardlink | None:
    """Whether the store's service can hard-link into the venv whose site-packages is ``site`` for this user, and if
    not why; None when the store is not a service store."""
    if service_socket(store) is None:
        return None
    if os.geteuid() == 0:
        return ServiceHardlink(False, "root ignores the store's read-only modes, so root's writes through a hard link "
                                      "would change the store")
    if ServiceClient.of(store).hello().get("link") is not True:
        return ServiceHardlink(False, "the store service does not run as root, so it cannot hard-link into your venv")
    st = os.stat(site)
    if st.st_dev != os.stat(store.root / "trees").st_dev:
        return ServiceHardlink(False, "the venv is on another filesystem than the store")
    if st.st_mode & 0o022 or fsio.umask() & 0o022 != 0o022:
        return ServiceHardlink(False, "the venv's directories are (or would be, by your umask) writable by their "
                                      "group or others, and the store service links only into directories nobody "
                                      "else may write")
    return ServiceHardlink(True, "")


class ServiceLinks:
    """One tree install's hard links, asked of the service in batches: :meth:`add` each, :meth:`flush` at the end
    (and whenever the tree changes or a batch is full). ``created`` gets each venv path once it is linked, so that a
    failed install removes exactly those; ``replace`` makes room for a name another distribution holds (EEXIST)."""

    def __init__(self, client: ServiceClient, created: list[str], replace: Callable[[int, str], None]) -> None:
        self._client, self._created, self._replace = client, created, replace
        self._key: str | None = None
        self._dirs: dict[str, int] = {}  # venv directory -> index in _fds
        self._paths: list[str] = []  # index in _fds -> venv directory
        self._fds: list[int] = []
        self._entries: list[tuple[int, str, str]] = []

    def add(self, key: str, directory: str, dir_fd: int, name: str, rel: str) -> None:
        """Link the tree ``key``'s file ``rel`` as ``name`` in the venv's ``directory`` (open as ``dir_fd``)."""
        if key != self._key or len(self._entries) >= MAX_ENTRIES or \
                (directory not in self._dirs and len(self._fds) >= MAX_FDS):
            self.flush()
            self._key = key
        index = self._dirs.get(directory)
        if index is None:
            fd = os.dup(dir_fd)  # the install's own fd may be closed and reused before the batch goes
            self._dirs[directory] = index = len(self._fds)
            self._fds.append(fd)
            self._paths.append(directory)
            if os.fstat(fd).st_mode & 0o022:
                raise InstallError(f"{directory} is writable by its group or others, so the store service does not "
                                   "hard-link into it", hint=f"chmod go-w {directory}, or use --link-mode copy")
        self._entries.append((index, name, rel))

    def flush(self) -> None:
        """Send what was added; an error for the first file that could not be linked."""
        if not self._entries or self._key is None:
            self.close()
            return
        try:
            results = self._client.link(self._key, self._fds, self._entries)
            again = [e for e, r in zip(self._entries, results) if self._done(e, r, retry=True)]
            if again:
                for entry, result in zip(again, self._client.link(self._key, self._fds, again), strict=True):
                    self._done(entry, result, retry=False)
        finally:
            self.close()

    def _done(self, entry: tuple[int, str, str], result: object, *, retry: bool) -> bool:
        """Take one result: True when the name was in the way and is now free, for a second try."""
        index, name, _rel = entry
        path = f"{self._paths[index]}/{name}"
        if result is None:
            self._created.append(path)
            return False
        number = result.get("errno") if isinstance(result, dict) else None
        if number == errno.EEXIST and retry:
            self._replace(self._fds[index], name)  # another distribution's file, or a stale one: as pip does
            return True
        why = result.get("error") if isinstance(result, dict) else None
        if isinstance(number, int) and number:
            raise OSError(number, os.strerror(number), path)
        raise ServiceError(f"the store service did not link {path}: {why if isinstance(why, str) else 'no reason'}")

    def close(self) -> None:
        """Drop what is queued, closing the descriptors (after a flush, or when the install failed)."""
        for fd in self._fds:
            os.close(fd)
        self._fds, self._dirs, self._paths, self._entries, self._key = [], {}, [], [], None
