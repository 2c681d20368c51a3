"""Requirement syntax and pip's requirements files: what the user wrote, as pins (:class:`Pin`).

A pin is a name and, when it says exactly one version, that version; a wheel path or a ``name @ file:///...whl`` is
a pin with its file. Markers are evaluated for the target interpreter, not for the one running wheelstore.
packaging's requirement parser and markers are imported only for lines that need them: the plain ``name==version``
lines of a pinned, hashed file (the common warm install) are read by a shortcut.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlparse

from packaging.version import InvalidVersion, Version

from ..base import names
from ..base.errors import InputError, WheelError
from ..base.interpreter import Interpreter
from ..base.names import canonical, requirement_problem
from ..store.wheel import normalize_sha256

if TYPE_CHECKING:
    from packaging.markers import (
        InvalidMarker,
        UndefinedComparison,
        UndefinedEnvironmentName,
    )
    from packaging.specifiers import SpecifierSet
    from packaging.utils import NormalizedName

    from ..fetch.index import RemoteFile
    from ..fetch.sources import Sources


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
    #: the extras asked of it (``name[extra]``): their requirements count among its dependencies
    extras: frozenset[str] = frozenset()
    #: a local project directory to build (``DIR``, ``-e DIR``, ``name @ file:///DIR``): built into a wheel pin
    #: before candidates are gathered, or installed editable into the venv
    project: Path | None = None
    #: ``-e DIR``: installed by its build backend as the user's own, writable, never from the store
    editable: bool = False


class Requirements:
    """A requirements file and the files it includes, after markers: the pins and the options that matter now."""

    def __init__(self, *, pins: bool = True) -> None:
        #: whether the requirements are read, or only the options (:func:`with_file_indexes`)
        self.reads_pins = pins
        self.pins: list[Pin] = []
        self.find_links: list[Path] = []
        self.require_hashes = False
        #: the index options, each with the file and line that gave it
        self.index_url: tuple[str, str] | None = None
        self.extra_index_urls: list[tuple[str, str]] = []
        self.no_index: str | None = None


def marker_errors() -> tuple[type[InvalidMarker], type[UndefinedComparison], type[UndefinedEnvironmentName]]:
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


#: markers as needed: ``marker_environment`` for the target, computed (and packaging.markers imported) on first use
MarkerEnvironment = Callable[[], dict[str, str]]


def lazy_environment(interpreter: Interpreter) -> MarkerEnvironment:
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
            return wheel_pin(Path(text), _path_origin(text, origin), hashes)
        if text.endswith(SDIST_SUFFIXES) or os.sep in text or text.startswith("."):
            return project_pin(Path(text), _path_origin(text, origin), hashes)
        raise InputError(f"{origin}: {text!r} is not a requirement: {requirement_problem(text, e)}",
                         hint="write it like 'name', 'name>=1.2' or 'name[extra]==1.2'") from None
    if req.url is None and text.endswith(".whl"):  # a bare file name is also a valid project name
        return wheel_pin(Path(text), _path_origin(text, origin), hashes)
    if req.url is None and text.endswith(SDIST_SUFFIXES):  # "x-1.0.tar.gz" parses as a name too
        return project_pin(Path(text), _path_origin(text, origin), hashes)
    try:
        if req.marker is not None and not req.marker.evaluate(env()):
            return None
    except marker_errors() as e:
        raise InputError(f"{origin}: the marker of {req.name} cannot be evaluated ({e})") from None
    if req.url is not None:
        url = urlparse(req.url)
        if url.scheme == "file" and url.path.endswith(".whl"):
            pin = wheel_pin(file_url_path(url.path), origin, hashes)
            if pin.name != canonical(req.name):
                raise InputError(f"{origin}: {req.url} is not a wheel of {req.name}")
            return pin._replace(extras=_extras(req.extras))
        if url.scheme == "file":
            pin = project_pin(file_url_path(url.path), origin, hashes, name=req.name)
            if pin.name != canonical(req.name):
                raise InputError(f"{origin}: {req.url} is {pin.name}, not {req.name}")
            return pin._replace(extras=_extras(req.extras))
        raise InputError(
            f"{origin}: {req.name} @ {req.url} needs downloading, which is not supported yet",
            hint=f"download the wheel and give its path, or put it in a --find-links directory and pin {req.name}",
        )
    return _pin(req.name, req.specifier, origin, hashes)._replace(extras=_extras(req.extras))


def _extras(extras: set[str]) -> frozenset[str]:
    return frozenset(canonical(e) for e in extras)


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


def wheel_pin(path: Path, origin: str, hashes: frozenset[str] = frozenset()) -> Pin:
    """A wheel file as a pin: its name and version from its file name."""
    try:
        name, version, _build, _tags = names.parse_wheel_name(path.name)
    except ValueError as e:
        raise InputError(f"{path}: not a wheel file name ({e})") from None
    return Pin(name, version, None, f"{name}=={version}", origin, hashes, Path(os.path.abspath(path)))


#: what a local sdist's file name ends with
SDIST_SUFFIXES = (".tar.gz", ".zip")


def project_pin(path: Path, origin: str, hashes: frozenset[str] = frozenset(), *, editable: bool = False,
                name: str | None = None) -> Pin:
    """A local project directory (with pyproject.toml or setup.py) or sdist as a pin: a directory's has ``project``
    set (its name from pyproject.toml's static ``[project] name``, else ``name``, else the directory's), an sdist's
    is a ``file:`` remote file, which the install builds once per store like an index's sdist."""
    full = Path(os.path.abspath(path))
    where = str(path) if origin == str(path) else f"{origin}: {path}"
    accepted = "give a project directory (with pyproject.toml or setup.py), a wheel (.whl) or an sdist (.tar.gz, .zip)"
    if full.is_dir():
        if not (full / "pyproject.toml").is_file() and not (full / "setup.py").is_file():
            raise InputError(f"{where} is a directory without pyproject.toml or setup.py, not a Python project",
                             hint=accepted)
        found = _project_name(full) or name or full.name
        return Pin(canonical(found), None, None, f"{found} @ {full.as_uri()}", origin, hashes, project=full,
                   editable=editable)
    if editable or not full.name.endswith(SDIST_SUFFIXES):
        what = "no such directory" if not full.exists() else "not a project directory"
        raise InputError(f"{where}: {what}", hint="-e takes a project directory" if editable else accepted)
    if not full.is_file():
        raise InputError(f"{where}: no such file", hint=accepted)
    from packaging.utils import InvalidSdistFilename, parse_sdist_filename

    from ..fetch.index import RemoteFile

    try:
        sdist_name, version = parse_sdist_filename(full.name)
    except InvalidSdistFilename as e:
        raise InputError(f"{where}: not an sdist file name ({e})") from None
    given = {"sha256": next(iter(hashes))} if len(hashes) == 1 else {}
    remote = RemoteFile(full.name, full.as_uri(), given)
    return Pin(sdist_name, version, None, f"{sdist_name}=={version}", origin, hashes, remote=remote)


