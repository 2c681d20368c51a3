"""Removing a distribution from a venv: exactly the files its RECORD lists (links, never the store files behind
them), the pycs Python wrote beside them, and the directories left empty.

Rows are taken in order, as uv does: a folded directory's symlink row comes first (see :mod:`wheelstore.venv.install`),
so the rows below it, which lead into the store, find nothing left. For an upgrade the files are moved aside into a
:class:`Stash` instead, so that a failed install can put the old version back.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from collections.abc import Iterable
from pathlib import Path

from ..base import fsio
from ..base.distinfo import Distribution, record_text
from ..base.errors import InstallError, printable
from ..base.interpreter import Interpreter
from ..base.logs import log
from ..store.manifest_check import show


class Stash:
    """Files moved aside instead of deleted, inside the venv, so that a failed upgrade can put the old version back
    (pip stashes the same way). :meth:`discard` deletes them once the new version is in; :meth:`restore` undoes."""

    def __init__(self, prefix: str) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix=".wheelstore-stash-", dir=prefix))
        self.moved: list[tuple[Path, Path]] = []

    def take(self, path: Path) -> None:
        """Move ``path`` (a file, a link, or a dist-info directory) aside; deleted outright across filesystems."""
        target = self.dir / str(len(self.moved))
        try:
            os.rename(path, target)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            fsio.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            return
        self.moved.append((path, target))

    def restore(self) -> None:
        for path, target in reversed(self.moved):
            path.parent.mkdir(parents=True, exist_ok=True)
            os.rename(target, path)
        self.discard()

    def discard(self) -> None:
        fsio.rmtree(self.dir, ignore_errors=True)  # never follows a link: links into the store just go


def uninstall(dist: Distribution, interpreter: Interpreter, stash: Stash | None = None) -> list[Path]:
    """Remove exactly the files the distribution's RECORD lists (links, never their targets), and its empty dirs;
    with ``stash``, move them there instead, to be restored if what replaces them fails."""
    root = dist.dist_info.parent
    text = record_text(dist, ", so it cannot be removed safely")
    removed: list[Path] = []
    dirs: set[Path] = set()
    prefix = os.path.normpath(interpreter.prefix) + os.sep
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        path = Path(os.path.normpath(root / row[0]))
        if not str(path).startswith(prefix):  # as pip does: never remove anything outside the venv, but say so
            log.warning("could not remove %s (RECORD of %s): it is outside the venv", show(row[0]),
                        printable(dist.display_name))
            continue
        if through_symlink(path.parent, prefix):
            continue  # in a folded directory, gone with its link (or another tree's): never a store file
        for victim in (path, *_pycs(path)):
            try:
                if stash is None:
                    victim.unlink()
                elif victim.is_dir() and not victim.is_symlink():
                    continue
                else:
                    stash.take(victim)
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                continue
            removed.append(victim)
            dirs.add(victim.parent)
    stop = {Path(p) for p in interpreter.paths.values()} | {Path(interpreter.prefix)}
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        _prune_empty(d, stop, prefix)
    if dist.dist_info.exists():
        if stash is None:
            fsio.rmtree(dist.dist_info, ignore_errors=True)
        else:
            stash.take(dist.dist_info)
    return removed


def _pycs(path: Path) -> Iterable[Path]:
    if path.suffix != ".py":
        return ()
    cache = path.parent / "__pycache__"
    try:
        return [cache / n for n in os.listdir(cache) if n.startswith(path.stem + ".") and n.endswith(".pyc")]
    except OSError:
        return ()


def through_symlink(directory: Path, prefix: str) -> bool:
    """Whether a directory below the venv prefix is reached through a symlink (which could lead into the store)."""
    d = directory
    while str(d).startswith(prefix):
        if d.is_symlink():
            return True
        d = d.parent
    return False


def _prune_empty(d: Path, stop: set[Path], prefix: str) -> None:
    while d not in stop and d != d.parent and str(d).startswith(prefix):
        pycache = d / "__pycache__"
        if pycache.is_dir() and not any(pycache.iterdir()):
            _rmdir_quietly(pycache)
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def record_files(dist: Distribution) -> list[tuple[Path, str]]:
    """(absolute path, RECORD path) for every file the distribution's RECORD lists inside its venv (the directory
    holding ``pyvenv.cfg``, else site-packages' parent); a row outside is left alone and said."""
    text = record_text(dist)
    root = dist.dist_info.parent
    venv = next((p for p in root.parents if (p / "pyvenv.cfg").is_file()), root.parent)
    inside = os.fspath(venv).rstrip("/") + "/"
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        path = os.path.normpath(root / row[0])
        if path.startswith(inside):
            rows.append((Path(path), row[0]))
        else:
            log.warning("left %s (RECORD of %s) alone: it is outside the venv", show(row[0]),
                        printable(dist.display_name))
    return rows


def _rmdir_quietly(path: str | Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
