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
  :func:`folds_to_make`, and :mod:`wheelstore.venv.unfold`), never written through;
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
from collections.abc import Callable, Sequence

from ..store.elf import escapes, read_rpaths
from ..base.fsio import below_any
from ..store.store import Tree

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
    """Describe ``tree`` for :func:`folds_to_make`. ``sites`` maps the tree-relative prefix of each part that goes into
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
        if ".so" in name or entry.mode & stat.S_IXUSR:  # what may_be_elf says, inline: this runs once per file
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
        entries = m.rpaths.get(rel) if m.rpaths is not None else read_rpaths(f"{tree_path}/{rel}")
        if entries:
            _block_escaping_elf(rel, entries, sites, tree_dirs, result)
    return result


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


def folds_to_make(views: Sequence[TreeView], state: Callable[[str], str]) -> dict[str, dict[str, str]]:
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
