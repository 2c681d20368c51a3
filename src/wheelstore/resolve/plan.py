"""Resolve, end to end: from what the user typed to one located file (or store tree) per distribution.

Local inputs are read first, and a candidate chosen for each distribution (:mod:`candidates`). An unpinned
requirement hands the whole request to uv (:func:`resolver.lock`), and the PEP 751 lock it writes is read like any
other lock file (:mod:`pylock`). A pinned distribution with no local file is then looked up in the store by its
hashes, so a warm store needs no network at all, and only what is still missing is looked up on the indexes
(:mod:`wheelstore.fetch.index`). ``--offline`` stops before the network and names every distribution it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..base import names
from ..base.errors import Missing, NeedsResolution, StoreError
from ..base.interpreter import Interpreter
from ..base.names import canonical
from ..fetch.sources import Sources
from ..store.store import Store, Tree
from .candidates import Candidate, gather_candidates
from .pylock import is_pylock
from .requirements import lazy_environment, parse_requirements_file

if TYPE_CHECKING:
    from ..fetch.http import Http
    from ..fetch.index import RemoteFile
    from .projects import LocalProjects

#: index pages read at once (an index that serves one page per distribution; the pool of
#: :class:`~wheelstore.fetch.http.Http` holds 10)
INDEX_THREADS = 8


def plan(
    store: Store,
    interpreter: Interpreter,
    items: Sequence[str],
    requirement_files: Sequence[Path],
    find_links: Sequence[Path],
    sources: Sources,
    *,
    quiet: bool = False,
    projects: LocalProjects | None = None,
) -> list[Candidate]:
    """One candidate per distribution, each with a local wheel, a store tree (``sha256`` set), or a remote file;
    ``quiet`` silences uv's progress lines; ``projects`` builds local project directories (and keeps editables)."""
    take = projects.take if projects is not None else None
    try:
        candidates = gather_candidates(items, requirement_files, find_links, interpreter, elsewhere=True,
                                       held=_wheel_of(store), holds=store.holds, projects=take)
    except NeedsResolution:
        candidates = _resolve(store, items, requirement_files, find_links, interpreter, sources, quiet=quiet,
                              projects=projects)
    return locate(store, candidates, interpreter, sources, local=find_links)


def _resolve(
    store: Store,
    items: Sequence[str],
    requirement_files: Sequence[Path],
    find_links: Sequence[Path],
    interpreter: Interpreter,
    sources: Sources,
    *,
    quiet: bool,
    projects: LocalProjects | None = None,
) -> list[Candidate]:
    """Everything asked for, resolved by uv into a lock for this interpreter, as candidates; what the user named is
    ``requested`` (PEP 376), what uv added is not."""
    from .resolver import lock

    locks = [i for i in items if is_pylock(i)]
    requirements = [i for i in items if i not in locks]
    if projects is not None:  # a local project as an absolute file: URL, which uv locks as a directory or archive
        env = lazy_environment(interpreter)
        requirements = [projects.for_uv(r, env) for r in requirements]
    linked = sources._replace(find_links=(*sources.find_links, *map(str, find_links)))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wheelstore-lock-") as tmp:
        resolved = lock(requirements, requirement_files, interpreter, linked, Path(tmp) / "pylock.toml", quiet=quiet)
        candidates = gather_candidates([*locks, str(resolved)], [], find_links, interpreter, elsewhere=True,
                                       held=_wheel_of(store), holds=store.holds,
                                       projects=projects.take if projects is not None else None)
    named = _named(requirements, requirement_files, interpreter)
    return [c._replace(requested=True) if c.name in named else c for c in candidates]


def _named(requirements: Sequence[str], requirement_files: Sequence[Path], interpreter: Interpreter) -> set[str]:
    from packaging.requirements import (  # here: pinned inputs never need it
        InvalidRequirement,
        Requirement,
    )

    named: set[str] = set()
    for text in requirements:
        try:
            named.add(canonical(Requirement(text).name))
        except InvalidRequirement:  # a wheel path: its name is its file name's first part
            named.add(canonical(Path(text).name.split("-")[0]))
    for path in requirement_files:
        named.update(pin.name for pin in parse_requirements_file(path, interpreter).pins)
    return named


def locate(
    store: Store, candidates: Sequence[Candidate], interpreter: Interpreter, sources: Sources,
    *, local: Sequence[Path] = (),
) -> list[Candidate]:
    """Give every candidate without a local file its store tree (by any of its hashes) or its file on an index;
    ``local`` are the find-links directories already searched, named (with what they hold) when a file is missing."""
    located: list[Candidate] = []
    lacking: list[Candidate] = []
    for cand in candidates:
        if cand.wheel is not None:
            located.append(cand)
            continue
        known = cand.hashes or (frozenset({cand.remote.sha256}) if cand.remote and cand.remote.sha256 else frozenset())
        held, refused = _trees(store, known, interpreter)
        tree = next(names.select(interpreter.supported, ((t, names.wheel_tags(t.manifest.wheel)) for t in held)), None)
        if tree is None and refused:
            raise refused[0]  # what the store holds for it is untrustworthy: say so, rather than "missing"
        if tree is not None:
            located.append(cand._replace(sha256=tree.key))
        elif cand.remote is not None and not (sources.offline and _is_remote(cand.remote.url)):
            located.append(cand)
        else:
            lacking.append(cand)
    if not lacking:
        return located
    absent = ", ".join(f"{c.name}=={c.version}" for c in lacking)
    if sources.offline:
        raise Missing(f"not in the store, and --offline forbids downloading: {absent}",
                      hint="run once without --offline, or give their wheels with --find-links")
    if not sources.index_urls and not any(_is_remote(u) for u in sources.find_links):
        from ..fetch.http import Http
        from ..fetch.index import IndexClient

        http = Http(offline=True)
        try:  # what the configured local find-links hold too (the command line's were searched for the pin)
            client = IndexClient(sources, http)
            raise _missing([(c, client.files(c.name)) for c in lacking], local, interpreter, sources, http)
        finally:
            http.close()
    return _from_indexes(located, lacking, interpreter, sources, local)


