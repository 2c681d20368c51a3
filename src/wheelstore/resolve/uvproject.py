"""A project's lock as ``wheelstore sync`` takes it when given nothing: a uv project's ``uv.lock``, exported by uv
itself into a PEP 751 lock, or a ``pylock.toml`` the project keeps.

uv is run as ``uv sync`` would be run in the same place: with the user's uv settings and the project's own
(``[tool.uv]``, ``uv.toml``), never ours, so that it finds the same workspace, the same lock and the same selection.
It runs with ``--locked``: a lock that no longer matches ``pyproject.toml`` is refused by uv's own check (which
compares content, as ``uv sync --locked`` does), never resolved again behind the user's back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ..base.errors import InputError, ResolutionError
from ..fetch.sources import Sources

#: uv's own words for a lock that ``--locked`` refuses
_STALE = "needs to be updated"


class Project(NamedTuple):
    """Where a project's lock is: ``root`` holds ``lock``, a ``uv.lock`` or a ``pylock.toml``."""

    root: Path
    lock: Path

    @property
    def is_uv(self) -> bool:
        return self.lock.name == "uv.lock"


class Selection(NamedTuple):
    """What of the lock to take, in ``uv sync``'s options: passed to ``uv export`` as they are."""

    extras: Sequence[str] = ()
    all_extras: bool = False
    groups: Sequence[str] = ()
    only_groups: Sequence[str] = ()
    no_dev: bool = False
    all_groups: bool = False
    no_default_groups: bool = False
    packages: Sequence[str] = ()
    all_packages: bool = False

    def uv_args(self) -> list[str]:
        args = [a for e in self.extras for a in ("--extra", e)]
        args += [a for g in self.groups for a in ("--group", g)]
        args += [a for g in self.only_groups for a in ("--only-group", g)]
        args += [a for p in self.packages for a in ("--package", p)]
        flags = {"--all-extras": self.all_extras, "--no-dev": self.no_dev, "--all-groups": self.all_groups,
                 "--no-default-groups": self.no_default_groups, "--all-packages": self.all_packages}
        return args + [flag for flag, on in flags.items() if on]

    def __bool__(self) -> bool:
        return bool(self.uv_args())

    def for_pylock(self, lock: Path, extras: Sequence[str], groups: Sequence[str], default_groups: Sequence[str]
                   ) -> tuple[set[str], set[str]]:
        """The same options for a PEP 751 lock, whose ``extras`` and ``groups`` are markers (pdm writes them so): the
        extras and groups to select, named as uv would take them. What only a uv.lock has is an error."""
        if self.only_groups or self.packages or self.all_packages:
            raise InputError(f"--only-group, --package and --all-packages select from a uv.lock; {lock} is a PEP 751 "
                             "lock, which always takes its packages outside any group",
                             hint="use --group, --extra, --no-dev, --all-groups or --all-extras with it")
        for flag, asked, known in (("--extra", self.extras, extras), ("--group", self.groups, groups)):
            if unknown := [n for n in asked if n not in known]:
                raise InputError(f"{flag} {unknown[0]}: {lock} has no such {flag[2:]} (it has: "
                                 f"{', '.join(known) or 'none'})")
        chosen = set() if self.no_default_groups else set(default_groups)
        if self.no_dev:
            chosen.discard("dev")
        chosen |= set(groups) if self.all_groups else set(self.groups)
        return set(extras) if self.all_extras else set(self.extras), chosen


def find_project(start: Path, *, named: bool = False) -> Project | None:
    """The nearest directory from ``start`` up that holds a ``uv.lock`` (a uv project or workspace root, where uv
    keeps it), else a ``pylock.toml`` (PEP 751's name for a project's lock); None if no directory does.

    Unless the user ``named`` the directory, the project found must be theirs (or root's), as a venv found by walking
    up must be: anyone can put a ``uv.lock`` and a ``pyproject.toml`` in ``/tmp``, and syncing it would run their build
    backend as whoever typed ``wheelstore sync`` below it. So must what uv reads there besides (:func:`_read_by_uv`):
    a ``.python-version`` naming another's interpreter makes the venv with it. The uv settings uv finds above a uv
    project must be theirs even when it is named (:func:`_settings_above`).
    """
    start = start.absolute()
    for directory in (start, *start.parents):
        for name in ("uv.lock", "pylock.toml"):
            if (directory / name).is_file():
                project = Project(directory, directory / name)
                if not named:
                    for path in (directory, project.lock, directory / "pyproject.toml", *_read_by_uv(project, start)):
                        _owned(path, project)
                if project.is_uv:
                    _settings_above(project)
                return project
    return None


#: what uv reads in a project's directories, from where it runs up to the root: the Python it makes the venv with
_READ = (".python-version", ".python-versions")


def _read_by_uv(project: Project, start: Path) -> list[Path]:
    """What else uv reads of a uv project run from ``start``: the root's ``uv.toml`` (its settings), each
    :data:`_READ`."""
    if not project.is_uv:
        return []
    between = (start, *(d for d in start.parents if d.is_relative_to(project.root)))
    return [project.root / "uv.toml", *(d / name for d in between for name in _READ)]


