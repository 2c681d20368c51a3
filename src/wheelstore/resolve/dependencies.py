"""Whether a set of distributions holds its own dependencies, from their metadata (:mod:`closure`).

A pinned install asks it to decide whether the set needs a resolver: when the pins (and the versions the venv keeps)
satisfy every dependency, as a hashed requirements file or a lock always should, nothing is resolved and nothing is
fetched from the network. ``sync`` asks it to refuse an incomplete set before anything is linked, as ``pip check``
would complain after. A set found complete is remembered in the user's cache (:func:`closure.cache_entry`: by its
members' hashes and their METADATA files' identity, and the target): the warm install of the same set reads no metadata
and imports no parser again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..base import usercache
from ..base.distinfo import Distribution
from ..base.errors import WheelstoreError
from ..base.interpreter import Interpreter
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
        raise unmet_error(unmet, exact=exact)


def _unmet(
    candidates: Sequence[Candidate],
    trees: Mapping[NormalizedName, Tree],
    kept: Mapping[NormalizedName, str],
    present: Mapping[NormalizedName, Distribution],
    interpreter: Interpreter,
) -> list[Unmet]:
    from . import closure

    keys = [(k, c.extras) for c in candidates if (k := _key(c, trees)) is not None]
    entry = closure.cache_entry(keys, kept, interpreter) if len(keys) == len(candidates) else None
    if entry is not None and usercache.read_bytes(entry) is not None:
        return []
    from packaging.version import InvalidVersion, Version

    from .requirements import marker_environment

    members = []
    for c in candidates:
        tree = trees.get(c.name)
        if tree is not None:
            requires = closure.requires_of_tree(tree)
        elif c.wheel is not None:
            requires = closure.requires_of_wheel(c.wheel)
        else:  # at the right version in the venv already (not realized again)
            requires = closure.requires_of_installed(present[c.name])
        members.append(closure.Requires(c.name, c.version, tuple(requires), c.extras))
    named = {c.name for c in candidates}
    for name, version in kept.items():
        if name not in named:
            try:
                members.append(closure.Requires(name, Version(version), ()))
            except InvalidVersion:
                continue  # satisfies nothing, as pip sees it
    found = closure.unmet(members, marker_environment(interpreter))
    if not found and entry is not None:
        usercache.write_bytes(entry, b"{}")
    return found


def _key(cand: Candidate, trees: Mapping[NormalizedName, Tree]) -> str | None:
    """What a member's metadata is known by: its tree's key with its METADATA file's identity
    (:func:`closure.tree_identity`), or its local wheel's sha256 (a file's bytes); None when neither is known."""
    from .closure import tree_identity

    tree = trees.get(cand.name)
    return tree_identity(tree) if tree is not None else cand.sha256 if cand.wheel is not None else None


def remember_closed(
    candidates: Sequence[Candidate], trees: Mapping[NormalizedName, Tree], kept: Mapping[NormalizedName, str],
    interpreter: Interpreter,
) -> None:
    """Remember a set found closed (by :func:`unmet_of`, from local wheels) under the trees now realized for it: what
    the next install of the same set, finding those trees, looks up."""
    from . import closure

    found = {c.name: c.tree for c in candidates if c.tree is not None}
    keys = [(k, c.extras) for c in candidates if (k := _key(c, {**found, **trees})) is not None]
    if len(keys) == len(candidates):
        usercache.write_bytes(closure.cache_entry(keys, kept, interpreter), b"{}")


def unmet_error(unmet: Sequence[Unmet], *, exact: bool) -> WheelstoreError:
    """The one line for a set taken as complete that is not: sync's input, or a hashed requirements file."""
    from .closure import unsatisfied

    if exact:
        return unsatisfied(unmet)
    return unsatisfied(unmet, what="the hashed requirements", hint="add them, with their hashes, to the requirements "
                       "file (uv pip compile --generate-hashes writes a complete one)")
