"""The check a manifest passes before anything is built from it: every field a path is made from, checked as a wheel's
member names are (:func:`wheelstore.store.wheel.check_member_name`).

A manifest is its publisher's input. In a group store that is any member, who may rewrite their own manifest after
publishing; installs join its name, dist-info and file names onto venv paths and a check walks the directories it
lists. So each path must be relative and normalised (no ``..``, ``.``, empty component, leading ``/``, NUL or
backslash), ``.data`` entries must sit in a known scheme, and the entries must be a tree a walk of ``dirs`` sees
whole: every file's and directory's parent is listed, nothing is both a file and a directory. It runs on every cold
parse of every tree (numpy's manifest lists 1,400 files), so the common case is a few passes in C over joined
strings; only a manifest that fails is looked at path by path, to name what is wrong.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Collection, Iterable
from typing import Any

#: a tree key: a wheel's sha256, or a pyc unit's ``<sha256>-<cache tag>``
KEY = re.compile(r"[0-9a-f]{64}(?:-[a-z0-9_.-]+)?")
#: a cache tag ("cpython-311")
_TAG = re.compile(r"[a-z0-9][a-z0-9_.-]*")
#: a canonical distribution name (PEP 503): words of letters and digits joined by single hyphens
_NAME = re.compile(r"[^\W_]+(?:-[^\W_]+)*")
_SEPARATORS = re.compile(r"[-_.]+")
#: a version as packaging prints one (PEP 440), and a local part
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.!+_-]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: the install schemes a wheel's .data directory may hold (PEP 427); reading a wheel holds it to the same
DATA_SCHEMES = frozenset({"purelib", "platlib", "headers", "scripts", "data"})
_MAX_SHOWN = 120
#: the deepest entry, in a manifest or a wheel: every walk of a tree or a venv (install, the check, verify, gc,
#: uninstall) goes a directory level per call, and Python's stack is about a thousand calls deep; real wheels nest a
#: few dozen levels
MAX_DEPTH = 128


def show(text: str) -> str:
    """``text`` quoted for a one-line message, control characters escaped, cut short if long."""
    return repr(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "...")


def check_fields(key: Any, wheel: Any, name: Any, version: Any, dist_info: Any, bytecode: Any) -> None:
    """The small fields: raise ValueError naming the first bad one."""
    if type(key) is not str or not KEY.fullmatch(key):
        raise ValueError(f"key {show(str(key))} is not a tree key")
    if type(wheel) is not str or not wheel or "/" in wheel or wheel in (".", "..") or _CONTROL.search(wheel):
        raise ValueError(f"wheel {show(str(wheel))} is not a file name")
    if type(name) is not str or not _NAME.fullmatch(name) or name != name.lower():
        raise ValueError(f"name {show(str(name))} is not a canonical distribution name")
    if type(version) is not str or not _VERSION.fullmatch(version):
        raise ValueError(f"version {show(str(version))} is not a version")
    if (type(dist_info) is not str or "/" in dist_info or "\\" in dist_info or _CONTROL.search(dist_info)
            or not dist_info.endswith(".dist-info")
            or _SEPARATORS.sub("-", dist_info[: -len(".dist-info")].rpartition("-")[0]).lower() != name):
        raise ValueError(f"dist_info {show(str(dist_info))} is not {name}'s .dist-info directory")
    if bytecode is not None and (type(bytecode) is not str or not _TAG.fullmatch(bytecode)):
        raise ValueError(f"bytecode {show(str(bytecode))} is not a cache tag")


def check_text(field: str, value: Any) -> str:
    """A field that is only ever shown (publisher, published_at): a string without control characters."""
    if type(value) is not str or _CONTROL.search(value):
        raise ValueError(f"{field} {show(str(value))} is not plain text")
    return value


def check_uid(field: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{field} {show(str(value))} is not a user id")
    return value


def check_entries(values: Collection[list[Any]]) -> None:
    """Each file entry: ``[size >= 0, sha256 hex, mode <= 0o7777, mtime_ns, ctime_ns]``, integers that fit the
    int64 arrays a check keeps them in, and a string. By columns: a pass in C per field."""
    if not values:
        return
    sizes, hexes, modes, mtimes, ctimes = zip(*values, strict=True)
    try:
        size_array, mode_array = array("q", sizes), array("q", modes)
        array("q", mtimes), array("q", ctimes)
    except (TypeError, OverflowError):
        raise ValueError("a file entry has a size, mode or time that is not a 64-bit integer") from None
    if min(size_array) < 0 or min(mode_array) < 0 or max(mode_array) > 0o7777:
        raise ValueError("a file entry has a negative size or an impossible mode")
    try:
        digits = "".join(hexes).encode("ascii")
    except (TypeError, UnicodeEncodeError):
        digits = b"?"
    if set(map(len, hexes)) != {64} or digits.translate(None, b"0123456789abcdef"):
        raise ValueError("a file entry has a sha256 that is not 64 lowercase hex digits")


def check_paths(files: Collection[str], dirs: list[str], dist_info: str) -> None:
    """The file and directory entries: each a clean relative path, ``.data`` ones in a known scheme, and together a
    tree whose every entry a walk of ``dirs`` from the root reaches, once. Raise ValueError naming a bad one."""
    if not all(type(d) is str for d in dirs):
        raise ValueError("dirs must be a list of paths")
    every = [*files, *dirs]
    if every:
        joined = "/" + "/".join(every) + "/"  # each component of each path now sits between two slashes
        if "//" in joined or "/./" in joined or "/../" in joined or "\\" in joined or "\0" in joined:
            raise ValueError(_first_bad(every))
        if max(map(_slashes, every)) >= MAX_DEPTH:
            deepest = max(every, key=_slashes)
            raise ValueError(f"path {show(deepest)} is nested deeper than {MAX_DEPTH} directories")
    dirset = set(dirs)
    if len(dirset) != len(dirs):
        raise ValueError(f"dirs lists {show(_first_repeated(dirs))} twice")
    if not dirset.isdisjoint(files):
        raise ValueError(f"{show(next(d for d in dirs if d in files))} is listed as a file and as a directory")
    file_parents = {p.rpartition("/")[0] for p in files}
    parents = file_parents.union([d.rpartition("/")[0] for d in dirs])
    parents.discard("")
    if not parents <= dirset:
        missing = min(parents - dirset)
        child = next(p for p in every if p.rpartition("/")[0] == missing)
        raise ValueError(f"{show(child)} is in {show(missing)}, which dirs does not list")
    data_dir = dist_info[: -len(".dist-info")] + ".data"
    for d in dirs:
        top, _, rest = d.partition("/")
        if top.endswith(".data") and (top != data_dir or (rest and rest.partition("/")[0] not in DATA_SCHEMES)):
            raise ValueError(f"directory {show(d)} is not in a known scheme of {data_dir}")
    if data_dir in file_parents:  # a file directly in it: its directories were all checked above
        raise ValueError(f"{show(next(f for f in files if f.rpartition('/')[0] == data_dir))} is not in a "
                         f"scheme of {data_dir}")


def check_rpaths(rpaths: Iterable[str], files: Collection[str]) -> None:
    for path in rpaths:
        if path not in files:
            raise ValueError(f"rpaths names {show(path)}, which is not a file of the tree")


def _slashes(path: str) -> int:
    return path.count("/")


def _first_bad(paths: list[str]) -> str:
    """Why the first path that fails the joined test does."""
    for p in paths:
        if not p or "\0" in p or "\\" in p:
            return f"path {show(p)} has an invalid name"
        if p.startswith("/"):
            return f"path {show(p)} is absolute"
        parts = p.split("/")
        if ".." in parts:
            return f"path {show(p)} climbs out with '..'"
        if "" in parts or "." in parts:
            return f"path {show(p)} is not a normalised path"
    return "a path is not a normalised path"  # pragma: no cover - the joined test found one


def _first_repeated(items: list[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""  # pragma: no cover
