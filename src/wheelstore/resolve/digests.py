"""The sha256 of local wheel files: read, and kept per user by the file's identity so a warm install reads none."""

from __future__ import annotations

import os
from pathlib import Path

from ..base import fsio
from ..base.errors import InputError


def file_sha256(path: Path, origin: str) -> tuple[str, tuple[int, ...]]:
    """The file's sha256, and the identity of the file read (see :class:`Digests`)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            digest = fsio.sha256_stream(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({origin})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None
    return digest, file_identity(st)


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class Digests:
    """The sha256 of local wheel files this user read before, by the file's identity (device, inode, size, mtime,
    ctime), kept in the user's cache per directory: with it, a warm install from unhashed pins and a find-links
    directory reads no wheel at all (it used to hash every one to find its tree; uv keeps the same by path and
    mtime). On local filesystems a write moves the file's ctime, which only root can set back, so a changed file is
    read again. Where ctime does not follow writes (FAT, sshfs) a wheel rewritten under the same name with the same
    size and mtime would still find its old tree: pin hashes there. A kept digest only ever finds a tree the store
    has (see :func:`~wheelstore.resolve.candidates.choose`); it is never what a file is checked against."""

    FORMAT = 1
    #: entries kept per directory; the oldest go first
    MAX = 4096

    def __init__(self) -> None:
        self._dirs: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {}
        self._changed: set[str] = set()

    def get(self, path: Path) -> str | None:
        try:
            stamp = file_identity(os.stat(path))
        except OSError:
            return None  # reading it says why
        found = self._dir(os.path.dirname(os.path.abspath(path))).get(path.name)
        try:
            kept_stamp, digest = found  # type: ignore[misc]
        except (TypeError, ValueError):  # none, or not what this writes
            return None
        return digest if kept_stamp == stamp and isinstance(digest, str) else None

    def add(self, path: Path, stamp: tuple[int, ...], digest: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        entries = self._dir(directory)
        entries.pop(path.name, None)
        entries[path.name] = (stamp, digest)
        self._changed.add(directory)

    def save(self) -> None:
        import marshal

        from ..base import usercache

        for directory in self._changed:
            entries = list(self._dir(directory).items())[-self.MAX :]
            usercache.write_bytes(self._name(directory), marshal.dumps((self.FORMAT, directory, dict(entries))))

    def _dir(self, directory: str) -> dict[str, tuple[tuple[int, ...], str]]:
        found = self._dirs.get(directory)
        if found is None:
            import marshal

            from ..base import usercache

            found = {}
            try:
                fmt, where, entries = marshal.loads(usercache.read_bytes(self._name(directory)) or b"")
                if fmt == self.FORMAT and where == directory and isinstance(entries, dict):
                    found = entries
            except (EOFError, ValueError, TypeError):
                pass
            self._dirs[directory] = found
        return found

    @staticmethod
    def _name(directory: str) -> str:
        from ..base import usercache

        return usercache.named_by("digests", directory)
