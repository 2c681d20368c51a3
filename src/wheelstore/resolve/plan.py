"""Resolve, end to end: from what the user typed to one located file (or store tree) per distribution.

The inputs are read once (:func:`~wheelstore.resolve.candidates.read_inputs`). A pinned set is located first: each
distribution's store tree (by any of its hashes, so a warm store needs no network at all), local file, or file on
the indexes (:mod:`wheelstore.fetch.index`). Its dependencies are then checked from the trees' metadata
(:mod:`closure`), against what the venv keeps: a set they complete installs as it is. Otherwise, and for unpinned
requirements, the request goes to uv (:func:`resolver.lock`), with the venv's versions as preferences (upgrade only
if needed, as ``uv pip install``), and the PEP 751 lock it writes is located the same way (:mod:`pylock`). ``sync``
takes its inputs as the whole set: a missing dependency is an error before anything is linked. ``--offline`` stops
before the network and names every distribution it lacks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..base import cancel, names
from ..base.distinfo import Distribution
from ..base.errors import Missing, ResolutionError, StoreError
from ..base.interpreter import Interpreter
from ..fetch.sources import Sources
from ..store.store import Store, Tree
from .candidates import Candidate, Inputs, choose, read_inputs
from .requirements import lazy_environment

if TYPE_CHECKING:
    from packaging.utils import NormalizedName

    from ..fetch.http import Http
    from ..fetch.index import RemoteFile
    from .projects import LocalProjects
    from .uvproject import Selection

#: index pages read at once (an index that serves one page per distribution; the pool of
#: :class:`~wheelstore.fetch.http.Http` holds 10)
INDEX_THREADS = 8


class Request(NamedTuple):
    """What to install, as ``uv pip install`` (or, ``exact``, ``uv pip sync``) takes it."""

    #: requirements, wheel paths and pylock files, as typed
    items: Sequence[str] = ()
    requirement_files: Sequence[Path] = ()
    #: local find-links directories (remote ones are in the :class:`Sources`)
    find_links: Sequence[Path] = ()
    #: sync: the inputs are the whole set; nothing is added, and a missing dependency is an error
    exact: bool = False
    #: ignore the venv's versions (``-U``), or those of these distributions (``--upgrade-package``)
    upgrade: bool = False
    upgrade_packages: frozenset[NormalizedName] = frozenset()
    #: install exactly what is named, without dependencies
    no_deps: bool = False
    #: local project directories to install editable (``-e DIR``)
    editables: Sequence[str] = ()
    #: link again what the venv already holds at the right version: all (``--reinstall``), or these
    reinstall: bool = False
    reinstall_packages: frozenset[NormalizedName] = frozenset()
    #: what to take from the pylock files given (their extras and groups), in uv sync's options; None: the defaults
    selection: Selection | None = None

    def reinstalls(self, name: NormalizedName) -> bool:
        return self.reinstall or name in self.reinstall_packages


class Plan(NamedTuple):
    """One candidate per distribution, each located; and whether their dependencies are still to be checked, once
    every tree is realized (a set taken as complete whose files are not all here yet)."""

    candidates: list[Candidate]
    check_after: bool = False
    #: a set found closed from files not yet in the store: the kept versions it was checked with, so that the
    #: install remembers it by the trees it realizes (:func:`dependencies.remember_closed`), as the next install
    #: will look it up
    closed: dict[NormalizedName, str] | None = None


def plan(
    store: Store,
    interpreter: Interpreter,
    request: Request,
    sources: Sources,
    installed: Mapping[NormalizedName, Distribution] | None = None,
    *,
    projects: LocalProjects | None = None,
) -> Plan:
    """The candidates for ``request`` into a venv that holds ``installed``; ``projects`` builds local project
    directories (and keeps editables aside, for the venv to install)."""
    inputs = read_inputs(request.items, request.requirement_files, request.find_links, interpreter,
                         projects.take if projects is not None else None, request.selection)
    view = _StoreView(store, interpreter)
    # an editable project's dependencies are known only to its build backend: uv asks it
    editables = projects is not None and bool(projects.editables) and not request.exact
    if not inputs.unpinned and not (editables and not request.no_deps):
        candidates = locate(view, choose(inputs, elsewhere=True, held=view.wheels, holds=store.holds), sources,
                            local=request.find_links)
        if request.no_deps:
            return Plan(candidates)
        complete = request.exact or inputs.complete
        from .dependencies import unmet_of  # here: only pinned sets check their dependencies

        kept = {} if complete else _kept(installed or {}, request)
        unmet = unmet_of(candidates, kept, interpreter)
        if unmet is not None and not unmet:  # found closed: remembered again by the trees the install realizes
            return Plan(candidates, closed=kept if any(c.tree is None for c in candidates) else None)
        if complete:
            if unmet is None:
                return Plan(candidates, check_after=True)
            from .dependencies import unmet_error

            raise unmet_error(unmet, exact=request.exact)
    elif (satisfied := _satisfied(inputs, request, installed or {}, interpreter, editables)) is not None:
        return Plan(satisfied)  # as uv pip install: "Checked 1 package", no resolver, no index
    resolved = _resolve(view, inputs, request, sources, installed or {}, projects=projects)
    return Plan(locate(view, resolved, sources, local=request.find_links), check_after=request.exact)


def _satisfied(
    inputs: Inputs, request: Request, installed: Mapping[NormalizedName, Distribution], interpreter: Interpreter,
    editables: bool,
) -> list[Candidate] | None:
    """For an install of requirements the venv already meets (each named distribution installed, whole, at a version
    the requirement allows, and their dependencies met by the venv): candidates that keep them as they are. None
    when anything calls for the resolver (an upgrade, a reinstall, a lock, a file, a project, a missing piece)."""
    if request.exact or request.upgrade or request.upgrade_packages or request.reinstall or editables \
            or inputs.locks or any(e.pin.wheel or e.pin.remote or e.pin.project for e in inputs.entries):
        return None
    from packaging.version import InvalidVersion, Version

    from .closure import Requires, requires_of_installed, unmet
    from .requirements import marker_environment

    named: dict[NormalizedName, Candidate] = {}
    for entry in inputs.entries:
        pin, dist = entry.pin, installed.get(entry.pin.name)
        if dist is None or pin.name in request.reinstall_packages or not (dist.dist_info / "RECORD").is_file():
            return None
        try:
            version = Version(dist.version)
        except InvalidVersion:
            return None
        if pin.version is not None and pin.version != version or pin.specifier is not None and \
                not pin.specifier.contains(version, prereleases=True):
            return None
        extras = named[pin.name].extras | pin.extras if pin.name in named else pin.extras
        named[pin.name] = Candidate(pin.name, version, None, None, extras=extras)
    members = [Requires(n, c.version, tuple(requires_of_installed(installed[n])), c.extras) for n, c in named.items()]
    for name, dist in installed.items():
        try:
            members += [] if name in named else [Requires(name, Version(dist.version), ())]
        except InvalidVersion:
            continue
    return list(named.values()) if not unmet(members, marker_environment(interpreter)) else None


def _kept(installed: Mapping[NormalizedName, Distribution], request: Request) -> dict[NormalizedName, str]:
    """The versions the venv holds that an install keeps when they satisfy the request (all, unless upgrading)."""
    if request.upgrade:
        return {}
    return {n: d.version for n, d in installed.items() if n not in request.upgrade_packages}


def _resolve(
    view: _StoreView,
    inputs: Inputs,
    request: Request,
    sources: Sources,
    installed: Mapping[NormalizedName, Distribution],
    *,
    projects: LocalProjects | None = None,
) -> list[Candidate]:
    """Everything asked for, resolved by uv into a lock for this interpreter, as candidates; what the user named is
    ``requested`` (PEP 376), what uv added is not. The venv's versions are uv's preferences, so that an install
    keeps what satisfies the request; sync resolves without dependencies (its input is the whole set)."""
    from .candidates import add_lock
    from .resolver import lock

    linked = sources._replace(find_links=(*sources.find_links, *map(str, request.find_links)))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wheelstore-lock-") as tmp:
        index = Path(tmp) / "index"
        if sources.offline:  # the store is the index (storeindex): what uv picks must be installable offline
            from .storeindex import offline_sources

            linked = offline_sources(view.store, view.interpreter, linked, index, view.scan())
        try:
            resolved = lock(_for_uv(inputs, request, view.interpreter, projects), inputs.requirement_files,
                            view.interpreter, linked, Path(tmp) / "pylock.toml",
                            preferences=_kept(installed, request), upgrade=request.upgrade,
                            upgrade_packages=request.upgrade_packages, no_deps=request.no_deps or request.exact,
                            checked=False, offline_cache=f"the store ({view.store.root})")
        except ResolutionError as e:
            if not sources.offline:
                raise
            # uv resolved against the store's index alone: what it says of "the cache" is about the store
            raise Missing(e.message, hint="run once without --offline, or give its wheels with --find-links DIR"
                          ) from None
        take = projects.take if projects is not None else None
        candidates = choose(add_lock(inputs, resolved, view.interpreter, take), elsewhere=True, held=view.wheels,
                            holds=view.store.holds)
        if sources.offline:  # a stub of the store's index stands for its tree, found by the hash the lock gives
            from .storeindex import is_stub

            candidates = [c._replace(wheel=None, sha256=None) if c.wheel and is_stub(c.wheel, index) else c
                          for c in candidates]
    named = inputs.named
    return [c._replace(requested=True) if c.name in named else c for c in candidates]


def _for_uv(inputs: Inputs, request: Request, interpreter: Interpreter, projects: LocalProjects | None) -> list[str]:
    """The command line's requirements as uv must get them: local projects and sdists as absolute ``file:`` URLs,
    and the ``-e`` projects as ``-e DIR`` lines (uv asks their backends for their dependencies)."""
    if projects is None:
        return inputs.requirements
    env = lazy_environment(interpreter)
    return [*(projects.for_uv(r, env) for r in inputs.requirements),
            *(f"-e {os.path.abspath(e)}" for e in request.editables)]


class _StoreView:
    """The store's trees as this plan finds them, each looked up once: by the hashes a pin gives while choosing,
    then again when locating, and by the install."""

    def __init__(self, store: Store, interpreter: Interpreter) -> None:
        self.store = store
        self.interpreter = interpreter
        self._found: dict[str, Tree | StoreError | None] = {}
        self._built_tried: set[str] = set()
        self._scanned: dict[str, list[Tree]] | None = None

    def scan(self) -> dict[str, list[Tree]]:
        """Every tree the interpreter can use, by name (:func:`storeindex.scan`), made once, with the lookups
        shared."""
        if self._scanned is None:
            from .storeindex import scan

            self._scanned = scan(self.store, self.interpreter, lambda key: self.tree(key, built=False))
        return self._scanned

    def named(self, name: str, version: str) -> list[Tree]:
        """The store's trees of this name and version, best tags first: for a pin without hashes."""
        from .storeindex import trees_named

        return trees_named(self.store, name, version, self.interpreter, self.scan())

    def tree(self, sha256: str, *, built: bool = True) -> Tree | None:
        """The tree for a file of this hash (the wheel's own, or, ``built``, the one built from this sdist for this
        interpreter); raises the :class:`StoreError` of one the store holds but may not use."""
        if sha256 not in self._found:
            try:
                self._found[sha256] = self.store.lookup(sha256, remember=True)
            except StoreError as e:
                self._found[sha256] = e
        if self._found[sha256] is None and built and sha256 not in self._built_tried:  # once, whoever asked first
            self._built_tried.add(sha256)
            try:
                self._found[sha256] = self._built(sha256)
            except StoreError as e:
                self._found[sha256] = e
        found = self._found[sha256]
        if isinstance(found, StoreError):
            raise found
        return found

    def _built(self, sha256: str) -> Tree | None:
        from ..fetch.build import lookup_built

        return lookup_built(self.store, sha256, self.interpreter)

    def wheels(self, hashes: set[str]) -> dict[str, str]:
        """The wheel file names of the trees the store holds for some of ``hashes`` (see
        :func:`~wheelstore.resolve.candidates.choose`)."""
        trees, _refused = self.trees(self.store.holds(hashes))
        return {t.key: t.manifest.wheel for t in trees}

    def trees(self, hashes: Iterable[str]) -> tuple[list[Tree], list[StoreError]]:
        """The store's trees for these hashes, and the errors of those it holds but may not use (untrustworthy): one
        bad tree, say another platform's, must not stop an install that has a good one."""
        trees, refused = [], []
        for sha256 in sorted(hashes):
            try:
                tree = self.tree(sha256)
            except StoreError as e:
                refused.append(e)
                continue
            if tree is not None:
                trees.append(tree)
        return trees, refused


