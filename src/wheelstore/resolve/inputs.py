"""Resolve, for local inputs: turn wheel paths, pins, requirements files and pylock files into wheel files.

Real resolution (unpinned requirements, indexes) comes with the fetch stage. Until then a pinned set is taken as
complete, as ``pip install --no-deps -r`` would take it, and each pin gets the wheel in the find-links directories
whose tags the target interpreter prefers most. Every hash the inputs give is checked here, so later stages can trust
``Candidate.sha256`` and look the tree up in the store without opening the wheel.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast
from urllib.parse import urlparse

from packaging.version import InvalidVersion, Version

from ..base import names
from ..base.errors import InputError, NeedsResolution, WheelError
from ..base.interpreter import Interpreter
from ..base.names import canonical
from ..store.wheel import CHUNK, normalize_sha256

if TYPE_CHECKING:
    from packaging.markers import (
        Environment,
        InvalidMarker,
        UndefinedComparison,
        UndefinedEnvironmentName,
    )
    from packaging.pylock import PackageSdist, PackageWheel
    from packaging.specifiers import SpecifierSet
    from packaging.utils import BuildTag, NormalizedName

    from ..fetch.index import RemoteFile


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

    @property
    def where(self) -> str:
        """The file for messages: its path, its URL, or the pin."""
        if self.wheel is not None:
            return str(self.wheel)
        return self.remote.url if self.remote is not None else f"{self.name}=={self.version}"


class Pin(NamedTuple):
    """One requirement as written, and where; only a pinned one (``version`` set) installs without a resolver."""

    name: NormalizedName
    version: Version | None
    #: what the requirement allows; None for exactly ``version`` (``==`` one version, or a file)
    specifier: SpecifierSet | None
    text: str
    origin: str
    hashes: frozenset[str] = frozenset()
    #: a file given for it: a wheel path, ``name @ file:///...whl``, or a lock entry
    wheel: Path | None = None
    #: a lock entry's file that must be downloaded (a wheel, or an sdist to build)
    remote: RemoteFile | None = None


class Requirements:
    """A requirements file and the files it includes, after markers: the pins and the options that matter now."""

    def __init__(self) -> None:
        self.pins: list[Pin] = []
        self.find_links: list[Path] = []
        self.require_hashes = False


def _marker_errors() -> tuple[type[InvalidMarker], type[UndefinedComparison], type[UndefinedEnvironmentName]]:
    """What evaluating a marker raises; packaging.markers is imported only where markers are met."""
    from packaging.markers import (
        InvalidMarker,
        UndefinedComparison,
        UndefinedEnvironmentName,
    )

    return InvalidMarker, UndefinedComparison, UndefinedEnvironmentName


_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy", "graalpy": "GraalVM", "jython": "Jython"}


def marker_environment(interpreter: Interpreter) -> dict[str, str]:
    """PEP 508 marker values for the target interpreter; the platform values are this machine's, where it runs."""
    from packaging.markers import default_environment

    env = {key: str(value) for key, value in default_environment().items()}
    full = ".".join(map(str, interpreter.version))
    env.update(
        python_version=interpreter.python_version,
        python_full_version=full,
        implementation_name=interpreter.implementation,
        platform_python_implementation=_IMPLEMENTATIONS.get(interpreter.implementation, interpreter.implementation),
    )
    if interpreter.implementation == "cpython":
        env["implementation_version"] = full
    return env


# -- requirements ---------------------------------------------------------------------------------------------------


#: markers as needed: ``marker_environment`` for the target, computed (and packaging.markers imported) on first use
MarkerEnvironment = Callable[[], dict[str, str]]


def _lazy_environment(interpreter: Interpreter) -> MarkerEnvironment:
    """``marker_environment(interpreter)`` on first call, then the same dict: plain pins need no marker values."""
    computed: list[dict[str, str]] = []

    def get() -> dict[str, str]:
        if not computed:
            computed.append(marker_environment(interpreter))
        return computed[0]

    return get


#: ``name==version`` with nothing else: a PEP 508 name and a PEP 440 version in the forms pip-compile and uv write.
#: Only a start-up shortcut past packaging's requirement parser (11 ms of imports); every other line goes there, and
#: tests/test_inputs.py checks that packaging reads each line this accepts the same way.
_PLAIN_PIN = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?P<specifier>==(?:[0-9]+!)?[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?"
    r"(?:\+[a-z0-9]+(?:\.[a-z0-9]+)*)?)"
)


