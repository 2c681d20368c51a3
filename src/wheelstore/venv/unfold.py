"""Folds of distributions already installed: applying :func:`~wheelstore.venv.fold.folds_to_make` to a venv that
has some.

When an install must put files into a directory another distribution folded, that distribution's RECORD is
rewritten first (its row becomes rows for the new per-entry links), then the symlink is swapped for a real directory:
a RECORD row never names a real directory other distributions have files in. A fold whose distribution is gone is
removed. :func:`rewrite_record` and :func:`swap` serve ``wheelstore edit`` too (:mod:`wheelstore.venv.edit`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence

from ..base import fsio
from ..base.distinfo import Distribution, installed, origin
from ..base.errors import InstallError
from .venvdirs import file_in_the_way
from ..base.interpreter import Interpreter
from ..store.store import Tree
from . import fold as folding
from . import prepared
from .install import write_new

#: a folded directory's link target: STORE/trees/KEY/PATH
_FOLDED = re.compile(r"^(/.+)/trees/([0-9a-f]{64})/(.+)$")


def plan_folds(trees: Sequence[Tree], interpreter: Interpreter) -> dict[str, dict[str, str]]:
    """Which directories each tree (installed in fold mode) folds, decided for all of them together.

    Directories other installed distributions folded earlier are unfolded here when a tree needs to add to them (their
    RECORD first); folds whose distribution is gone (an uninstaller that would not remove a link out of the venv)
    are removed. Nothing else in the venv changes.
    """
    views = [prepared.of(tree, interpreter).view for tree in trees]
    owners: dict[tuple[str, str], Distribution] | None = None

    def state(path: str) -> str:
        nonlocal owners
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return folding.ABSENT
        if stat.S_ISDIR(st.st_mode):
            return folding.REAL
        if not stat.S_ISLNK(st.st_mode):
            raise InstallError(file_in_the_way(path))
        target = os.readlink(path)
        found = _FOLDED.match(target)
        if found is None:
            raise InstallError(f"{path} is a symlink to {target}; refusing to install through it")
        if owners is None:
            owners = _owners(interpreter)
        owner = owners.get((found.group(1), found.group(2)))
        if owner is None:
            os.unlink(path)
            return folding.ABSENT
        _unfold(path, target, owner)
        return folding.REAL

    return folding.folds_to_make(views, state)


def _owners(interpreter: Interpreter) -> dict[tuple[str, str], Distribution]:
    """Installed distributions by the (store, tree key) they were linked from."""
    result = {}
    for dist in installed(interpreter).values():
        found = origin(dist)
        if found is not None and found.get("store") and found.get("key"):
            result[(str(found["store"]), str(found["key"]))] = dist
    return result


def sibling(path: str, what: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.wheelstore-{what}-{os.urandom(4).hex()}")


def swap(path: str, new: str, what: str) -> str:
    """Put the entry ``new`` in the place of ``path`` (a directory and a symlink cannot be exchanged by one rename);
    return where the old entry went."""
    aside = sibling(path, what)
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(aside, path)
        raise
    return aside


def _unfold(path: str, target: str, owner: Distribution) -> None:
    """Replace the folded directory ``path`` (a symlink to ``target``) by a real one of per-entry symlinks.

    A subdirectory stays one symlink only where the owner also has a file beside it (see :mod:`wheelstore.venv.fold`
    for why pip needs that); otherwise it is made real the same way, and so is a ``__pycache__``, so that Python
    can still cache other modules there. The owner's RECORD is rewritten before the swap: a crash between leaves an
    unlisted link (removed as stale by the next install), never a listed real directory others have files in.
    """
    tmp = sibling(path, "unfold")
    links: list[str] = []

    def build(src: str, dst: str) -> None:
        os.mkdir(dst, 0o777)  # the venv's own directory: the user's umask applies, as with pip
        with os.scandir(src) as it:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        anchored = any(not is_dir for _name, is_dir in entries)
        for name, is_dir in entries:
            s, d = os.path.join(src, name), os.path.join(dst, name)
            if is_dir and (name == "__pycache__" or not anchored):
                build(s, d)
            else:
                os.symlink(s, d)
                if is_dir:
                    links.append(path + d[len(tmp) :])

    try:
        build(target, tmp)
        root = owner.dist_info.parent
        rewrite_record(owner, drop={os.path.relpath(path, root)}, add=[os.path.relpath(p, root) for p in links])
        os.unlink(swap(path, tmp, "folded"))
    except BaseException:
        fsio.rmtree(tmp, ignore_errors=True)
        raise


def rewrite_record(dist: Distribution, *, drop: Iterable[str] = (), add: Sequence[str] = ()) -> None:
    """Replace RECORD atomically without the rows ``drop``, with a hashless row for each directory in ``add``
    placed before the first row below it."""
    record = dist.dist_info / "RECORD"
    gone = set(drop)
    rows = [r for r in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))) if r and r[0] not in gone]
    for d in add:
        if any(r[0] == d for r in rows):
            continue
        at = next((i for i, r in enumerate(rows) if r[0].startswith(d + "/")), len(rows) - 1)
        rows.insert(at, [d, "", ""])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    tmp = record.with_name(f".RECORD.wheelstore-{os.urandom(4).hex()}")
    write_new(None, os.fspath(tmp), out.getvalue().encode(), 0o644)
    os.replace(tmp, record)