def locate(
    view: _StoreView, candidates: Sequence[Candidate], sources: Sources, *, local: Sequence[Path] = (),
) -> list[Candidate]:
    """Give every candidate without a local file its store tree (by any of its hashes) or its file on an index;
    ``local`` are the find-links directories already searched, named (with what they hold) when a file is missing.
    A local file whose tree the store holds gets that tree too."""
    interpreter = view.interpreter
    located: list[Candidate] = []
    lacking: list[Candidate] = []
    for cand in candidates:
        if cand.wheel is not None:
            located.append(cand._replace(tree=view.tree(cand.sha256, built=False)) if cand.sha256 else cand)
            continue
        known = cand.hashes or (frozenset({cand.remote.sha256}) if cand.remote and cand.remote.sha256 else frozenset())
        held, refused = view.trees(known)
        if not known and cand.remote is None:  # a pin without hashes: the store's trees of that name and version
            held = view.named(cand.name, str(cand.version))
        tree = next(names.select(interpreter.supported, ((t, names.wheel_tags(t.manifest.wheel)) for t in held)), None)
        if tree is None and refused:
            raise refused[0]  # what the store holds for it is untrustworthy: say so, rather than "missing"
        if tree is not None:
            located.append(cand._replace(sha256=tree.key, tree=tree))
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
    if not sources.index_urls and not sources.find_links:  # (configured find-links, even local ones, are read below)
        from ..fetch.http import Http

        http = Http(offline=True)
        try:  # only the command line's directories are left, and they were searched for the pin: say what they hold
            raise _missing([(c, []) for c in lacking], local, interpreter, sources, http)
        finally:
            http.close()
    return _from_indexes(located, lacking, interpreter, sources, local)


def _from_indexes(
    located: list[Candidate], lacking: list[Candidate], interpreter: Interpreter, sources: Sources,
    local: Sequence[Path],
) -> list[Candidate]:
    """``located``, with a file on the indexes for each of ``lacking``, sorted by name; one with none is an error."""
    from ..fetch.http import Http
    from ..fetch.index import IndexClient
    from ..fetch.pinned import choose_pinned

    http = Http(offline=sources.offline)
    client = IndexClient(sources, http)
    missing: list[tuple[Candidate, list[RemoteFile]]] = []

    def pages(cand: Candidate) -> list[RemoteFile]:
        return client.files(cand.name)

    try:
        # one index page per distribution, fetched a few at a time: on a cold store they are the install's first wait.
        # The first alone, so that find-links pages, which every distribution shares, are read once.
        listed = [pages(lacking[0])]
        with cancel.threads(max(1, min(INDEX_THREADS, len(lacking) - 1)), "index") as pool:
            listed += pool.map(pages, lacking[1:])
        for cand, offered in zip(lacking, listed, strict=True):
            chosen = choose_pinned(offered, cand.name, cand.version, cand.hashes, interpreter)
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


def _is_remote(url: str) -> bool:
    return not url.startswith("file:") and "://" in url
