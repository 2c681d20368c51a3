"""Reading a venv's dist-info directories: which distributions are installed, by whom, and from which store tree.

Only what the store layer also needs (gc roots read a venv's distributions and their origin files) lives here; laying
out and removing dist-infos belongs to the venv layer."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .errors import InstallError
from .interpreter import Interpreter
from .names import canonical

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

INSTALLER_NAME = "wheelstore"
#: in each dist-info wheelstore installs: which store tree it came from and how it was linked (for edit --undo, gc)
ORIGIN_FILE = "WHEELSTORE"


class Distribution(NamedTuple):
    """A distribution installed in a venv, as its dist-info directory describes it."""

    name: NormalizedName
    display_name: str
    version: str
    dist_info: Path
    installer: str

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.display_name,
            "version": self.version,
            "installer": self.installer,
            "location": str(self.dist_info.parent),
        }


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def installed(interpreter: Interpreter) -> dict[NormalizedName, Distribution]:
    """Every distribution in the venv's site-packages, by canonical name."""
    found: dict[NormalizedName, Distribution] = {}
    for site in dict.fromkeys((interpreter.paths["purelib"], interpreter.paths["platlib"])):
        try:
            entries = sorted(os.listdir(site))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.endswith(".dist-info"):
                continue
            dist_info = Path(site) / entry
            dist = describe(dist_info)
            if dist is not None:
                found.setdefault(dist.name, dist)
    return found


def describe(dist_info: Path) -> Distribution | None:
    try:
        # never blocking, and only a regular file: in a linked venv METADATA leads into a tree, whose owner may put
        # a FIFO or a link to a device there, which would hang every command that lists the venv
        fd = os.open(dist_info / "METADATA", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                name, version = _from_dir_name(dist_info.name)
            else:
                head = f.read(_METADATA_HEAD)  # Name and Version open every METADATA; its description can be long
                whole = len(head) < _METADATA_HEAD
                lines = head if whole else head[: head.rfind(b"\n") + 1]  # complete lines only
                name, version = name_and_version(lines.decode("utf-8", "replace"))
                if (not name or not version) and not whole:
                    name, version = name_and_version((head + f.read()).decode("utf-8", "replace"))
        except OSError:
            return None
    if not name or not version:
        return None
    try:
        installer = (dist_info / "INSTALLER").read_text(encoding="utf-8").strip()
    except OSError:
        installer = ""
    return Distribution(canonical(name), name, version, dist_info, installer)


def _from_dir_name(dist_info: str) -> tuple[str | None, str | None]:
    """Name and version from a ``{name}-{version}.dist-info`` directory's name, for a METADATA that is not a regular
    file: so that the distribution can still be listed and uninstalled."""
    name, _, version = dist_info.removesuffix(".dist-info").rpartition("-")
    return (name, version) if name and version else (None, None)


#: how much of a METADATA file is read first
_METADATA_HEAD = 8192


def name_and_version(metadata: str) -> tuple[str | None, str | None]:
    """The Name and Version headers of a METADATA file. Both are single-line fields of the header block, so a scan
    of that block finds them; the email parser, which also reads the long description, cost more than the rest of
    a warm install's bookkeeping."""
    found: dict[str, str] = {}
    for line in metadata.split("\n\n", 1)[0].splitlines():
        field, sep, value = line.partition(":")
        if sep and not line[:1].isspace():
            field = field.strip().lower()
            if field in ("name", "version"):
                found.setdefault(field, value.strip())
                if len(found) == 2:
                    break
    return found.get("name"), found.get("version")


def origin(dist: Distribution) -> dict[str, str] | None:
    """Where a distribution installed by wheelstore came from, or None for anyone else's install."""
    text = read_regular(dist.dist_info / ORIGIN_FILE)
    try:
        data = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def read_regular(path: Path) -> str | None:
    """A regular file's text, never blocking on a FIFO planted in its place (doctor reads other users' venvs, and a
    linked dist-info's files lead into a tree)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(fd, "rb") as f:
        try:
            return f.read().decode("utf-8", "replace") if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except OSError:
            return None


def record_text(dist: Distribution, consequence: str = "") -> str:
    """The distribution's RECORD; without one (``consequence``: what that stops) it cannot be touched safely."""
    try:
        return (dist.dist_info / "RECORD").read_text(encoding="utf-8")
    except OSError:
        raise InstallError(f"{dist.display_name} {dist.version} has no RECORD{consequence}",
                           hint="another tool removed it part way: wheelstore install or sync reinstalls it, "
                                "wheelstore uninstall removes what is left") from None


#: files pip writes itself into a dist-info directory, never taken from the wheel
INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", ORIGIN_FILE})