def plain_requirement(text: str) -> tuple[str, str] | None:
    """The name and specifier (``==1.2``) of a plain ``name==version`` line, as packaging's ``Requirement`` gives
    them; None for anything else (extras, markers, URLs, spaces, other operators, unusual versions, and a text ending
    in .whl, which is taken as a wheel path): parse those fully."""
    plain = _PLAIN_PIN.fullmatch(text)
    if plain is None or text.endswith(".whl"):
        return None
    return plain["name"], plain["specifier"]


def parse_requirement(
    text: str, origin: str, env: MarkerEnvironment, hashes: frozenset[str] = frozenset()
) -> Pin | None:
    """A requirement or wheel path as a Pin; None when its marker leaves the target out."""
    plain = plain_requirement(text)
    if plain is not None:
        name, specifier = plain
        return _exact_pin(name, specifier[2:], f"{name}{specifier}", origin, hashes)
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        if text.endswith(".whl"):
            return _wheel_pin(Path(text), _path_origin(text, origin), hashes)
        if text.endswith((".tar.gz", ".zip", ".tar.bz2")) or os.sep in text:
            raise InputError(f"{origin}: {text}: only wheel files (.whl) can be installed from a path") from None
        raise InputError(f"{origin}: {text!r} is not a requirement ({e})") from None
    if req.url is None and text.endswith(".whl"):  # a bare file name is also a valid project name
        return _wheel_pin(Path(text), _path_origin(text, origin), hashes)
    try:
        if req.marker is not None and not req.marker.evaluate(env()):
            return None
    except _marker_errors() as e:
        raise InputError(f"{origin}: the marker of {req.name} cannot be evaluated ({e})") from None
    if req.url is not None:
        url = urlparse(req.url)
        if url.scheme == "file" and url.path.endswith(".whl"):
            pin = _wheel_pin(_file_url_path(url.path), origin, hashes)
            if pin.name != canonical(req.name):
                raise InputError(f"{origin}: {req.url} is not a wheel of {req.name}")
            return pin
        raise InputError(
            f"{origin}: {req.name} @ {req.url} needs downloading, which is not supported yet",
            hint=f"download the wheel and give its path, or put it in a --find-links directory and pin {req.name}",
        )
    return _pin(req.name, req.specifier, origin, hashes)


def _pin(name: str, specifier: SpecifierSet, origin: str, hashes: frozenset[str]) -> Pin:
    pin_text = f"{name}{specifier}"
    specs = list(specifier)
    if len(specs) == 1 and specs[0].operator == "==" and not specs[0].version.endswith(".*"):
        return _exact_pin(name, specs[0].version, pin_text, origin, hashes)
    version = None
    if len(specs) == 1 and specs[0].operator == "===":
        version = _version(specs[0].version, pin_text, origin)
    return Pin(canonical(name), version, specifier, pin_text, origin, hashes)


def _exact_pin(name: str, version: str, pin_text: str, origin: str, hashes: frozenset[str]) -> Pin:
    return Pin(canonical(name), _version(version, pin_text, origin), None, pin_text, origin, hashes)


def _version(text: str, pin_text: str, origin: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise InputError(f"{origin}: {pin_text}: {text!r} is not a valid version") from None


def _path_origin(text: str, origin: str) -> str:
    """A wheel path from the command line is its own origin; from a file, the file and line are."""
    return text if origin == "command line" else origin


def _wheel_pin(path: Path, origin: str, hashes: frozenset[str]) -> Pin:
    try:
        name, version, _build, _tags = names.parse_wheel_name(path.name)
    except ValueError as e:
        raise InputError(f"{path}: not a wheel file name ({e})") from None
    return Pin(name, version, None, f"{name}=={version}", origin, hashes, Path(os.path.abspath(path)))


def parse_requirements_file(path: Path, interpreter: Interpreter) -> Requirements:
    """pip's requirements format, as far as installing pinned local wheels needs it; lines a marker excludes drop."""
    into = Requirements()
    _read_requirements(path, _lazy_environment(interpreter), into, set())
    return into


_COMMENT = re.compile(r"(^|\s+)#.*$")
#: pip expands only this form, so that URLs with ``$`` or ``%`` stay as they are
_ENV_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")


def _expand(line: str) -> str:
    """``${NAME}`` from the environment, as pip does in requirements files (an unset one stays as written)."""
    return _ENV_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), line)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """pip's rules: a trailing backslash joins the next line, a comment line ends the joining, then comments go."""
    parts: list[str]
    start, parts = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        comment = "#" in line and bool(_COMMENT.match(line))
        if line.rstrip().endswith("\\") and not comment:
            start = start if parts else number
            parts.append(line.rstrip()[:-1])
            continue
        if parts:
            parts.append("" if comment else line)
            line, parts = "".join(parts), []
        else:
            start = number
        line = (_COMMENT.sub("", line) if "#" in line else line).strip()  # a hashed pin's line is long
        if line:
            yield start, line
    if parts:
        yield start, _COMMENT.sub("", "".join(parts)).strip()


