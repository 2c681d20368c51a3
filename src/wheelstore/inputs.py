"""Resolve, for local inputs: turn wheel paths, pinned requirements and pylock files into wheel files to install.

Real resolution (unpinned requirements, remote indexes) belongs to the fetch stage and uv; here a pinned set is taken
as complete, as ``pip install --no-deps -r`` would, and each pin is matched to the best wheel in the find-links
directories for the target interpreter's tags.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.markers import Marker, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .errors import WheelstoreError
from .venv import Interpreter
from .wheel import CHUNK, normalize_sha256

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class InputError(WheelstoreError):
    """What the user asked for cannot be turned into wheel files."""


class NeedsResolution(InputError):
    """An unpinned requirement: choosing versions is the fetch stage's job (uv), not available yet."""


@dataclass(frozen=True)
class Candidate:
    """One wheel file to install, and what the input said about it."""

    name: NormalizedName
    version: Version
    wheel: Path
    sha256: str | None
    hashes: frozenset[str] = frozenset()
    requested: bool = True
    direct_url: dict[str, object] | None = None


@dataclass
class _Pin:
    name: NormalizedName
    version: Version
    hashes: set[str] = field(default_factory=set)
    origin: str = ""


def marker_environment(interpreter: Interpreter) -> dict[str, str]:
    """PEP 508 marker values for the target interpreter (the platform is this machine's)."""
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    v = interpreter.version
    env.update(
        python_version=f"{v[0]}.{v[1]}",
        python_full_version=".".join(map(str, v)),
        implementation_name=interpreter.implementation,
        platform_python_implementation="CPython" if interpreter.implementation == "cpython" else "PyPy",
    )
    return env


def collect(
    args: Sequence[str],
    requirement_files: Sequence[Path],
    find_links: Sequence[Path],
    interpreter: Interpreter,
    *,
    no_index: bool = True,
) -> list[Candidate]:
    """Wheel files for everything asked for, one per distribution, sorted by name."""
    env = marker_environment(interpreter)
    links = list(find_links)
    pins: list[_Pin] = []
    direct: list[Candidate] = []
    for arg in args:
        if arg.endswith(".whl"):
            direct.append(_direct_wheel(Path(arg), interpreter))
        elif _is_pylock(arg):
            direct.extend(_from_pylock(Path(arg), interpreter, links, env))
        else:
            pin = _pin(arg, "command line", env)
            if pin is not None:
                pins.append(pin)
    for path in requirement_files:
        for pin_or_link in _read_requirements(path, env, seen=set()):
            if isinstance(pin_or_link, Path):
                links.append(pin_or_link)
            else:
                pins.append(pin_or_link)
    links += [c.wheel.parent for c in direct]
    chosen: dict[NormalizedName, Candidate] = {}
    for cand in direct:
        _add(chosen, cand)
    for pin in _merge(pins):
        if pin.name in chosen:
            if chosen[pin.name].version != pin.version:
                raise InputError(f"conflicting pins: {pin.name}=={pin.version} and {chosen[pin.name].wheel.name}")
            continue
        wheel = _find(pin, links, interpreter)
        _add(chosen, Candidate(pin.name, pin.version, wheel, _check_hashes(wheel, pin.hashes), frozenset(pin.hashes)))
    return [chosen[n] for n in sorted(chosen)]


def _add(chosen: dict[NormalizedName, Candidate], cand: Candidate) -> None:
    old = chosen.get(cand.name)
    if old is not None and old.version != cand.version:
        raise InputError(f"conflicting pins: {cand.name}=={old.version} and {cand.name}=={cand.version}")
    chosen.setdefault(cand.name, cand)


def _merge(pins: list[_Pin]) -> list[_Pin]:
    merged: dict[NormalizedName, _Pin] = {}
    for pin in pins:
        old = merged.get(pin.name)
        if old is None:
            merged[pin.name] = pin
        elif old.version != pin.version:
            raise InputError(f"conflicting pins: {pin.name}=={old.version} ({old.origin}) and =={pin.version} ({pin.origin})")
        elif pin.hashes:
            old.hashes = (old.hashes & pin.hashes) if old.hashes else set(pin.hashes)
            if not old.hashes:
                raise InputError(f"{pin.name}=={pin.version}: the hashes given in {old.origin} and {pin.origin} disagree")
    return list(merged.values())


