"""Folding (GNU stow's idea): which directories of a venv can be one symlink into the store instead of a real
directory of per-file links.

A directory ``D`` of site-packages is folded, that is made a symlink to the store directory that fills it, when all of
these hold; otherwise it is made real and each of its entries is planned the same way, down to single files:

- ``D``'s parent is site-packages, or a directory in which the same tree also has a file of its own. This is for
  current pip: ``pip uninstall`` renames a whole directory away when every file it finds below it (walking without
  following symlinks, so a folded directory shows no files) is on its list. A folded directory of another
  distribution beside nothing of that distribution's own would go with it. site-packages is safe: every other
  distribution has real files in its dist-info there;
- exactly one tree of this install contributes to ``D``, from one store directory, and ``D`` does not exist in the
  venv yet. Where several distributions meet (namespace packages such as ``google/`` or ``nvidia/``, and always
  site-packages itself, ``bin/``, ``include/``, ``share/``, which are never candidates) the directory is real. A
  directory that an installed distribution folded earlier is *unfolded* by the caller first (see ``state`` in
  :func:`plan`), never written through;
- the tree carries the target interpreter's pycs (``Manifest.bytecode``), or ``D`` holds no module: a folded
  directory is read-only, so Python could not cache bytecode in it;
- ``D`` is not a ``__pycache__`` on its own (Python may write another distribution's pycs there) and not in the
  dist-info directory (RECORD, INSTALLER, ... are written fresh);
- no ELF file below ``D`` has an ``$ORIGIN`` RPATH/RUNPATH entry that leaves its own tree. The kernel resolves
  ``..`` physically, so ``$ORIGIN/../../nvidia/cudnn/lib`` seen from a library under a folded ``torch/`` climbs
  inside the store, where the other wheel is not. Entries that stay inside the tree (numpy's
  ``$ORIGIN/../../numpy.libs``) resolve to the same tree's copy and are fine. The ELF itself may be a file symlink
  in a real directory: the loader takes ``$ORIGIN`` from the path it opened, without resolving it.

What is left out: a library loaded through another one's ``$ORIGIN/..`` path (a string with ``..`` in it) computes
its own ``$ORIGIN`` from that string, so a second hop is judged as if the first had not happened. Wheels built by
auditwheel do not chain like that; torch does not either.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable, Sequence

from .fsio import below_any
from .store import Tree

_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NULL, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 0, 5, 15, 29
#: sanity limits: anything beyond these is not an ELF file a linker made
_MAX_PHNUM = 4096
_MAX_DYNAMIC = 1 << 20
_MAX_STRING = 1 << 16


# -- ELF -----------------------------------------------------------------------------------------------------------


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
        if _may_be_elf(rel, mode) and (entries := _read_rpaths(rel, root_fd)):
            found[rel] = entries
    return found


def _may_be_elf(rel: str, mode: int) -> bool:
    """Shared libraries and executables, by name or mode: only these are opened to look for an RPATH."""
    name = rel.rpartition("/")[2]
    return ".so" in name or bool(mode & stat.S_IXUSR)


# -- one tree in one venv --------------------------------------------------------------------------------------------


class TreeView:
    """The directories one tree fills in one venv's site-packages, and which of them it may not fold."""

    def __init__(self, key: str, anchors: set[str]) -> None:
        self.key = key
        #: venv directory -> the store directory that fills it (site-packages itself and the dist-info excluded)
        self.dirs: dict[str, str] = {}
        #: venv directories this tree must keep real
        self.blocked: set[str] = set()
        #: venv directories that directly hold one of this tree's files, and the site-packages directories
        #: themselves: the only places a folded directory may go
        self.anchors = anchors

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TreeView) and (self.key, self.dirs, self.blocked, self.anchors) == (
            other.key, other.dirs, other.blocked, other.anchors)

    __hash__ = None  # type: ignore[assignment]  # mutable


