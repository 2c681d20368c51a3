"""Distributions another tool left half removed, found once for install, sync, uninstall and doctor.

Debian's pip 23.0.1 "uninstalls" a folded distribution by deleting the dist-info's own files (RECORD, INSTALLER,
wheelstore's origin file) and keeping everything that resolves into the store: the folded directory's symlink and the
dist-info's METADATA and WHEEL links. A uv or pip run that stopped half way, or a hand-deleted RECORD, leaves the same
kinds of remains. What counts as damaged:

- a dist-info without RECORD: nothing says which files are its own, so it cannot be removed row by row;
- a dist-info whose RECORD lists files inside the venv that are gone;
- a symlink at the top of site-packages into a store tree (``STORE/trees/KEY/...``) that no intact distribution
  installed by wheelstore claims (by its origin file's store and key).

The tree a RECORD-less distribution came from is told by its origin file, else by where its dist-info's links lead.
Removing it (:func:`remove`) then unlinks only symlinks into that tree, found without following any symlink, below the
venv's site-packages and scripts directories, and the dist-info directory itself: never a file outside the venv, never
anything in the store. Files it had copied (launchers in ``bin/``, copies and hard links) cannot be told from anyone
else's without a RECORD; a reinstall replaces them, as pip does.
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..base import fsio
from ..base.distinfo import Distribution, origin, read_regular
from ..base.errors import DamagedDistribution
from ..base.interpreter import Interpreter

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

#: a link into a store tree: STORE/trees/KEY[/PATH]
_INTO_TREE = re.compile(r"^(/.+)/trees/([0-9a-f]{64})(?:/.*)?$")

#: a tree, as (store root, tree key)
TreeId = tuple[str, str]


class Damaged(NamedTuple):
    """One damaged distribution (``dist``), or links into the store no distribution claims (``dist`` None)."""

    dist: Distribution | None
    #: what is wrong, to follow the distribution's name in a message
    what: str
    #: the tree it was linked from, when that can be told
    tree: TreeId | None
    #: symlinks at the top of site-packages into that tree
    links: tuple[Path, ...] = ()

    def describe(self) -> str:
        if self.dist is None:
            return f"{', '.join(str(p) for p in self.links)} {self.what}"
        return f"{self.dist.display_name} {self.dist.version} {self.what}"

    def fix(self, venv: Path, *, wanted: bool = True) -> str:
        """The command that repairs it: reinstall it when it is ``wanted`` (sync does the same), else remove it."""
        import shlex  # here: only a damaged venv needs it, and the CLI starts without it

        at = shlex.quote(str(venv))
        if self.dist is None:
            return f"rm {' '.join(shlex.quote(str(p)) for p in self.links)}"
        name = shlex.quote(f"{self.dist.display_name}=={self.dist.version}")
        if wanted:
            return f"wheelstore install --venv {at} {name}"
        return f"wheelstore uninstall --venv {at} {shlex.quote(self.dist.display_name)}"


def has_record(dist: Distribution) -> bool:
    try:
        return stat.S_ISREG(os.stat(dist.dist_info / "RECORD").st_mode)
    except OSError:
        return False


def tree_of(dist: Distribution) -> TreeId | None:
    """The store tree a distribution was linked from: its origin file's, else the one its dist-info's links lead to."""
    found = origin(dist)
    if found is not None and found.get("store") and found.get("key"):
        return str(found["store"]), str(found["key"])
    try:
        with os.scandir(dist.dist_info) as it:
            for entry in it:
                if entry.is_symlink() and (into := _tree_of_link(entry.path)) is not None:
                    return into
    except OSError:
        pass
    return None


def _tree_of_link(path: str) -> TreeId | None:
    try:
        m = _INTO_TREE.match(os.readlink(path))
    except OSError:
        return None
    return (m.group(1), m.group(2)) if m else None


def store_links(interpreter: Interpreter) -> dict[Path, TreeId]:
    """Symlinks at the top of site-packages that lead into a store tree (folded directories, mostly)."""
    found: dict[Path, TreeId] = {}
    for site in dict.fromkeys((interpreter.paths["purelib"], interpreter.paths["platlib"])):
        try:
            with os.scandir(site) as it:
                entries = [e.path for e in it if e.is_symlink()]
        except OSError:
            continue
        for path in entries:
            if (into := _tree_of_link(path)) is not None:
                found[Path(path)] = into
    return found


def missing_files(dist: Distribution) -> list[str]:
    """The RECORD rows inside the venv whose file is gone. A row below a folded directory's row is judged by that
    row alone (the store's files behind it are the store's business, :command:`wheelstore verify`'s)."""
    text = read_regular(dist.dist_info / "RECORD")
    if text is None:
        return []
    root = dist.dist_info.parent
    venv = next((p for p in root.parents if (p / "pyvenv.cfg").is_file()), root.parent)
    inside = os.fspath(venv).rstrip("/") + "/"
    base = os.fspath(root)
    gone: list[str] = []
    folded: tuple[str, ...] = ()
    below: tuple[str, ...] = ()  # the folded rows as RECORD spells them: most rows follow one, and need no more
    for row in csv.reader(io.StringIO(text)):  # strings, not Paths: this runs for every row on every install
        if not row or not row[0] or (row[0].startswith(below) and ".." not in row[0]):
            continue
        path = os.path.normpath(os.path.join(base, row[0]))
        if not path.startswith(inside) or path.startswith(folded):
            continue
        if not os.path.lexists(path):
            gone.append(row[0])
        elif os.path.islink(path) and os.path.isdir(path):
            folded += (path + "/",)
            below += (row[0].rstrip("/") + "/",)
    return gone


def survey(interpreter: Interpreter, dists: Mapping[NormalizedName, Distribution],
           only: Iterable[NormalizedName] | None = None, *, strays: bool = True) -> list[Damaged]:
    """The damaged distributions among ``dists`` (with ``only``: among those names), and with ``strays`` links into
    the store nobody claims."""
    links: dict[Path, TreeId] | None = store_links(interpreter) if strays else None
    names = list(dists) if only is None else [n for n in dict.fromkeys(only) if n in dists]
    found: list[Damaged] = []
    for name in names:
        dist = dists[name]
        if not has_record(dist):
            tree = tree_of(dist)
            if links is None:
                links = store_links(interpreter)
            mine = tuple(p for p, t in links.items() if t == tree) if tree else ()
            how = "has no RECORD (another tool removed it part way)"
            found.append(Damaged(dist, how, tree, mine))
        elif gone := missing_files(dist):
            found.append(Damaged(dist, f"has lost {len(gone)} of the files its RECORD lists, such as {gone[0]} "
                                       "(another tool removed them)", tree_of(dist)))
    if strays and links is not None:
        claimed = {t for d in dists.values() if (t := tree_of(d)) is not None}
        stray = tuple(sorted(p for p, t in links.items() if t not in claimed))
        if stray:
            one = len(stray) == 1
            what = f"lead{'s' if one else ''} into the store, but no installed distribution claims {'it' if one else 'them'}"
            found.append(Damaged(None, what, None, stray))
    return found


def remove(damaged: Damaged, interpreter: Interpreter, venv: Path, *, forget_unknown: bool = False) -> int:
    """Remove a damaged distribution's remains that can be told as its own (see the module docstring); return how
    many entries went. A RECORD-less distribution whose tree is unknown is refused, with the fix, unless
    ``forget_unknown`` (a reinstall, which replaces its files, or sync): then only its dist-info goes."""
    prefix = os.path.normpath(interpreter.prefix) + os.sep
    count = 0
    if damaged.dist is None:
        for link in damaged.links:
            count += _unlink_symlink(link, prefix)
        return count
    dist = damaged.dist
    if not has_record(dist) and damaged.tree is None and not forget_unknown:
        import shlex  # here: only this refusal quotes

        raise DamagedDistribution(
            f"{dist.display_name} {dist.version} in {venv} has no RECORD and was not linked by wheelstore, so which "
            "files are its own is unknown",
            hint=f"reinstall it first (wheelstore install --venv {shlex.quote(str(venv))} "
                 f"{shlex.quote(dist.display_name + '==' + dist.version)}), then uninstall it")
    if damaged.tree is not None:
        count += _unlink_into(damaged.tree, interpreter, prefix)
    info = dist.dist_info
    if str(info).startswith(prefix) and info.is_dir() and not info.is_symlink():
        fsio.rmtree(info, ignore_errors=True)  # never follows a link: its links into the store just go
        count += 1
    return count


def _unlink_into(tree: TreeId, interpreter: Interpreter, prefix: str) -> int:
    """Unlink every symlink into ``tree`` below the venv's site-packages and scripts, without following any; prune
    the directories that leaves empty."""
    target = f"{tree[0]}/trees/{tree[1]}"
    count = 0
    emptied: set[str] = set()
    tops = dict.fromkeys(interpreter.paths[k] for k in ("purelib", "platlib", "scripts"))
    for top in tops:
        if not (top + os.sep).startswith(prefix):
            continue
        for here, dirs, files in os.walk(top):  # never follows a symlink to a directory: lists it in dirs
            for name in [*dirs, *files]:
                path = os.path.join(here, name)
                if os.path.islink(path):
                    link = os.readlink(path)
                    if link == target or link.startswith(target + "/"):
                        count += _unlink_symlink(Path(path), prefix)
                        emptied.add(here)
    stop = {os.path.normpath(t) for t in tops} | {os.path.normpath(interpreter.prefix)}
    for d in sorted(emptied, key=len, reverse=True):
        while d not in stop and d.startswith(prefix):
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)
    return count


def _unlink_symlink(path: Path, prefix: str) -> int:
    """Unlink ``path`` if it is still a symlink inside the venv: the link goes, never what it leads to."""
    if not str(path).startswith(prefix) or not path.is_symlink():
        return 0
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1