def _is_pylock(arg: str) -> bool:
    name = Path(arg).name
    return name == "pylock.toml" or (name.startswith("pylock.") and name.endswith(".toml"))


def _pin(text: str, origin: str, env: dict[str, str], hashes: set[str] | None = None) -> _Pin | None:
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise InputError(f"{origin}: {text!r} is not a requirement ({e})") from None
    if req.marker is not None and not req.marker.evaluate(env):
        return None
    if req.url:
        raise NeedsResolution(f"{origin}: {req.name} @ {req.url} needs fetching, which is not supported yet; give the wheel file")
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
        raise NeedsResolution(
            f"{origin}: {text} needs resolution, which is not supported yet",
            hint=f"pin it ({req.name}==VERSION), or give a wheel file or a pylock.toml",
        )
    return _Pin(canonicalize_name(req.name), Version(specs[0].version), set(hashes or ()), origin)


def _logical_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read requirements file {path}: {e.strerror}") from None
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0] if not raw.lstrip().startswith("#") else ""
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            yield start, buffer.strip()
        buffer = ""
    if buffer.strip():
        yield start, buffer.strip()


_IGNORED_OPTIONS = {"--index-url", "-i", "--extra-index-url", "--trusted-host", "--pre", "--prefer-binary"}
_FLAG_OPTIONS = {"--no-index", "--require-hashes", "--only-binary", "--no-binary", "--no-deps"}


def _read_requirements(path: Path, env: dict[str, str], seen: set[Path]) -> Iterator[_Pin | Path]:
    """pip's requirements format, as far as pinned installs need it: pins, --hash, -r, -f and index options."""
    path = path.absolute()
    if path in seen:
        return
    seen.add(path)
    for number, line in _logical_lines(path):
        where = f"{path}:{number}"
        if line.startswith("-") and not line.startswith("--hash"):
            option, _, value = line.replace("=", " ", 1).partition(" ")
            value = value.strip()
            if option in ("-r", "--requirement"):
                yield from _read_requirements(path.parent / value, env, seen)
            elif option in ("-f", "--find-links"):
                yield path.parent / value
            elif option in ("-c", "--constraint"):
                raise InputError(f"{where}: constraint files are not supported yet")
            elif option in _IGNORED_OPTIONS or option in _FLAG_OPTIONS:
                continue
            else:
                raise InputError(f"{where}: unknown option {option}")
            continue
        # "name==1.0 ; marker --hash=sha256:... --hash sha256:..." (the requirement part is never shell-split)
        requirement, *options = _HASH_OPTION.split(line)
        hashes = {normalize_sha256(o.removeprefix("--hash").lstrip("= ").strip()) for o in options}
        pin = _pin(requirement.strip(), where, env, hashes)
        if pin is not None:
            yield pin


_HASH_OPTION = re.compile(r"\s+(?=--hash[=\s])")


def _best_rank(tags: frozenset[Tag], interpreter: Interpreter) -> int | None:
    ranks = _ranks(interpreter)
    found = [ranks[t] for t in tags if t in ranks]
    return min(found) if found else None


_RANK_CACHE: dict[int, dict[Tag, int]] = {}


def _ranks(interpreter: Interpreter) -> dict[Tag, int]:
    key = id(interpreter)
    if key not in _RANK_CACHE:
        _RANK_CACHE[key] = {t: i for i, t in reversed(list(enumerate(interpreter.tags)))}
    return _RANK_CACHE[key]


def _describe(interpreter: Interpreter) -> str:
    best = interpreter.tags[0]
    return f"{best.interpreter}, {best.platform}"