def _project_name(directory: Path) -> str | None:
    """The static ``[project] name`` of a directory's pyproject.toml, if it has one."""
    from ..base.toml import tomllib

    try:
        data = tomllib.loads((directory / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    project = data.get("project")
    if not isinstance(project, dict) or "name" in project.get("dynamic", ()):
        return None
    found = project.get("name")
    return found if isinstance(found, str) and found else None


def parse_requirements_file(path: Path, interpreter: Interpreter) -> Requirements:
    """pip's requirements format, as far as installing pinned local wheels needs it; lines a marker excludes drop."""
    return read_requirements(path, lazy_environment(interpreter))


def read_requirements(path: Path, env: MarkerEnvironment) -> Requirements:
    """A requirements file and those it includes, with markers evaluated in ``env`` (shared by several inputs)."""
    into = Requirements()
    _read_requirements(path, env, into, set())
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
    "-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url", "--trusted-host": "ignore",
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
            if (editable := _EDITABLE_MARKER.fullmatch(line)) is not None:  # "-e DIR ; MARKER"
                if not into.reads_pins or not _marker_holds(editable["marker"], where, env):
                    continue
                line = editable["option"]
            _read_options(line, where, path, env, into, seen)
            continue
        if not into.reads_pins:
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
            into.no_index = into.no_index or (where if option == "--no-index" else None)
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
                into.find_links.append(file_url_path(url.path))
            elif not url.scheme:
                into.find_links.append(path.parent / value)
            # an http(s) find-links page needs fetching: ignored until that lands
        elif action == "constraint":
            raise InputError(f"{where}: constraint files are not supported yet")
        elif action == "editable" and into.reads_pins:
            into.pins.append(editable_pin(value, where))
        elif action == "index-url":
            _index_url(into, value, where)
        elif action == "extra-index-url":
            into.extra_index_urls.append((value, where))


#: ``-e DIR ; MARKER`` (poetry's export of a path dependency with ``develop = true``): as in a URL requirement, the
#: marker's ``;`` follows whitespace. pip drops such a marker; uv, and this, evaluate it
_EDITABLE_MARKER = re.compile(r"(?P<option>(?:-e|--editable)(?:\s+|=)\S.*?)\s+;\s*(?P<marker>\S.*)")


def _marker_holds(text: str, where: str, env: MarkerEnvironment) -> bool:
    from packaging.markers import Marker

    try:
        return Marker(text).evaluate(env())
    except marker_errors() as e:
        raise InputError(f"{where}: the marker {text!r} cannot be evaluated ({e})") from None


def _index_url(into: Requirements, url: str, where: str) -> None:
    """One ``--index-url`` for all the files: a second, different one is an error, as uv makes it."""
    if into.index_url is not None and into.index_url[0].rstrip("/") != url.rstrip("/"):
        raise InputError(f"{where}: --index-url {url} conflicts with --index-url {into.index_url[0]} "
                         f"({into.index_url[1]})", hint="keep one --index-url; give the others as --extra-index-url")
    into.index_url = into.index_url or (url, where)


def editable_pin(text: str, origin: str) -> Pin:
    """``-e DIR`` (or ``-e file:///DIR``, ``-e name @ file:///DIR``, and ``#egg=name`` after either, as pdm exports
    a path dependency): a project pin to install editable; a relative DIR is relative to the current directory, as
    pip takes it (a wheel path in a requirements file is too)."""
    name, _, url = text.rpartition(" @ ") if " @ " in text else ("", "", text)
    url, _, fragment = url.partition("#egg=") if "#egg=" in url else (url, "", "")
    path = file_url_path(urlparse(url).path) if url.startswith("file:") else Path(url)
    return project_pin(path, origin, editable=True, name=name.strip() or fragment or None)


def with_file_indexes(sources: Sources, paths: Sequence[Path]) -> Sources:
    """``sources`` over the index options of requirements files and those they include (only those lines are
    read): an install takes its indexes from them before anything is planned or built (:meth:`Sources.beneath`)."""
    if not paths:
        return sources
    into, seen = Requirements(pins=False), set[Path]()
    for path in paths:
        _read_requirements(path, lambda: {}, into, seen)
    return sources.beneath(into.index_url, into.extra_index_urls, into.no_index)


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


def file_url_path(url_path: str) -> Path:
    from urllib.request import (
        url2pathname,  # imported here: it pulls in ssl and http.client, on every run
    )

    return Path(url2pathname(url_path))
