"""Which pips can manage a venv that wheelstore filled with links into a store.

Debian's pip before 23.1 (23.0.1 is what Debian 12's ``python3 -m venv`` and ``ensurepip`` give) is patched so that
``is_local`` resolves the whole path, and its uninstall skips, without a word under ``-y``, every path that then lies
outside the venv: a symlink into the store, a folded directory, and every file below one. It removes the files
wheelstore wrote fresh (RECORD, INSTALLER, launchers) and says "Successfully uninstalled" while the package still
imports; no RECORD form changes that, since the links themselves are what it refuses. Upstream pips of those versions
(22.0.4 and 23.0.1 from PyPI, tried) and every pip from 23.1 resolve only the parent of each path and remove the
links. A version number cannot tell Debian's pip from upstream's, so every pip before 23.1 is taken as the patched
one. Copies and hard links are real files in the venv, which every pip removes.

So an install that leaves such a pip in the venv links per file (:func:`wheelstore.venv.linkmode.choose`), relinks
per file the linked distributions it installs anyway, and refuses to bring that pip in beside links it would
half-remove. A pip upgraded past 23.1 lifts all of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

from packaging.version import InvalidVersion, Version

from ..base.distinfo import Distribution, origin

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

#: link modes whose venv entries are symlinks into a store (what an old pip will not remove)
LINKED_MODES = frozenset({"fold", "symlink"})

PIP = cast("NormalizedName", "pip")
#: the first pip whose uninstall removes symlinks that lead out of the venv
FIRST_GOOD_PIP = Version("23.1")


def pip_too_old(version: str) -> bool:
    """Whether a pip of this version half-removes linked distributions (an unreadable version is not judged)."""
    try:
        return Version(version) < FIRST_GOOD_PIP
    except InvalidVersion:
        return False


def too_old_after(present: Mapping[NormalizedName, Distribution], planned: Mapping[NormalizedName, str]) -> str | None:
    """The version of the pip the venv will hold once ``planned`` (name -> version to link) is in, when that pip
    cannot remove links into a store; else None. ``sync`` keeps the venv's pip (a seed), so what is there stays."""
    version = planned.get(PIP) or (present[PIP].version if PIP in present else None)
    return version if version is not None and pip_too_old(version) else None


def linked(present: Mapping[NormalizedName, Distribution]) -> set[NormalizedName]:
    """The distributions wheelstore linked into the venv in a mode an old pip cannot remove."""
    return {name for name, dist in present.items()
            if (found := origin(dist)) is not None and found.get("link_mode") in LINKED_MODES}