def view(tree: Tree, sites: dict[str, str], data_dir: str, cache_tag: str | None) -> TreeView:
    """Describe ``tree`` for :func:`plan`. ``sites`` maps the tree-relative prefix of each part that goes into
    site-packages (``""`` for the tree's root, ``"<name>.data/purelib/"``, ...) to that site directory."""
    m = tree.manifest
    tree_path = os.fspath(tree.path)
    result = TreeView(tree.key, anchors=set(sites.values()))
    compiled = cache_tag is None or m.bytecode == cache_tag
    dist_info = m.dist_info + "/"
    data_slash = data_dir + "/"
    tree_dirs: set[str] = set()
    elves: list[str] = []
    last = None  # (prefix, head) of the file before: files come sorted, so most share their directory with it
    for rel, entry in m.files.items():
        if rel.startswith(dist_info):
            continue
        if rel.startswith(data_slash):
            scheme = rel[len(data_slash) :].split("/", 1)[0]
            prefix = f"{data_slash}{scheme}/"
            if prefix not in sites:
                continue
        else:
            prefix = ""
        head, _, name = rel[len(prefix) :].rpartition("/")
        if ".so" in name or entry.mode & stat.S_IXUSR:  # what _may_be_elf says, inline: this runs once per file
            elves.append(rel)
        is_module = not compiled and name.endswith(".py")
        if (prefix, head) == last and not is_module:
            continue
        last = (prefix, head)
        site = sites[prefix]
        if head:
            result.anchors.add(f"{site}/{head}")
        while head:
            vdir = f"{site}/{head}"
            if vdir in result.dirs and not is_module:
                break
            result.dirs[vdir] = f"{tree_path}/{prefix}{head}"
            tree_dirs.add(prefix + head)
            if is_module:
                result.blocked.add(vdir)
            head = head.rpartition("/")[0]
    for vdir in result.dirs:
        if vdir.endswith("/__pycache__"):
            result.blocked.add(vdir)
    for rel in elves:
        # recorded when the tree was published; read now only from trees whose manifest predates that
        entries = m.rpaths.get(rel) if m.rpaths is not None else _read_rpaths(f"{tree_path}/{rel}")
        if entries:
            _block_escaping_elf(rel, entries, sites, tree_dirs, result)
    return result


def _read_rpaths(path: str, dir_fd: int | None = None) -> list[str] | None:
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


def _block_escaping_elf(
    rel: str, entries: list[str], sites: dict[str, str], tree_dirs: set[str], result: TreeView
) -> None:
    """Keep every directory above ``rel`` real if it is an ELF file whose ``$ORIGIN`` entries leave its tree part."""
    prefix = next((p for p in sites if p and rel.startswith(p)), "")
    sub = rel[len(prefix) :]
    origin = sub.rpartition("/")[0]

    def inside(target: str) -> bool:
        return prefix + target in tree_dirs

    if any(escapes(origin, e, inside) for e in entries):
        site = sites[prefix]
        head = origin
        while head:
            result.blocked.add(f"{site}/{head}")
            head = head.rpartition("/")[0]


# -- all trees of one install ----------------------------------------------------------------------------------------

#: what is at a venv path now, as the caller found (and, for a folded dir of an installed distribution, made) it
ABSENT, REAL = "absent", "real"


def plan(views: Sequence[TreeView], state: Callable[[str], str]) -> dict[str, dict[str, str]]:
    """For each tree key, the venv directories to fold (venv path -> store path).

    ``state(path)`` returns ABSENT or REAL for a venv directory the plan considers. It is asked only for directories
    some tree of this install contributes to, parents first, and may change the venv to answer: unfold a directory
    an installed distribution folded (it is then REAL), or remove a stale fold nobody owns (ABSENT). It raises for
    anything else in the way.
    """
    contributors: dict[str, list[tuple[TreeView, str]]] = {}
    for v in views:
        for vdir, sdir in v.dirs.items():
            contributors.setdefault(vdir, []).append((v, sdir))
    result: dict[str, dict[str, str]] = {v.key: {} for v in views}
    folded: set[str] = set()
    for vdir in sorted(contributors):  # a parent sorts before its children
        if below_any(vdir, folded):
            continue
        found = state(vdir)
        (first, sdir), *others = contributors[vdir]
        anchored = vdir.rpartition("/")[0] in first.anchors
        if not others and found == ABSENT and anchored and vdir not in first.blocked:
            result[first.key][vdir] = sdir
            folded.add(vdir)
    return result


def covering(fold: dict[str, str]) -> Callable[[str], str | None]:
    """A memoized lookup: the folded directory a venv directory lies in (or is), or None."""
    memo: dict[str, str | None] = {}

    def find(directory: str) -> str | None:
        try:
            return memo[directory]
        except KeyError:
            pass
        if directory in fold:
            found: str | None = directory
        else:
            parent = directory.rpartition("/")[0]
            found = find(parent) if parent and parent != directory else None
        memo[directory] = found
        return found

    return find
