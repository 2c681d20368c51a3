"""The manifest: a published tree's commit marker and its record of what every file must be.

A tree is trusted only once its manifest exists. Besides each file's size, sha256 and mode, the manifest keeps the stat
signature (mtime, ctime) taken when the file was sealed, so a later quick check can spot a chmod or a write without
re-reading the bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from ..base.errors import StoreError
from . import manifest_check as check

FORMAT = 1


class FileEntry(NamedTuple):
    """One file's record. A tuple, not a dataclass: every install parses one per file of every tree it links."""

    size: int
    sha256: str
    mode: int
    mtime_ns: int
    ctime_ns: int

    def to_json(self) -> list[Any]:
        return list(self)


class Manifest:
    """What a published tree holds and who published it when.

    A manifest made by :meth:`deferred` has its small fields at once and reads its file list (``files``, ``dirs``,
    ``rpaths``) from the manifest's bytes when first asked: a warm install links from what the user's cache kept
    (:mod:`wheelstore.venv.prepared`) and only its check, in another process, needs every file's entry.
    """

    #: the fields, in the order of the constructor's arguments
    FIELDS = ("key", "wheel", "name", "version", "dist_info", "root_is_purelib", "publisher_uid", "publisher",
              "owner_uid", "published_at", "files", "dirs", "bytecode", "rpaths")
    #: the fields a deferred manifest has at once
    SMALL = ("key", "wheel", "name", "version", "dist_info", "root_is_purelib", "publisher_uid", "publisher",
             "owner_uid", "published_at", "bytecode")
    __slots__ = (*SMALL, "count", "first", "_files", "_dirs", "_rpaths", "_body")

    key: str  #: sha256 of the wheel file, which also names the tree
    wheel: str  #: the wheel's file name
    name: str  #: canonical distribution name
    version: str
    dist_info: str
    root_is_purelib: bool
    publisher_uid: int
    publisher: str
    owner_uid: int  #: owner of the tree's inodes (the publisher, unless an orphan was adopted)
    published_at: str  #: UTC, ISO 8601
    #: the cache tag of the pycs compiled into the tree before it was published ("cpython-311"), or None
    bytecode: str | None
    count: int  #: how many files the tree holds
    first: str | None  #: one of them (a file to probe link modes with), None in an empty tree

    def __init__(
        self,
        key: str,
        wheel: str,
        name: str,
        version: str,
        dist_info: str,
        root_is_purelib: bool,
        publisher_uid: int,
        publisher: str,
        owner_uid: int,
        published_at: str,
        files: dict[str, FileEntry],
        dirs: list[str],
        bytecode: str | None = None,
        rpaths: dict[str, list[str]] | None = None,
    ) -> None:
        self.key, self.wheel, self.name, self.version, self.dist_info = key, wheel, name, version, dist_info
        self.root_is_purelib, self.publisher_uid, self.publisher = root_is_purelib, publisher_uid, publisher
        self.owner_uid, self.published_at, self.bytecode = owner_uid, published_at, bytecode
        self._files, self._dirs, self._rpaths = files, dirs, rpaths
        self.count, self.first = len(files), next(iter(files), None)
        self._body: Callable[[], bytes] | None = None

    @classmethod
    def deferred(cls, small: tuple[Any, ...], count: int, first: str | None, body: Callable[[], bytes]) -> Manifest:
        """A manifest whose :data:`SMALL` fields are ``small``, as parsed before from the bytes ``body`` returns,
        which are read and parsed again only when the file list is asked for."""
        key, wheel, name, version, dist_info, purelib, publisher_uid, publisher, owner_uid, at, bytecode = small
        made = cls(key, wheel, name, version, dist_info, purelib, publisher_uid, publisher, owner_uid, at, {}, [],
                   bytecode)
        made.count, made.first, made._body = count, first, body
        return made

    def small(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self.SMALL)

    @property
    def files(self) -> dict[str, FileEntry]:
        if self._body is not None:
            self._read_body()
        return self._files

    @property
    def dirs(self) -> list[str]:
        if self._body is not None:
            self._read_body()
        return self._dirs

    @property
    def rpaths(self) -> dict[str, list[str]] | None:
        """RPATH/RUNPATH entries of the tree's ELF files that have any, found when it was published (what folding
        needs to know, without opening every library on every install); None in manifests written before it was
        recorded."""
        if self._body is not None:
            self._read_body()
        return self._rpaths

    def _read_body(self) -> None:
        body, self._body = self._body, None
        assert body is not None
        try:
            full = Manifest.from_json(body())
        except ValueError as e:  # it parsed before, from a file of the same identity: never, short of a bug
            raise StoreError(f"the manifest of {self.key} ({self.wheel}) is corrupt: {e}",
                             hint="run wheelstore verify") from None
        if full.small() != self.small():  # the bytes are those the small fields came from: never, short of a bug
            raise StoreError(f"the manifest of {self.key} ({self.wheel}) is not the one it was read as",
                             hint="run the command again; if it persists, wheelstore verify")
        self._files, self._dirs, self._rpaths = full._files, full._dirs, full._rpaths
        self.count, self.first = full.count, full.first

    def _replace(self, **changes: Any) -> Manifest:
        return Manifest(**{f: changes.get(f, getattr(self, f)) for f in self.FIELDS})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and all(getattr(self, f) == getattr(other, f) for f in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # it holds dicts

    def __repr__(self) -> str:
        return f"Manifest(key={self.key!r}, wheel={self.wheel!r}, files={self.count})"

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "key": self.key,
            "wheel": self.wheel,
            "name": self.name,
            "version": self.version,
            "dist_info": self.dist_info,
            "root_is_purelib": self.root_is_purelib,
            "publisher_uid": self.publisher_uid,
            "publisher": self.publisher,
            "owner_uid": self.owner_uid,
            "published_at": self.published_at,
            "dirs": sorted(self.dirs),
            "files": {path: entry.to_json() for path, entry in sorted(self.files.items())},
        }
        if self.bytecode is not None:
            doc["bytecode"] = self.bytecode
        if self.rpaths is not None:
            doc["rpaths"] = {path: list(entries) for path, entries in sorted(self.rpaths.items())}
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a manifest; raise ``ValueError`` naming what is wrong if it is not a complete format-1 manifest whose
        every path is safe to build on (:mod:`wheelstore.store.manifest_check`): a publisher may have forged it."""
        try:
            doc = json.loads(data)
        except RecursionError:  # nested deeper than the parser goes: not ours
            raise ValueError("nested too deeply to be a manifest") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a wheelstore format 1 manifest")
        try:
            key, wheel, name, version, dist_info = (doc[f] for f in ("key", "wheel", "name", "version", "dist_info"))
            bytecode = doc.get("bytecode")
            check.check_fields(key, wheel, name, version, dist_info, bytecode)
            files = _entries(doc["files"])
            dirs = doc["dirs"]
            if type(dirs) is not list:
                raise TypeError("dirs must be a list")
            check.check_paths(files, dirs, dist_info)
            rpaths = _rpaths(doc.get("rpaths"))
            if rpaths:
                check.check_rpaths(rpaths, files)
            root_is_purelib = doc["root_is_purelib"]
            if type(root_is_purelib) is not bool:
                raise TypeError("root_is_purelib must be true or false")
            return cls(
                key=key,
                wheel=wheel,
                name=name,
                version=version,
                dist_info=dist_info,
                root_is_purelib=root_is_purelib,
                publisher_uid=check.check_uid("publisher_uid", doc["publisher_uid"]),
                publisher=check.check_text("publisher", doc["publisher"]),
                owner_uid=check.check_uid("owner_uid", doc["owner_uid"]),
                published_at=check.check_text("published_at", doc["published_at"]),
                files=files,
                dirs=dirs,
                bytecode=bytecode,
                rpaths=rpaths,
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"incomplete manifest: {e}") from None


def _entries(raw: Any) -> dict[str, FileEntry]:
    """The file entries, checked for shape and types in a few passes and then made without per-entry calls: every
    install parses one per file of every tree it links."""
    if type(raw) is not dict:
        raise TypeError("files must map names to entries")
    bad = [entry for entry in raw.values() if type(entry) is not list or len(entry) != 5]
    if bad:
        raise TypeError(f"a file entry must be a list of 5 fields, not {check.show(str(bad[0]))}")
    check.check_entries(raw.values())
    make = tuple.__new__
    return {path: make(FileEntry, entry) for path, entry in raw.items()}


def _rpaths(raw: Any) -> dict[str, list[str]] | None:
    if raw is None:
        return None
    if type(raw) is not dict or not all(type(v) is list and all(type(e) is str for e in v) for v in raw.values()):
        raise TypeError("rpaths must map file names to lists of strings")
    return {str(path): list(entries) for path, entries in raw.items()}


def named(data: bytes) -> tuple[str, str]:
    """(name, version) of the manifest ``data`` for a report, ``("?", "?")`` if unknown. One that fails its check
    (forged, or corrupt) is named by the wheel file name it gives, when that parses as one: its name field may be
    the forgery."""
    from ..base.names import parse_wheel_name

    try:
        m = Manifest.from_json(data)
        return m.name, m.version
    except ValueError:
        pass
    try:
        name, version, _build, _tags = parse_wheel_name(json.loads(data)["wheel"])
    except (ValueError, TypeError, KeyError, RecursionError):  # not a wheel's file name, or no manifest at all
        return "?", "?"
    return str(name), str(version)
