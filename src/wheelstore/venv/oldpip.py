"""Which pips can manage a venv that wheelstore filled with links into a store.

pip before 23.1 resolves each RECORD path to its real path (``is_local`` calls ``realpath`` on the whole path) and
skips, without a word under ``-y``, every path that then lies outside the venv: a symlink into the store, a folded
directory, and every file below one. Its uninstall removes the files wheelstore wrote fresh (RECORD, INSTALLER,
launchers) and says "Successfully uninstalled" while the package still imports; no RECORD form changes that, since
the links themselves are what it refuses. pip 23.1 and later resolve only the parent of each path and remove the
links. Copies and hard links are real files in the venv, which every pip removes.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

#: link modes whose venv entries are symlinks into a store (what an old pip will not remove)
LINKED_MODES = frozenset({"fold", "symlink"})

#: the first pip whose uninstall removes symlinks that lead out of the venv
FIRST_GOOD_PIP = Version("23.1")


def pip_too_old(version: str) -> bool:
    """Whether a pip of this version half-removes linked distributions (an unreadable version is not judged)."""
    try:
        return Version(version) < FIRST_GOOD_PIP
    except InvalidVersion:
        return False