def _find(pin: _Pin, links: Sequence[Path], interpreter: Interpreter) -> Path:
    best: tuple[int, Path] | None = None
    other_tags: list[str] = []
    for directory in dict.fromkeys(links):
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            continue
        for name in names:
            if not name.endswith(".whl"):
                continue
            try:
                wname, wversion, _build, tags = parse_wheel_filename(name)
            except InvalidWheelFilename:
                continue
            if wname != pin.name or wversion != pin.version:
                continue
            rank = _best_rank(tags, interpreter)
            if rank is None:
                other_tags += sorted(str(t) for t in tags)[:1]
            elif best is None or rank < best[0]:
                best = (rank, directory / name)
    if best is None:
        where = ", ".join(map(str, dict.fromkeys(links))) or "no --find-links directories"
        seen = f"; found only wheels for {', '.join(other_tags)}" if other_tags else ""
        raise InputError(f"no wheel for {pin.name}=={pin.version} matches this interpreter ({_describe(interpreter)}) "
                         f"in: {where}{seen}")
    return best[1]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check_hashes(wheel: Path, hashes: set[str] | frozenset[str]) -> str | None:
    if not hashes:
        return None
    actual = _sha256(wheel)
    if actual not in hashes:
        raise InputError(f"{wheel.name}: sha256 {actual} matches none of the hashes given for it")
    return actual


def _direct_wheel(path: Path, interpreter: Interpreter) -> Candidate:
    path = path.absolute()
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as e:
        raise InputError(f"{path.name}: not a wheel file name ({e})") from None
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if _best_rank(tags, interpreter) is None:
        raise InputError(f"{path.name} is not for this interpreter ({_describe(interpreter)})")
    digest = _sha256(path)
    direct_url: dict[str, object] = {"url": path.as_uri(), "archive_info": {"hashes": {"sha256": digest},
                                                                            "hash": f"sha256={digest}"}}
    return Candidate(name, version, path, digest, frozenset({digest}), True, direct_url)


def _from_pylock(path: Path, interpreter: Interpreter, links: Sequence[Path], env: dict[str, str]) -> list[Candidate]:
    from packaging.pylock import Pylock, PylockUnsupportedVersionError, PylockValidationError

    try:
        with open(path, "rb") as f:
            lock = Pylock.from_dict(tomllib.load(f))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, PylockValidationError, PylockUnsupportedVersionError) as e:
        raise InputError(f"{path} is not a valid pylock file: {e}") from None
    version = Version(".".join(map(str, interpreter.version)))
    result = []
    for package in lock.packages:
        if package.marker is not None and not Marker(str(package.marker)).evaluate(env):
            continue
        if package.requires_python is not None and version not in SpecifierSet(str(package.requires_python)):
            continue
        name = canonicalize_name(package.name)
        if not package.wheels:
            raise InputError(f"{path}: {package.name} has no wheels; sdists, directories and VCS entries are not supported yet")
        options = []
        for wheel in package.wheels:
            filename = wheel.name or Path(urlparse(wheel.url or "").path).name or Path(wheel.path or "").name
            try:
                _n, wversion, _b, tags = parse_wheel_filename(filename)
            except InvalidWheelFilename:
                continue
            rank = _best_rank(tags, interpreter)
            if rank is not None:
                options.append((rank, filename, wheel, wversion))
        if not options:
            raise InputError(f"{path}: no wheel of {package.name} matches this interpreter ({_describe(interpreter)})")
        _rank, filename, wheel, wversion = min(options, key=lambda o: o[0])
        local = _locate(path, filename, wheel.path, wheel.url, links)
        hashes = {normalize_sha256(v) for k, v in wheel.hashes.items() if k == "sha256"}
        if not hashes:
            raise InputError(f"{path}: {filename} has no sha256 hash in the lock")
        result.append(Candidate(name, package.version or wversion, local, _check_hashes(local, hashes),
                                frozenset(hashes), requested=False))
    return result


def _locate(lock: Path, filename: str, path: str | None, url: str | None, links: Sequence[Path]) -> Path:
    if path:
        return (lock.parent / path).absolute()
    if url and url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    for directory in links:
        if (directory / filename).is_file():
            return (directory / filename).absolute()
    raise InputError(f"{lock}: {filename} needs downloading, which is not supported yet",
                     hint="pass --find-links DIR with that wheel in it")
