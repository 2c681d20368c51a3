"""PEP 751 lock files as inputs: a ``pylock.toml`` read into pins for the target interpreter, each file located.

packaging selects the entries for the target (the spec's installer steps); each gets its local file (a path, a
``file://`` URL or a find-links file) or the remote file to download. This reads the lock files the user gives and
the one uv writes when an install needs resolution; :func:`read_pylock` is the one reader of both, also for the
checks ``wheelstore lock`` makes of what it writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

from ..base import names
from ..base.errors import InputError, WheelError
from ..base.interpreter import Interpreter
from ..store.wheel import normalize_sha256
from .findlinks import FindLinks
from .requirements import MarkerEnvironment, Pin, file_url_path, marker_errors, project_pin

if TYPE_CHECKING:
    from packaging.markers import Environment
    from packaging.pylock import PackageSdist, PackageWheel, Pylock

    from .uvproject import Selection


def read_pylock(path: Path) -> Pylock:
    """The one reader of PEP 751 locks, the user's and the ones uv writes: parsed and validated by packaging, any
    problem a one-line error."""
    from packaging.pylock import Pylock, PylockUnsupportedVersionError, PylockValidationError

    from ..base.toml import tomllib  # here: only lock inputs need it

    try:
        with open(path, "rb") as f:
            return Pylock.from_dict(tomllib.load(f))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid TOML ({e})") from None
    except (PylockValidationError, PylockUnsupportedVersionError) as e:
        raise InputError(f"{path} is not a valid pylock file ({e})") from None


def pins_from_pylock(path: Path, env: MarkerEnvironment, interpreter: Interpreter, links: FindLinks,
                     selection: Selection | None = None) -> list[Pin]:
    """The wheels a PEP 751 lock selects for the target (packaging runs the spec's installer steps), located; its
    default groups and no extra, unless ``selection`` (uv sync's options) says otherwise."""
    from packaging.pylock import PackageArchive, PackageSdist, PackageWheel, PylockSelectError

    lock = read_pylock(path)
    extras: set[str] | None = None
    groups: set[str] | None = None
    if selection:
        extras, groups = selection.for_pylock(path, lock.extras or [], lock.dependency_groups or [],
                                              lock.default_groups or [])
    try:
        selected = list(lock.select(environment=cast("Environment", env()), tags=interpreter.tags, extras=extras,
                                    dependency_groups=groups))
    except (PylockSelectError, *marker_errors()) as e:
        raise InputError(f"{path}: {e}") from None
    pins = []
    for package, source in selected:
        if isinstance(source, PackageArchive) and (source.path or source.url or "").endswith(".whl"):
            # a wheel file given by path: uv locks it as an archive
            source = PackageWheel(name=_url_filename(source.path or source.url), path=source.path, url=source.url,
                                  hashes=source.hashes, size=source.size)
        elif (project := _local_project(path, package.name, source)) is not None:
            pins.append(project)
            continue
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
            pin = pin._replace(remote=RemoteFile(filename=filename, url=url, hashes={"sha256": digest},
                                                 size=source.size))
        pins.append(pin)
    return pins


def _local_project(lock: Path, name: str, source: object) -> Pin | None:
    """A ``directory`` entry (uv writes one for ``DIR`` and ``-e DIR``) or a local ``archive`` one (an sdist path)
    as a project pin; paths are relative to the lock (PEP 751)."""
    from packaging.pylock import PackageArchive, PackageDirectory

    if isinstance(source, PackageDirectory) and not source.subdirectory:
        return project_pin(lock.parent / source.path, str(lock), editable=bool(source.editable), name=name)
    if isinstance(source, PackageArchive) and source.path and not source.subdirectory:
        digest = source.hashes.get("sha256")
        return project_pin(lock.parent / source.path, str(lock), frozenset({digest.lower()}) if digest else frozenset())
    return None


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


def _lock_local_file(lock: Path, source: PackageWheel | PackageSdist, links: FindLinks) -> Path | None:
    """The entry's file when it is on this machine: a path (relative to the lock, PEP 751), a file:// URL, or a file
    of that name in the find-links directories."""
    if source.path:
        return Path(os.path.abspath(lock.parent / source.path))
    url = urlparse(source.url or "")
    if url.scheme == "file":
        return file_url_path(url.path)
    if source.filename and (found := links.file(source.filename)) is not None:
        return found
    if source.url is None:
        raise InputError(f"{lock}: {source.filename} has neither a path nor a URL")
    return None