#: whole-line options: name -> what to do with it
_OPTIONS = {
    "-r": "requirement", "--requirement": "requirement",
    "-c": "constraint", "--constraint": "constraint",
    "-e": "editable", "--editable": "editable",
    "-f": "find-links", "--find-links": "find-links",
    "-i": "ignore", "--index-url": "ignore", "--extra-index-url": "ignore", "--trusted-host": "ignore",
    "--no-binary": "ignore", "--only-binary": "ignore", "--use-feature": "ignore",
    "--no-index": "flag", "--pre": "flag", "--prefer-binary": "flag", "--require-hashes": "require-hashes",
}  # fmt: skip
#: options after a requirement that only matter when building from source
_BUILD_OPTIONS = frozenset({"--config-settings", "--global-option"})


def _read_requirements(path: Path, env: MarkerEnvironment, into: Requirements, seen: set[Path]) -> None:
    real = Path(os.path.abspath(path))
    if real in seen:  # included twice, or a cycle: once is enough
        return
    seen.add(real)
    try:
        text = real.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise InputError(f"cannot read requirements file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"requirements file {path} is not UTF-8 text") from None
    for number, raw in _logical_lines(text):
        where = f"{path}:{number}"
        line = _expand(raw)
        words = line.split()
        first_option = next((i for i, w in enumerate(words) if w.startswith("-")), len(words))
        if first_option == 0:
            _read_options(line, where, path, env, into, seen)
            continue
        hashes = _hash_options(words[first_option:], where)
        requirement = line if first_option == len(words) else " ".join(words[:first_option])
        pin = parse_requirement(requirement, where, env, hashes)
        if pin is not None:
            into.pins.append(pin)


def _read_options(
    line: str, where: str, path: Path, env: MarkerEnvironment, into: Requirements, seen: set[Path]
) -> None:
    import shlex  # here: option lines are rare, and plain requirements files have none

    try:
        words = shlex.split(line)
    except ValueError as e:
        raise InputError(f"{where}: {e}") from None
    todo = iter(words)
    for word in todo:
        if word.startswith("--"):
            option, has_value, value = word.partition("=")
        else:  # "-f DIR" or "-fDIR"
            option, value = word[:2], word[2:]
            has_value = "=" if value else ""
        action = _OPTIONS.get(option)
        if action is None:
            hint = "--hash must follow its requirement on the same line" if option == "--hash" else None
            raise InputError(f"{where}: unknown option {option}", hint=hint)
        if action in ("flag", "require-hashes"):
            into.require_hashes |= action == "require-hashes"
            continue
        if not has_value:
            value = next(todo, "")
        if not value:
            raise InputError(f"{where}: {option} needs a value")
        if action == "requirement":
            _read_requirements(path.parent / value, env, into, seen)
        elif action == "find-links":
            url = urlparse(value)
            if url.scheme == "file":
                into.find_links.append(_file_url_path(url.path))
            elif not url.scheme:
                into.find_links.append(path.parent / value)
            # an http(s) find-links page needs fetching: ignored, like the index options, until that lands
        elif action == "constraint":
            raise InputError(f"{where}: constraint files are not supported yet")
        elif action == "editable":
            raise InputError(f"{where}: editable installs are not supported yet", hint="build a wheel and give it")


def _hash_options(words: list[str], where: str) -> frozenset[str]:
    """The sha256 digests of ``--hash=ALG:HEX`` options (other algorithms only narrow pip's any-of, so they go).

    Split on whitespace, not with shlex as pip does: nothing here is quoted, and shlex takes 100 ms on a large file.
    """
    hashes: set[str] = set()
    others: list[str] = []
    todo = iter(words)
    for word in todo:
        option, has_value, value = word.partition("=")
        if option in _BUILD_OPTIONS:
            if not has_value:
                next(todo, None)
            continue
        if option != "--hash":
            raise InputError(f"{where}: option {option} is not supported after a requirement")
        value = value if has_value else next(todo, "")
        algorithm, _, digest = value.partition(":")
        if algorithm != "sha256":
            others.append(algorithm)
            continue
        try:
            hashes.add(normalize_sha256(digest))
        except WheelError:
            raise InputError(f"{where}: --hash={value} is not a sha256 hex digest") from None
    if others and not hashes:
        raise InputError(f"{where}: only {', '.join(others)} hashes given; wheelstore checks sha256",
                         hint="add the --hash=sha256:... of the wheel")
    return frozenset(hashes)


# -- find-links -----------------------------------------------------------------------------------------------------


class _Links:
    """The wheels in the find-links directories, listed once and only if a pin needs them."""

    def __init__(self, directories: Sequence[Path], interpreter: Interpreter) -> None:
        self.directories = list(dict.fromkeys(Path(os.path.abspath(d)) for d in directories))
        self.interpreter = interpreter
        self.supported = interpreter.supported
        self.missing: set[Path] = set()

    @cached_property
    def wheels(self) -> dict[NormalizedName, list[tuple[Version, BuildTag, frozenset[str], Path]]]:
        found: dict[NormalizedName, list[tuple[Version, BuildTag, frozenset[str], Path]]] = {}
        for directory in self.directories:
            try:
                listed = sorted(os.listdir(directory))
            except OSError:
                self.missing.add(directory)
                continue
            for filename in listed:
                if not filename.endswith(".whl"):
                    continue
                try:
                    name, version, build, tags = names.parse_wheel_name(filename)
                except ValueError:
                    continue
                found.setdefault(name, []).append((version, build, tags, directory / filename))
        for entries in found.values():
            entries.sort(key=lambda e: e[1], reverse=True)  # the best tag wins; among equals, the highest build
        return found

    def find(self, name: NormalizedName, version: Version, *, required: bool = True) -> Path | None:
        same = [(path, tags) for v, _build, tags, path in self.wheels.get(name, []) if v == version]
        best = next(names.select(self.supported, same), None)
        if best is not None or not required:
            return best
        where = ", ".join(f"{d} (missing)" if d in self.missing else str(d) for d in self.directories)
        message = f"no wheel for {name}=={version} matches this interpreter ({_describe(self.interpreter)}) in: "
        message += where or "no --find-links directory"
        if same:
            message += "; found only " + ", ".join(sorted({_tag_text(path.name) for path, _ in same}))
        elif others := sorted({v for v, *_ in self.wheels.get(name, [])}, reverse=True):
            message += "; versions there: " + ", ".join(map(str, others[:5]))
        raise InputError(message, hint=None if where else "pass --find-links DIR with its wheel")

    def newest(self, name: NormalizedName, specifier: SpecifierSet) -> Version | None:
        """The newest version of ``name`` here that the interpreter can use and ``specifier`` allows."""
        usable = names.select(self.supported, ((v, tags) for v, _b, tags, _p in self.wheels.get(name, [])))
        return max(specifier.filter(usable), default=None)

    def file(self, filename: str) -> Path | None:
        return next((d / filename for d in self.directories if (d / filename).is_file()), None)


def _describe(interpreter: Interpreter) -> str:
    """The interpreter by its most preferred tag, as in "cp311, manylinux_2_36_x86_64"."""
    best = interpreter.tags[0]
    return f"{best.interpreter}, {best.platform}"


def _file_url_path(url_path: str) -> Path:
    from urllib.request import (
        url2pathname,  # imported here: it pulls in ssl and http.client, on every run
    )

    return Path(url2pathname(url_path))


def _tag_text(filename: str) -> str:
    return "-".join(filename.removesuffix(".whl").split("-")[-3:])


# -- pylock ---------------------------------------------------------------------------------------------------------


def _read_pylock(path: Path, env: MarkerEnvironment, interpreter: Interpreter, links: _Links) -> list[Pin]:
    """The wheels a PEP 751 lock selects for the target (packaging runs the spec's installer steps), located."""
    from packaging.pylock import (
        PackageSdist,
        PackageWheel,
        Pylock,
        PylockSelectError,
        PylockValidationError,
    )

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            lock = Pylock.from_dict(tomllib.load(f))
        selected = list(lock.select(environment=cast("Environment", env()), tags=interpreter.tags))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path} is not valid TOML ({e})") from None
    except PylockValidationError as e:
        raise InputError(f"{path} is not a valid pylock file ({e})") from None
    except (PylockSelectError, *_marker_errors()) as e:
        raise InputError(f"{path}: {e}") from None
    pins = []
    for package, source in selected:
        if not isinstance(source, (PackageWheel, PackageSdist)):
            raise InputError(f"{path}: {package.name} is locked as a directory, VCS or archive entry; only wheels "
                             "and sdists are supported", hint="lock it with wheels or sdists")
        filename = source.filename or _url_filename(source.url) or f"{package.name} sdist"
        digest = source.hashes.get("sha256")
        if digest is None:
            raise InputError(f"{path}: {filename} has no sha256 hash; wheelstore checks sha256")
        try:
            digest = normalize_sha256(digest)
        except WheelError:
            raise InputError(f"{path}: the sha256 of {filename} is not a sha256 hex digest") from None
        version = package.version or (names.parse_wheel_name(filename)[1] if filename.endswith(".whl") else None)
        if version is None:
            raise InputError(f"{path}: {package.name} has no version")
        pin = Pin(package.name, version, None, f"{package.name}=={version}", str(path), frozenset({digest}))
        local = _lock_local_file(path, source, links)
        if isinstance(source, PackageWheel) and local is not None:
            pin = pin._replace(wheel=local)
        else:  # to download, or an sdist to build: the fetch stage reads file:// URLs from disk
            from ..fetch.index import RemoteFile

            url = local.as_uri() if local is not None else cast(str, source.url)
            pin = pin._replace(remote=RemoteFile(filename=filename, url=url, hashes={"sha256": digest}))
        pins.append(pin)
    return pins


