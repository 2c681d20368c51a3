"""Folding (GNU stow's idea): which directories of a venv can be one symlink into the store instead of a real
directory of per-file links.

A directory ``D`` of site-packages, or of the venv's root filled by the wheel's data scheme (``.data/data/``:
``share/...``, ``etc/...``), is folded, that is made a symlink to the store directory that fills it, when all of these
hold; otherwise it is made real and each of its entries is planned the same way, down to single files:

- ``D``'s parent is site-packages, or a directory below which the same tree keeps a file real (an *anchor*). This is
  for current pip: ``pip uninstall`` renames a whole directory away when every file it finds below it (walking without
  following symlinks, so a folded directory shows no files) is on its list. A folded directory of another
  distribution with nothing of that distribution's own beside or below its parent would go with it. site-packages is
  safe: every other distribution has real files in its dist-info there. A parent that holds a file of the tree
  directly is an anchor; a namespace-package directory (below) that holds none is made one by keeping real the chain
  of directories down to the nearest file, through the child with the fewest files (``google/_upb`` anchors
  ``google/`` for protobuf, so ``google/protobuf`` folds), a shared data directory by a marker file (below:
  JupyterLab's ``share/jupyter/lab/static`` folds, so a web server's static root resolves to where its files are);
- ``D`` is not a namespace-package directory: one whose path below site-packages is made of identifiers, whose parent
  is site-packages or a namespace-package directory too, that holds no ``__init__.py`` of the tree and has a module
  (``.py``, an extension ``.so``) somewhere below it; or one the tree declares (setuptools'
  ``namespace_packages.txt``). Any installer may add to these (``google/``, ``nvidia/``, ``jaraco/``), and pip and uv
  cannot write into a fold. Regular packages below them may fold; a directory without ``__init__.py`` inside a regular
  package is that package's own (Python finds it only there), and so are ``numpy.libs/``, ``foo.dist-info/`` and data
  directories: not identifiers, or no module below;
- ``D`` is not a data directory several distributions share by convention: the first two levels (``share/``,
  ``share/jupyter/``, ``etc/jupyter/``), drop-in directories (``*.d``, and what they hold), and on the third level a
  directory of directories only (``share/jupyter/labextensions/``, ``share/jupyter/kernels/``) or of files only
  (``share/man/man1/``). Where one of these holds no file of the tree, a folded directory in it is anchored by a
  marker file the installer writes beside it and lists in the RECORD (:data:`MARKER`): an anchor chain could go
  through a directory a server needs folded (JupyterLab's ``themes`` beside ``static``). So ``share/myapp/static/``
  (files and a subdirectory) and ``share/jupyter/lab/static/`` fold. Left out: a directory deeper down that several
  distributions fill by convention but one fills alone (``share/jupyter/nbconvert/templates/``) folds; a later
  ``pip install`` of another into it fails, and ``wheelstore install`` unfolds it;
- exactly one tree of this install contributes to ``D``, from one store directory, and ``D`` does not exist in the
  venv yet. Where several distributions meet (and always site-packages itself and the venv's root, which are never
  candidates) the directory is real. A directory that an installed distribution folded earlier is *unfolded* by the
  caller first (see ``state`` in :func:`folds_to_make`, and :mod:`wheelstore.venv.unfold`), never written through;
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

#: the marker file that anchors a distribution's folded data directories where it has no file of its own (``{}`` is its
#: dist-info directory's name without ``.dist-info``), and what it says
MARKER = ".{}.wheelstore-anchor"
MARKER_TEXT = (b"wheelstore keeps this file beside the directories of this distribution that are links into its store,"
               b" so that pip's uninstall of another distribution leaves them alone. It goes with this distribution.\n")

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
        #: anchors that hold no file of the tree: a folded directory placed in one needs a marker file beside it
        #: (:data:`MARKER`), written with the tree's files and listed in its RECORD
        self.markers: set[str] = set()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TreeView) and (self.key, self.dirs, self.blocked, self.anchors, self.markers) == (
            other.key, other.dirs, other.blocked, other.anchors, other.markers)

    __hash__ = None  # type: ignore[assignment]  # mutable


def view(tree: Tree, sites: dict[str, str], data_dir: str, cache_tag: str | None) -> TreeView:
    """Describe ``tree`` for :func:`folds_to_make`. ``sites`` maps the tree-relative prefix of each part that goes into
    site-packages (``""`` for the tree's root, ``"<name>.data/purelib/"``, ...) to that site directory, and may map
    ``"<name>.data/data/"`` to the venv's root (the data scheme's)."""
    m = tree.manifest
    tree_path = os.fspath(tree.path)
    data_part = f"{data_dir}/data/"
    result = TreeView(tree.key, anchors={v for k, v in sites.items() if k != data_part})
    compiled = cache_tag is None or m.bytecode == cache_tag
    dist_info = m.dist_info + "/"
    data_slash = data_dir + "/"
    tree_dirs: set[str] = set()
    parts: dict[str, _Part] = {}
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
        part = parts.get(prefix) or parts.setdefault(prefix, _Part())
        part.files[head] = part.files.get(head, 0) + 1
        if name == "__init__.py":
            part.inits.add(head)
        elif name.endswith(".py") or (name.endswith(".so") and name.partition(".")[0].isidentifier()):
            part.modules.add(head)
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
    _keep_shared_real(parts, sites, data_part, _declared_namespaces(tree, dist_info), result)
    for rel in elves:
        # recorded when the tree was published; read now only from trees whose manifest predates that
        entries = m.rpaths.get(rel) if m.rpaths is not None else read_rpaths(f"{tree_path}/{rel}")
        if entries:
            _block_escaping_elf(rel, entries, sites, tree_dirs, result)
    return result


def _keep_shared_real(
    parts: dict[str, _Part], sites: dict[str, str], data_part: str, declared: set[str], result: TreeView
) -> None:
    """Block the directories other installers may add to (namespace packages, shared data directories) and anchor
    those that hold no file of the tree: a namespace package by a chain of real directories, a data directory by a
    marker file (a chain could take a directory a server needs folded)."""
    for prefix, part in parts.items():
        site = sites[prefix]
        real = part.shared_data() if prefix == data_part else part.namespaces(declared)
        result.blocked.update(f"{site}/{h}" for h in real)
        if prefix == data_part:
            bare = {f"{site}/{h}" for h in real if not part.files.get(h)}
            result.markers |= bare
            result.anchors |= bare
            continue
        for head, anchor_chain in part.anchored(real):
            result.anchors.add(f"{site}/{head}")
            result.blocked.update(f"{site}/{h}" for h in anchor_chain)


class _Part:
    """What :func:`view` gathers about one part of a tree (its site-packages root, or its data scheme), by
    part-relative directory (``""`` for the part's root)."""

    def __init__(self) -> None:
        #: directory -> how many files it holds directly
        self.files: dict[str, int] = {}
        #: directories that hold an ``__init__.py``, and those that hold a module (``.py``, extension module)
        self.inits: set[str] = set()
        self.modules: set[str] = set()

    def heads(self) -> set[str]:
        """Every directory of the part but its root, whether or not it holds files directly."""
        found: set[str] = set()
        for head in self.files:
            while head and head not in found:
                found.add(head)
                head = head.rpartition("/")[0]
        return found

    def shared_data(self) -> set[str]:
        """The data directories kept real as every distribution's (see the module docstring)."""
        heads = self.heads()
        parents = {h.rpartition("/")[0] for h in heads}
        found: set[str] = set()
        for head in sorted(heads):  # parents first
            parent, _, name = head.rpartition("/")
            level = head.count("/")
            if (level < 2 or name.endswith(".d") or parent in found and parent.endswith(".d")
                    or level == 2 and (not self.files.get(head) or head not in parents)):
                found.add(head)
        return found

    def namespaces(self, declared: set[str]) -> set[str]:
        """The namespace-package directories (see the module docstring), parents first."""
        below: set[str] = set()
        for head in self.modules:
            while head and head not in below:
                below.add(head)
                head = head.rpartition("/")[0]
        found: set[str] = set()
        for head in sorted(self.heads()):
            parent, _, name = head.rpartition("/")
            if parent and parent not in found:
                continue
            if head in declared or (name.isidentifier() and head not in self.inits and head in below):
                found.add(head)
        return found

    def anchored(self, real: set[str]) -> list[tuple[str, list[str]]]:
        """For each directory in ``real`` that holds no file of its own: the chain of directories below it to keep
        real, down to one that holds a file (through the child with the fewest files), which anchors its folds."""
        heads = self.heads()
        total: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for head in heads:
            parent = head.rpartition("/")[0]
            children.setdefault(parent, []).append(head)
            d: str | None = head
            while d:
                total[d] = total.get(d, 0) + self.files.get(head, 0)
                d = d.rpartition("/")[0]
        result = []
        for head in sorted(real):
            chain, d = [], head
            while not self.files.get(d) and children.get(d):
                d = min(children[d], key=lambda c: (total[c], c))
                chain.append(d)
            if self.files.get(d):
                result.append((head, chain))
        return result


def _declared_namespaces(tree: Tree, dist_info: str) -> set[str]:
    """The namespace packages the tree declares (setuptools' ``namespace_packages.txt``), as directories."""
    name = dist_info + "namespace_packages.txt"
    entry = tree.manifest.files.get(name)
    if entry is None or entry.size > 65536:
        return set()
    try:
        with open(os.path.join(os.fspath(tree.path), name), "rb") as f:
            text = f.read(65536).decode("utf-8", "replace")
    except OSError:
        return set()
    return {line.strip().replace(".", "/") for line in text.splitlines() if line.strip()}


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