def _from_indexes(
    located: list[Candidate], lacking: list[Candidate], interpreter: Interpreter, sources: Sources,
    local: Sequence[Path],
) -> list[Candidate]:
    """``located``, with a file on the indexes for each of ``lacking``, sorted by name; one with none is an error."""
    from packaging.specifiers import SpecifierSet

    from ..fetch.http import Http
    from ..fetch.index import IndexClient, choose_sdist, choose_wheel

    http = Http(offline=sources.offline)
    client = IndexClient(sources, http)
    missing: list[tuple[Candidate, list[RemoteFile]]] = []

    def pages(cand: Candidate) -> list[RemoteFile]:
        return client.files(cand.name)

    try:
        # one index page per distribution, fetched a few at a time: on a cold store they are the install's first wait.
        # The first alone, so that find-links pages, which every distribution shares, are read once.
        listed = [pages(lacking[0])]
        from concurrent.futures import ThreadPoolExecutor  # only some runs need threads

        with ThreadPoolExecutor(max(1, min(INDEX_THREADS, len(lacking) - 1)), thread_name_prefix="index") as pool:
            listed += pool.map(pages, lacking[1:])
        for cand, offered in zip(lacking, listed, strict=True):
            files = [f for f in offered if not cand.hashes or f.sha256 in cand.hashes]
            pin = SpecifierSet(f"=={cand.version}")
            chosen = (choose_wheel(files, cand.name, pin, interpreter)
                      or choose_sdist(files, cand.name, pin, interpreter))
            if chosen is None:
                missing.append((cand, offered))
            else:
                located.append(cand._replace(remote=chosen))
        if missing:
            raise _missing(missing, local, interpreter, sources, http)
    finally:
        http.close()
    return sorted(located, key=lambda c: c.name)


def _missing(
    lacking: Sequence[tuple[Candidate, list[RemoteFile]]], local: Sequence[Path], interpreter: Interpreter,
    sources: Sources, http: Http,
) -> Missing:
    """One line for the pins no location has a file for (each with what the indexes ``offered`` for it): what was
    asked, every location asked (indexes, find-links, the local directories), and what exists there."""
    from ..fetch.index import IndexClient, why_missing

    present = [d for d in dict.fromkeys(local) if d.is_dir()]
    here = IndexClient(Sources(index_urls=(), no_index=True, find_links=tuple(map(str, present))), http)
    indexes = () if sources.no_index else sources.index_urls
    places = [*indexes, *sources.find_links, *(str(d) if d in present else f"{d} (missing)" for d in local)]
    where = ", ".join(dict.fromkeys(places)) or "no index and no --find-links"
    reasons = [why_missing([*offered, *here.files(c.name)], c.name, c.version, interpreter, c.hashes, where)
               for c, offered in lacking]
    hashed = any(c.hashes for c, _ in lacking)  # a hash may have decided it: then another file is no fix
    hint = None if sources.index_urls or hashed else "give the wheel with --find-links DIR, or drop --no-index"
    return Missing("; ".join(reasons), hint=hint)


def _wheel_of(store: Store) -> Callable[[set[str]], dict[str, str]]:
    """The wheel file names of the store's trees for those of some hashes it holds (see :func:`gather_candidates`)."""

    def wheels(hashes: set[str]) -> dict[str, str]:
        trees, _refused = _trees(store, store.holds(hashes), None)
        return {t.key: t.manifest.wheel for t in trees}

    return wheels


def _trees(store: Store, hashes: Iterable[str], interpreter: Interpreter | None) -> tuple[list[Tree], list[StoreError]]:
    """The store's trees for these hashes (with ``interpreter``, also the trees built from sdists of these hashes for
    it), and the errors of those it holds but may not use (untrustworthy): one bad tree, say another platform's, must
    not stop an install that has a good one."""
    trees, refused = [], []
    for sha256 in sorted(hashes):
        try:
            tree = _held(store, sha256, interpreter) if interpreter is not None else store.lookup(sha256, remember=True)
        except StoreError as e:
            refused.append(e)
            continue
        if tree is not None:
            trees.append(tree)
    return trees, refused


def _held(store: Store, sha256: str, interpreter: Interpreter) -> Tree | None:
    """The store's tree for a file of this hash: the wheel's own, or the one built from this sdist for this
    interpreter."""
    from ..fetch.build import lookup_built

    return store.lookup(sha256) or lookup_built(store, sha256, interpreter)


def _is_remote(url: str) -> bool:
    return not url.startswith("file:") and "://" in url
