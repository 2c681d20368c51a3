"""Candidates: one wheel (a local file, a store tree or a remote file) per distribution, chosen from the pins.

The inputs are read once (:func:`read_inputs`). When every requirement is pinned, each pin gets the file its inputs
give or the wheel in the find-links directories whose tags the target interpreter prefers most (:func:`choose`);
whether the pinned set is complete is :mod:`wheelstore.resolve.plan`'s question. Unpinned requirements are listed
(:attr:`Inputs.unpinned`): the plan then has uv resolve them (:mod:`wheelstore.resolve.resolver`) and chooses again
from the lock uv writes. Every hash the inputs give is checked here, so later stages can trust ``Candidate.sha256``
and look the tree up in the store without opening the wheel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast

from packaging.version import Version

from ..base import cancel, names
from ..base.errors import InputError, NeedsResolution
from ..base.interpreter import Interpreter
from .digests import Digests, file_sha256
from .findlinks import FindLinks, describe, tag_text
from .pylock import is_pylock, pins_from_pylock
from .requirements import Pin, lazy_environment, parse_requirement, read_requirements

if TYPE_CHECKING:
    from packaging.specifiers import SpecifierSet
    from packaging.utils import NormalizedName

    from ..fetch.index import RemoteFile
    from ..store.store import Tree
    from .uvproject import Selection


class Candidate(NamedTuple):
    """One wheel file to install, and what the inputs said about it."""

    name: NormalizedName
    version: Version
    #: the local wheel file; None when the inputs named no file here (the store or an index must provide it)
    wheel: Path | None
    #: the sha256 of the local file (read here, or kept from an earlier read of the very same file), or of the store's
    #: tree to use instead; None when there is no local file and the store has no tree for any of ``hashes``
    sha256: str | None
    #: every sha256 the inputs accept for it (the intersection when several inputs give hashes); empty: none given
    hashes: frozenset[str] = frozenset()
    #: asked for by the user, rather than only carried along by a lock file (REQUESTED, PEP 376)
    requested: bool = True
    #: PEP 610 direct_url.json content for a wheel given by path; None for pins and lock entries, as pip does
    direct_url: dict[str, object] | None = None
    #: where to download it from, when it is not local (a lock entry, or an index's choice)
    remote: RemoteFile | None = None
    #: the store's tree for ``sha256``, once found: carried to the install, which then looks nothing up again
    tree: Tree | None = None
    #: the extras asked of it: their requirements count among its dependencies
    extras: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        """The file for messages: its path, its URL, or the pin."""
        if self.wheel is not None:
            return str(self.wheel)
        return self.remote.url if self.remote is not None else f"{self.name}=={self.version}"


class _Entry(NamedTuple):
    pin: Pin
    locked: bool = False  # from a lock file: not requested, not a direct install

    @property
    def direct(self) -> bool:
        return self.pin.wheel is not None and not self.locked


#: the wheel file names of the store's trees, by hash, for those of some hashes it holds a tree for
Held = Callable[[set[str]], dict[str, str]]
#: which of some hashes the store holds a tree for
Holds = Callable[[set[str]], set[str]]
#: a local project's pin as a wheel pin (built), or None when it is set aside (editable): see resolve.projects
Projects = Callable[[Pin], "Pin | None"]


class _Plan(NamedTuple):
    """One distribution: its entries, the version they agree on, and the entry whose file is given, if any."""

    name: NormalizedName
    group: list[_Entry]
    version: Version
    chosen: _Entry | None


class Inputs(NamedTuple):
    """What the user gave, read once: every requirement and lock entry, the find-links, and what uv needs."""

    entries: list[_Entry]
    links: FindLinks
    #: every pin needs a hash (pip's rule: one --hash in a requirements file turns it on for all)
    require_hashes: bool
    #: the command line's requirements and wheel paths, as typed (what uv resolves, with ``requirement_files``)
    requirements: list[str]
    requirement_files: list[Path]
    #: the pylock files given: complete sets, taken as they are
    locks: list[Path]

    @property
    def unpinned(self) -> list[Pin]:
        """The requirements that do not name one version, where no other input does: a resolver's job."""
        pinned = {e.pin.name for e in self.entries if e.pin.version is not None}
        return [e.pin for e in self.entries if e.pin.name not in pinned]

    @property
    def named(self) -> set[NormalizedName]:
        """The distributions the user asked for (REQUESTED), rather than a lock's entries."""
        return {e.pin.name for e in self.entries if not e.locked}

    @property
    def complete(self) -> bool:
        """Whether the inputs say they are a complete set: hashed requirements (pip refuses a dependency without a
        hash there) or locks alone."""
        return self.require_hashes or (bool(self.locks) and all(e.locked for e in self.entries))