def is_pylock(arg: str) -> bool:
    """Whether ``arg`` names a PEP 751 lock file (``pylock.toml``, ``pylock.NAME.toml``)."""
    if not arg.endswith(".toml"):
        return False
    from packaging.pylock import (
        is_valid_pylock_path,  # only for .toml arguments: the module costs 5 ms to load
    )

    return is_valid_pylock_path(Path(arg))


def _url_filename(url: str | None) -> str | None:
    return os.path.basename(urlparse(url).path) or None if url else None


def _lock_local_file(lock: Path, source: PackageWheel | PackageSdist, links: _Links) -> Path | None:
    """The entry's file when it is on this machine: a path (relative to the lock, PEP 751), a file:// URL, or a file
    of that name in the find-links directories."""
    if source.path:
        return Path(os.path.abspath(lock.parent / source.path))
    url = urlparse(source.url or "")
    if url.scheme == "file":
        return _file_url_path(url.path)
    if source.filename and (found := links.file(source.filename)) is not None:
        return found
    if source.url is None:
        raise InputError(f"{lock}: {source.filename} has neither a path nor a URL")
    return None


# -- putting it together --------------------------------------------------------------------------------------------


class _Entry(NamedTuple):
    pin: Pin
    locked: bool = False  # from a lock file: not requested, not a direct install

    @property
    def direct(self) -> bool:
        return self.pin.wheel is not None and not self.locked


