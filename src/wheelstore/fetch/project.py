"""Local projects: a project directory or a local sdist, built into a wheel through uv as index sdists are.

A directory's wheel is built afresh on every install (its sources may have changed) into a private directory the
caller owns, and is then installed like any local wheel: published keyed by the wheel's hash, so an unchanged project
whose backend builds reproducibly (flit_core does, for unchanged files and mtimes) publishes nothing new. A local sdist
is keyed by its own hash and built once per store and interpreter (:func:`wheelstore.fetch.build.ensure_built`).
Build dependencies come from the user's sources (indexes, find-links), and ``--offline`` is honoured, as for sdists.
"""

from __future__ import annotations

from pathlib import Path

from ..base.fsio import sha256_file
from ..base.interpreter import Interpreter
from ..store.store import Store, Tree
from .build import build_wheel, ensure_built
from .sources import Sources


def build_directory(directory: Path, out: Path, interpreter: Interpreter, sources: Sources) -> Path:
    """The wheel of the project in ``directory`` for ``interpreter``, built by uv (``uv build --wheel``) into ``out``,
    a private directory the caller owns and removes."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    return build_wheel(directory, out, interpreter, sources)


def build_local_sdist(store: Store, sdist: Path, interpreter: Interpreter, sources: Sources) -> Tree:
    """The store's tree of a local sdist for ``interpreter``: built once per store, keyed by the sdist's hash."""
    return ensure_built(store, sdist, sha256_file(sdist), interpreter, sources)
