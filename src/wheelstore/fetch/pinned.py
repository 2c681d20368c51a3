"""The file for one pinned distribution on the indexes and find-links, when the requirement gives hashes.

As pip does: a link that lists one of the required sha256 hashes is taken as it is (the best tags first, a wheel
before an sdist); failing that, a link that lists no sha256 (a plain directory listing, a static server, an index
without hashes) may still be the file. It is then downloaded and its sha256 checked against the required ones before
anything is published (:mod:`wheelstore.fetch.download`, through :attr:`RemoteFile.accepted`). A link that lists
another sha256 is never downloaded. A file that turns out wrong fails the install, as in pip; other files of the same
version are not tried after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ..base.interpreter import Interpreter
from .index import RemoteFile, choose_sdist, choose_wheel


def choose_pinned(
    files: Iterable[RemoteFile], name: str, version: Version, hashes: frozenset[str], interpreter: Interpreter
) -> RemoteFile | None:
    """The file to install for ``name==version`` among ``files``, or None: with ``hashes``, a link listing one of
    them first, then one listing no sha256 (returned with ``accepted=hashes``, to be checked once downloaded)."""
    offered = list(files)
    pin = SpecifierSet(f"=={version}")

    def best(among: list[RemoteFile]) -> RemoteFile | None:
        return choose_wheel(among, name, pin, interpreter) or choose_sdist(among, name, pin, interpreter)

    if not hashes:
        return best(offered)
    listed = best([f for f in offered if f.sha256 in hashes])
    if listed is not None:
        return listed
    unlisted = best([f for f in offered if f.sha256 is None])
    return replace(unlisted, accepted=hashes) if unlisted is not None else None
