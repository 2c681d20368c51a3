"""Reading a wheel archive and proving it safe before anything is written.

All structural checks (file name, archive integrity, member names and types, RECORD coverage, the sizes the zip's
central directory promises against RECORD's and against the unpacked-size limit) run before the store is touched.
Member hashes and sizes are checked while the members are streamed out, so each byte is decompressed once; a member
that grows past its size stops at once, before more than that size is written.

Bytecode a wheel ships in ``__pycache__`` directories must be in RECORD with its size, like any member, and is then
left out, never unpacked (so its hash is never read): nobody can check bytecode against its source, and an
unchecked-hash pyc runs instead of its source. pip compiles over it (``compileall`` with ``force=True``); the store
compiles its own (:mod:`wheelstore.store.bytecode`). All of it goes, not only the pycs beside their module's source: a
source in ``.data/purelib`` lands beside a root ``__pycache__``, and Python never imports a ``__pycache__`` pyc
without its source, so none is needed. A module shipped only as bytecode (``mod.pyc``
beside no ``mod.py``) is kept, as pip keeps it: there is no source to prefer, and it is the wheel's code like any
other (beside a ``mod.py``, Python imports the source).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import stat
import zlib
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from ..base.errors import HashMismatch, RecordMismatch, UnsafeMember, WheelError, WheelstoreError
from ..base.fsio import CHUNK
from ..base.hooks import checkpoint
from . import entrypoints
from .manifest_check import DATA_SCHEMES, MAX_DEPTH

if TYPE_CHECKING:
    import zipfile

    from packaging.tags import Tag
    from packaging.utils import NormalizedName
    from packaging.version import Version

#: files a wheel's RECORD may leave without a hash (PEP 376/427): RECORD itself and its signatures
UNHASHED = ("RECORD", "RECORD.jws", "RECORD.p7s")
#: longest name component and member path accepted: NAME_MAX, and PATH_MAX less room for a store and venv prefix
MAX_COMPONENT = 255
MAX_PATH = 3000
#: hash algorithms RECORD may use; weaker ones are refused as PEP 427 asks
ALLOWED_ALGORITHMS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b"})


#: shipped bytecode: ``pkg/__pycache__/mod.cpython-311.pyc``, ``__pycache__/mod.cpython-311.opt-1.pyc``, ...
_SHIPPED_PYC = re.compile(r"(?:.*/)?__pycache__/[^/]*\.pyc")


class Limit(NamedTuple):
    """The most bytes a wheel may unpack to, and where that number was set (for the message that names it)."""

    size: int
    source: str


class Member(NamedTuple):
    """A regular file in the wheel, with what RECORD promises about it."""

    name: str
    info: zipfile.ZipInfo
    executable: bool
    algorithm: str | None
    digest: bytes | None
    size: int | None


_HEX64 = re.compile(r"[0-9a-f]{64}")


def normalize_sha256(value: str) -> str:
    """Accept ``HEX`` or ``sha256:HEX`` (pip and pylock spellings); return lowercase hex."""
    text = value.strip().lower().removeprefix("sha256:").removeprefix("sha256=")
    if not _HEX64.fullmatch(text):  # a lockfile may carry a thousand of these
        raise WheelError(f"{value!r} is not a sha256 hex digest")
    return text


def check_member_name(name: str, *, where: str) -> str:
    """Return ``name`` as a tree-relative path, or raise naming it if it could escape the tree."""
    path = name.rstrip("/") if name.endswith("/") else name
    if not path or "\x00" in path or "\\" in path:
        raise UnsafeMember(f"{where}: member {name!r} has an invalid name")
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        raise UnsafeMember(f"{where}: member {name!r} is an absolute path")
    parts = path.split("/")
    if ".." in parts:
        raise UnsafeMember(f"{where}: member {name!r} escapes the tree with '..'")
    if any(p in ("", ".") for p in parts):
        raise UnsafeMember(f"{where}: member {name!r} is not a normalized path")
    if len(path.encode()) > MAX_PATH or any(len(p.encode()) > MAX_COMPONENT for p in parts):
        raise UnsafeMember(f"{where}: member {name[:80]!r}... has a name too long for a filesystem")
    if len(parts) > MAX_DEPTH:
        raise UnsafeMember(f"{where}: member {name[:80]!r}... is nested deeper than {MAX_DEPTH} directories")
    return path


def _zip_errors() -> tuple[type[Exception], ...]:
    """What reading a member can raise: corrupt data, encryption, an unsupported compression method."""
    import zipfile

    return zipfile.BadZipFile, EOFError, zlib.error, RuntimeError, NotImplementedError, ValueError


def _is_under(path: str, directory: str) -> bool:
    return path.startswith(directory + "/")


class WheelArchive:
    """An open, structurally validated wheel.

    The bytes that are hashed are the bytes that get unzipped and published. The file is opened once, so replacing
    the path does not matter; if anyone else could rewrite the file in place (it is not ours, or it is group- or
    world-writable, or has an ACL), it is copied into a private spool file while it is hashed, and unzipped from
    there.
    """

    def __init__(self, path: Path, expected_sha256: str | None = None, *, spool_dir: Path | None = None) -> None:
        self.path = path
        #: the most its members may unpack to (:meth:`set_limit`); what the zip's central directory says they unpack to
        #: (the zip module stops each member there); what they have unpacked to so far
        self.limit: Limit | None = None
        self.unpacked_size = 0
        self.unpacked = 0
        #: the bytecode the wheel ships, listed in RECORD and left out of ``members`` (see the module docstring)
        self.dropped: list[str] = []
        self.filename = path.name
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise WheelError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise WheelError(f"{path}: is a directory, not a wheel") from None
        except PermissionError:
            raise WheelError(f"{path}: permission denied") from None
        except OSError as e:
            raise WheelError(f"{path}: cannot be read ({e.strerror})") from None
        from packaging.utils import (  # here: installs from the store skip it
            InvalidWheelFilename,
            parse_wheel_filename,
        )

        try:
            try:
                name, version, _build, tags = parse_wheel_filename(self.filename)
            except InvalidWheelFilename as e:
                raise WheelError(f"{self.filename}: not a wheel file name ({e})") from None
            self.name: NormalizedName = name
            self.version: Version = version
            self.tags: frozenset[Tag] = tags
            self.sha256, self.size = self._hash(spool_dir if _others_can_write(self._file.fileno()) else None)
            checkpoint("hashed")
            if expected_sha256 is not None and normalize_sha256(expected_sha256) != self.sha256:
                raise HashMismatch(
                    f"{self.filename}: sha256 is {self.sha256}, expected {normalize_sha256(expected_sha256)}"
                )
            import zipfile  # here: installs from a warm store import this module but never open a wheel

            try:
                self._zip = zipfile.ZipFile(self._file)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
                raise WheelError(f"{self.filename}: not a valid zip archive, truncated or corrupt ({e})") from None
            self.dist_info, self.members, self.dirs = self._validate()
        except BaseException:
            self._file.close()
            raise

    # -- context manager -------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WheelArchive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- validation ------------------------------------------------------------------------------------------------

    def _hash(self, spool_dir: Path | None) -> tuple[str, int]:
        """Hash the file; with ``spool_dir``, also copy it there and switch to the copy."""
        spool: BinaryIO | None = None
        if spool_dir is not None:
            import tempfile  # here: a warm install never reads a wheel

            try:
                spool = tempfile.TemporaryFile(dir=spool_dir)  # unnamed (O_TMPFILE) where supported: no leftovers
            except OSError:
                spool = tempfile.TemporaryFile()
        h = hashlib.sha256()
        size = 0
        try:
            while chunk := self._file.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
                if spool is not None:
                    try:
                        spool.write(chunk)
                    except OSError as e:  # writing the copy (into the store's staging), not reading the wheel
                        raise _spool_failed(e, spool_dir, self.filename) from None
        except OSError as e:
            if spool is not None:
                spool.close()
            raise WheelError(f"{self.path}: cannot be read ({e.strerror})") from None
        except WheelstoreError:
            if spool is not None:
                spool.close()
            raise
        if spool is not None:
            self._file.close()
            self._file = spool
        self._file.seek(0)
        return h.hexdigest(), size

    def _read(self, info: zipfile.ZipInfo) -> bytes:
        try:
            return self._zip.read(info)
        except _zip_errors() as e:
            raise WheelError(f"{self.filename}: member {info.filename!r} is corrupt ({e})") from None

    def _validate(self) -> tuple[str, list[Member], set[str]]:
        where = self.filename
        files: dict[str, zipfile.ZipInfo] = {}
        dirs: set[str] = set()
        for info in self._zip.infolist():
            path = check_member_name(info.filename, where=where)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise UnsafeMember(f"{where}: member {info.filename!r} is a symlink")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeMember(f"{where}: member {info.filename!r} is a device, fifo or socket")
            if path in files or (path in dirs and not info.is_dir()):
                raise UnsafeMember(f"{where}: member {info.filename!r} appears twice")
            if info.is_dir() or kind == stat.S_IFDIR:
                dirs.add(path)
            else:
                files[path] = info
        for path in files:  # every parent of a file must be a directory, not also a file
            parent = path.rpartition("/")[0]
            while parent:
                if parent in files:
                    raise UnsafeMember(f"{where}: member {parent!r} is both a file and a directory")
                dirs.add(parent)
                parent = parent.rpartition("/")[0]

        dist_info = self._find_dist_info(files)
        self._check_data_dir(files, dist_info)
        self._check_wheel_metadata(files, dist_info)
        self._check_entry_points(files, dist_info)
        record = self._read_record(files, dist_info)
        unhashed = {f"{dist_info}/{n}" for n in UNHASHED}
        members = []
        for path, info in files.items():
            if path not in record:
                if path in unhashed:
                    record[path] = (None, None, None)
                else:
                    raise RecordMismatch(f"{where}: member {path!r} is missing from RECORD")
            algorithm, digest, size = record[path]
            if size is not None and size != info.file_size:
                raise RecordMismatch(f"{where}: {path!r} is {info.file_size} bytes in the zip, RECORD says {size}")
            mode = info.external_attr >> 16
            members.append(Member(path, info, bool(mode & 0o111), algorithm, digest, size))
        extra = sorted(set(record) - set(files))
        if extra:
            raise RecordMismatch(f"{where}: RECORD lists {extra[0]!r}, which is not in the wheel")
        self.unpacked_size = sum(info.file_size for info in files.values())
        self.dropped = [m.name for m in members if _SHIPPED_PYC.fullmatch(m.name)]
        return dist_info, [m for m in members if not _SHIPPED_PYC.fullmatch(m.name)], dirs

    def set_limit(self, limit: Limit) -> None:
        """Refuse the wheel now if its members would unpack to more than ``limit``; enforce it while they stream."""
        self.limit = limit
        self._check_limit(self.unpacked_size)

    def _check_limit(self, size: int) -> None:
        """Refuse a wheel that unpacks (or, while streaming, has unpacked) to more than the limit."""
        if self.limit is not None and size > self.limit.size:
            raise WheelError(
                f"{self.filename} unpacks to more than {_size_text(self.limit.size)}, the limit "
                f"({'the default' if self.limit.source == 'default' else 'set by ' + self.limit.source})",
                hint="if the wheel is trusted, raise it, as in WHEELSTORE_MAX_UNPACKED=16G, "
                "or max_unpacked = \"16G\" in the [store] table of the store's config.toml",
            )

    def _find_dist_info(self, files: dict[str, zipfile.ZipInfo]) -> str:
        tops = {p.split("/", 1)[0] for p in files if "/" in p and p.split("/", 1)[0].endswith(".dist-info")}
        if len(tops) != 1:
            raise WheelError(f"{self.filename}: expected exactly one .dist-info directory, found {len(tops)}")
        top = tops.pop()
        dist_name, _, dist_version = top.removesuffix(".dist-info").rpartition("-")
        from packaging.utils import canonicalize_name, canonicalize_version

        if canonicalize_name(dist_name) != self.name or canonicalize_version(dist_version) != canonicalize_version(
            self.version
        ):
            raise WheelError(f"{self.filename}: {top} does not match the file name")
        return top

    def _check_data_dir(self, files: dict[str, zipfile.ZipInfo], dist_info: str) -> None:
        """Only ``{name}-{version}.data/<scheme>/...`` may sit beside the code: an installer maps each scheme."""
        data = dist_info.removesuffix(".dist-info") + ".data"
        for path in files:
            top, _, rest = path.partition("/")
            if not top.endswith(".data"):
                continue
            if top != data:
                raise UnsafeMember(f"{self.filename}: member {path!r} is in {top}, expected {data}")
            scheme, _, sub = rest.partition("/")
            if scheme not in DATA_SCHEMES or not sub:
                raise UnsafeMember(f"{self.filename}: member {path!r} is not under a known .data scheme")
            if scheme == "scripts":
                entrypoints.check_not_venv_own(sub, f"{self.filename}: script {path!r}")
            elif scheme == "data":
                entrypoints.check_not_venv_own_data(sub, f"{self.filename}: data file {path!r}")

    def _check_wheel_metadata(self, files: dict[str, zipfile.ZipInfo], dist_info: str) -> None:
        info = files.get(f"{dist_info}/WHEEL")
        if info is None:
            raise WheelError(f"{self.filename}: {dist_info}/WHEEL is missing")
        from email.parser import (
            HeaderParser,  # here: a warm install never opens a wheel
        )

        headers = HeaderParser().parsestr(self._read(info).decode("utf-8", "replace"))
        version = headers.get("Wheel-Version", "")
        if version.split(".")[0] != "1":
            raise WheelError(f"{self.filename}: unsupported Wheel-Version {version!r}")
        self.root_is_purelib = headers.get("Root-Is-Purelib", "true").strip().lower() == "true"

    def _check_entry_points(self, files: dict[str, zipfile.ZipInfo], dist_info: str) -> None:
        """Refuse launchers that could run code of their own or replace the venv's own files, before publishing."""
        info = files.get(f"{dist_info}/entry_points.txt")
        if info is None:
            return
        if info.file_size > entrypoints.MAX_SIZE:
            raise WheelError(
                f"{self.filename}: {dist_info}/entry_points.txt is larger than {entrypoints.MAX_SIZE} bytes")
        entrypoints.from_bytes(self._read(info), self.filename)

    def _read_record(
        self, files: dict[str, zipfile.ZipInfo], dist_info: str
    ) -> dict[str, tuple[str | None, bytes | None, int | None]]:
        where = self.filename
        info = files.get(f"{dist_info}/RECORD")
        if info is None:
            raise RecordMismatch(f"{where}: {dist_info}/RECORD is missing")
        try:
            text = self._read(info).decode("utf-8")
            rows = list(csv.reader(io.StringIO(text)))
        except (UnicodeDecodeError, csv.Error) as e:
            raise RecordMismatch(f"{where}: RECORD is not a UTF-8 CSV file ({e})") from None
        unhashed = {f"{dist_info}/{n}" for n in UNHASHED}
        record: dict[str, tuple[str | None, bytes | None, int | None]] = {}
        for row in rows:
            if not row:
                continue
            if len(row) != 3:
                raise RecordMismatch(f"{where}: RECORD row {row!r} does not have 3 fields")
            path, hash_field, size_field = row
            path = check_member_name(path, where=f"{where}: RECORD")
            if path in record:
                raise RecordMismatch(f"{where}: RECORD lists {path!r} twice")
            if not hash_field:
                if path not in unhashed:
                    raise RecordMismatch(f"{where}: RECORD has no hash for {path!r}")
                record[path] = (None, None, None)
                continue
            algorithm, _, encoded = hash_field.partition("=")
            if algorithm not in ALLOWED_ALGORITHMS:
                raise RecordMismatch(f"{where}: RECORD uses hash {algorithm!r} for {path!r}; sha256 or stronger needed")
            try:
                digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
                size = int(size_field) if size_field else None
            except ValueError:
                raise RecordMismatch(f"{where}: RECORD row for {path!r} is malformed") from None
            record[path] = (algorithm, digest, size)
        return record

    # -- reading ---------------------------------------------------------------------------------------------------

    def extract(self, member: Member, write: Callable[[bytes], object]) -> str:
        """Stream ``member`` into ``write`` and return its sha256 hex; raise if it differs from RECORD.

        The caller must discard what was written when this raises.
        """
        sha256 = hashlib.sha256()
        record_hash = None
        if member.algorithm not in (None, "sha256"):
            record_hash = hashlib.new(member.algorithm)
        size = 0
        bound = member.info.file_size if member.size is None else member.size
        try:
            with self._zip.open(member.info) as f:
                while chunk := f.read(CHUNK):
                    size += len(chunk)
                    self.unpacked += len(chunk)
                    if size > bound:  # before writing: never more than the promised size reaches the disk
                        raise RecordMismatch(
                            f"{self.filename}: {member.name!r} is larger than the {bound} bytes "
                            f"{'the zip' if member.size is None else 'RECORD'} says")
                    self._check_limit(self.unpacked)
                    sha256.update(chunk)
                    if record_hash is not None:
                        record_hash.update(chunk)
                    write(chunk)
        except _zip_errors() as e:
            raise WheelError(f"{self.filename}: member {member.name!r} is corrupt ({e})") from None
        if member.size is not None and size != member.size:
            raise RecordMismatch(f"{self.filename}: {member.name!r} is {size} bytes, RECORD says {member.size}")
        if member.digest is not None:
            digest = (record_hash or sha256).digest()
            if digest != member.digest:
                raise RecordMismatch(f"{self.filename}: {member.name!r} does not match its RECORD hash")
        return sha256.hexdigest()


def _size_text(size: int) -> str:
    """``8 GiB``, ``64 MiB``, ``10 bytes``: a limit as people set it."""
    for shift, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.4g} {unit}"
    return f"{size} bytes"


def _spool_failed(e: OSError, spool_dir: Path | None, filename: str) -> WheelstoreError:
    """A failed write of the private copy of a wheel others could rewrite: the store's filesystem full, or else
    said as a write."""
    from ..base.mounts import no_space

    doing = f"copying {filename} into its staging"
    store = f"--store {spool_dir.parent} " if spool_dir is not None else ""
    full = no_space(e, spool_dir or ".", "the store", doing,
                    fix=f"free space there, or remove the trees no venv uses: wheelstore {store}gc")
    return full or WheelError(f"{doing} ({spool_dir}) failed: {e.strerror}")


def _others_can_write(fd: int) -> bool:
    """Whether someone other than this user (and root) could rewrite the open file in place."""
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return True
    try:
        return "system.posix_acl_access" in os.listxattr(fd)
    except OSError:
        return False