def gather_candidates(
    args: Sequence[str],
    requirement_files: Sequence[Path],
    find_links: Sequence[Path],
    interpreter: Interpreter,
    *,
    elsewhere: bool = False,
    held: Held | None = None,
    holds: Holds | None = None,
    projects: Projects | None = None,
) -> list[Candidate]:
    """:func:`read_inputs`, then :func:`choose`, for inputs that must all be pinned (unpinned ones are an error)."""
    inputs = read_inputs(args, requirement_files, find_links, interpreter, projects)
    if inputs.unpinned:
        raise _unpinned(inputs)
    return choose(inputs, elsewhere=elsewhere, held=held, holds=holds)


def _unpinned(inputs: Inputs) -> NeedsResolution:
    pin = inputs.unpinned[0]
    newest = inputs.links.newest(pin.name, cast("SpecifierSet", pin.specifier))  # no version: a specifier
    where = "" if pin.origin == "command line" else f"{pin.origin}: "
    return NeedsResolution(
        f"{where}{pin.text} needs resolution",
        hint=f"pin it ({pin.name}=={newest or 'VERSION'}), give a wheel file or a pylock.toml, or let uv resolve it",
    )


def choose(inputs: Inputs, *, elsewhere: bool = False, held: Held | None = None,
           holds: Holds | None = None) -> list[Candidate]:
    """Wheel files for every pinned input, one per distribution, sorted by name, every given hash checked.

    A pin with no wheel in the find-links directories is an error, unless ``elsewhere``
    says the store or an index may provide it: then its candidate has no file (``wheel`` and ``remote`` None).
    ``held(hashes)`` maps those of ``hashes`` the store holds
    a tree for to the tree's wheel file name: a pin with a hash whose tree the interpreter can use is not read at all
    (the tree is used, not the file; were the tree gone by then, realizing the file checks the hash anyway), unless
    the find-links file suits the interpreter better and its hash is allowed. A store shared by machines of several
    platforms holds trees for wheels this interpreter cannot use; those are passed over. ``holds(hashes)`` says which
    of them the store has a tree for: a local file's digest kept from an earlier read is used only then (to find the
    tree); without one the file is read, so that realize checks it against what it holds now.
    """
    entries, links = inputs.entries, inputs.links
    groups: dict[NormalizedName, list[_Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.pin.name, []).append(entry)
    plans = [_Plan(name, group, *_agreed_version(name, group, links)) for name, group in sorted(groups.items())]
    hashed = {e.pin.name for e in entries if e.pin.hashes}
    if inputs.require_hashes and (
            bare := next((e.pin for e in entries if e.pin.name not in hashed and not e.direct), None)):
        raise InputError(f"{bare.origin}: {bare.text} has no --hash, and --require-hashes is on",
                         hint="add its --hash=sha256:... or drop --require-hashes")
    wheels = [chosen.pin.wheel if chosen and (chosen.pin.wheel or chosen.pin.remote)
              else links.find(name, version, required=not elsewhere)
              for name, _group, version, chosen in plans]
    digests = _digests(plans, wheels, links.supported, held, holds)
    return [_candidate(*plan, wheel, sha256) for plan, wheel, sha256 in zip(plans, wheels, digests, strict=True)]


def read_inputs(
    args: Sequence[str], requirement_files: Sequence[Path], find_links: Sequence[Path], interpreter: Interpreter,
    projects: Projects | None = None, selection: Selection | None = None,
) -> Inputs:
    """Every pin the inputs give; the find-links directories, with those the requirements files and wheel paths
    name; and whether every pin needs a hash. Each file is read once, here. ``projects`` builds local project
    directories into wheel pins, or sets editable ones aside (without it they are refused)."""
    env = lazy_environment(interpreter)
    entries: list[_Entry] = []
    directories = list(find_links)
    locks: list[Path] = []
    requirements: list[str] = []
    require_hashes = False
    for arg in args:
        if is_pylock(arg):
            locks.append(Path(arg))
            continue
        if arg.endswith((".txt", ".in", ".toml")):  # also valid project names, which would "need resolution"
            hint = f"-r {arg}" if not arg.endswith(".toml") else "name it pylock.toml or pylock.NAME.toml"
            raise InputError(f"{arg} is neither a wheel, a pylock file nor a requirement", hint=hint)
        requirements.append(arg)
        if (pin := _local(parse_requirement(arg, "command line", env), projects)) is not None:
            entries.append(_Entry(pin))
    for path in requirement_files:
        into = read_requirements(path, env)
        entries += [_Entry(p) for pin in into.pins if (p := _local(pin, projects)) is not None]
        directories += into.find_links
        # as pip does: one --hash in a requirements file turns on hash-checking for every requirement
        require_hashes |= into.require_hashes or any(pin.hashes for pin in into.pins)
    directories += [e.pin.wheel.parent for e in entries if e.pin.wheel is not None]
    links = FindLinks(directories, interpreter)
    for lock in locks:
        entries += [_Entry(p, locked=True) for pin in pins_from_pylock(lock, env, interpreter, links, selection)
                    if (p := _local(pin, projects)) is not None]
    return Inputs(entries, links, require_hashes, requirements, list(requirement_files), locks)


def add_lock(inputs: Inputs, lock: Path, interpreter: Interpreter, projects: Projects | None = None) -> Inputs:
    """The pins of a lock uv wrote for ``inputs``, in place of what it resolved, with the lock files the user gave
    (already read): the files each names are found in the same find-links directories, its local projects are built
    (or set aside, editable) by ``projects``."""
    pins = pins_from_pylock(lock, lazy_environment(interpreter), interpreter, inputs.links)
    # the wheel files the user named stay direct installs (PEP 610), as they were given
    given = (e for e in inputs.entries if e.locked or e.direct)
    entries = [*given, *(_Entry(p, locked=True) for pin in pins if (p := _local(pin, projects)) is not None)]
    return inputs._replace(entries=entries)


def _local(pin: Pin | None, projects: Projects | None) -> Pin | None:
    """A local project's pin through ``projects`` (built, or set aside); any other pin as it is."""
    if pin is None or pin.project is None:
        return pin
    if projects is None:
        raise InputError(f"{pin.origin}: {pin.text} is a local project, which this command does not build")
    return projects(pin)


def _digests(
    plans: list[_Plan], wheels: list[Path | None], supported: dict[str, int], held: Held | None, holds: Holds | None
) -> list[str | None]:
    """Every local file's sha256, by which the store's tree is found; a file the store's tree replaces leaves
    ``wheels``. A pin's hash the store holds a usable tree for needs no reading, nor does a file this user read before
    (:class:`Digests`); the other files are hashed a few at a time (hashlib drops the GIL)."""
    accepted = [frozenset.intersection(*sets) if (sets := [e.pin.hashes for e in group if e.pin.hashes])
                and not any(e.direct for e in group) else frozenset() for _name, group, _version, _chosen in plans]
    found = held(set().union(*accepted)) if held is not None else {}
    kept = Digests()

    def read(i: int) -> tuple[str, tuple[int, ...]]:
        chosen = plans[i].chosen
        return file_sha256(cast(Path, wheels[i]), chosen.pin.origin if chosen else "--find-links")

    digests: list[str | None] = []
    remembered: dict[int, str | None] = {}
    for i, (wheel, hashes) in enumerate(zip(wheels, accepted, strict=True)):
        best = _best_held(hashes, found, supported)
        known = best[0] if best is not None else None
        if best is not None and wheel is not None and (local := names.rank(supported, names.wheel_tags(
                wheel.name))) is not None and local < best[1]:
            # the local file suits the interpreter better: it is used if it is one of the files the hashes allow
            # (read now: this is rare), else the tree is, and the file is not this candidate's
            digest, stamp = read(i)
            kept.add(wheel, stamp, digest)
            if digest in hashes:
                known = digest
            else:
                wheels[i] = None
        if known is None and wheel is not None:
            remembered[i] = kept.get(wheel)
        digests.append(known)
    # a digest kept from an earlier read finds the tree the store has; a file whose tree it lacks is read again
    present = holds({d for d in remembered.values() if d is not None}) if holds is not None else set()
    unknown: list[int] = []
    for i, remembered_digest in remembered.items():
        if remembered_digest in present:
            digests[i] = remembered_digest
        else:
            unknown.append(i)
    if unknown:
        with cancel.threads(min(8, os.cpu_count() or 1, len(unknown)), "hash") as pool:
            for i, (digest, stamp) in zip(unknown, pool.map(read, unknown), strict=True):
                digests[i] = digest
                kept.add(cast(Path, wheels[i]), stamp, digest)
    kept.save()
    return digests


def _best_held(hashes: frozenset[str], held: dict[str, str], supported: dict[str, int]) -> tuple[str, int] | None:
    """Of the store's trees (``held``: hash to wheel file name), the hash of the one among ``hashes`` that suits the
    interpreter best, and its place in the interpreter's tags; None when it can use none of them."""
    ranked = [(place, h) for h in sorted(hashes) if (filename := held.get(h)) is not None
              and (place := names.rank(supported, names.wheel_tags(filename))) is not None]
    if not ranked:
        return None
    place, key = min(ranked)
    return key, place


def _agreed_version(name: NormalizedName, group: list[_Entry], links: FindLinks) -> tuple[Version, _Entry | None]:
    """The one version the entries agree on and the file given for it, if any; raises before any file is read."""
    pinned = [e for e in group if e.pin.version is not None]
    base = pinned[0].pin  # choose() is given pinned inputs only
    version = cast(Version, base.version)
    for entry in group:
        pin = entry.pin
        if pin.version is not None and pin.version != version or (
            pin.specifier is not None and not pin.specifier.contains(version, prereleases=True)
        ):
            raise InputError(f"conflicting pins: {base.text} ({base.origin}) and {pin.text} ({pin.origin})")
    direct = [e for e in group if e.direct]
    for entry in direct:
        wheel = cast(Path, entry.pin.wheel)
        if wheel != direct[0].pin.wheel:
            raise InputError(f"{name} is given twice: {direct[0].pin.wheel} and {wheel}",
                             hint="give one wheel per distribution")
        if names.rank(links.supported, names.wheel_tags(wheel.name)) is None:
            raise InputError(f"{wheel.name} is not for this interpreter ({describe(links.interpreter)}): "
                             f"its tags are {tag_text(wheel.name)}")
    given = (e for e in group if e.pin.wheel is not None or e.pin.remote is not None)
    return version, next(iter(direct), None) or next(given, None)


def _candidate(
    name: NormalizedName,
    group: list[_Entry],
    version: Version,
    chosen: _Entry | None,
    wheel: Path | None,
    digest: str | None,
) -> Candidate:
    """The candidate, once every hash given for it is known to match the file's ``digest`` (when there is a file:
    a download or the store's tree is checked against ``hashes`` later)."""
    direct = chosen is not None and chosen.direct
    sets = [e.pin.hashes for e in group if e.pin.hashes]
    if wheel is None and sets and not frozenset.intersection(*sets):
        raise InputError(f"the hashes given for {name} in {group[0].pin.origin} and {group[-1].pin.origin} have "
                         "none in common")
    for entry in group:
        if wheel is not None and entry.pin.hashes and digest not in entry.pin.hashes:
            raise InputError(f"{wheel}: sha256 {digest} matches none of the hashes for {name} in {entry.pin.origin}",
                             hint="if the file is the right one, update its hashes; else replace the file")
    direct_url: dict[str, object] | None = None
    if direct and wheel is not None:
        direct_url = {"url": wheel.as_uri(), "archive_info": {"hashes": {"sha256": digest}, "hash": f"sha256={digest}"}}
    if chosen is not None and chosen.pin.project is not None and wheel is not None:  # built from a directory
        direct_url = {"url": chosen.pin.project.as_uri(), "dir_info": {}}
    return Candidate(
        name=name,
        version=version,
        wheel=wheel,
        sha256=digest,
        hashes=frozenset.intersection(*sets) if sets else frozenset(),
        requested=any(not e.locked for e in group),
        direct_url=direct_url,
        remote=chosen.pin.remote if chosen is not None and wheel is None else None,
        extras=frozenset().union(*(e.pin.extras for e in group)),
    )
