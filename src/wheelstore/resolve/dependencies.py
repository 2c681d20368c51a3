"""Whether a set of distributions holds its own dependencies, from their metadata (:mod:`closure`).

A pinned install asks it to decide whether the set needs a resolver: when the pins (and the versions the venv keeps)
satisfy every dependency, as a hashed requirements file or a lock always should, nothing is resolved and nothing is
fetched from the network. ``sync`` asks it to refuse an incomplete set before anything is linked, as ``pip check``
would complain after. A set found complete is remembered in the user's cache by its trees' keys (their metadata
never changes under a key) and the target: the warm install of the same set reads no metadata again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..base import usercache
from ..base.distinfo import Distribution
from ..base.interpreter import Interpreter, interpreter_key
from ..store.store import Tree
from .candidates import Candidate

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

    from .closure import Unmet


def unmet_of(
    candidates: Sequence[Candidate], kept: Mapping[NormalizedName, str], interpreter: Interpreter
) -> list[Unmet] | None:
    """The dependencies of ``candidates`` that neither they nor the venv's ``kept`` versions satisfy; None when a
    candidate's metadata is not here yet (a file still to download)."""
    trees = {c.name: c.tree for c in candidates if c.tree is not None}
    if any(c.tree is None and c.wheel is None for c in candidates):
        return None
    return _unmet(candidates, trees, kept, {}, interpreter)


def unmet_after(
    candidates: Sequence[Candidate],
    trees: Mapping[NormalizedName, Tree],
    present: Mapping[NormalizedName, Distribution],
    interpreter: Interpreter,
    *,
    exact: bool,
) -> None:
    """Raise the one-line error for the dependencies a complete set lacks, now that ``trees`` are realized (those
    already in the venv at the right version are read from the venv)."""
    found = {c.name: c.tree for c in candidates if c.tree is not None}
    unmet = _unmet(candidates, {**found, **trees}, {}, present, interpreter)
    if unmet:
        from .closure import unmet_error

        raise unmet_error(unmet, exact=exact)


def _unmet(
    candidates: Sequence[Candidate],
    trees: Mapping[NormalizedName, Tree],
    kept: Mapping[NormalizedName, str],
    present: Mapping[NormalizedName, Distribution],
    interpreter: Interpreter,
) -> list[Unmet]:
    memo = _memo_name(candidates, trees, kept, interpreter)
    if memo is not None and usercache.read_bytes(memo) == b"complete":
        return []
    from packaging.version import InvalidVersion, Version

    from .closure import Requires, requires_of_installed, requires_of_tree, requires_of_wheel, unmet
    from .requirements import marker_environment

    members = []
    for c in candidates:
        tree = trees.get(c.name)
        if tree is not None:
            requires = requires_of_tree(tree)
        elif c.wheel is not None:
            requires = requires_of_wheel(c.wheel)
        else:  # at the right version in the venv already (not realized again)
            requires = requires_of_installed(present[c.name])
        members.append(Requires(c.name, c.version, requires, c.extras))
    named = {c.name for c in candidates}
    for name, version in kept.items():
        if name not in named:
            try:
                members.append(Requires(name, Version(version), [], frozenset()))
            except InvalidVersion:
                continue  # satisfies nothing, as pip sees it
    found = unmet(members, marker_environment(interpreter))
    if not found and memo is not None:
        usercache.write_bytes(memo, b"complete")
    return found


def _memo_name(
    candidates: Sequence[Candidate],
    trees: Mapping[NormalizedName, Tree],
    kept: Mapping[NormalizedName, str],
    interpreter: Interpreter,
) -> str | None:
    """The cache entry that says this set is complete: by the members' hashes (a tree's key is its wheel's sha256,
    so a local wheel read before realizing has its tree's key), the extras asked, the kept versions and the target;
    None when a member's hash is not known."""
    keys = []
    for c in candidates:
        tree = trees.get(c.name)
        key = tree.key if tree is not None else c.sha256 if c.wheel is not None else None
        if key is None:
            return None
        keys.append((key, sorted(c.extras)))
    what = json.dumps([sorted(keys), sorted(kept.items()), interpreter_key(interpreter)])
    return f"closure/{hashlib.sha256(what.encode()).hexdigest()[:32]}"