def _owned(path: Path, project: Project) -> None:
    if (who := _stranger(path)) is not None:
        raise InputError(f"found {project.lock}, but {path} belongs to {who}, not you: not syncing it unasked",
                         hint=f"name it with --project {project.root} if you trust it, or run wheelstore sync "
                              "in your own project")


def _stranger(path: Path) -> str | None:
    """Who owns ``path`` if not this user nor root (a symlink's own owner: anyone may point one at root's files)."""
    try:
        owner = path.lstat().st_uid
    except FileNotFoundError:
        return None
    if owner in (os.geteuid(), 0):
        return None
    import pwd

    try:
        return pwd.getpwuid(owner).pw_name
    except KeyError:
        return f"uid {owner}"


def _settings_above(project: Project) -> None:
    """uv takes a project's settings from its root's ``uv.toml``, else its ``pyproject.toml``'s ``[tool.uv]``, else
    from the nearest directory above that has either: someone else's ``/tmp/uv.toml`` would choose the index the
    project's build backend comes from. Such a file must be the user's or root's (unless uv is told to read none)."""
    from ..base.toml import tomllib

    if os.environ.get("UV_CONFIG_FILE") or os.environ.get("UV_NO_CONFIG", "").lower() in ("1", "true", "yes", "on"):
        return
    for directory in (project.root, *project.root.parents):
        found = directory / "uv.toml"
        if not found.is_file():
            found = directory / "pyproject.toml"
            try:
                tool = tomllib.loads(found.read_text(encoding="utf-8")).get("tool")
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if not isinstance(tool, dict) or "uv" not in tool:
                continue
        if directory != project.root and (who := _stranger(found)) is not None:
            raise InputError(f"uv would take the settings of the project at {project.root} from {found}, which "
                             f"belongs to {who}, not you: not running uv with them unasked",
                             hint=f"name it with UV_CONFIG_FILE={found} if you trust it, add a [tool.uv] table to "
                                  f"{project.root / 'pyproject.toml'} (uv then looks no further), or set "
                                  "UV_NO_CONFIG=1")
        return


def project_environment(project: Project, environ: Mapping[str, str] | None = None) -> Path:
    """The venv ``uv sync`` fills: ``$UV_PROJECT_ENVIRONMENT`` (relative to the project's root), else ``.venv`` in the
    root. Not ``$VIRTUAL_ENV``: ``uv sync`` ignores an activated venv that is not the project's, and so do we."""
    named = (os.environ if environ is None else environ).get("UV_PROJECT_ENVIRONMENT")
    return project.root / named if named else project.root / ".venv"


def export(project: Project, start: Path, selection: Selection, sources: Sources, into: Path) -> Path:
    """``uv export --format pylock.toml --locked`` of ``project``'s lock, run from ``start`` as ``uv sync`` would be,
    written in the directory ``into`` (the lock's relative paths are relative to the file uv writes)."""
    import subprocess  # here: a warm install of named packages runs no uv

    from ..fetch.uv import user_uv_environ, uv_binary, uv_failure

    out = into / "pylock.toml"
    cmd = [uv_binary(), "export", "--format", "pylock.toml", "--locked", "--no-header", "--quiet",
           "--color", "never", "--output-file", os.fspath(out), *selection.uv_args()]
    if sources.offline:
        cmd.append("--offline")
    try:
        done = subprocess.run(cmd, cwd=start, env=user_uv_environ(), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True)
    except OSError as e:
        raise ResolutionError(f"cannot run uv export in {start}: {e.strerror}") from None
    if done.returncode != 0:
        lines = done.stderr.splitlines()
        if any(_STALE in line for line in lines):
            raise InputError(f"{project.lock} does not match {project.root / 'pyproject.toml'}: the lock is older "
                             "than the project's requirements, and wheelstore never resolves it again unasked",
                             hint=f"run 'uv lock' in {project.root}, then wheelstore sync again")
        raise uv_failure(lines, f"uv export of {project.lock}", sources, cls=InputError)
    return out


class UvSync(NamedTuple):
    """How the project's own packages (the project, workspace members: the lock's editable entries) get into the venv:
    by ``uv sync`` itself, everything else left out, so that they are exactly what ``uv sync`` would have installed
    (its build cache reused, its record of the build kept) and ``uv run`` finds nothing to do."""

    start: Path
    selection: Selection

    def command(self, skip: Sequence[str], offline: bool) -> list[str]:
        """``uv sync`` of the project's own packages only: ``--inexact``, so that it removes nothing, and every other
        package of the lock named in ``skip``, which wheelstore has linked already."""
        from ..fetch.uv import uv_binary

        return [uv_binary(), "sync", "--frozen", "--inexact", "--color", "never", *self.selection.uv_args(),
                *(a for name in skip for a in ("--no-install-package", name)), *(["--offline"] if offline else [])]

    @staticmethod
    def environ(venv: str | os.PathLike[str]) -> dict[str, str]:
        """The user's environment, aimed at ``venv`` (never at an activated venv, which uv would warn about)."""
        from ..fetch.uv import user_uv_environ

        env = user_uv_environ() | {"UV_PROJECT_ENVIRONMENT": os.fspath(venv)}
        env.pop("VIRTUAL_ENV", None)
        return env
