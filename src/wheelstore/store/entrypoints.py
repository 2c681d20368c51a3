"""Console and GUI entry points, checked when a wheel is published and again before any launcher is written.

A launcher is Python source with the entry point's module and attributes written into it, so only what the entry
points specification allows may get there: ``importable.module:object.attr``, every part a Python identifier, and
optional ``[extras]`` (which a launcher ignores, as pip's do). Anything else could run code of its own in every venv
the tree is installed into. The launcher's name becomes a file in the venv's ``bin/``: it must be a plain file name,
and must not replace the venv's own files (its interpreters and activation scripts), which are what every other
command in that venv runs. Everything else in ``bin/`` was written by some distribution (a launcher or a
``.data/scripts`` file, always a regular file), and replacing it is what pip does too; so a name that is taken by
anything other than a regular file (a symlink such as ``python3.11t``, a directory) is refused as well, and the
venv's own names are refused even where they are not there yet.
"""

from __future__ import annotations

import configparser
import keyword
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from ..base.errors import EntryPointError

#: sections whose entries become launchers (the same launcher on POSIX)
SECTIONS = ("console_scripts", "gui_scripts")
#: entry_points.txt of the largest distributions is a few KiB
MAX_SIZE = 1 << 20
#: what ``python -m venv`` and virtualenv put in ``bin/`` themselves
_VENV_OWN = re.compile(
    r"(?:python|pythonw|pypy)(?:\d+(?:\.\d+)*t?)?|\U0001d70bthon|activate(?:\..*)?|activate_this\.py|Activate\.ps1",
    re.IGNORECASE,
)
_VALUE = re.compile(r"(?P<module>[^:\[\]]*):(?P<attrs>[^:\[\]]*?)\s*(?:\[(?P<extras>[^\[\]]*)\])?")
_EXTRA = re.compile(r"[A-Za-z0-9._-]+")
_HINT = "the wheel is broken or hostile; install a release of it that pip accepts"


class EntryPoint(NamedTuple):
    """One launcher to write: ``bin/<name>`` calling ``module:attrs``."""

    name: str
    module: str
    attrs: str


def read(path: Path, wheel: str) -> list[EntryPoint]:
    """The checked launchers of the ``entry_points.txt`` at ``path`` (a file in a store tree), in file order."""
    return from_bytes(_read_regular(path, wheel), wheel)


def from_bytes(data: bytes, wheel: str) -> list[EntryPoint]:
    """The checked launchers an ``entry_points.txt`` holding ``data`` asks for, in file order."""
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(data.decode("utf-8"))
    except (configparser.Error, UnicodeDecodeError) as e:
        raise EntryPointError(f"{wheel}: entry_points.txt is malformed ({e})") from None
    found = []
    for section in SECTIONS:
        if parser.has_section(section):
            found += [parse(name, value, wheel) for name, value in parser.items(section)]
    return found


def parse(name: str, value: str, wheel: str) -> EntryPoint:
    """One entry of ``console_scripts`` or ``gui_scripts``, checked; raise naming the wheel and the entry point."""
    what = f"{wheel}: entry point {name!r} = {value!r}"
    check_name(name, what)
    match = _VALUE.fullmatch(value.strip())
    if match is None:
        raise EntryPointError(f"{what} is not of the form module:attribute [extras]", hint=_HINT)
    module, attrs = match["module"].strip(), match["attrs"].strip()
    if not attrs:  # pip refuses these too: a launcher needs something to call
        raise EntryPointError(f"{what} names no callable", hint=_HINT)
    if not _dotted(module) or not _dotted(attrs):
        raise EntryPointError(f"{what}: module and attribute must be dotted Python identifiers", hint=_HINT)
    extras = match["extras"]
    if extras is not None and not all(_EXTRA.fullmatch(e.strip()) for e in extras.split(",") if e.strip()):
        raise EntryPointError(f"{what} has malformed extras", hint=_HINT)
    return EntryPoint(name, module, attrs)


def check_name(name: str, what: str) -> None:
    """Refuse a launcher name that is not a plain file name, or that is one of the venv's own files."""
    if (not name or "/" in name or "\x00" in name or name[0] in ".-" or not name.isprintable()
            or len(name.encode()) > 255):
        raise EntryPointError(f"{what}: {name!r} is not a plain file name for a script", hint=_HINT)
    check_not_venv_own(name, what)


def check_not_venv_own(name: str, what: str) -> None:
    """Refuse a script name that is one of the venv's own files (for launchers and ``.data/scripts`` alike)."""
    if _VENV_OWN.fullmatch(name):
        raise EntryPointError(f"{what} would replace the venv's own {name}", hint=_HINT)


def check_not_venv_own_data(sub: str, what: str) -> None:
    """Refuse a ``.data/data`` file (``sub``, relative to the venv's prefix) that is one of the venv's own files:
    that scheme installs into the prefix, so ``data/bin/python3`` is ``bin/python3`` and ``data/pyvenv.cfg`` the
    venv's configuration."""
    head, _, name = sub.rpartition("/")
    if sub == "pyvenv.cfg" or (head == "bin" and _VENV_OWN.fullmatch(name)):
        raise EntryPointError(f"{what} would replace the venv's own {sub}", hint=_HINT)


def check_free(scripts_dir: str, name: str, what: str) -> None:
    """Refuse a launcher whose place in ``bin/`` is taken by anything but a regular file (which a distribution
    wrote, and which pip would replace too): a symlink or directory there is the venv's own or the user's."""
    try:
        st = os.lstat(os.path.join(scripts_dir, name))
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise EntryPointError(f"{what} would replace {os.path.join(scripts_dir, name)}, which no distribution wrote",
                              hint=f"remove {os.path.join(scripts_dir, name)} if it is not needed")


def _dotted(text: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in text.split("."))


def _read_regular(path: Path, wheel: str) -> bytes:
    """The file's bytes, read without blocking on a FIFO or following a link someone put in its place."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise EntryPointError(f"{wheel}: cannot read {path} ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIZE:
            raise EntryPointError(f"{wheel}: {path} is not a regular file of at most {MAX_SIZE} bytes",
                                  hint="run wheelstore verify --repair")
        data = b""
        while len(data) <= MAX_SIZE and (chunk := os.read(fd, MAX_SIZE + 1 - len(data))):
            data += chunk
        return data
    finally:
        os.close(fd)