def collect(
    args: Sequence[str],
    requirement_files: Sequence[Path],
    find_links: Sequence[Path],
    interpreter: Interpreter,
    *,
    elsewhere: bool = False,
    held: Callable[[set[str]], dict[str, str]] | None = None,
    holds: Callable[[set[str]], set[str]] | None = None,
) -> list[Candidate]:
    """Wheel files for everything asked for, one per distribution, sorted by name, every given hash checked.

    ``args`` are wheel paths, pylock files and requirements (``name==1.2``); a pinned set is taken as complete (no
    dependencies are added). A pin with no wheel in the find-links directories is an error, unless ``elsewhere``
    says the store or an index may provide it: then its candidate has no file (``wheel`` and ``remote`` None).
    Unpinned requirements raise :class:`NeedsResolution`. ``held(hashes)`` maps those of ``hashes`` the store holds
    a tree for to the tree's wheel file name: a pin with a hash whose tree the interpreter can use is not read at all
    (the tree is used, not the file; were the tree gone by then, realizing the file checks the hash anyway), unless
    the find-links file suits the interpreter better and its hash is allowed. A store shared by machines of several
    platforms holds trees for wheels this interpreter cannot use; those are passed over. ``holds(hashes)`` says which
    of them the store has a tree for: a local file's digest kept from an earlier read is used only then (to find the
    tree); without one the file is read, so that realize checks it against what it holds now.
    """
    env = _lazy_environment(interpreter)
    entries: list[_Entry] = []
    directories = list(find_links)
    locks: list[Path] = []
    require_hashes = False
    for arg in args:
        if is_pylock(arg):
            locks.append(Path(arg))
        elif arg.endswith((".txt", ".in", ".toml")):  # also valid project names, which would "need resolution"
            hint = f"-r {arg}" if not arg.endswith(".toml") else "name it pylock.toml or pylock.NAME.toml"
            raise InputError(f"{arg} is neither a wheel, a pylock file nor a requirement", hint=hint)
        elif (pin := parse_requirement(arg, "command line", env)) is not None:
            entries.append(_Entry(pin))
    for path in requirement_files:
        into = Requirements()
        _read_requirements(path, env, into, set())
        entries += [_Entry(pin) for pin in into.pins]
        directories += into.find_links
        # as pip does: one --hash in a requirements file turns on hash-checking for every requirement
        require_hashes |= into.require_hashes or any(pin.hashes for pin in into.pins)
    directories += [e.pin.wheel.parent for e in entries if e.pin.wheel is not None]
    links = _Links(directories, interpreter)
    for lock in locks:
        entries += [_Entry(pin, locked=True) for pin in _read_pylock(lock, env, interpreter, links)]

    groups: dict[NormalizedName, list[_Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.pin.name, []).append(entry)
    plans = [(name, group, *_plan(name, group, links)) for name, group in sorted(groups.items())]
    hashed = {e.pin.name for e in entries if e.pin.hashes}
    if require_hashes and (bare := next((e.pin for e in entries if e.pin.name not in hashed and not e.direct), None)):
        raise InputError(f"{bare.origin}: {bare.text} has no --hash, and --require-hashes is on",
                         hint="add its --hash=sha256:... or drop --require-hashes")
    wheels = [chosen.pin.wheel if chosen and (chosen.pin.wheel or chosen.pin.remote)
              else links.find(name, version, required=not elsewhere)
              for name, _group, version, chosen in plans]

    # Every local file's sha256, by which the store's tree is found: a pin's hash the store holds a usable tree for
    # needs no reading, nor does a file this user read before (:class:`_Digests`); the other files are hashed a few
    # at a time (hashlib drops the GIL).
    digests: list[str | None] = []
    unknown: list[int] = []
    accepted = [frozenset.intersection(*sets) if (sets := [e.pin.hashes for e in group if e.pin.hashes])
                and not any(e.direct for e in group) else frozenset() for _name, group, _version, _chosen in plans]
    found = held(set().union(*accepted)) if held is not None else {}

    kept = _Digests()
    remembered: dict[int, str | None] = {}

    def read(i: int) -> tuple[str, tuple[int, ...]]:
        chosen = plans[i][3]
        return _sha256(cast(Path, wheels[i]), chosen.pin.origin if chosen else "--find-links")

    for i, (wheel, hashes) in enumerate(zip(wheels, accepted)):
        best = _best_held(hashes, found, links.supported)
        known = best[0] if best is not None else None
        if best is not None and wheel is not None and (local := names.rank(links.supported, names.wheel_tags(
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
    for i, remembered_digest in remembered.items():
        if remembered_digest in present:
            digests[i] = remembered_digest
        else:
            unknown.append(i)

    if unknown:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, os.cpu_count() or 1, len(unknown)), thread_name_prefix="hash") as pool:
            for i, (digest, stamp) in zip(unknown, pool.map(read, unknown)):
                digests[i] = digest
                kept.add(cast(Path, wheels[i]), stamp, digest)
    kept.save()
    return [_candidate(*plan, wheel, sha256) for plan, wheel, sha256 in zip(plans, wheels, digests)]


def _best_held(hashes: frozenset[str], held: dict[str, str], supported: dict[str, int]) -> tuple[str, int] | None:
    """Of the store's trees (``held``: hash to wheel file name), the hash of the one among ``hashes`` that suits the
    interpreter best, and its place in the interpreter's tags; None when it can use none of them."""
    ranked = [(place, h) for h in sorted(hashes) if (filename := held.get(h)) is not None
              and (place := names.rank(supported, names.wheel_tags(filename))) is not None]
    if not ranked:
        return None
    place, key = min(ranked)
    return key, place


def _plan(name: NormalizedName, group: list[_Entry], links: _Links) -> tuple[Version, _Entry | None]:
    """The one version the entries agree on and the file given for it, if any; raises before any file is read."""
    pinned = [e for e in group if e.pin.version is not None]
    if not pinned:
        pin = group[0].pin
        newest = links.newest(name, cast("SpecifierSet", pin.specifier))  # no version: a specifier
        where = "" if pin.origin == "command line" else f"{pin.origin}: "
        raise NeedsResolution(
            f"{where}{pin.text} needs resolution",
            hint=f"pin it ({name}=={newest or 'VERSION'}), give a wheel file or a pylock.toml, or let uv resolve it",
        )
    base = pinned[0].pin
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
            raise InputError(f"{wheel.name} is not for this interpreter ({_describe(links.interpreter)}): "
                             f"its tags are {_tag_text(wheel.name)}")
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
    return Candidate(
        name=name,
        version=version,
        wheel=wheel,
        sha256=digest,
        hashes=frozenset.intersection(*sets) if sets else frozenset(),
        requested=any(not e.locked for e in group),
        direct_url=direct_url,
        remote=chosen.pin.remote if chosen is not None and wheel is None else None,
    )


def _sha256(path: Path, origin: str) -> tuple[str, tuple[int, ...]]:
    """The file's sha256, and the identity of the file read (see :class:`_Digests`)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ({origin})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot be read ({e.strerror})") from None
    return h.hexdigest(), _identity(st)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


class _Digests:
    """The sha256 of local wheel files this user read before, by the file's identity (device, inode, size, mtime,
    ctime), kept in the user's cache per directory: with it, a warm install from unhashed pins and a find-links
    directory reads no wheel at all (it used to hash every one to find its tree; uv keeps the same by path and
    mtime). On local filesystems a write moves the file's ctime, which only root can set back, so a changed file is
    read again. Where ctime does not follow writes (FAT, sshfs) a wheel rewritten under the same name with the same
    size and mtime would still find its old tree: pin hashes there. A kept digest only ever finds a tree the store
    has (see :func:`collect`); it is never what a file is checked against."""

    FORMAT = 1
    #: entries kept per directory; the oldest go first
    MAX = 4096

    def __init__(self) -> None:
        self._dirs: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {}
        self._changed: set[str] = set()

    def get(self, path: Path) -> str | None:
        try:
            stamp = _identity(os.stat(path))
        except OSError:
            return None  # reading it says why
        found = self._dir(os.path.dirname(os.path.abspath(path))).get(path.name)
        try:
            kept_stamp, digest = found  # type: ignore[misc]
        except (TypeError, ValueError):  # none, or not what this writes
            return None
        return digest if kept_stamp == stamp and isinstance(digest, str) else None

    def add(self, path: Path, stamp: tuple[int, ...], digest: str) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        entries = self._dir(directory)
        entries.pop(path.name, None)
        entries[path.name] = (stamp, digest)
        self._changed.add(directory)

    def save(self) -> None:
        import marshal

        from ..base import usercache

        for directory in self._changed:
            entries = list(self._dir(directory).items())[-self.MAX :]
            usercache.write_bytes(self._name(directory), marshal.dumps((self.FORMAT, directory, dict(entries))))

    def _dir(self, directory: str) -> dict[str, tuple[tuple[int, ...], str]]:
        found = self._dirs.get(directory)
        if found is None:
            import marshal

            from ..base import usercache

            found = {}
            try:
                fmt, where, entries = marshal.loads(usercache.read_bytes(self._name(directory)) or b"")
                if fmt == self.FORMAT and where == directory and isinstance(entries, dict):
                    found = entries
            except (EOFError, ValueError, TypeError):
                pass
            self._dirs[directory] = found
        return found

    @staticmethod
    def _name(directory: str) -> str:
        from ..base import usercache

        return usercache.named_by("digests", directory)
