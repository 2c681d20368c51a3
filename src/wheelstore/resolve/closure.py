"""Whether a set of distributions is closed under its dependencies: ``pip check``, from metadata, before anything is
linked.

``sync`` takes its input as complete (as ``uv pip sync`` does), and a pinned set found whole in the store installs
without a resolver; both must first know that every ``Requires-Dist`` of every distribution in the set, with the
markers evaluated for the target and the extras asked of each, is met by another one in it. Otherwise the venv fails
on its first import, long after the install said it worked.

The answer for a set of trees depends only on their keys (a tree is its wheel's content), the extras asked and the
target's marker values, so a set found closed is remembered in the user's cache: a warm install of a set checked
before reads one small file, and neither METADATA nor packaging's requirement parser (~14 ms to import).
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from packaging.version import InvalidVersion, Version

from ..base import fsio, usercache
from ..base.distinfo import Distribution
from ..base.errors import BadMetadata, Unsatisfied, printable
from ..base.interpreter import Interpreter
from ..base.names import canonical, requirement_problem
from ..store.store import Tree
from .requirements import MarkerEnvironment, lazy_environment, marker_errors

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.utils import NormalizedName

#: the largest METADATA read (numpy's is 60 KiB; a long description may be a few hundred)
MAX_METADATA = 16 << 20
#: the user's cache entries of sets found closed: ``closed/<digest>``
_CACHE_AREA = "closed"
#: what sync suggests for a set that is not closed
SYNC_HINT = "add them to the input, or use 'wheelstore install', which resolves dependencies"


class Requires(NamedTuple):
    """One distribution of a set: what it is, what its METADATA requires, and the extras asked of it."""

    name: NormalizedName
    version: Version
    requires: tuple[str, ...]  #: its ``Requires-Dist`` values, as written
    extras: frozenset[str] = frozenset()  #: extras asked of it by the input (normalized or not)


class Unmet(NamedTuple):
    """A requirement of one distribution that no distribution of the set meets."""

    name: NormalizedName  #: the distribution that requires
    version: Version
    requirement: str  #: what it requires, without its marker: ``urllib3<2``, ``requests[socks]``
    required: NormalizedName  #: the name required
    found: Version | None  #: the version the set holds, None when it holds none

    def describe(self, where: str = "installed") -> str:
        """pip check's words: ``where`` is ``installed`` for a venv, ``in the set`` for an input."""
        if self.requirement.startswith("Python"):  # the target interpreter (Requires-Python)
            return f"{self.name} {self.version} requires {self.requirement}, but the target is Python {self.found}"
        if self.found is None:
            return f"{self.name} {self.version} requires {self.required}, which is not {where}"
        return f"{self.name} {self.version} requires {self.requirement}, but {self.required} {self.found} is {where}"


# -- reading Requires-Dist ---------------------------------------------------------------------------------------------


def requires_dist(metadata: bytes, what: str) -> list[str]:
    """The ``Requires-Dist`` values of a METADATA file's header block (``what`` names it for the error). A header
    block without a Name is not a METADATA; nor is text that is not UTF-8."""
    try:  # (only the header block: what was read of the description after it may end mid-character)
        text = metadata.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8")
    except UnicodeDecodeError:
        raise BadMetadata(f"{what} is not UTF-8 text, so what it requires cannot be checked",
                          hint="run wheelstore verify; a wheel with such metadata cannot be installed") from None
    found: list[str] = []
    named = folding = False
    python = ""
    for line in text.split("\n"):  # (a License field may fold a whole licence into the header: only ours are kept)
        if line[:1] in (" ", "\t"):
            if folding:
                found[-1] = f"{found[-1]} {line.strip()}"
            continue
        field, sep, value = line.partition(":")
        field = field.rstrip().lower()
        folding = bool(sep) and field == "requires-dist"
        if folding:
            found.append(value.strip())
        named = named or (bool(sep) and field == "name")
        python = value.strip() if sep and field == "requires-python" else python
    if not named:
        raise BadMetadata(f"{what} has no Name field, so it is not a METADATA file",
                          hint="run wheelstore verify; a wheel with such metadata cannot be installed")
    return [r for r in found if r] + ([f"{PYTHON}{python}"] if python else [])


