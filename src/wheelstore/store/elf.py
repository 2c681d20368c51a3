"""ELF facts: the $ORIGIN RPATH/RUNPATH entries of a shared library, read without running anything, and whether one
leaves its tree.

Publishing records them in the manifest (so a warm install reads no ELF header); folding refuses to fold a directory
whose libraries would climb out of their own tree through a symlink."""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 0, 5, 15, 29
#: sanity limits: anything beyond these is not an ELF file a linker made
_MAX_PHNUM = 4096
_MAX_DYNAMIC = 1 << 20
_MAX_STRING = 1 << 16


def elf_rpaths(fd: int) -> list[str] | None:
    """The RPATH and RUNPATH entries of the ELF file open at ``fd``, or None if it is not an ELF file.

    Reads the ELF header, the program headers, the PT_DYNAMIC segment, and the strings DT_RPATH/DT_RUNPATH point
    to in DT_STRTAB (a virtual address, mapped to a file offset through the PT_LOAD segments). A truncated or
    malformed file yields what could be read.
    """
    ident = os.pread(fd, 64, 0)
    if len(ident) < 52 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return None
    wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
    if wide:
        _t, _m, _v, _e, phoff, _sh, _f, _eh, phentsize, phnum = struct.unpack_from(order + "HHIQQQIHHH", ident, 16)
        ph_fmt, dyn_fmt = order + "IIQQQQQQ", order + "qQ"
    else:
        _t, _m, _v, _e, phoff, _sh, _f, _eh, phentsize, phnum = struct.unpack_from(order + "HHIIIIIHHH", ident, 16)
        ph_fmt, dyn_fmt = order + "IIIIIIII", order + "iI"
    if phnum > _MAX_PHNUM or phentsize < struct.calcsize(ph_fmt):
        return []
    table = os.pread(fd, phnum * phentsize, phoff)
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    dynamic: tuple[int, int] | None = None  # (offset, filesz)
    for i in range(len(table) // phentsize):
        fields = struct.unpack_from(ph_fmt, table, i * phentsize)
        if wide:
            p_type, _flags, offset, vaddr, _paddr, filesz = fields[:6]
        else:
            p_type, offset, vaddr, _paddr, filesz = fields[:5]
        if p_type == _PT_LOAD:
            loads.append((vaddr, filesz, offset))
        elif p_type == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return []
    data = os.pread(fd, min(dynamic[1], _MAX_DYNAMIC), dynamic[0])
    size = struct.calcsize(dyn_fmt)
    strtab: int | None = None
    wanted: list[int] = []
    for i in range(len(data) // size):
        tag, value = struct.unpack_from(dyn_fmt, data, i * size)
        if tag == _DT_NULL:
            break
        if tag == _DT_STRTAB:
            strtab = value
        elif tag in (_DT_RPATH, _DT_RUNPATH):
            wanted.append(value)
    if strtab is None or not wanted:
        return []
    base = next((off + strtab - va for va, sz, off in loads if va <= strtab < va + sz), None)
    if base is None:
        return []
    entries: list[str] = []
    for value in wanted:
        raw = os.pread(fd, _MAX_STRING, base + value).split(b"\0", 1)[0]
        entries.extend(e for e in raw.decode("utf-8", "surrogateescape").split(":") if e)
    return entries


def escapes(origin_dir: str, entry: str, inside: Callable[[str], bool]) -> bool:
    """Whether the RPATH ``entry`` of an ELF in ``origin_dir`` (tree-relative) reaches a directory outside its tree.

    Only ``$ORIGIN`` entries count: absolute ones name the same place from anywhere, and relative ones without it
    are relative to the process's working directory, folded or not.
    """
    for token in ("${ORIGIN}", "$ORIGIN"):
        if entry.startswith(token):
            rest = entry[len(token) :]
            break
    else:
        return False
    target = os.path.normpath(os.path.join(origin_dir, "." + rest)) if rest else origin_dir or "."
    return target.startswith("..") or target == "." or not inside(target)


def tree_rpaths(root_fd: int, files: dict[str, int]) -> dict[str, list[str]]:
    """The RPATH/RUNPATH entries of each ELF file that has any among ``files`` (tree-relative name -> mode) of the
    tree open at ``root_fd``: recorded in the manifest when the tree is published."""
    found: dict[str, list[str]] = {}
    for rel, mode in files.items():
        if may_be_elf(rel, mode) and (entries := read_rpaths(rel, root_fd)):
            found[rel] = entries
    return found


def may_be_elf(rel: str, mode: int) -> bool:
    """Shared libraries and executables, by name or mode: only these are opened to look for an RPATH."""
    name = rel.rpartition("/")[2]
    return ".so" in name or bool(mode & stat.S_IXUSR)


def read_rpaths(path: str, dir_fd: int | None = None) -> list[str] | None:
    """The entries of the ELF file at ``path`` (relative to ``dir_fd``), None if it is none or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return elf_rpaths(fd)
    except (OSError, struct.error):
        return None
    finally:
        os.close(fd)