#: how :func:`requires_dist` gives a METADATA's ``Requires-Python`` among its requirements: the target interpreter
#: is then one more thing the set must satisfy (pip and uv refuse such a wheel too)
PYTHON = "\0Requires-Python "


def _read_head(fd: int) -> bytes:
    """A METADATA file's header block and a little more (up to :data:`MAX_METADATA` bytes and one over): the long
    description after it is most of the file (fonttools': 137 of 140 KiB) and needs no reading."""
    data = b""
    while len(data) <= MAX_METADATA and b"\n\n" not in data and b"\n\r\n" not in data:
        chunk = os.read(fd, min(_HEAD_READ, MAX_METADATA + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    return data


#: how much of a METADATA file is read at a time while looking for the end of its header block
_HEAD_READ = 16 << 10


def requires_of_tree(tree: Tree) -> list[str]:
    """The Requires-Dist values of a store tree's METADATA. The tree is another user's: its dist-info (from the
    manifest) and METADATA are opened without following a link, without blocking, and only a regular file of at
    most :data:`MAX_METADATA` bytes is read."""
    rel = f"{tree.manifest.dist_info}/METADATA"
    what = f"{printable(str(tree.path))}/{printable(rel)} ({printable(tree.manifest.wheel)})"
    parts = rel.split("/")
    fds: list[int] = []
    try:
        fds.append(fsio.open_dir(str(tree.path)))
        for part in parts[:-1]:
            if part in ("", ".", ".."):
                raise OSError(0, "not a path inside the tree")
            fds.append(fsio.open_dir(part, dir_fd=fds[-1]))
        fds.append(os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fds[-1]))
        st = os.fstat(fds[-1])
        data = _read_head(fds[-1]) if stat.S_ISREG(st.st_mode) else None
    except OSError as e:
        raise BadMetadata(f"{what} cannot be read as a file of its tree ({e.strerror})",
                          hint="run wheelstore verify; the tree's publisher or an admin can repair it") from None
    finally:
        for fd in fds:
            os.close(fd)
    if data is None or len(data) > MAX_METADATA:
        raise BadMetadata(f"{what} is not a regular file of at most {MAX_METADATA} bytes",
                          hint="run wheelstore verify; the tree's publisher or an admin can repair it")
    return requires_dist(data, what)


def requires_of_wheel(path: Path) -> list[str]:
    """The Requires-Dist values of a local wheel file's METADATA (the top-level ``*.dist-info`` directory's)."""
    import zipfile  # here: a warm install reads no wheel

    what = printable(str(path))
    try:
        with zipfile.ZipFile(path) as zf:
            found = [i for i in zf.infolist() if i.filename.count("/") == 1
                     and i.filename.endswith(".dist-info/METADATA")]
            if len(found) != 1:
                raise BadMetadata(f"{what} has {len(found)} top-level .dist-info/METADATA files, not one",
                                  hint="a wheel must have exactly one; rebuild it")
            if found[0].file_size > MAX_METADATA:
                raise BadMetadata(f"{what}: its METADATA is larger than {MAX_METADATA} bytes")
            with zf.open(found[0]) as f:
                data = f.read(MAX_METADATA + 1)
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise BadMetadata(f"{what}'s METADATA cannot be read ({getattr(e, 'strerror', None) or e})") from None
    return requires_dist(data, f"{what} (its METADATA)")


def requires_of_installed(dist: Distribution) -> list[str]:
    """The Requires-Dist values of a distribution installed in a venv. Its METADATA may be a link into a tree (a
    linked venv), so it is followed, but opened without blocking and read only as a regular file."""
    path = dist.dist_info / "METADATA"
    what = printable(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise BadMetadata(f"{what} cannot be read ({e.strerror})",
                          hint=f"reinstall {dist.display_name} (wheelstore install --reinstall-package)") from None
    try:
        st = os.fstat(fd)
        data = _read_head(fd) if stat.S_ISREG(st.st_mode) else None
    except OSError as e:
        raise BadMetadata(f"{what} cannot be read ({e.strerror})") from None
    finally:
        os.close(fd)
    if data is None or len(data) > MAX_METADATA:
        raise BadMetadata(f"{what} is not a regular file of at most {MAX_METADATA} bytes",
                          hint=f"reinstall {dist.display_name} (wheelstore install --reinstall-package)")
    return requires_dist(data, what)


def of_tree(tree: Tree, extras: Iterable[str] = ()) -> Requires:
    """A tree as one distribution of a set, with the ``extras`` the input asks of it."""
    return Requires(canonical(tree.manifest.name), _version(tree.manifest.version, tree.manifest.wheel),
                    tuple(requires_of_tree(tree)), frozenset(extras))


def of_installed(dist: Distribution, extras: Iterable[str] = ()) -> Requires:
    """An installed distribution as one of a set."""
    return Requires(dist.name, _version(dist.version, str(dist.dist_info)), tuple(requires_of_installed(dist)),
                    frozenset(extras))


def _version(text: str, what: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise BadMetadata(f"{printable(what)}: {printable(text)!r} is not a version, so what requires it cannot be "
                          "checked") from None


# -- the check ---------------------------------------------------------------------------------------------------------


def unmet(dists: Sequence[Requires], marker_env: Mapping[str, str]) -> list[Unmet]:
    """Every requirement of every distribution in ``dists`` that none of them meets: missing, or present at a
    version outside the specifier (a prerelease counts, as in pip check). A requirement applies when it has no
    marker, or its marker holds for ``marker_env`` with ``extra`` set to nothing or to one of the extras asked of
    its distribution; ``x[y]`` asks ``y`` of ``x``, whose requirements under that extra must then be met too (up to
    a fixed point, so cycles end). Of two distributions of one name the first counts."""
    by_name: dict[NormalizedName, Requires] = {}
    for d in dists:
        by_name.setdefault(canonical(d.name), d)
    asked = {n: {canonical(e) for e in d.extras} for n, d in by_name.items()}
    followed: dict[NormalizedName, set[str]] = {n: set() for n in by_name}  # extras applied so far ("" = none)
    applies: dict[NormalizedName, dict[str, Requirement]] = {n: {} for n in by_name}
    queue = list(by_name)
    while queue:
        name = queue.pop()
        dist = by_name[name]
        new = ({""} | asked[name]) - followed[name]
        followed[name] |= new
        for text in dist.requires:
            if text in applies[name] or text.startswith(PYTHON):
                continue
            req = _requirement(text, dist)
            if req.marker is not None and not any(_holds(req, dist, marker_env, e) for e in sorted(new)):
                continue
            applies[name][text] = req
            target = canonical(req.name)
            if target in by_name and (more := {canonical(e) for e in req.extras} - asked[target]):
                asked[target] |= more
                queue.append(target)
    found = [_python_unmet(d, text.removeprefix(PYTHON), marker_env) for d in by_name.values() for text in d.requires
             if text.startswith(PYTHON)]
    for name, reqs in applies.items():
        dist = by_name[name]
        for req in reqs.values():
            target = canonical(req.name)
            there = by_name.get(target)
            if there is None or not req.specifier.contains(there.version, prereleases=True):
                shown = f"{target}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
                found.append(Unmet(name, dist.version, shown, target, None if there is None else there.version))
    return sorted({u for u in found if u is not None}, key=lambda u: (u.name, u.required, u.requirement))


def _python_unmet(dist: Requires, spec: str, marker_env: Mapping[str, str]) -> Unmet | None:
    """The target Python against a distribution's ``Requires-Python``."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        allowed = SpecifierSet(spec)
    except InvalidSpecifier:
        raise BadMetadata(f"{dist.name} {dist.version} declares Requires-Python {printable(spec)!r}, which is not a "
                          "version specifier", hint="fix or rebuild the wheel") from None
    python = Version(marker_env["python_full_version"])
    if allowed.contains(python, prereleases=True):
        return None
    return Unmet(dist.name, dist.version, f"Python{allowed}", canonical("python"), python)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Requirement:
    from packaging.requirements import Requirement  # here: a set checked before never parses a requirement

    return Requirement(text)


def _requirement(text: str, dist: Requires) -> Requirement:
    from packaging.requirements import InvalidRequirement  # here: as above

    try:
        return _parse(text)
    except InvalidRequirement as e:
        raise BadMetadata(f"{dist.name} {dist.version} declares Requires-Dist {printable(text)!r}, which is not a "
                          f"requirement ({printable(requirement_problem(text, e))})",
                          hint="its dependencies cannot be checked; fix or rebuild the wheel") from None


def _holds(req: Requirement, dist: Requires, env: Mapping[str, str], extra: str) -> bool:
    assert req.marker is not None
    try:
        return req.marker.evaluate({**env, "extra": extra})
    except marker_errors() as e:
        raise BadMetadata(f"{dist.name} {dist.version}: the marker of its requirement {req.name} cannot be evaluated "
                          f"({printable(str(e))})", hint="its dependencies cannot be checked") from None


def unsatisfied(found: Sequence[Unmet], what: str = "the input", where: str = "in the set",
                hint: str | None = SYNC_HINT) -> Unsatisfied:
    """One line naming every unmet requirement, for ``what`` (the input, the venv)."""
    listed = "; ".join(u.describe(where) for u in found)
    return Unsatisfied(f"{what} does not hold what its distributions require: {listed}", hint=hint)


# -- sets of trees, remembered -----------------------------------------------------------------------------------------


def unmet_in_trees(trees: Sequence[Tree], interpreter: Interpreter, extras: Mapping[str, Collection[str]] | None = None,
                   env: MarkerEnvironment | None = None) -> list[Unmet]:
    """:func:`unmet` for a set of store trees installed for ``interpreter``, with the ``extras`` asked of them (by
    name, normalized or not); ``env``, its marker values if the caller has them. A set found closed is remembered in
    the user's cache (:func:`cache_entry`), and is then taken as closed without computing the marker values,
    reading a METADATA or parsing a requirement (packaging's parser and markers are not even imported)."""
    asked: dict[str, frozenset[str]] = {canonical(n): frozenset(map(canonical, es)) for n, es in (extras or {}).items()}
    entry = cache_entry([(tree_identity(t), asked.get(canonical(t.manifest.name), frozenset())) for t in trees], {},
                        interpreter)
    if usercache.read_bytes(entry) is not None:
        return []
    values = (env or lazy_environment(interpreter))()
    found = unmet([of_tree(t, asked.get(canonical(t.manifest.name), ())) for t in trees], values)
    if not found:
        usercache.write_bytes(entry, b"{}")
    return found


#: changes when what the check counts as met does, so that no answer of another rule is taken
_RULES = 2


def tree_identity(tree: Tree) -> str:
    """A tree's key with the identity of its METADATA file (inode, size, mtime, ctime), for the cache of closed
    sets: a member who rewrites their tree's METADATA moves its ctime, so what was remembered of it no longer
    applies, and stays so after ``verify --repair`` puts the right file back."""
    try:
        st = os.lstat(tree.path / tree.manifest.dist_info / "METADATA")
    except OSError:
        return f"{tree.key}:-"
    return f"{tree.key}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def cache_entry(
    keys: Sequence[tuple[str, Collection[str]]], kept: Mapping[NormalizedName, str], interpreter: Interpreter
) -> str:
    """The user's cache entry that says a set is closed: by its members' hashes (a tree's key is its wheel's sha256)
    with the extras asked of each, the versions a venv keeps beside them, and what the marker values come from (the
    target's version and implementation, this machine's uname)."""
    import hashlib  # here: as in usercache, not at start

    keyed = sorted((key, sorted(map(canonical, extras))) for key, extras in keys)
    target = [interpreter.implementation, interpreter.version, list(os.uname()), sys.platform, os.name,
              list(sys.implementation.version)]  # (the last: marker_environment's implementation_version off CPython)
    text = json.dumps([_RULES, keyed, sorted(kept.items()), target], separators=(",", ":"))
    return f"{_CACHE_AREA}/{hashlib.sha256(text.encode()).hexdigest()[:40]}"
